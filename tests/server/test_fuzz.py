"""Property-based fuzzing of one live hub with random JSON-RPC frames (Hypothesis)."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from server.hub import Hub
from server.protocol import METHOD_ROLES, SESSION_ID_RE
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.raw_helpers import close_leaked_database_threads, database_threads

CONTRACT_CODES = {
    -32700, -32600, -32601, -32602, -32603,
    -32001, -32003, -32004, -32009, -32010, -32013, -32029,
}
DOCUMENTED_CLOSE_CODES = {1001, 1009, 4401, 4408, 4429}
REAL_METHODS = ["initialize", *METHOD_ROLES]
POOL = ["fz-a", "fz-b", "fz-c"]
HOSTILE_SESSION_IDS = [
    "", ".", "..", "../x", "../fz-a", "a/b", "/etc/passwd", ".hidden", "-x", "_x", "x\u0000y",
    "x" * 129, "fz-a\n", " fz-a", "fz-a.db", "FZ-A", "\u00e9t\u00e9", "a\\b", "CON", "x" * 128,
]
SQL_POOL = [
    "SELECT 1",
    "SELECT * FROM events",
    "SELECT seq, type, data FROM events ORDER BY seq DESC LIMIT 3",
    "CREATE TABLE IF NOT EXISTS t(a, b)",
    "INSERT INTO t VALUES (?, ?)",
    "INSERT INTO t(a) VALUES (:a)",
    "SELECT * FROM t",
    "UPDATE t SET b = a",
    "DELETE FROM t",
    "DROP TABLE IF EXISTS t",
    "CREATE TABLE IF NOT EXISTS u(a UNIQUE)",
    "INSERT INTO u VALUES (?)",
    "SELECT * FROM ax_events",
    "SELECT value FROM ax_meta",
    "INSERT INTO ax_events (seq, ts, type, raw) VALUES (NULL, 0, 'x', '{}')",
    "UPDATE ax_meta SET value = 'x'",
    "DELETE FROM ax_events WHERE seq = 1",
    "DROP VIEW events",
    "CREATE VIEW IF NOT EXISTS v AS SELECT * FROM ax_events",
    "SELECT * FROM v",
    "CREATE TRIGGER IF NOT EXISTS tr AFTER INSERT ON t BEGIN "
    "INSERT INTO ax_events (seq, ts, type, raw) VALUES (NULL, 0, 'x', '{}'); END",
    "CREATE TRIGGER IF NOT EXISTS tr2 AFTER DELETE ON t BEGIN DELETE FROM ax_meta; END",
    "PRAGMA journal_mode=DELETE",
    "PRAGMA writable_schema=1",
    "PRAGMA table_info(t)",
    "ATTACH DATABASE ':memory:' AS m",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT x",
    "RELEASE client",
    "SELECT load_extension('x')",
    "SELEC 1",
    "SELECT ?",
    "WITH events AS (SELECT key FROM ax_meta) SELECT * FROM events",
]
JUNK_FRAMES = [
    "", "{", "}", "[]", "[{}]", "null", "1", '"ping"', "{}", '{"jsonrpc": "2.0"}',
    '[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', '{"jsonrpc": "2.0", "id": 1,',
    "\u0000", "NaN", '{"id": 1e400}',
]

# --- strategies --------------------------------------------------------------------------

small_ints = st.integers(min_value=-3, max_value=60)
# orjson reads integers up to 2**64-1; beyond 64 bits it makes floats, so stay inside.
wide_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
scalars = (
    st.none() | st.booleans() | small_ints | wide_ints
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
session_ids = st.sampled_from(POOL) | st.sampled_from(HOSTILE_SESSION_IDS) | json_values
event_types = st.sampled_from([
    "user.message", "note", "ci.build_failed", "permission.response", "agent.message",
    "session.created", "state.changed", "plan", "permission.request", "hub.x", "Note", "",
    "a" * 65, "a..b",
]) | st.text(max_size=10) | json_values
sql_texts = st.sampled_from(SQL_POOL) | st.text(max_size=30) | json_values
sql_params = st.lists(scalars, max_size=3) | st.dictionaries(
    st.sampled_from(["a", "b"]), scalars, max_size=2) | json_values
statements = st.lists(
    st.fixed_dictionaries({"sql": sql_texts}, optional={"params": sql_params}) | json_values,
    max_size=3,
) | json_values
event_data = st.dictionaries(
    st.sampled_from(["text", "requestId", "optionId", "outcome", "state"]) | st.text(max_size=6),
    json_values, max_size=4,
) | json_values
PARAM_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "sessionId": session_ids,
    "newSessionId": session_ids,
    "afterSeq": small_ints | wide_ints | json_values,
    "beforeSeq": small_ints | wide_ints | json_values,
    "atSeq": small_ints | json_values,
    "limit": small_ints | st.sampled_from([0, 1000, 1001, 5000, 5001, 10000, 10001]) | json_values,
    "epoch": st.text(max_size=16) | json_values,
    "type": event_types,
    "data": event_data,
    "idempotencyKey": st.sampled_from(["k1", "k2", "", "k" * 129]) | json_values,
    "state": statements,
    "statements": statements,
    "sql": sql_texts,
    "params": sql_params,
    "types": st.lists(st.sampled_from(["*", "user.*", "[", "?", "note"]) | st.text(max_size=5),
                      max_size=3) | json_values,
    "title": st.text(max_size=20) | json_values,
    "metadata": json_values,
    "agent": st.sampled_from(["echo", "demo", "no-such-agent"]) | json_values,
    "cursor": st.text(max_size=20) | json_values,
    "protocolVersion": st.sampled_from([1, 2]) | json_values,
    "clientInfo": json_values,
    "token": json_values,
}
params_values = (
    st.fixed_dictionaries({}, optional=PARAM_STRATEGIES)
    | st.dictionaries(st.text(max_size=10), json_values, max_size=4)
    | json_values
)
# Values that usually pass validation, so that requests reach the store and the SQL guard.
small_lists = st.lists(small_ints | st.text(max_size=5), max_size=2)
plausible_statements = st.lists(
    st.fixed_dictionaries({"sql": st.sampled_from(SQL_POOL)}, optional={"params": small_lists}),
    min_size=1, max_size=3,
)
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "sessionId": st.sampled_from(POOL),
    "newSessionId": st.sampled_from([*POOL, "fz-d", "fz-e"]),
    "afterSeq": small_ints,
    "beforeSeq": small_ints,
    "atSeq": small_ints,
    "limit": st.integers(min_value=1, max_value=50),
    "epoch": st.text(max_size=16),
    "type": st.sampled_from(["note", "ci.build_failed", "user.message", "permission.response",
                             "plan", "agent.x"]),
    "data": st.fixed_dictionaries({"text": st.text(max_size=20)}, optional={
        "requestId": st.sampled_from(["r1", "r2"]), "optionId": st.sampled_from(["allow"]),
        "n": small_ints, "state": json_values}),
    "idempotencyKey": st.sampled_from(["k1", "k2", "k3"]),
    "state": plausible_statements,
    "statements": plausible_statements,
    "sql": st.sampled_from(SQL_POOL),
    "params": small_lists,
    "types": st.lists(st.sampled_from(["*", "user.*", "note", "state.*", "[", "?"]), max_size=2),
    "title": st.text(max_size=20),
    "metadata": st.dictionaries(st.text(max_size=5), scalars, max_size=2),
    "agent": st.sampled_from(["echo", "demo"]),
    "cursor": st.text(max_size=20),
    "protocolVersion": st.just(1),
    "clientInfo": st.fixed_dictionaries({"name": st.text(max_size=5), "kind": st.text(max_size=5)}),
    "token": st.text(max_size=5),
}
REQUIRED: dict[str, list[str]] = {
    "initialize": ["protocolVersion", "clientInfo"],
    "session/create": ["newSessionId"],
    "session/publish": ["sessionId", "type", "data"],
    "state/exec": ["sessionId", "statements"],
    "state/query": ["sessionId", "sql"],
    **{m: ["sessionId"] for m in (
        "session/get", "session/delete", "session/subscribe", "session/unsubscribe",
        "session/history", "session/cancel", "session/suspend", "session/fork")},
}
# The methods that reach the store and the SQL guard come up more often.
BUSY_METHODS = [*REAL_METHODS, *["session/create", "session/publish", "state/exec",
                                 "state/query", "session/history", "session/fork"] * 2]
methods = st.sampled_from([
    "", "PING", "ping ", "session", "session/", "session/../ping", "rpc.discover",
    "$/cancelRequest", "state/drop", "hub/stop",
]) | st.text(max_size=12)


@st.composite
def plausible_params(draw: st.DrawFn, method: str) -> dict[str, Any]:
    """The method's required params with plausible values, and up to two other params."""
    params = {name: draw(PLAUSIBLE[name]) for name in REQUIRED.get(method, [])}
    if method == "session/create":  # new ids come from the pool, so creates also conflict
        params["sessionId"] = params.pop("newSessionId")
    for name in draw(st.lists(st.sampled_from(sorted(PARAM_STRATEGIES)), max_size=2,
                              unique=True)):
        params[name] = draw(PLAUSIBLE[name] if draw(st.booleans()) else PARAM_STRATEGIES[name])
    return params


