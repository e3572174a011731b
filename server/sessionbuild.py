"""Building a new session's file whole before it takes its name (create, fork, import)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from server.protocol import Conflict
from server.sessiondb import PendingEvent, SessionDatabase
from server.sessionfile import SessionMeta, building_path, move_into_place, remove_files


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
