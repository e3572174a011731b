"""The JSON-RPC methods of protocol.md, one function each (``initialize`` is in hub.py).

A handler gets the connection and the request's :class:`Params`, and returns the result
(or an :class:`AfterReply` when something must happen once the response is queued). It
raises a :class:`ProtocolError` for anything the client got wrong. Roles are checked by
the dispatcher from :data:`server.protocol.METHOD_ROLES` before a handler runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from server import protocol
from server.connection import ClientConnection
from server.protocol import (
    CannotResume,
    Fragment,
    InvalidParams,
    Params,
    TooLarge,
)
from server.sessions import Subscription
from server.sessiondb import PendingEvent, CommitResult

if TYPE_CHECKING:
    from server.hub import Hub


@dataclass(frozen=True, slots=True)
class AfterReply:
    """A result, and what to do once its response is queued (before anything else)."""

    result: Any
    then: Callable[[], None]


Handler = Callable[["Hub", ClientConnection, Params], Awaitable[Any]]
METHODS: dict[str, Handler] = {}


def method(name: str) -> Callable[[Handler], Handler]:
    """Register a handler under its JSON-RPC method name."""
    def register(fn: Handler) -> Handler:
        METHODS[name] = fn
        return fn
    return register


@method("ping")
async def ping(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Liveness check."""
    return {}


@method("agents/list")
async def agents_list(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """The configured agents."""
    return {"agents": [
        {"id": a.id, "description": a.description, "protocol": a.protocol}
        for a in hub.config.agents.values()
    ]}


@method("session/create")
async def session_create(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Create a session (``session.created`` is its seq 1)."""
    sid = p.session_id() if p.get("sessionId") is not None else None
    info = await hub.sessions.create(
        conn.source, sid, agent=p.string("agent", None), title=p.string("title", "", max_len=1000),
        metadata=p.mapping("metadata", {}),
    )
    return {"session": info.to_json()}


@method("session/get")
async def session_get(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """A session's description."""
    return {"session": (await hub.sessions.info(p.session_id())).to_json()}


@method("session/list")
async def session_list(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Sessions, most recently updated first, with cursor paging."""
    infos, cursor = await hub.sessions.list(
        p.integer("limit", 100, lo=1, hi=1000), p.string("cursor", None), p.string("agent", None)
    )
    result: dict[str, Any] = {"sessions": [i.to_json() for i in infos]}
    if cursor is not None:
        result["nextCursor"] = cursor
    return result


@method("session/delete")
async def session_delete(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Delete a session and its file."""
    await hub.sessions.delete(p.session_id())
    return {}


@method("session/subscribe")
async def session_subscribe(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Backlog after ``afterSeq``, then live events; see "Subscribe and resume"."""
    sid = p.session_id()
    after = p.integer("afterSeq", 0, lo=0)
    epoch = p.string("epoch", None)
    session = await hub.sessions.get(sid)
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
async def session_unsubscribe(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Stop a subscription (a no-op if there is none)."""
    sid = p.session_id()
    sub = conn.subscriptions.pop(sid, None)
    if sub is not None:
        sub.stop()
    else:
        await hub.sessions.info(sid)
    return {}


def check_event_size(hub: Hub, *parts: bytes | None) -> None:
    """Refuse event data over ``hub.max_event_bytes``."""
    size = sum(len(x) for x in parts if x)
    limit = hub.config.hub.max_event_bytes
    if size > limit:
        raise TooLarge(
            f"event data is {size} bytes; the limit is {limit} (hub.max_event_bytes)",
            {"size": size, "limit": limit},
        )


def build_publish(hub: Hub, conn: ClientConnection, p: Params) -> tuple[str, PendingEvent]:
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
    check_event_size(hub, encoded, recorded)
    future: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
    return sid, PendingEvent(event_type, source, encoded, future, idempotency_key=key,
                       statements=statements, recorded_statements=recorded)


def publish_result(result: CommitResult) -> dict[str, Any]:
    """The result of a ``session/publish`` once its event is committed."""
    return {"seq": result.seq, "ts": result.ts, "duplicate": result.duplicate}


@method("session/publish")
async def session_publish(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Append a client event; the response comes after the durable commit.

    The dispatcher takes a faster path when the session is open (``Hub._publish``): the
    same checks, in the same order, with no task. This is the path that opens it.
    """
    sid, item = build_publish(hub, conn, p)
    return await submit_publish(hub, sid, item)


async def submit_publish(hub: Hub, sid: str, item: PendingEvent) -> Any:
    """Submit a built publish to its session (opening it) and wait for the commit."""
    session = await hub.sessions.get(sid)
    item.queued_at = time.perf_counter()  # the commit-time metric leaves out the opening
    return publish_result(await session.submit(item))


@method("session/history")
async def session_history(hub: Hub, conn: ClientConnection, p: Params) -> Any:
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
    session = await hub.sessions.get(sid)
    raws = await session.db.history(after, before, limit, types)
    return {"events": [Fragment(r) for r in raws], "headSeq": session.info.head_seq}


@method("session/cancel")
async def session_cancel(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Cancel the session's running turn and its open permission requests, if any."""
    await hub.supervisor.cancel(await hub.sessions.get(p.session_id()))
    return {}


@method("session/suspend")
async def session_suspend(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Stop the session's agent process now (-32009 while a turn runs)."""
    await hub.supervisor.suspend(await hub.sessions.get(p.session_id()))
    return {}


@method("session/fork")
async def session_fork(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """A new session with the events up to ``atSeq`` and the state they built."""
    new_id = p.session_id("newSessionId") if p.get("newSessionId") is not None else None
    info = await hub.sessions.fork(
        conn.source, p.session_id(), p.integer("atSeq", None, lo=1), new_id,
        p.string("title", None, max_len=1000), p.string("agent", None),
    )
    return {"session": info.to_json()}


@method("session/import")
async def session_import(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """A new session (new epoch) from recorded events, e.g. an ``axtui export`` file."""
    new_id = p.session_id("newSessionId") if p.get("newSessionId") is not None else None
    events = p.get("events")
    if not isinstance(events, list):
        raise InvalidParams("events must be a list of events", {"param": "events"})
    info = await hub.sessions.import_events(
        new_id, p.string("title", "", max_len=1000), p.string("agent", None),
        p.mapping("metadata", {}), events,
    )
    return {"session": info.to_json()}


@method("sessions/watch")
async def sessions_watch(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Send ``session/updated`` notifications to this connection from now on."""
    conn.watching = True
    return {}


@method("state/query")
async def state_query(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Run read-only SQL on the session's state."""
    sid = p.session_id()
    sql = p.string("sql")
    params = protocol.check_sql_params(p.get("params"))
    limit = p.integer("limit", 1000, lo=1, hi=10000)
    session = await hub.sessions.get(sid)
    columns, rows, truncated = await session.db.query(sql, params, limit)
    return {"columns": columns, "rows": rows, "truncated": truncated}


@method("state/exec")
async def state_exec(hub: Hub, conn: ClientConnection, p: Params) -> Any:
    """Run statements atomically; recorded as one ``state.changed`` event."""
    sid = p.session_id()
    raw_statements = p.get("statements")
    statements = protocol.parse_statements(raw_statements, "statements")
    recorded = orjson.dumps(raw_statements)
    check_event_size(hub, recorded)
    session = await hub.sessions.get(sid)
    future: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
    result = await session.submit(PendingEvent(
        "state.changed", conn.source_json(), None, future,
        statements=statements, recorded_statements=recorded,
    ))
    return {"seq": result.seq, "changes": result.changes}
