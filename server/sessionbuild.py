"""Building a new session's file whole before it takes its name (create, fork, import)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from server import protocol
from server.events import PermissionResponse, TurnFailed, TurnFailure, TurnStarted, loads_event
from server.protocol import Conflict, InvalidParams, ProtocolError
from server.sessiondb import SessionDatabase
from server.sessionfile import (
    SessionMeta,
    building_path,
    move_into_place,
    recorded_fields,
    remove_files,
)
from server.sources import HUB_SOURCE, Source
from server.writes import PendingEvent


async def build_session(
    path: Path, meta: SessionMeta, durability: str,
    fill: Callable[[SessionDatabase], Awaitable[None]] | None = None,
    created: PendingEvent | None = None,
) -> SessionDatabase:
    """Make the new session file ``path`` whole before it exists, and open it.

    The file is built under a temporary name (``created`` as its seq 1, then ``fill``),
    sealed (:meth:`SessionDatabase.seal`: synced) and linked into place, which fails with
    :class:`Conflict` if ``path`` exists. A hub killed midway leaves only the temporary
    file (removed at the next start), never a session without its events. Raises what
    ``fill`` raised, and leaves nothing behind.
    """
    building = building_path(path)
    db = await SessionDatabase.create(building, meta, durability, created, building=True)
    try:
        if fill is not None:
            await fill(db)
        await db.seal()
        await asyncio.to_thread(move_into_place, building, path, sync=durability == "full")
    except FileExistsError:
        remove_files(building)
        raise Conflict(f"session {meta.session_id} already exists",
                       {"sessionId": meta.session_id}) from None
    except BaseException:
        await db.close()
        remove_files(building)
        raise
    return await SessionDatabase.open(path, durability)

async def fill_fork(db: SessionDatabase, *, origin: SessionDatabase, at_seq: int,
                    source: Source, forked: dict[str, Any]) -> None:
    """Fill a fork's new file: ``origin``'s events up to ``at_seq``, the state they built,
    then ``session.forked`` (``forked`` its data). A fork starts with no turn running:
    nothing would ever answer a request open at ``at_seq`` or end its turn, so both are
    closed here, in the same fill."""
    await db.copy_from(origin, at_seq)
    hub = HUB_SOURCE.to_json()
    items: list[tuple[str, bytes, dict[str, Any], str | None]] = [
        ("session.forked", source.to_json(), forked, None)]
    items += [("permission.response", hub, PermissionResponse(rid).to_json(), None)
              for rid, perm in db.permissions.items() if perm.answered_by is None]
    last = [loads_event(r) for r in await origin.history(None, at_seq + 1, 1, ["turn.*"])]
    if last and isinstance(started := last[0].data, TurnStarted):
        items.append(("turn.failed", hub, TurnFailed(
            started.turn_id, TurnFailure.INTERRUPTED,
            "the session was forked during this turn").to_json(), started.turn_id))
    loop = asyncio.get_running_loop()
    outcomes, _ = await db.append_batch([
        PendingEvent(kind, src, orjson.dumps(data), loop.create_future(), turn_id=tid)
        for kind, src, data, tid in items])
    for outcome in outcomes:
        if isinstance(outcome, ProtocolError):
            raise outcome


def checked_recorded(events: Sequence[Any]) -> list[dict[str, Any]]:
    """An import's recorded events with the fields of an event only, each checked
    (:func:`protocol.check_recorded_event`; an idempotency key used once): InvalidParams
    naming the first one that is not."""
    keys: set[str] = set()
    events = [recorded_fields(e) if isinstance(e, dict) else e for e in events]
    for index, event in enumerate(events):
        try:
            protocol.check_recorded_event(event, index + 1)
        except InvalidParams as exc:
            raise InvalidParams(f"events[{index}]: {exc.message}",
                                {"param": "events", "index": index}) from None
        key = event.get("idempotencyKey")
        if key is not None:
            if key in keys:
                raise InvalidParams(f"events[{index}]: idempotencyKey {key!r} is used twice",
                                    {"param": "events", "index": index})
            keys.add(key)
    return events