class _Fresh:
    """The placeholder for a request id; the runner puts a fresh, unique id in its place."""

    def __repr__(self) -> str:
        return "FRESH"


FRESH = _Fresh()


@dataclass(frozen=True)
class Frame:
    """One frame to send: a JSON value (``FRESH`` ids filled in at send time), text or bytes."""

    value: Any = None
    text: str | None = None
    binary: bytes | None = None


@st.composite
def requests(draw: st.DrawFn) -> Frame:
    """A request object: mostly well formed, sometimes broken in one place."""
    method = draw(st.sampled_from([*BUSY_METHODS, "?", "?"]))
    if method == "?":
        method = draw(methods)
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": FRESH, "method": method}
    shape = draw(st.sampled_from(["plausible"] * 3 + ["random", "absent"]))
    if shape == "plausible" and isinstance(method, str):
        msg["params"] = draw(plausible_params(method))
    elif shape == "random":
        msg["params"] = draw(params_values)
    flaw = draw(st.sampled_from(["none"] * 6 + ["id", "no-id", "jsonrpc", "method"]))
    if flaw == "id":
        msg["id"] = draw(st.none() | st.booleans() | st.floats(allow_nan=False)
                         | st.lists(scalars, max_size=2) | st.dictionaries(st.text(max_size=3),
                                                                           scalars, max_size=2))
    elif flaw == "no-id":
        del msg["id"]
    elif flaw == "jsonrpc":
        if draw(st.booleans()):
            del msg["jsonrpc"]
        else:
            msg["jsonrpc"] = draw(json_values)
    elif flaw == "method":
        msg["method"] = draw(json_values)
    return Frame(value=msg)


