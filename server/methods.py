"""The JSON-RPC methods of protocol.md, one function each (``initialize`` is in dispatch.py).

A handler gets the :class:`HubContext` (what handlers may reach: never the hub itself),
the connection and the request's :class:`Params`. It returns an awaitable of the result:

- a coroutine (an ``async def`` handler), which the dispatcher runs in a task;
- or a future, which the dispatcher answers from once it is done, with no task: a write
  returns its commit's future (:func:`submit`), so a publish to an open session costs no
  task and no coroutine, and its ack goes out from the commit's done-callback.

The result may be an :class:`AfterReply` when something must happen once the response is
queued. A handler raises a :class:`ProtocolError` for anything the client got wrong.
Roles are checked by the dispatcher (:func:`server.requests.check_role`) before a handler
runs; each method's response frame is made by its ``encode`` (by default
:func:`protocol.response_frame`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from server import protocol
from server.caller import Caller
from server.config import AgentConfig
from server.connection import ClientConnection
from server.protocol import (
    CannotResume,
    Fragment,
    InvalidParams,
    Overloaded,
    Params,
    ProtocolError,
    TooLarge,
)
from server.registry import SessionRegistry
from server.sessions import Session, Sink, Subscription
from server.watch import WatchBroadcaster
from server.writes import CommitResult, PendingEvent


class AgentControl(Protocol):
    """What handlers may ask of the supervisor."""

    async def cancel(self, session: Session) -> None:
        """Cancel the session's running turn and its open permission requests, if any."""

    async def suspend(self, session: Session) -> None:
        """Stop the session's agent process now (:class:`Conflict` while a turn runs)."""


@dataclass(frozen=True, slots=True)
class HubContext:
    """Everything a handler may reach."""

    sessions: SessionRegistry
    agents: Mapping[str, AgentConfig]
    agent_control: AgentControl
    watch: WatchBroadcaster
    max_event_bytes: int  # hub.max_event_bytes
    # Writes of a connection to a session waiting for it to open, in the order they came
    # (see submit): while an entry exists, later writes of that connection queue behind it.
    waiting: dict[tuple[Caller, str], deque[PendingEvent]] = field(
        default_factory=dict)


@dataclass(frozen=True, slots=True)
class AfterReply:
    """A result, and what to do once its response is queued (before anything else)."""

    result: Any
    then: Callable[[], None]


Handler = Callable[[HubContext, Caller, Params], Awaitable[Any]]
Encoder = Callable[[Any, Any], bytes]  # (request id, result) -> the response frame
Shape = Callable[[Any], Any]  # result -> the JSON value answered (an HTTP response's body)
H = TypeVar("H", bound=Handler)


def _as_is(result: Any) -> Any:
    return result


@dataclass(frozen=True, slots=True)
class Method:
    """A registered method: its handler, the JSON value its result stands for (``shape``),
    and how its result becomes the response frame (``encode``, a websocket fast path)."""

    handler: Handler
    encode: Encoder = protocol.response_frame
    shape: Shape = _as_is


METHODS: dict[str, Method] = {}


def method(name: str, encode: Encoder | None = None, shape: Shape = _as_is) -> Callable[[H], H]:
    """Register a handler under its JSON-RPC method name; by default its response frame
    carries ``shape(result)``."""
    def register(fn: H) -> H:
        frame = encode or (protocol.response_frame if shape is _as_is
                           else lambda request_id, result: protocol.response_frame(
                               request_id, shape(result)))
        METHODS[name] = Method(fn, frame, shape)
        return fn
    return register


