"""The wire contract of the hub, with no I/O: shapes, validation, error codes, frames.

Both the hub and the clients import this module; it is the one place where the names,
codes and rules of ``shared/design/protocol.md`` live in code.

Error tree (each class is one JSON-RPC error code, raised in the core and turned into an
error response at the edge by :func:`error_frame`)::

    ProtocolError
    ├── ParseError            -32700  the frame is not JSON
    ├── InvalidRequest        -32600  not a JSON-RPC request (or a binary frame)
    ├── MethodNotFound        -32601
    ├── InvalidParams         -32602  wrong types, bad ids, SQL that SQLite rejects
    ├── InternalError         -32603
    ├── NotAuthenticated      -32001
    ├── Forbidden             -32003  role too low, reserved event type, hostile SQL
    ├── NotFound              -32004  no such session (or agent)
    ├── Conflict              -32009  id exists, permission already answered, turn running
    ├── CannotResume          -32010  afterSeq ahead of the head, or epoch differs
    ├── TooLarge              -32013  event data over hub.max_event_bytes
    └── Overloaded            -32029  try again later
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import time
import unicodedata
from collections.abc import Mapping
from typing import Any, ClassVar, NoReturn

import orjson

from server.events import AgentState

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = [PROTOCOL_VERSION]


# --- close codes -------------------------------------------------------------------------

class CloseCode(enum.IntEnum):
    """WebSocket close codes the hub uses."""

    GOING_AWAY = 1001
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    UNAUTHENTICATED = 4401
    NO_INITIALIZE = 4408
    TOO_SLOW = 4429


# --- errors ------------------------------------------------------------------------------

class ProtocolError(Exception):
    """A JSON-RPC error: ``code``, a clear ``message`` sentence, optional ``data``."""

    code: ClassVar[int] = -32603

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """The ``error`` member of a JSON-RPC response."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class ParseError(ProtocolError):
    """The frame is not valid JSON."""

    code = -32700


class InvalidRequest(ProtocolError):
    """The message is not a valid JSON-RPC 2.0 request."""

    code = -32600


class MethodNotFound(ProtocolError):
    """No method of that name."""

    code = -32601


class InvalidParams(ProtocolError):
    """Params of the wrong shape or type, or SQL that SQLite rejects."""

    code = -32602


class InternalError(ProtocolError):
    """The hub failed; the request was not carried out."""

    code = -32603


class NotAuthenticated(ProtocolError):
    """``initialize`` has not succeeded on this connection."""

    code = -32001


class Forbidden(ProtocolError):
    """The principal's role does not allow this, or the event type is reserved."""

    code = -32003


class NotFound(ProtocolError):
    """No such session (or agent)."""

    code = -32004


class Conflict(ProtocolError):
    """The id exists, the permission was already answered, or a turn is running."""

    code = -32009


class CannotResume(ProtocolError):
    """``afterSeq`` is ahead of the head, or the epoch is not the session's."""

    code = -32010


class TooLarge(ProtocolError):
    """Event data over ``hub.max_event_bytes``."""

    code = -32013


class Overloaded(ProtocolError):
    """The hub is too busy for this request: try again later."""

    code = -32029


ERRORS_BY_CODE: dict[int, type[ProtocolError]] = {
    cls.code: cls
    for cls in (
        ParseError, InvalidRequest, MethodNotFound, InvalidParams, InternalError,
        NotAuthenticated, Forbidden, NotFound, Conflict, CannotResume, TooLarge, Overloaded,
    )
}


def error_from_json(err: Mapping[str, Any]) -> ProtocolError:
    """Rebuild the error class for a JSON-RPC ``error`` object (used by clients)."""
    code = err.get("code")
    cls = ERRORS_BY_CODE.get(code, ProtocolError) if isinstance(code, int) else ProtocolError
    exc = cls(str(err.get("message", "")), err.get("data"))
    if cls is ProtocolError and isinstance(code, int):
        exc.code = code  # type: ignore[misc]
    return exc


# --- roles -------------------------------------------------------------------------------

class Role(enum.IntEnum):
    """Roles, each including the one before."""

    VIEWER = 1
    PARTICIPANT = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        """The role named ``name`` (``viewer``, ``participant``, ``admin``)."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r} (use viewer, participant or admin)") from None

    @property
    def label(self) -> str:
        """The role's name on the wire."""
        return self.name.lower()