FRAME_KINDS: dict[str, st.SearchStrategy[Frame]] = {
    "request": requests(),
    "junk": st.sampled_from(JUNK_FRAMES).map(lambda t: Frame(text=t)),
    "text": st.text(max_size=40).map(lambda t: Frame(text=t)),
    "binary": st.binary(max_size=40).map(lambda b: Frame(binary=b)),
    "object": st.dictionaries(
        st.sampled_from(["jsonrpc", "id", "method", "params"]) | st.text(max_size=6),
        json_values, max_size=4,
    ).map(lambda d: Frame(value=d)),
}
# Mostly requests (one_of would pick each kind about equally often).
frames = st.sampled_from(["request"] * 8 + ["junk", "text", "binary", "object"]).flatmap(
    FRAME_KINDS.__getitem__
)


# --- the runner --------------------------------------------------------------------------


def expectation(payload: str | bytes) -> str:
    """What the contract promises for a frame: "id", "null", "maybe-null" or "none".

    "id": exactly one response with the frame's id. "null": one response with id null (not
    JSON, binary, not an object, an id of the wrong type, or no id and no string method).
    "none": a well-formed notification, which gets no answer. "maybe-null": a notification
    that is otherwise malformed, which the contract leaves open.
    """
    if isinstance(payload, bytes):
        return "null"
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "null"
    if not isinstance(msg, dict):
        return "null"
    if "id" in msg:
        rid = msg["id"]
        return "null" if isinstance(rid, bool) or not isinstance(rid, int | str) else "id"
    if not isinstance(msg.get("method"), str):
        return "null"
    return "none" if msg.get("jsonrpc") == "2.0" else "maybe-null"


def check_response(msg: dict[str, Any]) -> None:
    """A response is a result or an error with a contract code and a non-empty message."""
    assert msg.get("jsonrpc") == "2.0", msg
    assert ("result" in msg) != ("error" in msg), msg
    if "error" in msg:
        err = msg["error"]
        assert isinstance(err, dict), msg
        code = err.get("code")
        assert isinstance(code, int) and not isinstance(code, bool), msg
        assert code in CONTRACT_CODES, msg
        assert isinstance(err.get("message"), str) and err["message"].strip(), msg


