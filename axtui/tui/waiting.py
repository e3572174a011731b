"""Finding the permission request that has waited longest, in sessions other than the open
one (Ctrl+O): the sidebar knows which sessions wait, their history says since when."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from axtui.client import HubClient, ProtocolError
from axtui.tui.model import Conversation
from server.events import parse_event

# The newest events of these types decide which requests are still open: an answer closes
# one, and so does the end of its turn.
REQUEST_TYPES = ["permission.request", "permission.response", "turn.*"]
LOOK_BACK = 200  # events of those types read per waiting session


async def open_request_since(client: HubClient, session: dict[str, Any]) -> int | None:
    """When (ms) the oldest request still open in ``session`` was made; None when none is
    open or the hub cannot tell (a failed call only leaves that session out)."""
    try:
        page = await client.history(session["sessionId"], beforeSeq=session["headSeq"] + 1,
                                    limit=LOOK_BACK, types=REQUEST_TYPES)
    except (ProtocolError, ConnectionError):
        return None
    folded = Conversation()
    folded.apply_all([parse_event(e) for e in page.get("events", [])])
    requests = folded.open_permissions()
    return requests[0].ts if requests else None


async def oldest_waiting(client: HubClient, sessions: Iterable[dict[str, Any]],
                         here: tuple[str, int] | None) -> str | None:
    """The id of the session whose open request is the oldest: among ``sessions`` whose
    agent waits for permission, and ``here`` (the open session and its oldest open
    request's time, when it has one). None when nothing waits."""
    best = (here[1], here[0]) if here is not None else None
    for session in sessions:
        if session.get("agentState") != "waiting" or (here and session["sessionId"] == here[0]):
            continue
        since = await open_request_since(client, session)
        if since is not None and (best is None or since < best[0]):
            best = (since, session["sessionId"])
    return best[1] if best is not None else None