METHOD_ROLES: dict[str, Role] = {
    "ping": Role.VIEWER,
    "agents/list": Role.VIEWER,
    "session/create": Role.PARTICIPANT,
    "session/get": Role.VIEWER,
    "session/list": Role.VIEWER,
    "session/delete": Role.ADMIN,
    "session/subscribe": Role.VIEWER,
    "session/unsubscribe": Role.VIEWER,
    "session/publish": Role.PARTICIPANT,
    "session/history": Role.VIEWER,
    "session/cancel": Role.PARTICIPANT,
    "session/suspend": Role.ADMIN,
    "session/fork": Role.PARTICIPANT,
    "session/import": Role.ADMIN,
    "sessions/watch": Role.VIEWER,
    "state/query": Role.VIEWER,
    "state/exec": Role.PARTICIPANT,
}


# --- identifiers and event types ---------------------------------------------------------

SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
EVENT_TYPE_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
MAX_INT = 2**63 - 1  # SQLite's largest integer
MAX_TYPE_LEN = 64
MAX_IDEMPOTENCY_KEY_LEN = 128
MAX_DISPLAY_NAME_LEN = 64  # onBehalfOf, clientInfo.name and .kind
RESERVED_PREFIXES = ("agent.", "turn.", "tool.", "session.", "hub.")
RESERVED_TYPES = frozenset({"plan", "permission.request", "state.changed"})


def check_session_id(value: object, name: str = "sessionId") -> str:
    """Return ``value`` if it is a valid session id, else raise :class:`InvalidParams`."""
    if not isinstance(value, str) or not SESSION_ID_RE.fullmatch(value):
        raise InvalidParams(
            f"{name} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$",
            {"param": name},
        )
    return value


# Bidi embeddings, overrides, isolates and marks: they reorder the text around them.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                          "\u2066\u2067\u2068\u2069")


def is_label(value: str) -> bool:
    """Whether ``value`` prints on one line: no control character (C0, DEL, C1), surrogate,
    line or paragraph separator, or bidi control (every script, emoji and joiner pass)."""
    return not any(c in BIDI_CONTROLS or unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")
                   for c in value)


def check_display_name(value: object, name: str = "onBehalfOf") -> str:
    """A label people read (``onBehalfOf``, ``clientInfo.name`` and ``.kind``): 1 to 64
    characters, not blank, printable on one line (:func:`is_label`), so that it cannot
    forge a line in a log or rewrite a terminal it is shown on."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_DISPLAY_NAME_LEN
        or value.isspace()
        or not is_label(value)
    ):
        raise InvalidParams(
            f"{name} must be a display name: 1 to {MAX_DISPLAY_NAME_LEN} characters, not"
            " blank, with no control characters, line breaks or bidi controls",
            {"param": name},
        )
    return value


def is_reserved_type(event_type: str) -> bool:
    """Whether clients are forbidden to publish ``event_type``."""
    return event_type in RESERVED_TYPES or event_type.startswith(RESERVED_PREFIXES)


def check_event_type(value: object, *, client: bool) -> str:
    """Validate an event type; with ``client=True`` reserved types raise :class:`Forbidden`."""
    if (
        not isinstance(value, str)
        or len(value) > MAX_TYPE_LEN
        or not EVENT_TYPE_RE.fullmatch(value)
    ):
        raise InvalidParams(
            "type must match ^[a-z][a-z0-9_]*(\\.[a-z0-9_]+)*$ and be at most 64 characters",
            {"param": "type"},
        )
    if client and is_reserved_type(value):
        raise Forbidden(
            f"event type {value!r} is reserved for the hub and agents",
            {"type": value},
        )
    return value


# --- recorded events (session/import) ----------------------------------------------------

SOURCE_KINDS = ("client", "agent", "hub", "webhook")


def check_recorded_event(value: object, seq: int) -> dict[str, Any]:
    """Check one event of an exported session (``seq`` is the one it must have).

    Returns the event; raises :class:`InvalidParams` with a message that names the field
    (callers say where: a line of a file, or ``events[i]``).
    """
    if not isinstance(value, dict):
        raise InvalidParams("an event must be a JSON object")
    if value.get("seq") != seq or isinstance(value.get("seq"), bool):
        raise InvalidParams(f"seq must be {seq} (seqs are dense from 1), got {value.get('seq')!r}")
    ts = value.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_INT:
        raise InvalidParams(f"ts must be milliseconds since the Unix epoch, got {ts!r}")
    try:
        event_type = check_event_type(value.get("type"), client=False)
    except InvalidParams as exc:
        raise InvalidParams(f"bad type {value.get('type')!r}: {exc.message}") from None
    if seq == 1 and event_type != "session.created":
        raise InvalidParams(f"the first event must be session.created, not {event_type}")
    source = value.get("source")
    if (not isinstance(source, dict) or source.get("kind") not in SOURCE_KINDS
            or not isinstance(source.get("name"), str)):
        raise InvalidParams("source must be an object with kind (client, agent, hub or"
                            " webhook) and name")
    if not isinstance(value.get("data"), dict):
        raise InvalidParams("data must be an object")
    for name in ("turnId", "idempotencyKey"):
        if not isinstance(value.get(name), str | None):
            raise InvalidParams(f"{name} must be a string or null")
    key = value.get("idempotencyKey")
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY_LEN:
        raise InvalidParams(f"idempotencyKey must be at most {MAX_IDEMPOTENCY_KEY_LEN} characters")
    if value.get("state") is not None:
        parse_statements(value["state"], "state")
    if event_type == "state.changed":
        parse_statements(value["data"].get("statements"), "data.statements")
    return value


# --- params ------------------------------------------------------------------------------

_MISSING: Any = object()


class Params:
    """Typed access to a request's ``params`` object; every failure is :class:`InvalidParams`."""

    def __init__(self, raw: object) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise InvalidParams("params must be an object")
        self.raw: dict[str, Any] = raw

    def _fail(self, name: str, what: str) -> NoReturn:
        raise InvalidParams(f"{name} must be {what}", {"param": name})

    def get(self, name: str, default: Any = None) -> Any:
        """The raw value of ``name``, or ``default``."""
        return self.raw.get(name, default)

    def string(self, name: str, default: Any = _MISSING, *, max_len: int | None = None) -> Any:
        """A string param (``None`` stands for absent when a default is given)."""
        value = self.raw.get(name)
        if value is None:
            if default is _MISSING:
                self._fail(name, "a string (it is required)")
            return default
        if not isinstance(value, str):
            self._fail(name, "a string")
        if max_len is not None and len(value) > max_len:
            self._fail(name, f"at most {max_len} characters")
        return value

    def integer(
        self, name: str, default: Any = _MISSING, *, lo: int | None = None, hi: int | None = None
    ) -> Any:
        """An integer param within ``[lo, hi]``."""
        value = self.raw.get(name)
        if value is None:
            if default is _MISSING:
                self._fail(name, "an integer (it is required)")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self._fail(name, "an integer")
        hi = MAX_INT if hi is None else hi
        if (lo is not None and value < lo) or value > hi:
            bounds = f"between {lo} and {hi}" if lo is not None else f"at most {hi}"
            self._fail(name, f"an integer {bounds}")
        return value

    def mapping(self, name: str, default: Any = _MISSING) -> Any:
        """An object param."""
        value = self.raw.get(name)
        if value is None:
            if default is _MISSING:
                self._fail(name, "an object (it is required)")
            return default
        if not isinstance(value, dict):
            self._fail(name, "an object")
        return value

    def session_id(self, name: str = "sessionId") -> str:
        """A required, valid session id."""
        return check_session_id(self.raw.get(name), name)