@dataclass
class Fuzzer:
    """Sends each example's frames on one connection and checks what comes back."""

    hub: Hub
    raw_factory: RawFactory
    raw: Raw | None = None
    counter: int = 0
    answered: set[Any] = field(default_factory=set)
    closes: list[int | None] = field(default_factory=list)
    examples: int = 0

    async def connection(self) -> Raw:
        """The live connection, opened (and initialized) again after a documented close."""
        if self.raw is None:
            self.raw = await self.raw_factory(target=self.hub)
        return self.raw

    def fresh_id(self) -> int | str:
        """A request id never used before on this hub (integers and strings alternate)."""
        self.counter += 1
        return 10_000 + self.counter if self.counter % 2 else f"fz-{self.counter}-\u00e9\"\\"

    def render(self, frame: Frame) -> str | bytes:
        """The frame's payload, with every FRESH (or reused valid) id made unique."""
        if frame.binary is not None:
            return frame.binary
        if frame.text is not None:
            if expectation(frame.text) != "id":
                return frame.text
            msg = orjson.loads(frame.text)
        else:
            msg = frame.value
        if isinstance(msg, dict) and "id" in msg:
            rid = msg["id"]
            if rid is FRESH or (isinstance(rid, int | str) and not isinstance(rid, bool)):
                msg = {**msg, "id": self.fresh_id()}
        return orjson.dumps(msg).decode()

    async def run(self, batch: list[Frame]) -> None:
        """Send ``batch`` and a sentinel ping; check every answer against the contract."""
        self.examples += 1
        raw = await self.connection()
        expected: set[Any] = set()
        null_min = null_max = 0
        try:
            for frame in batch:
                payload = self.render(frame)
                kind = expectation(payload)
                if kind == "id":
                    expected.add(orjson.loads(payload)["id"])
                elif kind == "null":
                    null_min += 1
                    null_max += 1
                elif kind == "maybe-null":
                    null_max += 1
                await raw.ws.send(payload)
            sentinel = f"sentinel-{self.examples}"
            await raw.ws.send(orjson.dumps(
                {"jsonrpc": "2.0", "id": sentinel, "method": "ping"}).decode())
            expected.add(sentinel)
            nulls = await self.collect(raw, expected)
        except ConnectionClosed:
            code = raw.ws.close_code
            self.closes.append(code)
            self.raw = None
            assert code in DOCUMENTED_CLOSE_CODES, f"connection closed with {code}"
            return
        except BaseException:
            # Answers still in flight must not leak into the next (shrinking) example.
            self.raw = None
            await raw.ws.close()
            raise
        # The null-id errors are queued before the sentinel's answer, so all are counted.
        assert null_min <= nulls <= null_max, (nulls, null_min, null_max, batch)

    async def collect(self, raw: Raw, expected: set[Any]) -> int:
        """Read until every expected id is answered; return the number of id-null errors."""
        waiting = set(expected)
        nulls = 0
        async with asyncio.timeout(20):
            while waiting:
                msg = orjson.loads(await raw.ws.recv())
                assert isinstance(msg, dict), msg
                if "id" not in msg:
                    assert isinstance(msg.get("method"), str), msg
                    continue
                check_response(msg)
                rid = msg["id"]
                if rid is None:
                    nulls += 1
                    continue
                assert rid not in self.answered, f"a second response for id {rid!r}"
                assert rid in waiting, f"a response for id {rid!r}, which was not sent now"
                self.answered.add(rid)
                waiting.discard(rid)
        return nulls


