"""Owner loss, from outside (cluster.md §2.5-§2.8, issue 16's failure tests): three
``axtui serve`` replicas and a real ``redis-server`` on loopback, replicas killed with
SIGKILL, paused with SIGSTOP and stopped with SIGTERM while keyed publishes flow.

Clients reach the replicas through :class:`Balancer`, a TCP load balancer on loopback as
in front of a real cluster: a client whose replica dies reconnects to the same address and
lands on another one, so ``HubClient`` itself retries keyed publishes and resumes its
subscriptions. Every figure is checked against the log as each surviving replica serves
it (``session/history``) and against the Redis stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from axtui.client import HubClient, Subscription
from bench.redis_peer import RedisServer
from server.protocol import ProtocolError
from server.redisstore import log_key, owner_key
from tests.server.cluster_helpers import ADMIN, LEASE, Cluster, cluster, log_tails, redis_server  # noqa: F401
from tests.server.hubproc import HubProcess

ROUNDS = 10  # owner kills in test_owner_kill_under_load
SEED = 16  # the kills' timing
PACE = 0.01  # seconds, at most, between two publishes of one publisher
PROGRESS = 15  # acks each publisher must get after a kill or restart before the audit
LEASE_S = float(LEASE.removesuffix("s"))
TICK = "load.tick"
KV = "CREATE TABLE kv (k TEXT PRIMARY KEY, n INTEGER)"


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait until ``check()`` holds (polling); the seconds it took. Fails with ``what``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def node_of(replica: HubProcess) -> str:
    """The replica's node id (Cluster names its data dir after it)."""
    return replica.data_dir.name


def client(url: str, **options: Any) -> HubClient:
    """An admin client."""
    return HubClient(url, token=ADMIN, **options)


