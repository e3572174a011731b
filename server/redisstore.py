"""Cluster mode's shared store on Redis (or Valkey): the replicated logs, leases, catalog.

Keys of one session share the hash tag ``{<id>}`` (so a script touches one slot, as Redis
Cluster needs):

- ``ax:{id}:log``: a stream, one entry a committed event, entry id ``<seq>-0``, field
  ``e`` the event's JSON exactly as stored;
- ``ax:{id}:meta``: a hash, the session's description (epoch, title, agent, metadata,
  created_at, updated_at, head_seq, agent_state);
- ``ax:{id}:owner``: the owner's lease, ``<node_id>/<random>``, expiring after
  ``cluster.lease`` unless renewed.

Besides: ``ax:sessions`` (a sorted set of ids by last activity, for the session list),
``ax:node:<node_id>`` (where a replica is reached, while it lives) and the channel
``ax:watch`` (session descriptions, for ``sessions/watch`` everywhere).

:meth:`RedisStore.append` is the one write of the log: a script that appends a batch only
if the caller still holds the lease and the log's head is the batch's first seq minus
one. That compare-and-set keeps seqs dense and fences a stale owner: once another
replica has the lease, nothing the old one sends is stored. It is called in the
session's writer thread, inside the SQLite transaction of the batch, so a batch is
committed to the file only once Redis has it (see :mod:`server.sessiondb`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from server.clusterconfig import ClusterConfig
from server.clustererrors import Fenced, StoreUnavailable
from server.events import AgentState
from server.protocol import Conflict, SessionInfo

log = logging.getLogger("axtui.cluster")

SESSIONS_KEY = "ax:sessions"
ACTIVE_KEY = "ax:active"  # sessions whose agent was running or idle: taken over if orphaned
WATCH_CHANNEL = "ax:watch"
MAX_CONNECTIONS = 32  # the event loop's connections to Redis (besides followers')
SOCKET_TIMEOUT = 2.0  # seconds a Redis call may take before the store counts as unreachable


def log_key(session_id: str) -> str:
    """The stream of a session's events."""
    return f"ax:{{{session_id}}}:log"


def meta_key(session_id: str) -> str:
    """The hash describing a session."""
    return f"ax:{{{session_id}}}:meta"


def owner_key(session_id: str) -> str:
    """The lease of a session's owner."""
    return f"ax:{{{session_id}}}:owner"


def snapshot_key(session_id: str) -> str:
    """A compressed copy of the session's file, covering the log up to meta's snap_seq."""
    return f"ax:{{{session_id}}}:snap"


def node_key(node_id: str) -> str:
    """Where a replica is reached."""
    return f"ax:node:{node_id}"


# Every script starts with a shebang (Redis 7.0 and Valkey): such a script is refused
# whole when Redis is out of memory, never cut off after some of its writes (a script
# without one checks memory at each write, and Redis never undoes the ones before).

# KEYS: log, owner, meta. ARGV: token, first seq, updated_at ("" to keep), events...
_APPEND = """#!lua
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return redis.error_reply('FENCED') end
local head = tonumber(redis.call('HGET', KEYS[3], 'head_seq') or '0')
local first = tonumber(ARGV[2])
if head ~= first - 1 then return redis.error_reply('FENCED head ' .. head) end
for i = 4, #ARGV do
  redis.call('XADD', KEYS[1], (first + i - 4) .. '-0', 'e', ARGV[i])
end
local last = first + #ARGV - 4
redis.call('HSET', KEYS[3], 'head_seq', last)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], 'updated_at', ARGV[3]) end
return last
"""

# KEYS: owner, meta. ARGV: token, lease ms, then the meta hash's fields and values.
_CREATE = """#!lua
if redis.call('EXISTS', KEYS[2]) == 1 then return redis.error_reply('CONFLICT') end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.error_reply('CONFLICT')
end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
return 1
"""

# KEYS: owner. ARGV: token, lease ms. 1 if still held (and renewed), else 0.
_RENEW = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: owner. ARGV: token.
_RELEASE = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: log, meta, owner, snapshot. ARGV: token.
_DELETE = """#!lua
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return redis.error_reply('FENCED') end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
"""

