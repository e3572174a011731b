"""A replica's session file and the shared log in Redis, made to agree.

In cluster mode a replica's file is a local copy that may be behind, missing or lost:

- :func:`catch_up` appends what the log has past the file's head (the events exactly as
  stored, their ids included, the state they built re-run), when a replica takes a
  session over;
- :func:`rebuild` makes the file from the log when the replica has none (or one of
  another incarnation of the id);
- :func:`push` copies a file just built here (a fork, an import) into the log;
- :func:`snapshot` makes the compressed copy of a closed file that lets the log be trimmed
  (Redis memory stays bounded), and :func:`restore` makes a file from it again.
"""

from __future__ import annotations

import asyncio
import sqlite3
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson

from server.protocol import InternalError
from server.redisstore import Lease, RedisStore
from server.sessionbuild import build_session
from server.sessiondb import SessionDatabase
from server.sessionfile import (
    SessionMeta,
    building_path,
    move_into_place,
    remove_files,
)

PAGE = 1000  # events read from or written to Redis in one call


class StreamEvents:
    """The log's events after ``after_seq``, as the source of a copy
    (:class:`server.writes.EventSource`)."""

    def __init__(self, store: RedisStore, session_id: str, after_seq: int) -> None:
        self.store = store
        self.session_id = session_id
        self.after_seq = after_seq

    async def iter_raw(self, up_to_seq: int) -> AsyncIterator[bytes]:
        """Events from ``after_seq + 1`` to ``up_to_seq``, in order."""
        seq = self.after_seq
        while seq < up_to_seq:
            page = await self.store.read(self.session_id, seq, min(PAGE, up_to_seq - seq))
            if not page:
                return
            for _, raw in page:
                yield raw
            seq = page[-1][0]


async def catch_up(db: SessionDatabase, store: RedisStore, head_seq: int) -> int:
    """Append the log's events after the file's head up to ``head_seq``; how many."""
    before = db.head_seq
    if head_seq > before:
        await db.copy_from(StreamEvents(store, db.meta.session_id, before), head_seq,
                           keep_ids=True)
    return db.head_seq - before


async def rebuild(path: Path, meta: SessionMeta, store: RedisStore, head_seq: int,
                  durability: str) -> SessionDatabase:
    """Build the session file ``path`` from the log, up to ``head_seq``."""
    async def fill(db: SessionDatabase) -> None:
        await catch_up(db, store, head_seq)

    return await build_session(path, meta, durability, fill)


async def push(db: SessionDatabase, store: RedisStore, lease: Lease) -> None:
    """Append every event of the file to the (empty) log of its session, in pages."""
    seq = 0
    while seq < db.head_seq:
        page = await db.read_range(seq, PAGE, 4 * 1024 * 1024)
        if not page:
            break
        await asyncio.to_thread(store.append, lease, page[0][0], [raw for _, raw in page],
                                orjson.loads(page[-1][1])["ts"])
        seq = page[-1][0]


def snapshot(path: Path) -> bytes:
    """A compacted, compressed copy of the closed session file ``path`` (blocking: run it
    in a thread)."""
    copy = building_path(path).with_suffix(".snap")
    remove_files(copy)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            con.execute("VACUUM INTO ?", (str(copy),))
        con.close()
        return zlib.compress(copy.read_bytes(), 6)
    finally:
        remove_files(copy)


async def restore(path: Path, meta: SessionMeta, store: RedisStore, blob: bytes,
                  head_seq: int, durability: str) -> SessionDatabase:
    """The session file ``path`` made from a snapshot, then caught up to ``head_seq``."""
    building = building_path(path)
    remove_files(building)
    await asyncio.to_thread(building.write_bytes, zlib.decompress(blob))
    try:
        db = await SessionDatabase.open(building, durability)
        try:
            if db.meta.epoch != meta.epoch:
                raise InternalError(f"the snapshot of session {meta.session_id} is of"
                                    " another incarnation")
            await catch_up(db, store, head_seq)
        finally:
            await db.close()
        await asyncio.to_thread(move_into_place, building, path, sync=durability == "full")
    except BaseException:
        remove_files(building)
        raise
    return await SessionDatabase.open(path, durability)