MAX_DEPTH = 64  # levels of arrays and objects in JSON a client stores (protocol.md §10)


def check_depth(value: object, name: str, encoded: bytes | None = None,
                limit: int = MAX_DEPTH) -> None:
    """:class:`InvalidParams` naming ``name`` if arrays and objects in ``value`` nest past
    ``limit`` (a scalar is depth 0, ``[]`` depth 1): stored JSON is re-encoded by forks and
    exports, which would fail long after. Iterative, so any decoded depth is safe; with the
    ``encoded`` value, one with at most ``limit`` brackets passes at once."""
    if encoded is not None and encoded.count(b"[") + encoded.count(b"{") <= limit:
        return
    stack: list[tuple[dict[str, Any] | list[Any], int]] = (
        [(value, 1)] if isinstance(value, dict | list) else [])
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise InvalidParams(f"{name} nests more than {limit} levels deep", {"param": name})
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def dumps_stored(value: object, name: str) -> bytes:
    """Encode the ``name`` param to store it (:class:`InvalidParams` if too deep or bad)."""
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:  # past orjson's own depth, or an integer over 64 bits
        check_depth(value, name)
        raise InvalidParams(f"{name} cannot be encoded as JSON: {exc}", {"param": name}) from None
    check_depth(value, name, encoded)
    return encoded


def parse_statements(value: object, name: str) -> list[tuple[str, list[Any] | dict[str, Any]]]:
    """Validate a list of ``{sql, params?}`` statements."""
    if not isinstance(value, list) or not value:
        raise InvalidParams(f"{name} must be a non-empty list of {{sql, params}}", {"param": name})
    out: list[tuple[str, list[Any] | dict[str, Any]]] = []
    for i, stmt in enumerate(value):
        if not isinstance(stmt, dict) or not isinstance(stmt.get("sql"), str):
            raise InvalidParams(f"{name}[{i}] must be an object with a string sql", {"param": name})
        out.append((stmt["sql"], check_sql_params(stmt.get("params"), f"{name}[{i}].params")))
    return out


