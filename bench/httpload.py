"""What W8, W9 and W9m share: the HTTP API's client side and a load process.

Requests go through aiohttp's client (``aiohttp.ClientSession``), one keep-alive
connection per client (``TCPConnector(limit=1)``), with local mode's secret as the Bearer
token (``data_dir/local-token``, :meth:`bench.hub.HubUnderTest.local_token`). The load runs
in a child process (:func:`in_child`), so that the bench's own process (its rich status
line, the figures it keeps) never shares an event loop with it; the hub runs in its own
process as always.
"""

from __future__ import annotations

import multiprocessing
import resource
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import orjson

from bench import common
from bench.common import EVENT_TYPE

JSON_HEADERS = {"Content-Type": "application/json"}


def auth_headers(token: str) -> dict[str, str]:
    """The headers every request of the bench carries."""
    return {"Authorization": f"Bearer {token}", "X-Axtui-Client": "bench/bench"}


def client(token: str, connections: int = 1) -> aiohttp.ClientSession:
    """An HTTP client keeping at most ``connections`` keep-alive connections (0: no limit),
    with no timeouts (a stream stays open as long as the bench wants)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, force_close=False),
        headers=auth_headers(token), timeout=aiohttp.ClientTimeout(total=None),
    )


async def post_event(http: aiohttp.ClientSession, url: str, key: str,
                     data: dict[str, Any]) -> dict[str, Any]:
    """``POST url`` (a session's ``/events``) with ``Idempotency-Key: key``: the answer
    (``seq``, ``ts``, ``duplicate``); raises on a status other than 200."""
    body = orjson.dumps({"type": EVENT_TYPE, "data": data})
    async with http.post(url, data=body, headers={**JSON_HEADERS, "Idempotency-Key": key}
                         ) as response:
        raw = await response.read()
        if response.status != 200:
            raise RuntimeError(f"POST answered {response.status}: {raw[:200]!r}")
    answer: dict[str, Any] = orjson.loads(raw)
    return answer


async def sse_messages(response: aiohttp.ClientResponse,
                       ) -> AsyncIterator[list[tuple[int, bytes]]]:
    """The SSE messages of ``response`` as they arrive: per chunk read from the socket,
    the complete messages in it as (``id``, the ``data`` line). ``retry:`` and comments
    (keepalives) are skipped."""
    pending = b""
    async for chunk in response.content.iter_any():
        pending += chunk
        *complete, pending = pending.split(b"\n\n")
        out = []
        for message in complete:
            seq, data = -1, b""
            for line in message.split(b"\n"):
                if line.startswith(b"id: "):
                    seq = int(line[4:])
                elif line.startswith(b"data: "):
                    data = line[6:]
            if data:
                out.append((seq, data))
        if out:
            yield out


def raise_open_files(want: int) -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to ``want`` (at most the hard limit);
    the soft limit it has then."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_process_open_files(pid: int, want: int) -> int:
    """The same for another process (the hub), through ``prlimit``."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (new, hard))
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]


# --- the load process --------------------------------------------------------------------

Load = Callable[..., Coroutine[Any, Any, dict[str, Any]]]


def _load_process(load: Load, args: tuple[Any, ...], conn: Connection) -> None:
    """The child's entry point: run ``load(*args)`` on uvloop and send back its result."""
    try:
        out: dict[str, Any] = common.run(load(*args))
    except Exception:
        out = {"crashed": traceback.format_exc()}
    conn.send(out)
    conn.close()


def in_child(load: Load, *args: Any, timeout: float = 300.0) -> dict[str, Any]:
    """Run ``load(*args)`` (a module-level coroutine function: it goes to the child by
    name) in a fresh child process and return what it returns; raises if it crashed."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_load_process, args=(load, args, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise RuntimeError(f"the load process did not finish within {timeout:g} s")
        try:
            out: dict[str, Any] = parent.recv()
        except EOFError:
            proc.join(10)
            raise RuntimeError(f"the load process died (exit code {proc.exitcode})") from None
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if "crashed" in out:
        raise RuntimeError(f"the load process crashed:\n{out['crashed']}")
    return out
