"""Crash safety: the hub is SIGKILLed at random moments under load and restarted.

Several publishers publish with idempotency keys while a subscriber follows every session;
each round the hub process is killed at a seeded random moment and started again on the
same data dir. Publishes left without an answer are retried with the same key in the next
round, and the subscriber resumes from the last seq it saw, with the epoch. At the end the
session files are opened with ``sqlite3`` and checked against everything the clients were
told: the acknowledgements and the stream the subscriber received.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from axtui.client import ConnectionLost, HubClient, HubUnavailable
from server.local_secret import secret_for

from .hubproc import HubProcess

SEED = 20260512
ROUNDS = 20
SESSIONS = ("crash-a", "crash-b", "crash-c")
PUBLISHERS = 4
LANES = 3  # publishes each publisher keeps under way at once, so commits come in groups
KILL_AFTER = (0.05, 0.6)  # seconds after the hub is ready
EVENT_TYPE = "test.crash"
ROUND_TIMEOUT = 20.0  # every client must notice the kill (or finish settling) within this


def payload(key: str) -> dict[str, Any]:
    """The data published under ``key``: the same on every retry, of varying size."""
    return {"key": key, "pad": "x" * (sum(map(ord, key)) % 300)}


@dataclass
class Ledger:
    """What publishers were told: the acknowledgement of every key, and duplicates seen."""

    acked: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # key: sid, seq, ts
    retried: set[str] = field(default_factory=set)
    duplicates: int = 0

    def record(self, key: str, session_id: str, result: dict[str, Any]) -> None:
        """Keep an acknowledgement; a duplicate is only possible for a retried key."""
        assert key not in self.acked, f"{key} was acknowledged twice"
        if result["duplicate"]:
            assert key in self.retried, f"first publish of {key} answered as a duplicate"
            self.duplicates += 1
        self.acked[key] = (session_id, result["seq"], result["ts"])


class Publisher:
    """One client connection publishing from a few lanes; unanswered keys carry over."""

    def __init__(self, name: str, ledger: Ledger, rng: random.Random) -> None:
        self.name = name
        self.ledger = ledger
        self.rng = rng
        self.inflight: dict[str, str] = {}  # key: session, sent but never answered
        self.counter = itertools.count()

    async def run_round(self, url: str, *, settle: bool) -> None:
        """Publish until the hub dies (or, settling, only retry what is unanswered)."""
        retry = sorted(self.inflight.items())
        self.ledger.retried.update(key for key, _ in retry)
        try:
            async with HubClient(url, name=self.name, kind="crash-test", reconnect=False,
                                 open_timeout=5.0) as client:
                await asyncio.gather(*(self._lane(client, retry, settle) for _ in range(LANES)))
        except HubUnavailable:
            pass  # killed before or while connecting

    async def _lane(self, client: HubClient, retry: list[tuple[str, str]], settle: bool) -> None:
        while True:
            if retry:
                key, session_id = retry.pop()
            elif settle:
                return
            else:
                key = f"{self.name}-{next(self.counter)}"
                session_id = self.rng.choice(SESSIONS)
                self.inflight[key] = session_id
            try:
                result = await client.publish(session_id, EVENT_TYPE, payload(key),
                                              idempotency_key=key)
            except (ConnectionLost, HubUnavailable):
                return  # the hub died: the key stays in flight and is retried next round
            self.ledger.record(key, session_id, result)
            del self.inflight[key]


class Subscriber:
    """A raw websocket subscriber to every session that resumes after each restart.

    It checks each frame itself (no client library in between that could hide a gap or
    a duplicate): every event must be the one right after the last it saw.
    """

    def __init__(self, epochs: dict[str, str]) -> None:
        self.epochs = epochs
        self.events: dict[str, list[dict[str, Any]]] = {sid: [] for sid in epochs}
        self.resumes = 0

    def last_seq(self, session_id: str) -> int:
        """The seq of the last event received for ``session_id`` (0 before any)."""
        events = self.events[session_id]
        return int(events[-1]["seq"]) if events else 0

    async def run_round(self, url: str, *, until_head: bool) -> None:
        """Follow every session until the hub dies (or until each is at its head)."""
        try:
            secret = {"Authorization": f"Bearer {secret_for(url)}"}  # as a local client
            async with connect(url, max_size=None, compression=None, open_timeout=5.0,
                               additional_headers=secret) as ws:
                await self._follow(ws, until_head)
        except (OSError, TimeoutError, WebSocketException):
            pass  # the hub was killed; the next round resumes

    async def _follow(self, ws: ClientConnection, until_head: bool) -> None:
        await ws.send(orjson.dumps({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": 1,
                       "clientInfo": {"name": "follower", "kind": "crash-test", "version": "0"}},
        }).decode())
        requests: dict[int, str] = {}
        heads: dict[str, int] = {}
        async for frame in ws:
            msg = orjson.loads(frame)
            if msg.get("id") == 0:
                assert "result" in msg, msg
                for request_id, sid in enumerate(self.epochs, start=1):
                    requests[request_id] = sid
                    after = self.last_seq(sid)
                    self.resumes += after > 0
                    await ws.send(orjson.dumps({
                        "jsonrpc": "2.0", "id": request_id, "method": "session/subscribe",
                        "params": {"sessionId": sid, "afterSeq": after,
                                   "epoch": self.epochs[sid]},
                    }).decode())
            elif "id" in msg:
                sid = requests[msg["id"]]
                assert "result" in msg, f"resuming {sid} after {self.last_seq(sid)}: {msg}"
                assert msg["result"]["epoch"] == self.epochs[sid]
                assert msg["result"]["headSeq"] >= self.last_seq(sid), msg
                heads[sid] = msg["result"]["headSeq"]
            else:
                assert msg["method"] == "session/events", msg
                sid = msg["params"]["sessionId"]
                assert sid in heads, f"events of {sid} came before its subscribe response"
                for event in msg["params"]["events"]:
                    expected = self.last_seq(sid) + 1
                    assert event["seq"] == expected, (
                        f"{sid}: expected seq {expected}, got {event['seq']} (gap or duplicate)"
                    )
                    self.events[sid].append(event)
            if until_head and len(heads) == len(self.epochs) and all(
                self.last_seq(sid) >= head for sid, head in heads.items()
            ):
                return


async def create_sessions(url: str) -> dict[str, str]:
    """Create the sessions; their epochs by id."""
    async with HubClient(url, kind="crash-test") as client:
        return {sid: (await client.create_session(sessionId=sid, title=sid))["epoch"]
                for sid in SESSIONS}


def check_files(data_dir: Path, ledger: Ledger, subscriber: Subscriber) -> None:
    """Each session file is intact, dense, and holds exactly what the clients were told."""
    for sid in SESSIONS:
        con = sqlite3.connect(data_dir / "sessions" / f"{sid}.db")
        try:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)], sid
            rows = con.execute(
                "SELECT seq, ts, type, idempotency_key, raw FROM ax_events ORDER BY seq"
            ).fetchall()
        finally:
            con.close()
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1)), f"{sid}: seqs not dense"
        assert rows[0][2] == "session.created"
        stored = {key: (seq, ts) for seq, ts, _, key, _ in rows if key is not None}
        assert len(stored) == len(rows) - 1, f"{sid}: a key is stored twice or an event lacks one"
        acked = {key: (seq, ts) for key, (s, seq, ts) in ledger.acked.items() if s == sid}
        assert stored == acked, f"{sid}: stored events differ from the acknowledgements"
        events = [orjson.loads(raw) for *_, raw in rows]
        for (seq, ts, type_, key, _), event in zip(rows, events, strict=True):
            assert (event["seq"], event["ts"], event["type"]) == (seq, ts, type_)
            assert event.get("idempotencyKey") == key
            if key is not None:
                assert event["data"] == payload(key)
        assert subscriber.events[sid] == events, f"{sid}: the subscriber's stream differs"
    con = sqlite3.connect(data_dir / "hub.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        con.close()


async def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Every acknowledged event survives SIGKILLs once, at its seq; resume is gap-free."""
    rng = random.Random(SEED)
    ledger = Ledger()
    publishers = [Publisher(f"pub{i}", ledger, random.Random(SEED + i)) for i in range(PUBLISHERS)]
    subscriber: Subscriber | None = None
    acks_per_round = []
    for round_no in range(ROUNDS + 1):
        settle = round_no == ROUNDS  # the last start: finish retries, catch up, no chaos
        hub = HubProcess(tmp_path)
        try:
            await asyncio.to_thread(hub.start)
            assert hub.url is not None
            if subscriber is None:
                subscriber = Subscriber(await create_sessions(hub.url))
            before = len(ledger.acked)
            async with asyncio.timeout(ROUND_TIMEOUT):
                if settle:
                    await asyncio.gather(*(p.run_round(hub.url, settle=True) for p in publishers))
                    await subscriber.run_round(hub.url, until_head=True)
                else:
                    clients = [asyncio.create_task(p.run_round(hub.url, settle=False))
                               for p in publishers]
                    clients.append(asyncio.create_task(
                        subscriber.run_round(hub.url, until_head=False)))
                    try:
                        await asyncio.sleep(rng.uniform(*KILL_AFTER))  # the random moment
                        await asyncio.to_thread(hub.kill)
                        await asyncio.gather(*clients)
                    finally:
                        for task in clients:
                            task.cancel()
            acks_per_round.append(len(ledger.acked) - before)
        finally:
            await asyncio.to_thread(hub.kill)  # also ends the settle round without a clean stop
    assert subscriber is not None
    assert all(not p.inflight for p in publishers), "some publishes were never answered"
    assert sum(acks_per_round) >= 100, f"too little load to mean anything: {acks_per_round}"
    check_files(tmp_path, ledger, subscriber)
    print(f"\nacks per round {acks_per_round}; {len(ledger.acked)} acknowledged,"
          f" {len(ledger.retried)} retried ({ledger.duplicates} had been committed),"
          f" {subscriber.resumes} resumes")