async def check_hub_consistent(hub: Hub, raw_factory: RawFactory) -> None:
    """A new connection answers ping; every session file is sound and its log dense."""
    fresh = await raw_factory(target=hub)
    assert await fresh.call("ping") == {}
    sessions: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    while True:
        page = await fresh.call("session/list", params)
        sessions += page["sessions"]
        if "nextCursor" not in page:
            break
        params = {"limit": 1000, "cursor": page["nextCursor"]}
    listed = {s["sessionId"] for s in sessions}
    assert all(SESSION_ID_RE.fullmatch(sid) for sid in listed)
    for sid in sorted(listed):
        head = (await fresh.call("session/get", {"sessionId": sid}))["session"]["headSeq"]
        seqs: list[int] = []
        while len(seqs) < head:
            page = await fresh.call("session/history", {
                "sessionId": sid, "afterSeq": seqs[-1] if seqs else 0, "limit": 5000})
            assert page["events"], f"{sid}: history stops at {len(seqs)} of {head}"
            seqs += [e["seq"] for e in page["events"]]
        assert seqs == list(range(1, head + 1)), f"{sid}: events are not dense"
        assert (await fresh.call("session/history", {"sessionId": sid, "afterSeq": head}))[
            "events"] == []
    data_dir = hub.config.hub.data_dir
    files = await asyncio.to_thread(inspect_files, data_dir)
    assert set(files) == listed, (sorted(files), sorted(listed))
    for sid, (integrity, count, low, high) in files.items():
        assert integrity == "ok", (sid, integrity)
        head = next(s["headSeq"] for s in sessions if s["sessionId"] == sid)
        assert (count, low, high) == (head, 1, head) or (head == 0 and count == 0), sid
    for path in data_dir.rglob("*"):
        rel = path.relative_to(data_dir)
        assert rel.parts[0] in {"sessions", "logs", "hub.db", "hub.db-wal", "hub.db-shm",
                                "hub.lock", "local-token", "local-url", "hub.sock",
                                "workspaces"}, rel
        if rel.parts[0] == "sessions" and len(rel.parts) > 1:
            assert len(rel.parts) == 2, rel
            stem = rel.name.split(".db")[0]
            assert SESSION_ID_RE.fullmatch(stem) and rel.name in {
                f"{stem}.db", f"{stem}.db-wal", f"{stem}.db-shm"}, rel


def inspect_files(data_dir: Path) -> dict[str, tuple[str, int, int, int]]:
    """For each session file: integrity_check, and count, min and max of its seqs."""
    out: dict[str, tuple[str, int, int, int]] = {}
    for path in sorted((data_dir / "sessions").glob("*.db")):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
            count, low, high = con.execute(
                "SELECT count(*), min(seq), max(seq) FROM ax_events").fetchone()
        except sqlite3.Error as exc:  # e.g. an empty file that is no session at all
            integrity, count, low, high = f"not a session file: {exc}", 0, 0, 0
        finally:
            con.close()
        out[path.name[:-3]] = (integrity, count, low or 0, high or 0)
    return out


async def test_random_messages_keep_the_hub_consistent(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """Random frames get exactly one well-formed answer each and leave the hub consistent.

    The pattern: one hub and one connection live on the test's event loop for the whole
    run. Hypothesis drives ``one_example`` (an ordinary ``@given`` function) in a worker
    thread, and each example hands its frames to the loop with
    ``run_coroutine_threadsafe`` and waits. So Hypothesis keeps its generation and
    shrinking, the hub keeps running between examples, and once Hypothesis is done the
    test checks the end state: ping on a new connection, ``PRAGMA integrity_check`` on
    every session file, every session's events dense from seq 1 to ``headSeq``, and no
    session database left open once the hub has stopped.
    """
    before = database_threads()
    hub = await hub_factory(durability="normal", query_timeout=1.0)
    try:
        await fuzz(hub, raw_factory)
    finally:
        await asyncio.wait_for(hub.stop(), 10)
        leaked = await close_leaked_database_threads(before)
    assert leaked == 0, f"{leaked} session database connection(s) still open after stop()"


async def fuzz(hub: Hub, raw_factory: RawFactory) -> None:
    """Drive Hypothesis against ``hub`` (see the test's docstring), then check the end state."""
    setup = await raw_factory(target=hub)
    for sid in POOL[:2]:
        await setup.call("session/create", {"sessionId": sid})
        await setup.call("state/exec", {"sessionId": sid, "statements": [
            {"sql": "CREATE TABLE t(a, b)"}, {"sql": "INSERT INTO t VALUES (1, 'one')"}]})
    fuzzer = Fuzzer(hub, raw_factory)
    loop = asyncio.get_running_loop()

    @settings(max_examples=300, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(st.lists(frames, min_size=1, max_size=8))
    def one_example(batch: list[Frame]) -> None:
        asyncio.run_coroutine_threadsafe(fuzzer.run(batch), loop).result(timeout=60)

    await asyncio.to_thread(one_example)
    assert fuzzer.examples >= 300
    assert all(code in DOCUMENTED_CLOSE_CODES for code in fuzzer.closes)
    await check_hub_consistent(hub, raw_factory)
