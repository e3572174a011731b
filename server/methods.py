"""The JSON-RPC methods of protocol.md, one function each (``initialize`` is in dispatch.py).

A handler gets the :class:`HubContext` (what handlers may reach: never the hub itself),
the connection and the request's :class:`Params`. It returns an awaitable of the result:

- a coroutine (an ``async def`` handler), which the dispatcher runs in a task;
- or a future, which the dispatcher answers from once it is done, with no task: a write to
  an open session returns its commit's future (:func:`submit`), so a publish costs no task
  and no coroutine, and its ack goes out from the commit's done-callback.

The result may be an :class:`AfterReply` when something must happen once the response is
queued. A handler raises a :class:`ProtocolError` for anything the client got wrong.
Roles are checked by the dispatcher (:func:`server.requests.check_role`) before a handler
runs; each method's response frame is made by its ``encode`` (by default
:func:`protocol.response_frame`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson

from server import protocol
from server.config import AgentConfig
from server.connection import ClientConnection
from server.protocol import (
    CannotResume,
    Fragment,
    InvalidParams,
    Params,
    TooLarge,
)
from server.registry import SessionRegistry
from server.sessiondb import CommitResult, PendingEvent
from server.sessions import Session, Subscription
from server.watch import WatchBroadcaster


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


@dataclass(frozen=True, slots=True)
class AfterReply:
    """A result, and what to do once its response is queued (before anything else)."""

    result: Any
    then: Callable[[], None]


Handler = Callable[[HubContext, ClientConnection, Params], Awaitable[Any]]
Encoder = Callable[[Any, Any], bytes]  # (request id, result) -> the response frame
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True, slots=True)
class Method:
    """A registered method: its handler, and how its result becomes the response frame."""

    handler: Handler
    encode: Encoder = protocol.response_frame


METHODS: dict[str, Method] = {}


def method(name: str, encode: Encoder = protocol.response_frame) -> Callable[[H], H]:
    """Register a handler under its JSON-RPC method name."""
    def register(fn: H) -> H:
        METHODS[name] = Method(fn, encode)
        return fn
    return register


@method("ping")
async def ping(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """Liveness check."""
    return {}


@method("agents/list")
async def agents_list(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """The configured agents."""
    return {"agents": [
        {"id": a.id, "description": a.description, "protocol": a.protocol}
        for a in ctx.agents.values()
    ]}


@method("session/create")
async def session_create(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """Create a session (``session.created`` is its seq 1)."""
    sid = p.session_id() if p.get("sessionId") is not None else None
    info = await ctx.sessions.create(
        conn.source, sid, agent=p.string("agent", None), title=p.string("title", "", max_len=1000),
        metadata=p.mapping("metadata", {}),
    )
    return {"session": info.to_json()}


@method("session/get")
async def session_get(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """A session's description."""
    return {"session": (await ctx.sessions.info(p.session_id())).to_json()}


