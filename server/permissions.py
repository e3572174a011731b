"""Permission requests recorded in a session's log, and the rule that the first answer wins.

An agent records ``permission.request``; any participant answers with
``permission.response``. The hub keeps each request in the ``ax_permissions`` table (in the
same transaction as the event) and a copy in memory, so that an answer to a request that
is not open, or was answered already, is refused with -32009 naming who answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from server.protocol import Conflict, InvalidParams


@dataclass(slots=True)
class Permission:
    """A permission request recorded in the log, and who answered it."""

    request_id: str
    request_seq: int
    option_ids: list[str]
    answered_seq: int | None = None
    answered_by: dict[str, Any] | None = None


def permission_row(
    known: Mapping[str, Permission], event_type: str, data: dict[str, Any], source: bytes,
    seq: int, staged: dict[str, Permission],
) -> tuple[Any, ...]:
    """Track a permission event; refuse an answer to a request that is not open.

    ``known`` is what is committed; ``staged`` holds the changes of the transaction under
    way until it commits. Returns the ``ax_permissions`` row to write with the event.
    """
    rid = data.get("requestId")
    if not isinstance(rid, str):
        raise InvalidParams("data.requestId must be a string", {"param": "data.requestId"})
    if event_type == "permission.request":
        options = [o.get("optionId") for o in data.get("options", []) if isinstance(o, dict)]
        opened = Permission(rid, seq, [o for o in options if isinstance(o, str)])
        staged[rid] = opened
        return (rid, seq, orjson.dumps(opened.option_ids).decode(), None, None)
    perm = staged.get(rid) or known.get(rid)
    if perm is None:
        raise Conflict(f"permission request {rid} is not open", {"requestId": rid})
    if perm.answered_by is not None:
        who = perm.answered_by
        raise Conflict(
            f"permission request {rid} was already answered by {who.get('name')}"
            f" via {who.get('client') or who.get('kind')}",
            {"requestId": rid, "answeredBy": who, "answeredSeq": perm.answered_seq},
        )
    option = data.get("optionId")
    if data.get("outcome") != "cancelled" and option not in perm.option_ids:
        raise InvalidParams(
            f"optionId must be one of {perm.option_ids} (or outcome: cancelled)",
            {"param": "data.optionId"},
        )
    staged[rid] = Permission(rid, perm.request_seq, perm.option_ids, seq,
                             orjson.loads(source))
    return (rid, perm.request_seq, orjson.dumps(perm.option_ids).decode(), seq,
            source.decode())