@method("ping")
async def ping(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """Liveness check."""
    return {}


@method("agents/list")
async def agents_list(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """The configured agents."""
    return {"agents": [
        {"id": a.id, "description": a.description, "protocol": a.protocol}
        for a in ctx.agents.values()
    ]}


@method("session/create")
async def session_create(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """Create a session (``session.created`` is its seq 1)."""
    sid = p.session_id() if p.get("sessionId") is not None else None
    metadata = p.mapping("metadata", {})
    protocol.check_depth(metadata, "metadata")
    info = await ctx.sessions.create(
        conn.source, sid, agent=p.string("agent", None), title=p.string("title", "", max_len=1000),
        metadata=metadata,
    )
    return {"session": info.to_json()}


@method("session/get")
async def session_get(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """A session's description."""
    return {"session": (await ctx.sessions.info(p.session_id())).to_json()}


@method("session/list")
async def session_list(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """Sessions, most recently updated first, with cursor paging."""
    infos, cursor = await ctx.sessions.list(
        p.integer("limit", 100, lo=1, hi=1000), p.string("cursor", None), p.string("agent", None)
    )
    result: dict[str, Any] = {"sessions": [i.to_json() for i in infos]}
    if cursor is not None:
        result["nextCursor"] = cursor
    return result


@method("session/delete")
async def session_delete(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """Delete a session and its file."""
    await ctx.sessions.delete(p.session_id())
    return {}


@method("session/subscribe")
async def session_subscribe(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """Backlog after ``afterSeq``, then live events; see "Subscribe and resume"."""
    assert isinstance(conn, ClientConnection)  # the websocket: its connection is the sink
    sub = await subscribe(ctx, conn, conn, p.session_id(), p.integer("afterSeq", 0, lo=0),
                          p.string("epoch", None))
    info = sub.session.info
    return AfterReply({"sessionId": info.session_id, "epoch": info.epoch,
                       "headSeq": info.head_seq}, sub.start)


async def subscribe(
    ctx: HubContext, caller: Caller, sink: Sink, sid: str, after: int, epoch: str | None,
) -> Subscription:
    """Check a subscription to ``sid`` after seq ``after`` (of ``epoch``, if given) and make
    it, replacing ``caller``'s earlier one to that session; ``start()`` it to send.

    Raises -32010 for another epoch or a cursor ahead of the head, -32029 when ``caller``
    has too many subscriptions (:func:`check_subscription_room`).
    """
    check_subscription_room(ctx, caller, sid)
    session = await ctx.sessions.feed(sid)
    check_subscription_room(ctx, caller, sid)  # others may have been added meanwhile
    info = session.info
    if epoch is not None and epoch != info.epoch:
        raise CannotResume(
            f"session {sid} is a different incarnation (epoch {info.epoch}, not {epoch});"
            " drop the cached view and subscribe from 0",
            {"epoch": info.epoch, "headSeq": info.head_seq},
        )
    if after > info.head_seq:
        raise CannotResume(
            f"afterSeq {after} is ahead of the head of session {sid} ({info.head_seq})",
            {"epoch": info.epoch, "headSeq": info.head_seq},
        )
    old = caller.subscriptions.pop(sid, None)
    if old is not None:
        old.stop()
    sub = Subscription(session, sink, after)
    caller.subscriptions[sid] = sub
    return sub


def check_subscription_room(ctx: HubContext, conn: Caller, sid: str) -> None:
    """-32029 when ``conn`` is subscribed to ``hub.max_connection_sessions`` other sessions:
    a subscribed session is never closed, so this bounds the files one connection pins."""
    limit = ctx.sessions.config.max_connection_sessions
    if sid not in conn.subscriptions and len(conn.subscriptions) >= limit:
        ctx.sessions.metrics.overloaded += 1
        raise Overloaded(f"this connection is subscribed to {limit} sessions"
                         " (hub.max_connection_sessions); unsubscribe from some first")


@method("session/unsubscribe")
async def session_unsubscribe(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """Stop a subscription (a no-op if there is none)."""
    sid = p.session_id()
    sub = conn.subscriptions.pop(sid, None)
    if sub is not None:
        sub.stop()
    else:
        await ctx.sessions.info(sid)
    return {}


MAX_HISTORY_TYPES = 100  # patterns in one session/history request
MAX_TYPE_PATTERN_LEN = 128  # a type is at most 64 characters; a pattern may add stars


def type_patterns(p: Params) -> list[str] | None:
    """The ``types`` param: ``None``, or a list of type patterns (checked)."""
    types = p.get("types")
    if types is not None and (
        not isinstance(types, list) or len(types) > MAX_HISTORY_TYPES
        or not all(isinstance(t, str) and 0 < len(t) <= MAX_TYPE_PATTERN_LEN for t in types)
    ):
        raise InvalidParams(
            f"types must be a list of at most {MAX_HISTORY_TYPES} patterns, each a string of 1"
            f" to {MAX_TYPE_PATTERN_LEN} characters", {"param": "types"})
    return types


def check_event_size(ctx: HubContext, *parts: bytes | None) -> None:
    """Refuse event data over ``hub.max_event_bytes``."""
    size = sum(len(x) for x in parts if x)
    limit = ctx.max_event_bytes
    if size > limit:
        raise TooLarge(
            f"event data is {size} bytes; the limit is {limit} (hub.max_event_bytes)",
            {"size": size, "limit": limit},
        )


def submit(
    ctx: HubContext, conn: Caller, sid: str, item: PendingEvent
) -> asyncio.Future[CommitResult]:
    """Submit ``conn``'s write to session ``sid`` and return its commit's future.

    Every write of a connection to a session takes this one path, so they are committed in
    the order their frames arrived (protocol.md §6.1). When the session is open the write
    is queued on it at once (no task, no coroutine). When it is not, the write waits in the
    connection's queue for that session while one task opens it, and so does every later
    write of the connection to it (even once the session is open), until the task hands
    the whole queue to the session in order.
    """
    item.origin = conn
    key = (conn, sid)
    waiting = ctx.waiting.get(key)
    if waiting is not None:
        waiting.append(item)
        return item.future
    session = ctx.sessions.get_open(sid)
    if session is not None:
        return session.submit(item)
    ctx.waiting[key] = deque([item])
    conn.tasks.spawn(_open_and_submit(ctx, key), name=f"open {sid}")
    return item.future


async def _open_and_submit(ctx: HubContext, key: tuple[Caller, str]) -> None:
    """Open the session, then submit the writes waiting for it, in order, with no await
    between (so no later write can get ahead of them)."""
    try:
        session = await ctx.sessions.get(key[1])
    except BaseException as exc:
        _fail_all(ctx.waiting.pop(key), exc)
        if not isinstance(exc, Exception):
            raise
        return
    queued_at = time.perf_counter()  # the commit-time metric leaves out the opening
    for item in ctx.waiting.pop(key):
        item.queued_at = queued_at
        try:
            session.submit(item)
        except ProtocolError as exc:  # too many queued, or closed meanwhile: this one fails
            item.future.set_exception(exc)


def _fail_all(items: Iterable[PendingEvent], error: BaseException) -> None:
    """End the futures of writes that will never be submitted: with ``error``, or cancelled
    (the connection went away while the session opened)."""
    for item in items:
        if item.future.done():
            continue
        if isinstance(error, Exception):
            item.future.set_exception(error)
        else:
            item.future.cancel()


def build_publish(ctx: HubContext, conn: Caller, p: Params) -> tuple[str, PendingEvent]:
    """Check a ``session/publish`` and make its event, with no I/O and no await: the
    session id and the :class:`PendingEvent` to submit. Raises what the client got wrong."""
    sid = p.session_id()
    event_type = protocol.check_event_type(p.get("type"), client=True)
    data = p.mapping("data", {})
    if event_type == "user.message" and not isinstance(data.get("text"), str):
        raise InvalidParams("a user.message needs data.text, a string", {"param": "data.text"})
    key = p.string("idempotencyKey", None, max_len=protocol.MAX_IDEMPOTENCY_KEY_LEN)
    on_behalf_of = p.get("onBehalfOf")
    if on_behalf_of is not None:  # a bridge publishing for a person: keep who it is
        on_behalf_of = protocol.check_display_name(on_behalf_of)
    source = conn.source_json(on_behalf_of)
    statements = None
    recorded = None
    if p.get("state") is not None:
        statements = protocol.parse_statements(p.get("state"), "state")
        recorded = protocol.dumps_stored(p.get("state"), "state")
    encoded = protocol.dumps_stored(data, "data")
    check_event_size(ctx, encoded, recorded)
    future: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
    return sid, PendingEvent(event_type, source, encoded, future, idempotency_key=key,
                             statements=statements, recorded_statements=recorded)


def publish_response(request_id: Any, result: CommitResult) -> bytes:
    """The response to a ``session/publish`` once its event is committed."""
    return protocol.publish_response_frame(request_id, result.seq, result.ts, result.duplicate)


def published(result: CommitResult) -> dict[str, Any]:
    """What a ``session/publish`` answers (the same as :func:`publish_response` frames)."""
    return {"seq": result.seq, "ts": result.ts, "duplicate": result.duplicate}


@method("session/publish", publish_response, published)
def session_publish(ctx: HubContext, conn: Caller, p: Params) -> Awaitable[CommitResult]:
    """Append a client event; the response comes after the durable commit.

    Not a coroutine: the event is built and, when its session is open, submitted before
    this returns (see :func:`submit`).
    """
    sid, item = build_publish(ctx, conn, p)
    return submit(ctx, conn, sid, item)


@method("session/history")
async def session_history(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """A window of stored events, always ascending."""
    sid = p.session_id()
    after = p.integer("afterSeq", None, lo=0)
    before = p.integer("beforeSeq", None, lo=0)
    limit = p.integer("limit", 200, lo=1, hi=5000)
    types = type_patterns(p)
    if after is None and before is None:
        after = 0
    session = await ctx.sessions.get(sid)
    raws = await session.db.history(after, before, limit, types)
    return {"events": [Fragment(r) for r in raws], "headSeq": session.info.head_seq}


@method("session/cancel")
async def session_cancel(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """Cancel the session's running turn and its open permission requests, if any."""
    await ctx.agent_control.cancel(await ctx.sessions.get(p.session_id()))
    return {}


@method("session/suspend")
async def session_suspend(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """Stop the session's agent process now (-32009 while a turn runs)."""
    await ctx.agent_control.suspend(await ctx.sessions.get(p.session_id()))
    return {}


@method("session/fork")
async def session_fork(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """A new session with the events up to ``atSeq`` and the state they built."""
    new_id = p.session_id("newSessionId") if p.get("newSessionId") is not None else None
    info = await ctx.sessions.fork(
        conn.source, p.session_id(), p.integer("atSeq", None, lo=1), new_id,
        p.string("title", None, max_len=1000), p.string("agent", None),
    )
    return {"session": info.to_json()}


@method("session/import")
async def session_import(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """A new session (new epoch) from recorded events, e.g. an ``axtui export`` file."""
    new_id = p.session_id("newSessionId") if p.get("newSessionId") is not None else None
    events = p.get("events")
    if not isinstance(events, list):
        raise InvalidParams("events must be a list of events", {"param": "events"})
    metadata = p.mapping("metadata", {})
    protocol.check_depth(metadata, "metadata")
    for index, event in enumerate(events):  # an event's data nests one level below it
        try:
            protocol.check_depth(event, "events", limit=protocol.MAX_DEPTH + 1)
        except InvalidParams as exc:
            raise InvalidParams(f"events[{index}]: {exc.message}",
                                {"param": "events", "index": index}) from None
    info = await ctx.sessions.import_events(
        new_id, p.string("title", "", max_len=1000), p.string("agent", None), metadata, events,
    )
    return {"session": info.to_json()}


@method("sessions/watch")
async def sessions_watch(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """Send ``session/updated`` notifications to this connection from now on."""
    assert isinstance(conn, ClientConnection)  # a websocket's: HTTP has no such stream
    ctx.watch.watch(conn)
    return {}


@method("state/query")
async def state_query(ctx: HubContext, conn: Caller, p: Params) -> Any:
    """Run read-only SQL on the session's state."""
    sid = p.session_id()
    sql = p.string("sql")
    params = protocol.check_sql_params(p.get("params"))
    limit = p.integer("limit", 1000, lo=1, hi=10000)
    session = await ctx.sessions.get(sid)
    columns, rows, truncated = await session.db.query_encoded(sql, params, limit)
    return {"columns": columns, "rows": Fragment(rows), "truncated": truncated}


def state_executed(result: CommitResult) -> dict[str, Any]:
    """What a ``state/exec`` answers once its ``state.changed`` event is committed."""
    return {"seq": result.seq, "changes": result.changes}


@method("state/exec", shape=state_executed)
def state_exec(ctx: HubContext, conn: Caller, p: Params) -> Awaitable[CommitResult]:
    """Run statements atomically; recorded as one ``state.changed`` event.

    Not a coroutine, like ``session/publish``: a connection's publishes and state changes
    to a session go through :func:`submit` in the order they arrive.
    """
    sid = p.session_id()
    raw_statements = p.get("statements")
    statements = protocol.parse_statements(raw_statements, "statements")
    recorded = protocol.dumps_stored(raw_statements, "statements")
    check_event_size(ctx, recorded)
    future: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
    return submit(ctx, conn, sid, PendingEvent(
        "state.changed", conn.source_json(), None, future,
        statements=statements, recorded_statements=recorded,
    ))