class Balancer:
    """A TCP load balancer on loopback: each connection goes to the first replica of
    ``order()`` that accepts it, and is cut when either side closes."""

    def __init__(self, order: Callable[[], list[HubProcess]]) -> None:
        self.order = order
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> Balancer:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/ws"
        return self

    async def _accept(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        for replica in self.order():
            if not replica.alive() or replica.url is None:
                continue
            host, port = replica.url.removeprefix("ws://").removesuffix("/ws").rsplit(":", 1)
            try:
                up_r, up_w = await asyncio.open_connection(host, int(port))
                break
            except OSError:
                continue
        else:
            down_w.close()
            return
        self.links |= {down_w, up_w}
        await asyncio.gather(self._pipe(down_r, up_w), self._pipe(up_r, down_w))
        self.links -= {down_w, up_w}

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            dst.close()

    async def close(self) -> None:
        for writer in list(self.links):
            writer.close()
        self.server.close()


def pinned(slots: list[HubProcess], index: int) -> Callable[[], list[HubProcess]]:
    """Slot ``index``'s replica first, then the others (the slot's current replica)."""
    return lambda: [slots[index], *(r for i, r in enumerate(slots) if i != index)]


class Publisher:
    """Keyed publishes, each writing its row of ``kv`` in the same transaction, to
    ``sessions`` in turn, through one ``HubClient`` (which retries them across reconnects
    and -32029). A publish that still fails is retried here with the same key, and noted."""

    def __init__(self, name: str, hub: HubClient, sessions: list[str], seed: int) -> None:
        self.name = name
        self.hub = hub
        self.sessions = sessions
        self.rng = random.Random(seed)
        self.acked: dict[str, tuple[str, int]] = {}  # key -> (session, seq)
        self.acked_at: list[float] = []  # monotonic time of each ack
        self.retried = 0  # acks with duplicate: true (an earlier attempt was stored)
        self.errors: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.idle = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        for n in range(1, 10**9):
            if not self.gate.is_set():
                self.idle.set()
                await self.gate.wait()
            key = f"{self.name}-{n}"
            sid = self.sessions[n % len(self.sessions)]
            while True:
                try:
                    ack = await self.hub.publish(
                        sid, TICK, {"key": key}, idempotency_key=key,
                        state=[{"sql": "INSERT INTO kv (k, n) VALUES (?, ?)",
                                "params": [key, n]}])
                    break
                except (ProtocolError, ConnectionError) as exc:
                    self.errors.append(f"{key}: {type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.1)
            self.acked[key] = (sid, ack["seq"])
            self.retried += ack["duplicate"]
            self.acked_at.append(time.monotonic())
            await asyncio.sleep(self.rng.uniform(0, PACE))

    def acks_since(self, moment: float) -> int:
        return sum(1 for t in self.acked_at if t > moment)

    async def pause(self) -> None:
        """Stop after the publish under way (it is answered first)."""
        self.gate.clear()
        await asyncio.wait_for(self.idle.wait(), 60)

    def resume(self) -> None:
        self.idle.clear()
        self.gate.set()


def progressed(publishers: list[Publisher], since: float) -> bool:
    """Whether every publisher got PROGRESS acks since ``since`` (fails if one's client
    stopped reconnecting)."""
    for p in publishers:
        runner = p.hub._runner  # a client that gave up hangs its publishes
        if runner is not None and runner.done():
            raise AssertionError(f"{p.name}'s HubClient stopped reconnecting:"
                                 f" {runner.exception()!r}")
    return all(p.acks_since(since) >= PROGRESS for p in publishers)


class Follower:
    """A subscription through ``HubClient`` (resumed by it on reconnects): every seq seen."""

    def __init__(self, hub: HubClient, session_id: str) -> None:
        self.reconnects = 0
        hub.on_status = self._status
        self.sub: Subscription = hub.subscribe(session_id)
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._read())

    def _status(self, text: str) -> None:
        if text == "reconnected":
            self.reconnects += 1

    async def _read(self) -> None:
        try:
            async for event in self.sub:
                self.events.append(event)
        except Exception as exc:  # a gap, or the subscription ended: the audit says so
            self.error = exc

    def at(self, head: int) -> bool:
        assert self.error is None, f"subscription failed: {self.error!r}"
        return bool(self.events) and self.events[-1]["seq"] >= head


async def read_log(url: str, session_id: str) -> list[dict[str, Any]]:
    """The whole log as the replica at ``url`` serves it."""
    events: list[dict[str, Any]] = []
    async with client(url, reconnect=False) as hub:
        while True:
            page = await hub.history(session_id, afterSeq=len(events), limit=5000)
            events += page["events"]
            if not page["events"] or events[-1]["seq"] >= page["headSeq"]:
                return events


async def stream_of(redis: RedisServer, session_id: str) -> list[dict[str, Any]]:
    """The session's Redis stream, decoded."""
    async with aioredis.Redis(port=redis.port) as r:
        entries: Any = await r.xrange(log_key(session_id))
    return [orjson.loads(fields[b"e"]) for _, fields in entries]


async def audit(live: list[HubProcess], redis: RedisServer, session_id: str, epoch: str,
                acked: dict[str, tuple[str, int]],
                followers: list[Follower]) -> tuple[int, int, list[dict[str, Any]]]:
    """Check one session's log on every live replica and in Redis: the same everywhere,
    seqs dense, each key stored once, every ack at its seq, the epoch unchanged, ``kv`` the
    rows of the log's publishes, every follower at the head with every seq once.
    Returns (lost, duplicated, the log)."""
    # Read in turn, logs may differ by events a stopped client's request added meanwhile.
    logs = [await read_log(r.url or "", session_id) for r in live]
    events = max(logs, key=len)
    for other in logs:
        assert other == events[:len(other)], "two replicas serve different logs"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seqs not dense"
    assert await stream_of(redis, session_id) == events, "the Redis stream differs"
    ticks = {e["seq"]: e["data"]["key"] for e in events if e["type"] == TICK}
    counts = Counter(ticks.values())
    duplicated = sum(c - 1 for c in counts.values() if c > 1)
    mine = {k: seq for k, (sid, seq) in acked.items() if sid == session_id}
    lost = sum(1 for k, seq in mine.items() if ticks.get(seq) != k)
    for r in live:
        async with client(r.url or "", reconnect=False) as hub:
            assert (await hub.get_session(session_id))["epoch"] == epoch, "the epoch changed"
            rows = (await hub.query(session_id, "SELECT k FROM kv ORDER BY k",
                                    limit=10000))["rows"]
        assert [row[0] for row in rows] == sorted(counts), "state differs from the log"
    head = events[-1]["seq"]
    for f in followers:
        await eventually(functools.partial(f.at, head), 15, f"a subscriber reaching seq {head}")
        assert [(e["seq"], e["id"]) for e in f.events] == [(e["seq"], e["id"]) for e in events], \
            "a subscriber missed events"
    return lost, duplicated, events


async def metric(replica: HubProcess, name: str) -> float:
    """One value of the replica's ``/metrics``."""
    def get() -> str:
        request = urllib.request.Request(replica.http_base + "/metrics",
                                         headers={"Authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(response.read().decode())
    for line in (await asyncio.to_thread(get)).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def start(made: Cluster, **options: Any) -> HubProcess:
    """One more replica, started in a thread (the event loop keeps serving the test)."""
    return await asyncio.to_thread(lambda: made.start(**options))


async def balanced_clients(slots: list[HubProcess], count: int,
                           offset: int = 0) -> tuple[list[Balancer], list[HubClient]]:
    """``count`` clients, client i through a balancer that prefers slot ``i + offset``."""
    balancers = [await Balancer(pinned(slots, (i + offset) % len(slots))).start()
                 for i in range(count)]
    hubs = [client(b.url, reconnect=True, max_backoff=0.5) for b in balancers]
    for hub in hubs:
        await hub.start()
    return balancers, hubs


async def close_all(publishers: list[Publisher], hubs: list[HubClient],
                    balancers: list[Balancer]) -> list[str]:
    """Stop everything; what each client that had stopped reconnecting died of."""
    for p in publishers:
        p.task.cancel()
    await asyncio.gather(*(p.task for p in publishers), return_exceptions=True)
    broken = []
    for hub in hubs:
        try:
            await hub.close()
        except Exception as exc:  # its reconnect loop ended with this (a client bug)
            broken.append(f"{type(exc).__name__}: {exc}")
    for b in balancers:
        await b.close()
    return broken


# --- owner kill under load --------------------------------------------------------------

@pytest.mark.timeout(400)
async def test_owner_kill_under_load(cluster: Cluster) -> None:  # noqa: F811
    """ROUNDS times: 3 publishers on different replicas and a subscriber on each, the owner
    SIGKILLed at a seeded moment and a fresh replica started. After each: every acked
    event once at its seq on every replica, seqs dense, the epoch and the state intact,
    the subscribers (those of the dead replica resumed elsewhere) with every event."""
    slots = [await start(cluster) for _ in range(3)]
    rng = random.Random(SEED)
    sid = "load"
    async with client(slots[0].url or "", reconnect=False) as first:
        epoch = (await first.create_session(sessionId=sid))["epoch"]
        await first.exec(sid, [{"sql": KV}])
    pub_balancers, pub_hubs = await balanced_clients(slots, 3)
    sub_balancers, sub_hubs = await balanced_clients(slots, 3)
    publishers = [Publisher(f"p{i}", hub, [sid], SEED + i) for i, hub in enumerate(pub_hubs)]
    followers = [Follower(hub, sid) for hub in sub_hubs]
    acked: dict[str, tuple[str, int]] = {}
    try:
        for rnd in range(1, ROUNDS + 1):
            before = sum(len(p.acked) for p in publishers)
            async with client(slots[0].url or "", reconnect=False) as hub:
                owner_node = (await hub.get_session(sid))["owner"]
            owner = next(r for r in slots if node_of(r) == owner_node)
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            await asyncio.to_thread(owner.kill)
            killed = time.monotonic()
            slots[slots.index(owner)] = await start(cluster)
            await eventually(functools.partial(progressed, publishers, killed),
                             30, f"publishes acknowledged after the kill of round {rnd}")
            failover = max(min(t for t in p.acked_at if t > killed) for p in publishers) - killed
            for p in publishers:
                await p.pause()
                acked |= p.acked
            lost, duplicated, events = await audit(slots, cluster.redis, sid, epoch, acked,
                                                   followers)
            async with client(slots[0].url or "", reconnect=False) as hub:
                new_owner = (await hub.get_session(sid))["owner"]
            print(f"round {rnd}: killed {owner_node} (owner), new owner {new_owner}, acked"
                  f" {len(acked) - before}, lost {lost}, duplicated {duplicated}, head"
                  f" {events[-1]['seq']}, all publishers acked again after {failover:.2f} s,"
                  f" subscriber reconnects {[f.reconnects for f in followers]}, retries found"
                  f" stored {sum(p.retried for p in publishers)}")
            assert (lost, duplicated) == (0, 0)
            for p in publishers:
                p.resume()
        assert sum(f.reconnects for f in followers) >= ROUNDS, \
            "the subscribers of the dead replicas did not resume elsewhere"
        errors = [e for p in publishers for e in p.errors]
        assert not errors, f"keyed publishes failed after HubClient's retries: {errors[:5]}"
    finally:
        broken = await close_all(publishers, pub_hubs + sub_hubs, pub_balancers + sub_balancers)
    assert not broken, f"HubClients whose reconnect loop died: {broken}"


# --- stale owner -------------------------------------------------------------------------

class Answers:
    """Keyed publishes sent to one replica by ``workers`` tasks, never retried: each
    answer as it came (``seq`` or the error's code), with when it was sent."""

    def __init__(self, hub: HubClient, session_id: str, workers: int) -> None:
        self.hub = hub
        self.session_id = session_id
        self.answers: list[tuple[str, float, float, int | None, int | None]] = []
        # (key, sent, answered, seq, error code)
        self.tasks = [asyncio.create_task(self._run(w)) for w in range(workers)]

    async def _run(self, worker: int) -> None:
        for n in range(1, 10**9):
            key = f"a{worker}-{n}"
            sent = time.monotonic()
            try:
                ack = await self.hub.publish(
                    self.session_id, TICK, {"key": key}, idempotency_key=key,
                    state=[{"sql": "INSERT INTO kv (k, n) VALUES (?, ?)", "params": [key, n]}])
                self.answers.append((key, sent, time.monotonic(), ack["seq"], None))
            except ProtocolError as exc:
                self.answers.append((key, sent, time.monotonic(), None, exc.code))
                await asyncio.sleep(0.05)
            await asyncio.sleep(PACE)

    def count(self, since: float) -> int:
        return sum(1 for a in self.answers if a[1] > since)
    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.mark.timeout(120)
async def test_a_paused_owner_acknowledges_nothing_more_and_steps_down(
        cluster: Cluster) -> None:  # noqa: F811
    """A owns the session and takes publishes; SIGSTOP past its lease; B takes over and
    acknowledges writes; SIGCONT: every answer A gives is an ack consistent with the log
    (forwarded to B) or -32029, never a seq of its own lineage, and A steps down."""
    a, b, c = [await start(cluster) for _ in range(3)]
    sid = "stale"
    on_a = client(a.url or "", reconnect=False)
    await on_a.start()
    answers: Answers | None = None
    try:
        await on_a.create_session(sessionId=sid)
        await on_a.exec(sid, [{"sql": KV}])
        epoch = (await on_a.get_session(sid))["epoch"]
        assert await metric(a, "axtui_cluster_owned_sessions") == 1
        answers = Answers(on_a, sid, workers=8)
        await eventually(lambda: answers is not None and len(answers.answers) >= 20, 10,
                         "A acknowledging publishes")
        a.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        async with aioredis.Redis(port=cluster.redis.port) as r:
            while await r.get(owner_key(sid)) is not None:  # A's lease runs out
                assert time.monotonic() - stopped < 5 * LEASE_S, "A's lease did not run out"
                await asyncio.sleep(0.05)
        lapsed = time.monotonic() - stopped
        async with client(b.url or "", reconnect=True) as on_b:  # retries -32029 itself
            b_acked = {f"b-{n}": (sid, (await on_b.publish(
                sid, TICK, {"key": f"b-{n}"}, idempotency_key=f"b-{n}",
                state=[{"sql": "INSERT INTO kv VALUES (?, ?)", "params": [f"b-{n}", n]}]))["seq"])
                for n in range(20)}
            new_owner = (await on_b.get_session(sid))["owner"]
        assert new_owner in (node_of(b), node_of(c)), new_owner
        a.send_signal(signal.SIGCONT)
        woke = time.monotonic()
        while await metric(a, "axtui_cluster_owned_sessions") != 0:  # A steps down
            assert time.monotonic() - woke < 10, "A still owns the session"
            await asyncio.sleep(0.05)
        step_down = time.monotonic() - woke
        await eventually(lambda: answers is not None and answers.count(woke) >= 20, 15,
                         "A answering publishes sent after it woke")
        await answers.stop()
        by_a = {key: ("stale", seq) for key, _, _, seq, code in answers.answers
                if seq is not None}
        lost, duplicated, events = await audit([a, b, c], cluster.redis, sid, epoch,
                                               by_a | b_acked, [])
        held = [x for x in answers.answers if x[1] < woke < x[2]]
        after = [x for x in answers.answers if x[1] > woke]
        refused = Counter(code for *_, code in answers.answers if code is not None)
        stored = Counter(e["data"]["key"] for e in events if e["type"] == TICK)
        refused_but_stored = [x[0] for x in answers.answers if x[4] is not None and stored[x[0]]]
        print(f"stale owner: lease gone {lapsed:.2f} s after SIGSTOP; new owner {new_owner};"
              f" A stepped down {step_down:.2f} s after SIGCONT; A's answers: sent before"
              f" SIGCONT {len(held)} ({sum(x[3] is not None for x in held)} acked),"
              f" sent after waking {len(after)} ({sum(x[3] is not None for x in after)} acked"
              f" through the new owner); refused {dict(refused)}; refused but stored"
              f" {len(refused_but_stored)}; lost {lost}, duplicated {duplicated}")
        assert (lost, duplicated) == (0, 0)
        assert set(refused) <= {-32029}, refused
        said = [line for line in a.stderr.splitlines()
                if f"session {sid}" in line and "stepping down" in line]
        assert said, f"A's log does not say it stepped down:\n{a.stderr[-3000:]}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            a.send_signal(signal.SIGCONT)
        if answers is not None:
            await answers.stop()
        await on_a.close()


# --- agents -------------------------------------------------------------------------------

def echo_agents(tmp: Path) -> Callable[[str], dict[str, object]]:
    """The bundled echo agent with ``retry_interrupted``, each replica keeping its own
    transcripts (as on separate machines: the new owner's agent starts afresh)."""
    def section(node: str) -> dict[str, object]:
        return {"echo": {"command": [sys.executable, "-m", "server.agents.echo"],
                         "retry_interrupted": True,
                         "env": {"AXTUI_ECHO_STATE": str(tmp / f"echo-{node}")},
                         "sandbox": {"writable": [str(tmp)]}}}
    return section


async def next_of(follower: Follower, start: int, kind: str, timeout: float) -> dict[str, Any]:
    """The first event of type ``kind`` the follower got at index ``start`` or later."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in follower.events[start:] if e["type"] == kind]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {kind} within {timeout} s"
        assert follower.error is None, f"subscription failed: {follower.error!r}"
        await asyncio.sleep(0.02)


@pytest.mark.timeout(120)
async def test_owner_killed_mid_turn_the_turn_is_interrupted_and_rerun_elsewhere(
        cluster: Cluster, tmp_path: Path) -> None:  # noqa: F811
    """echo with retry_interrupted, owner SIGKILLed during a turn: turn.failed interrupted
    on the new owner within 2 x lease, the turn re-run there (retryOf), and the
    conversation restored from the log for it and the next message."""
    agents = echo_agents(tmp_path)
    a, b, c = [await start(cluster, agents=agents) for _ in range(3)]
    sid = "agent"
    async with client(a.url or "", reconnect=False) as on_a, \
            client(b.url or "", reconnect=False) as on_b, \
            client(c.url or "", reconnect=False) as on_c:
        await on_a.create_session(sessionId=sid, agent="echo")
        log = Follower(on_c, sid)  # on C, which stays up
        events = log.events
        try:
            await on_b.publish(sid, "user.message", {"text": "hello there"})
            await next_of(log, 0, "turn.completed", 30)
            mark = len(events)
            trigger = (await on_b.publish(sid, "user.message", {"text": "sleep 4"}))["seq"]
            first = await next_of(log, mark, "turn.started", 15)
            await asyncio.to_thread(a.kill)
            killed = time.monotonic()
            mark = len(events)
            failed = await next_of(log, mark, "turn.failed", 10)
            interrupted_after = time.monotonic() - killed
            assert failed["data"]["turnId"] == first["data"]["turnId"]
            assert failed["data"]["reason"] == "interrupted"
            retried = await next_of(log, mark, "turn.started", 15)
            assert retried["data"]["retryOf"] == first["data"]["turnId"]
            assert retried["data"]["triggerSeq"] == trigger
            done = await next_of(log, mark, "turn.completed", 30)
            assert done["data"]["turnId"] == retried["data"]["turnId"]
            owner = (await on_c.get_session(sid))["owner"]
            assert owner in (node_of(b), node_of(c))
            replies = [e["data"]["text"] for e in events[mark:] if e["type"] == "agent.message"]
            assert replies and "hello there" in replies[-1], replies  # the log's transcript
            mark = len(events)
            await on_b.publish(sid, "user.message", {"text": "and now?"})
            await next_of(log, mark, "turn.completed", 30)
            last = [e["data"]["text"] for e in events[mark:] if e["type"] == "agent.message"]
            print(f"agents: turn.failed interrupted {interrupted_after:.2f} s after the kill;"
                  f" re-run on {owner}; its reply {replies[-1]!r}; the next one {last!r}")
            assert interrupted_after <= 2 * LEASE_S + 1.0
            assert last and "echo: and now?" in last[-1]
            assert "I have seen 2 messages" in last[-1]  # the same conversation goes on
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        finally:
            log.task.cancel()


# --- rolling restart ----------------------------------------------------------------------

@pytest.mark.timeout(200)
async def test_rolling_restart_loses_and_doubles_nothing(cluster: Cluster) -> None:  # noqa: F811
    """Each replica in turn replaced: a new one started, the old one SIGTERMed, while 3
    publishers send keyed publishes to 3 sessions (one owned by each replica at first):
    every replica exits 0 within 10 s, nothing is lost or stored twice, subscribers
    resume."""
    slots = [await start(cluster) for _ in range(3)]
    sessions = [f"roll{i}" for i in range(3)]
    epochs: dict[str, str] = {}
    for replica, sid in zip(slots, sessions, strict=True):
        async with client(replica.url or "", reconnect=False) as hub:
            epochs[sid] = (await hub.create_session(sessionId=sid))["epoch"]
            await hub.exec(sid, [{"sql": KV}])
    pub_balancers, pub_hubs = await balanced_clients(slots, 3)
    sub_balancers, sub_hubs = await balanced_clients(slots, 3, offset=1)
    publishers = [Publisher(f"p{i}", hub, sessions, SEED + i) for i, hub in enumerate(pub_hubs)]
    followers = [Follower(hub, sid) for hub, sid in zip(sub_hubs, sessions, strict=True)]
    acked: dict[str, tuple[str, int]] = {}
    try:
        for index in range(3):
            before = sum(len(p.acked) for p in publishers)
            old = slots[index]
            slots[index] = await start(cluster)
            await asyncio.sleep(0.3)
            old.send_signal(signal.SIGTERM)
            stopping = time.monotonic()
            code = await asyncio.to_thread(old.wait, 15.0)
            exited = time.monotonic() - stopping
            try:
                await eventually(functools.partial(progressed, publishers, stopping), 30,
                                 f"publishes acknowledged after {node_of(old)} stopped")
            except AssertionError as exc:  # say who is stuck, and what the replicas logged
                stuck = [(p.name, p.acks_since(stopping), p.errors[-2:]) for p in publishers]
                raise AssertionError(f"{exc}: {stuck}\n{log_tails([old, *slots])}") from None
            for p in publishers:
                await p.pause()
                acked |= p.acked
            figures = [await audit(slots, cluster.redis, sid, epochs[sid], acked,
                                   [f for f in followers if f.sub.session_id == sid])
                       for sid in sessions]
            lost, duplicated = sum(f[0] for f in figures), sum(f[1] for f in figures)
            print(f"restart {index + 1}: {node_of(old)} exited {code} after {exited:.2f} s;"
                  f" acked {sum(len(p.acked) for p in publishers) - before}, lost {lost},"
                  f" duplicated {duplicated}, retries found stored"
                  f" {sum(p.retried for p in publishers)}")
            assert code == 0 and exited < 10.0, old.stderr[-3000:]
            assert (lost, duplicated) == (0, 0)
            for p in publishers:
                p.resume()
        errors = [e for p in publishers for e in p.errors]
        assert not errors, f"keyed publishes failed after HubClient's retries: {errors[:5]}"
    finally:
        broken = await close_all(publishers, pub_hubs + sub_hubs, pub_balancers + sub_balancers)
    assert not broken, f"HubClients whose reconnect loop died: {broken}"
