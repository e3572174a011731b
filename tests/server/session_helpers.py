"""Sessions and the registry with no hub: a temp data dir, a sink that records, publishing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from server.catalog import Catalog
from server.metrics import Metrics
from server.registry import SessionRegistry
from server.sessions import Session, rpc_page
from server.sources import Source
from tests.conftest import make_config

PAUL = Source("client", "paul", "test")
TIMEOUT = 5.0


class RecordingSink:
    """A :class:`server.sessions.Sink` that keeps what it is sent."""

    encode_page = staticmethod(rpc_page)

    page_bytes = 256 * 1024

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.seqs: list[int] = []
        self.ended: list[tuple[str, bytes | None]] = []
        self.failed: list[str] = []
        self._arrived = asyncio.Event()

    def send(self, frame: bytes, events: int = 0) -> None:
        """Keep the frame and the seqs of its events."""
        self.frames.append(frame)
        msg = orjson.loads(frame)
        if msg["method"] == "session/events":
            self.seqs.extend(e["seq"] for e in msg["params"]["events"])
        self._arrived.set()

    async def drained(self) -> None:
        """Always has room."""

    def subscription_ended(self, session_id: str, frame: bytes | None) -> None:
        """Keep the end."""
        self.ended.append((session_id, frame))

    def subscription_failed(self, session_id: str) -> None:
        """Keep the failure."""
        self.failed.append(session_id)

    async def wait_for_seq(self, seq: int) -> None:
        """Wait until the event ``seq`` has arrived."""
        async with asyncio.timeout(TIMEOUT):
            while not self.seqs or self.seqs[-1] < seq:
                self._arrived.clear()
                await self._arrived.wait()


async def open_registry(data_dir: Path, **hub: Any) -> SessionRegistry:
    """A started registry over an open catalog on ``data_dir``."""
    config = make_config(data_dir, **hub)
    catalog = Catalog(config.hub.data_dir)
    await catalog.open()
    await catalog.ready()  # the catalog's check of the files on disk is over
    registry = SessionRegistry(config.hub, catalog, config.agents, Metrics())
    registry.start()
    return registry


async def close_registry(registry: SessionRegistry) -> None:
    """Close every session and the catalog."""
    await registry.close_all()
    await registry.catalog.close()


async def new_session(registry: SessionRegistry, sid: str = "s") -> Session:
    """A new open session (its seq 1 is ``session.created``)."""
    await registry.create(PAUL, sid)
    return await registry.get(sid)


async def publish(session: Session, count: int, start: int = 0) -> list[int]:
    """Queue ``count`` events at once (one group commit) and return their seqs."""
    futures = [session.enqueue("test.note", {"n": start + i}, PAUL) for i in range(count)]
    return [r.seq for r in await asyncio.gather(*futures)]