@method("session/list")
async def session_list(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """Sessions, most recently updated first, with cursor paging."""
    infos, cursor = await ctx.sessions.list(
        p.integer("limit", 100, lo=1, hi=1000), p.string("cursor", None), p.string("agent", None)
    )
    result: dict[str, Any] = {"sessions": [i.to_json() for i in infos]}
    if cursor is not None:
        result["nextCursor"] = cursor
    return result


@method("session/delete")
async def session_delete(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """Delete a session and its file."""
    await ctx.sessions.delete(p.session_id())
    return {}


@method("session/subscribe")
async def session_subscribe(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """Backlog after ``afterSeq``, then live events; see "Subscribe and resume"."""
    sid = p.session_id()
    after = p.integer("afterSeq", 0, lo=0)
    epoch = p.string("epoch", None)
    session = await ctx.sessions.get(sid)
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
    old = conn.subscriptions.pop(sid, None)
    if old is not None:
        old.stop()
    sub = Subscription(session, conn, after)
    conn.subscriptions[sid] = sub
    return AfterReply({"sessionId": sid, "epoch": info.epoch, "headSeq": info.head_seq},
                      sub.start)


@method("session/unsubscribe")
async def session_unsubscribe(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """Stop a subscription (a no-op if there is none)."""
    sid = p.session_id()
    sub = conn.subscriptions.pop(sid, None)
    if sub is not None:
        sub.stop()
    else:
        await ctx.sessions.info(sid)
    return {}


def check_event_size(ctx: HubContext, *parts: bytes | None) -> None:
    """Refuse event data over ``hub.max_event_bytes``."""
    size = sum(len(x) for x in parts if x)
    limit = ctx.max_event_bytes
    if size > limit:
        raise TooLarge(
            f"event data is {size} bytes; the limit is {limit} (hub.max_event_bytes)",
            {"size": size, "limit": limit},
        )


def submit(ctx: HubContext, sid: str, item: PendingEvent) -> Awaitable[CommitResult]:
    """Submit a write to session ``sid``: when the session is open, at once, returning the
    commit's future (no task, no coroutine); else a coroutine that opens it first.

    A connection's writes to an open session are thus submitted, and committed, in the
    order its frames arrive.
    """
    session = ctx.sessions.get_open(sid)
    if session is not None:
        return session.submit(item)
    return _open_and_submit(ctx.sessions, sid, item)


async def _open_and_submit(
    sessions: SessionRegistry, sid: str, item: PendingEvent
) -> CommitResult:
    session = await sessions.get(sid)
    item.queued_at = time.perf_counter()  # the commit-time metric leaves out the opening
    return await session.submit(item)


def build_publish(ctx: HubContext, conn: ClientConnection, p: Params) -> tuple[str, PendingEvent]:
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
        recorded = protocol.dumps(p.get("state"))
    encoded = protocol.dumps(data)
    check_event_size(ctx, encoded, recorded)
    future: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
    return sid, PendingEvent(event_type, source, encoded, future, idempotency_key=key,
                             statements=statements, recorded_statements=recorded)


def publish_response(request_id: Any, result: CommitResult) -> bytes:
    """The response to a ``session/publish`` once its event is committed."""
    return protocol.publish_response_frame(request_id, result.seq, result.ts, result.duplicate)


@method("session/publish", publish_response)
def session_publish(ctx: HubContext, conn: ClientConnection, p: Params) -> Awaitable[CommitResult]:
    """Append a client event; the response comes after the durable commit.

    Not a coroutine: the event is built and, when its session is open, submitted before
    this returns (see :func:`submit`).
    """
    sid, item = build_publish(ctx, conn, p)
    return submit(ctx, sid, item)


@method("session/history")
async def session_history(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """A window of stored events, always ascending."""
    sid = p.session_id()
    after = p.integer("afterSeq", None, lo=0)
    before = p.integer("beforeSeq", None, lo=0)
    limit = p.integer("limit", 200, lo=1, hi=5000)
    types = p.get("types")
    if types is not None and (
        not isinstance(types, list) or not all(isinstance(t, str) for t in types)
    ):
        raise InvalidParams("types must be a list of strings", {"param": "types"})
    if after is None and before is None:
        after = 0
    session = await ctx.sessions.get(sid)
    raws = await session.db.history(after, before, limit, types)
    return {"events": [Fragment(r) for r in raws], "headSeq": session.info.head_seq}


@method("session/cancel")
async def session_cancel(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """Cancel the session's running turn and its open permission requests, if any."""
    await ctx.agent_control.cancel(await ctx.sessions.get(p.session_id()))
    return {}


@method("session/suspend")
async def session_suspend(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """Stop the session's agent process now (-32009 while a turn runs)."""
    await ctx.agent_control.suspend(await ctx.sessions.get(p.session_id()))
    return {}


@method("session/fork")
async def session_fork(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """A new session with the events up to ``atSeq`` and the state they built."""
    new_id = p.session_id("newSessionId") if p.get("newSessionId") is not None else None
    info = await ctx.sessions.fork(
        conn.source, p.session_id(), p.integer("atSeq", None, lo=1), new_id,
        p.string("title", None, max_len=1000), p.string("agent", None),
    )
    return {"session": info.to_json()}


@method("session/import")
async def session_import(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """A new session (new epoch) from recorded events, e.g. an ``axtui export`` file."""
    new_id = p.session_id("newSessionId") if p.get("newSessionId") is not None else None
    events = p.get("events")
    if not isinstance(events, list):
        raise InvalidParams("events must be a list of events", {"param": "events"})
    info = await ctx.sessions.import_events(
        new_id, p.string("title", "", max_len=1000), p.string("agent", None),
        p.mapping("metadata", {}), events,
    )
    return {"session": info.to_json()}


@method("sessions/watch")
async def sessions_watch(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """Send ``session/updated`` notifications to this connection from now on."""
    ctx.watch.watch(conn)
    return {}


@method("state/query")
async def state_query(ctx: HubContext, conn: ClientConnection, p: Params) -> Any:
    """Run read-only SQL on the session's state."""
    sid = p.session_id()
    sql = p.string("sql")
    params = protocol.check_sql_params(p.get("params"))
    limit = p.integer("limit", 1000, lo=1, hi=10000)
    session = await ctx.sessions.get(sid)
    columns, rows, truncated = await session.db.query(sql, params, limit)
    return {"columns": columns, "rows": rows, "truncated": truncated}


def state_exec_response(request_id: Any, result: CommitResult) -> bytes:
    """The response to a ``state/exec`` once its ``state.changed`` event is committed."""
    return protocol.response_frame(request_id, {"seq": result.seq, "changes": result.changes})


@method("state/exec", state_exec_response)
def state_exec(ctx: HubContext, conn: ClientConnection, p: Params) -> Awaitable[CommitResult]:
    """Run statements atomically; recorded as one ``state.changed`` event.

    Not a coroutine, like ``session/publish``: a connection's publishes and state changes
    to a session go through :func:`submit` in the order they arrive.
    """
    sid = p.session_id()
    raw_statements = p.get("statements")
    statements = protocol.parse_statements(raw_statements, "statements")
    recorded = orjson.dumps(raw_statements)
    check_event_size(ctx, recorded)
    future: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
    return submit(ctx, sid, PendingEvent(
        "state.changed", conn.source_json(), None, future,
        statements=statements, recorded_statements=recorded,
    ))
