"""What a session's writer takes and gives back: events waiting to be committed, what
their publishers learn, a batch staged for its transaction, and where a copy reads from."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.permissions import Permission
from server.protocol import ProtocolError


class EventSource(Protocol):
    """Where a fork or an import copies events from: a session database, or the recorded
    events of an export."""

    def iter_raw(self, up_to_seq: int) -> AsyncIterator[bytes]:
        """Every event's JSON from seq 1 to ``up_to_seq``, in order."""
        ...


@dataclass(slots=True)
class PendingEvent:
    """One event waiting to be committed, with the future its publisher awaits.

    ``data`` is the event's encoded data; for ``state/exec`` it is ``None`` and the data
    (``statements`` and ``changes``) is built once the statements have run.
    """

    type: str
    source: bytes
    data: bytes | None
    future: asyncio.Future[CommitResult]
    idempotency_key: str | None = None
    turn_id: str | None = None
    statements: list[tuple[str, Any]] | None = None
    recorded_statements: bytes | None = None  # the statements as the client sent them
    queued_at: float = field(default_factory=time.perf_counter)
    # Who sent it (a client connection; None for the hub's own events): a batch that puts
    # off one of an origin's writes puts off that origin's later ones too (append_batch).
    origin: object = None


@dataclass(slots=True, frozen=True)
class CommitResult:
    """What a publisher learns: the event's seq and ts, and whether it was a duplicate."""

    seq: int
    ts: int
    duplicate: bool = False
    changes: int = 0


@dataclass(slots=True)
class StagedBatch:
    """A batch made ready to commit: outcomes, events, permission changes, rows to insert."""

    # One per item: its result, its error, or None when it waits for the next batch
    # (hub.commit_budget was used up: see append_batch).
    outcomes: list[CommitResult | ProtocolError | None]
    committed: list[tuple[int, bytes]]  # (seq, raw) of the new events
    perms: dict[str, Permission]
    ts: int  # the last event's ts
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # ax_events rows not inserted
    permission_rows: list[tuple[Any, ...]] = field(default_factory=list)  # likewise