# KEYS: log, meta, owner, snapshot. ARGV: token, seq covered, blob, first seq kept.
_SNAPSHOT = """#!lua
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return redis.error_reply('FENCED') end
redis.call('SET', KEYS[4], ARGV[3])
redis.call('HSET', KEYS[2], 'snap_seq', ARGV[2])
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[4] .. '-0')
return 1
"""


@contextlib.contextmanager
def _store_errors(fenced_session: str | None = None) -> Iterator[None]:
    """Redis's errors as the hub's: a refused append or snapshot of ``fenced_session`` is
    :class:`Fenced`; anything else (unreachable, out of memory, read-only) is
    :class:`StoreUnavailable` (-32029: try again)."""
    try:
        yield
    except ResponseError as exc:
        if fenced_session is not None and str(exc).startswith("FENCED"):
            raise Fenced(fenced_session) from None
        raise StoreUnavailable(str(exc)) from None
    except RedisError as exc:
        raise StoreUnavailable(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Lease:
    """A session's lease held by this replica: the token the store checks every write by."""

    session_id: str
    token: str


def _meta_fields(info: SessionInfo) -> list[Any]:
    return ["epoch", info.epoch, "title", info.title, "agent", info.agent or "",
            "metadata", orjson.dumps(info.metadata), "created_at", info.created_at,
            "updated_at", info.updated_at, "head_seq", 0, "agent_state", info.agent_state]


def info_from_meta(session_id: str, meta: dict[bytes, bytes]) -> SessionInfo | None:
    """A session's description from its meta hash (``None`` when there is none)."""
    if not meta:
        return None
    text = {k.decode(): v.decode() for k, v in meta.items()}
    return SessionInfo(
        session_id=session_id, title=text.get("title", ""), agent=text.get("agent") or None,
        epoch=text["epoch"], head_seq=int(text.get("head_seq", 0)),
        agent_state=text.get("agent_state", "suspended"),  # type: ignore[arg-type]
        created_at=int(text.get("created_at", 0)), updated_at=int(text.get("updated_at", 0)),
        metadata=orjson.loads(text.get("metadata", "{}")),
    )


class RedisStore:
    """This replica's connection to the shared store."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.node_id = config.node_id
        self.lease_ms = max(1, int(config.lease * 1000))
        options: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT,
                                   "socket_connect_timeout": SOCKET_TIMEOUT}
        # The writer threads append with the blocking client (one pool, thread-safe); the
        # event loop does everything else with the asyncio one.
        self.sync = redis.Redis.from_url(config.redis, **options)
        # The event loop's calls share a bounded pool: a burst (every session closing at
        # a stop) waits for a connection instead of opening thousands. Followers block in
        # XREAD for up to a second each, so they have a pool of their own.
        self.aio = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            config.redis, max_connections=MAX_CONNECTIONS, timeout=SOCKET_TIMEOUT, **options))
        self.follow = aioredis.Redis.from_url(config.redis, **options)
        self._append = self.sync.register_script(_APPEND)
        self._create = self.aio.register_script(_CREATE)
        self._renew = self.aio.register_script(_RENEW)
        self._release = self.aio.register_script(_RELEASE)
        self._delete = self.aio.register_script(_DELETE)
        self._snapshot = self.aio.register_script(_SNAPSHOT)

    async def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless Redis answers."""
        with _store_errors():
            await self.aio.ping()

    async def close(self) -> None:
        """Close both connection pools."""
        await self.aio.aclose()
        await self.follow.aclose()
        self.sync.close()

    def new_token(self) -> str:
        """A lease token of this replica: its node id and a random part."""
        return f"{self.node_id}/{secrets.token_hex(8)}"

    # --- the log ---------------------------------------------------------------------------

    def append(self, lease: Lease, first_seq: int, events: Sequence[bytes],
               updated_at: int | None) -> None:
        """Append committed events from seq ``first_seq`` (blocking: a writer thread's
        call). Raises :class:`Fenced` if the lease is lost or the head moved, and
        :class:`StoreUnavailable` if Redis cannot be reached."""
        sid = lease.session_id
        with _store_errors(sid):
            self._append(keys=[log_key(sid), owner_key(sid), meta_key(sid)],
                         args=[lease.token, first_seq, "" if updated_at is None else updated_at,
                               *events])
            if self.config.wait_replicas:
                acked = self.sync.wait(self.config.wait_replicas, self.lease_ms)
                if acked < self.config.wait_replicas:
                    raise StoreUnavailable(f"{acked} of {self.config.wait_replicas} Redis"
                                           " replicas took the write in time")

    async def read(self, session_id: str, after_seq: int,
                   count: int = 1000) -> list[tuple[int, bytes]]:
        """Up to ``count`` events after ``after_seq``, as ``(seq, raw)``."""
        with _store_errors():
            entries: Any = await self.aio.xrange(log_key(session_id), f"({after_seq}-0", "+",
                                                 count=count)
        return [(int(entry_id.split(b"-")[0]), fields[b"e"]) for entry_id, fields in entries]

    # --- snapshots (bounded memory) -----------------------------------------------------

    async def save_snapshot(self, lease: Lease, seq: int, blob: bytes, keep: int) -> None:
        """Store ``blob`` as the session's snapshot up to ``seq`` and trim the stream to
        the events after ``seq - keep`` (the owner's call)."""
        sid = lease.session_id
        with _store_errors(sid):
            await self._snapshot(keys=[log_key(sid), meta_key(sid), owner_key(sid),
                                       snapshot_key(sid)],
                                 args=[lease.token, seq, blob, max(1, seq - keep + 1)])

    async def snapshot_seq(self, session_id: str) -> int:
        """The seq the session's snapshot covers (0: it has none)."""
        with _store_errors():
            seq: Any = await self.aio.hget(meta_key(session_id), "snap_seq")
        return int(seq or 0)

    async def snapshot(self, session_id: str) -> tuple[int, bytes] | None:
        """The session's snapshot and the seq it covers, if it has one."""
        with _store_errors():
            async with self.aio.pipeline(transaction=True) as pipe:
                pipe.hget(meta_key(session_id), "snap_seq")
                pipe.get(snapshot_key(session_id))
                seq, blob = await pipe.execute()
        return None if blob is None else (int(seq or 0), blob)

    async def first_seq(self, session_id: str) -> int | None:
        """The seq of the stream's first entry (what was trimmed lies before it), ``None``
        for an empty stream."""
        with _store_errors():
            first: Any = await self.aio.xrange(log_key(session_id), "-", "+", count=1)
        return int(first[0][0].split(b"-")[0]) if first else None

    # --- sessions --------------------------------------------------------------------------

    async def create(self, info: SessionInfo) -> Lease:
        """Claim a new session id with its description; :class:`Conflict` if it exists
        anywhere in the cluster. The caller owns it from then on."""
        lease = Lease(info.session_id, self.new_token())
        try:
            await self._create(keys=[owner_key(info.session_id), meta_key(info.session_id)],
                               args=[lease.token, self.lease_ms, *_meta_fields(info)])
        except ResponseError as exc:
            if str(exc).startswith("CONFLICT"):
                raise Conflict(f"session {info.session_id} already exists",
                               {"sessionId": info.session_id}) from None
            raise StoreUnavailable(str(exc)) from None
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from None
        return lease

    async def describe(self, session_id: str) -> SessionInfo | None:
        """A session's description (with its owner), or ``None`` if the cluster has no
        such session."""
        found = await self.describe_many([session_id])
        return found[0] if found else None

    async def describe_many(self, session_ids: Iterable[str]) -> list[SessionInfo]:
        """The descriptions (with their owners) of sessions that exist, in the order given."""
        ids = list(session_ids)
        with _store_errors():
            async with self.aio.pipeline(transaction=False) as pipe:
                for sid in ids:
                    pipe.hgetall(meta_key(sid))
                    pipe.get(owner_key(sid))
                replies = await pipe.execute()
        found = []
        for index, sid in enumerate(ids):
            info = info_from_meta(sid, replies[2 * index])
            if info is not None:
                token = replies[2 * index + 1]
                info.owner = None if token is None else token.decode().split("/", 1)[0]
                found.append(info)
        return found

    async def orphans(self) -> list[str]:
        """Sessions whose agent was active (``ax:active``) and that nobody owns."""
        with _store_errors():
            active: Any = await self.aio.smembers(ACTIVE_KEY)
            ids = sorted(member.decode() for member in active)
            async with self.aio.pipeline(transaction=False) as pipe:
                for sid in ids:
                    pipe.exists(owner_key(sid))
                owned = await pipe.execute()
        return [sid for sid, held in zip(ids, owned, strict=True) if not held]

    async def update(self, info: SessionInfo) -> None:
        """Record a session's title, agent state and activity in its description, and its
        place in the session list (its head is the log's business)."""
        with _store_errors():
            async with self.aio.pipeline(transaction=False) as pipe:
                pipe.hset(meta_key(info.session_id), mapping={
                    "agent_state": info.agent_state, "updated_at": info.updated_at,
                    "title": info.title,
                })
                pipe.zadd(SESSIONS_KEY, {info.session_id: info.updated_at})
                if AgentState(info.agent_state).active:
                    pipe.sadd(ACTIVE_KEY, info.session_id)
                else:
                    pipe.srem(ACTIVE_KEY, info.session_id)
                await pipe.execute()

    async def listed(self, before: tuple[int, str] | None, limit: int) -> list[str]:
        """Session ids, most recently updated first, after the cursor ``before``
        (``(updated_at, session_id)`` of the last one of the previous page)."""
        top = "+inf" if before is None else before[0]
        with _store_errors():
            # Ties of one score come back in reverse lexical order; those at the cursor's
            # score up to its id were on the last page.
            rows: Any = await self.aio.zrevrangebyscore(SESSIONS_KEY, top, "-inf", start=0,
                                                   num=limit + 64, withscores=True)
        ids = []
        for member, score in rows:
            sid = member.decode()
            if before is not None and int(score) == before[0] and sid >= before[1]:
                continue
            ids.append(sid)
        return ids[:limit]

    async def delete(self, lease: Lease) -> None:
        """Remove a session's log, description and lease (the owner's call)."""
        sid = lease.session_id
        with _store_errors(sid):
            await self._delete(keys=[log_key(sid), meta_key(sid), owner_key(sid),
                                     snapshot_key(sid)], args=[lease.token])
            await self.aio.zrem(SESSIONS_KEY, sid)
            await self.aio.srem(ACTIVE_KEY, sid)

    # --- leases ----------------------------------------------------------------------------

    async def acquire(self, session_id: str) -> Lease | None:
        """The session's lease if nobody holds it (``None`` if another replica does)."""
        lease = Lease(session_id, self.new_token())
        with _store_errors():
            taken = await self.aio.set(owner_key(session_id), lease.token, nx=True,
                                       px=self.lease_ms)
        return lease if taken else None

    async def renew(self, leases: Sequence[Lease]) -> list[bool]:
        """Renew leases; for each whether it is still held."""
        with _store_errors():
            async with self.aio.pipeline(transaction=False) as pipe:
                for lease in leases:
                    await self._renew(keys=[owner_key(lease.session_id)],
                                      args=[lease.token, self.lease_ms], client=pipe)
                results = await pipe.execute()
        return [bool(r) for r in results]

    async def release(self, lease: Lease) -> None:
        """Give a lease back (a graceful hand-over), if still held."""
        with _store_errors():
            await self._release(keys=[owner_key(lease.session_id)], args=[lease.token])

    async def owner(self, session_id: str) -> str | None:
        """The node id of the session's owner, or ``None`` while nobody holds it."""
        with _store_errors():
            token: Any = await self.aio.get(owner_key(session_id))
        return None if token is None else str(token.decode()).split("/", 1)[0]

    # --- replicas --------------------------------------------------------------------------

    async def announce(self, advertise: str) -> None:
        """Say where this replica is reached, for 3 leases (renewed with the leases)."""
        with _store_errors():
            await self.aio.set(node_key(self.node_id), advertise, px=3 * self.lease_ms)

    async def address(self, node_id: str) -> str | None:
        """Where replica ``node_id`` is reached, if it is alive."""
        with _store_errors():
            url: Any = await self.aio.get(node_key(node_id))
        return None if url is None else str(url.decode())

    async def publish_change(self, session_id: str) -> None:
        """Tell every replica that a session's description changed (they read it)."""
        with _store_errors():
            await self.aio.publish(WATCH_CHANNEL, session_id)