def check_sql_params(value: object, name: str = "params") -> list[Any] | dict[str, Any]:
    """SQL parameters: a list or an object of JSON scalars."""
    if value is None:
        return []
    values = value if isinstance(value, list) else (
        list(value.values()) if isinstance(value, dict) else None
    )
    if values is None:
        raise InvalidParams(f"{name} must be a list or an object", {"param": name})
    for v in values:
        if v is not None and not isinstance(v, str | int | float):
            raise InvalidParams(
                f"{name} values must be null, booleans, numbers or strings", {"param": name}
            )
    return value  # type: ignore[return-value]


# --- JSON and frames ---------------------------------------------------------------------

def loads(data: str | bytes) -> Any:
    """Decode one JSON text; raises :class:`ParseError`."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"the frame is not valid JSON: {exc}") from None


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact JSON bytes; raises :class:`InvalidParams` on bad values."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise InvalidParams(f"value cannot be encoded as JSON: {exc}") from None


Fragment = orjson.Fragment


def response_frame(request_id: Any, result: Any) -> bytes:
    """A JSON-RPC success response."""
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def error_frame(request_id: Any, error: ProtocolError) -> bytes:
    """A JSON-RPC error response."""
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "error": error.to_json()})


def publish_response_frame(request_id: Any, seq: int, ts: int, duplicate: bool) -> bytes:
    """The response to a ``session/publish`` (what :func:`response_frame` makes of it,
    without building the objects on every publish)."""
    return b'{"jsonrpc":"2.0","id":%b,"result":{"seq":%d,"ts":%d,"duplicate":%b}}' % (
        orjson.dumps(request_id), seq, ts, b"true" if duplicate else b"false"
    )


def notification_frame(method: str, params: Any) -> bytes:
    """A JSON-RPC notification."""
    return orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params})


def events_frame(session_id: str, raw_events: list[bytes]) -> bytes:
    """A ``session/events`` notification spliced from already encoded events."""
    return b"".join((
        b'{"jsonrpc":"2.0","method":"session/events","params":{"sessionId":"',
        session_id.encode(),  # ids match SESSION_ID_RE: no escaping needed
        b'","events":[',
        b",".join(raw_events),
        b"]}}",
    ))


def encode_event(
    *,
    seq: int,
    event_id: str,
    ts: int,
    event_type: str,
    source: bytes,
    data: bytes,
    idempotency_key: str | None = None,
    turn_id: str | None = None,
    state: bytes | None = None,
) -> bytes:
    """The stored (and sent) JSON of one event; ``source``, ``data``, ``state`` are JSON."""
    event: dict[str, Any] = {
        "seq": seq,
        "id": event_id,
        "ts": ts,
        "type": event_type,
        "source": Fragment(source),
        "data": Fragment(data),
        "idempotencyKey": idempotency_key,
        "turnId": turn_id,
    }
    if state is not None:
        event["state"] = Fragment(state)
    return orjson.dumps(event)


def now_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def new_event_id() -> str:
    """A UUIDv7 string: unique across the hub and sortable by creation time."""
    ms = now_ms() & 0xFFFF_FFFF_FFFF
    r = os.urandom(10)
    # 48 bits of ms, version 7, 12 random bits, the RFC 4122 variant, 62 random bits;
    # built as bytes (on every commit path: a 128-bit integer takes longer).
    h = (ms.to_bytes(6, "big") + bytes((0x70 | (r[0] & 0x0F), r[1], 0x80 | (r[2] & 0x3F)))
         + r[3:]).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_session_id() -> str:
    """A fresh session id: time-ordered, readable, matching :data:`SESSION_ID_RE`."""
    return f"s-{now_ms():x}-{os.urandom(3).hex()}"


def new_epoch() -> str:
    """A random epoch id for a new session incarnation."""
    return os.urandom(8).hex()


# --- objects -----------------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class SessionInfo:
    """A session as the protocol describes it (the ``Session`` object)."""

    session_id: str
    epoch: str
    title: str = ""
    agent: str | None = None
    head_seq: int = 0
    agent_state: AgentState = AgentState.NONE
    created_at: int = 0
    updated_at: int = 0
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    owner: str | bool | None = False  # cluster mode: the owner's node id (None: nobody)

    def to_json(self) -> dict[str, Any]:
        """The wire form (with ``owner`` in cluster mode)."""
        wire = {
            "sessionId": self.session_id,
            "title": self.title,
            "agent": self.agent,
            "epoch": self.epoch,
            "headSeq": self.head_seq,
            "agentState": self.agent_state,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "metadata": self.metadata,
        }
        return wire if self.owner is False else {**wire, "owner": self.owner}
