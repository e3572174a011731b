"""HTTP library choice: aiohttp's ``web`` against Starlette on uvicorn, measured here.

``python bench/http_library.py [--reps 3] [--seconds 5] [--json PATH]`` prints a table.

The hub's HTTP API (``design/http.md``) runs in the hub's own uvloop event loop, on its
own port, beside the websocket server. This bench serves one identical handler set with
each candidate in a server process of its own (``--serve LIBRARY``, uvloop, orjson):

- ``POST /v1/sessions/{id}/events``: parses the JSON body, answers ``200 {"seq", ...}``;
- ``GET /v1/sessions/{id}/stream``: Server-Sent Events from a per-stream queue, every
  event queued since the last write sent in one write (both libraries alike);
- ``POST /bench/tick`` (the server pushes events on a clock) and ``GET /bench/stats``.

aiohttp runs through ``AppRunner`` and ``SockSite``; Starlette through ``uvicorn.Server``
with ``loop="none"`` (the running loop) and its signal capture switched off, on h11 (what
uvicorn uses without extras) and, when ``httptools`` is importable, on httptools too.
The bench's own process is the load generator (aiohttp's client; also ``wrk`` when it is
installed). Measured, each in a fresh server process, repeated ``--reps`` times with the
libraries alternating (rotated order), medians reported:

1. publish: 10 keep-alive clients each sending POSTs of a ~200-byte JSON body back to
   back for ``--seconds`` after a 1 s warm-up: requests/s, p50 and p99 latency, and the
   server's CPU time per request (from ``/proc``); the same again from ``wrk``;
2. SSE: 10 readers; the server pushes 2,000 events/s (each to all 10 readers) of about
   300 bytes for ``--seconds``; each event carries ``perf_counter_ns()`` from just before
   it is queued and each reader takes the time when a chunk arrives: p50/p99/max, and
   the server's CPU use meanwhile.
   Checked: every reader gets every event once, in order;
3. memory: server RSS with 1,000 more idle open SSE streams than after a warm-up (10
   streams and a few POSTs), per stream; then how long the server takes to notice that
   the 1,010 streams were closed by the client while it has nothing to send;
4. import: seconds to import the server library in a fresh interpreter that has already
   imported what the hub imports anyway (asyncio, ssl, logging, uvloop, orjson, websockets).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

LIBRARIES = ("aiohttp", "starlette-h11", "starlette-httptools")
CLIENTS = 10  # keep-alive publishers, and SSE readers
SSE_RATE = 2000  # events/s pushed by the server, each to every reader
IDLE_STREAMS = 1000
WARM_STREAMS = 10
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
PRELUDE = b"retry: 1000\n\n"
BODY = orjson.dumps({"type": "ci.status", "idempotencyKey": "k" * 24,
                     "data": {"repo": "axtui", "run": 123456, "status": "passed",
                              "url": "https://ci.example/axtui/runs/123456", "pad": "x" * 60}})
HUB_IMPORTS = "import asyncio, ssl, logging, uvloop, orjson, websockets.asyncio.server"
LIBRARY_IMPORTS = {
    "aiohttp": "from aiohttp import web",
    "starlette-h11": "import starlette.applications, starlette.routing, starlette.responses,"
                     " uvicorn, uvicorn.protocols.http.h11_impl",
    "starlette-httptools": "import starlette.applications, starlette.routing,"
                           " starlette.responses, uvicorn, uvicorn.protocols.http.httptools_impl",
}


# ---------------------------------------------------------------- the server process


class Feed:
    """What both servers share: the publish counter and the SSE streams' queues."""

    def __init__(self) -> None:
        self.seq = 0
        self.streams: set[asyncio.Queue[bytes]] = set()
        self._tickers: set[asyncio.Task[None]] = set()

    def ack(self, body: Any) -> bytes:
        """The answer to a publish of ``body`` (already parsed)."""
        self.seq += 1
        return orjson.dumps({"seq": self.seq, "ts": time.time(), "duplicate": False,
                             "type": body["type"]})

    @contextlib.contextmanager
    def subscribed(self) -> Iterator[asyncio.Queue[bytes]]:
        """A queue that receives every pushed event while the ``with`` block runs."""
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.streams.add(queue)
        try:
            yield queue
        finally:
            self.streams.discard(queue)

    @staticmethod
    async def next_write(queue: asyncio.Queue[bytes]) -> bytes:
        """Everything queued for one stream, waiting for at least one event."""
        parts = [await queue.get()]
        while not queue.empty():
            parts.append(queue.get_nowait())
        return b"".join(parts)

    def start_ticker(self, rate: float, seconds: float) -> int:
        """Push ``rate`` events/s for ``seconds`` to every stream; the number of events."""
        count = int(rate * seconds)
        task = asyncio.get_running_loop().create_task(self._tick(rate, count))
        self._tickers.add(task)
        task.add_done_callback(self._tickers.discard)
        return count

    async def _tick(self, rate: float, count: int) -> None:
        pad = "x" * 200
        start, sent = time.perf_counter(), 0
        while sent < count:
            due = min(count, int((time.perf_counter() - start) * rate) + 1)
            for i in range(sent, due):
                event = orjson.dumps({"seq": i + 1, "type": "bench.tick", "ts": time.time(),
                                      "data": {"i": i, "sentNs": time.perf_counter_ns(),
                                               "pad": pad}})
                message = b"id: %d\ndata: %s\n\n" % (i + 1, event)
                for queue in self.streams:
                    queue.put_nowait(message)
            sent = due
            await asyncio.sleep(0.001)

    def stats(self) -> bytes:
        """The server's own counts, for the bench to wait on."""
        return orjson.dumps({"streams": len(self.streams), "seq": self.seq})


async def _serve_aiohttp(feed: Feed, sock: socket.socket, stop: asyncio.Event) -> None:
    from aiohttp import web

    async def publish(request: web.Request) -> web.Response:
        return web.Response(body=feed.ack(orjson.loads(await request.read())),
                            headers=JSON_HEADERS)

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        with feed.subscribed() as queue:
            await response.write(PRELUDE)
            while True:
                await response.write(await feed.next_write(queue))  # awaits drain

    async def tick(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        count = feed.start_ticker(body["rate"], body["seconds"])
        return web.Response(body=orjson.dumps({"events": count}), headers=JSON_HEADERS)

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=feed.stats(), headers=JSON_HEADERS)

    app = web.Application()  # client_max_size: 1 MiB by default, 413 above it
    app.router.add_post("/v1/sessions/{sid}/events", publish)
    app.router.add_get("/v1/sessions/{sid}/stream", stream)
    app.router.add_post("/bench/tick", tick)
    app.router.add_get("/bench/stats", stats)
    runner = web.AppRunner(app, access_log=None)  # handle_signals=False by default
    await runner.setup()
    await web.SockSite(runner, sock, backlog=2048).start()
    print("listening", sock.getsockname()[1], flush=True)
    await stop.wait()
    await runner.cleanup()


async def _serve_starlette(feed: Feed, sock: socket.socket, stop: asyncio.Event,
                           http: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def publish(request: Request) -> Response:
        return Response(feed.ack(orjson.loads(await request.body())), headers=JSON_HEADERS)

    async def stream(request: Request) -> StreamingResponse:
        async def messages() -> AsyncIterator[bytes]:
            with feed.subscribed() as queue:
                yield PRELUDE
                while True:
                    yield await feed.next_write(queue)

        return StreamingResponse(messages(), headers=SSE_HEADERS)

    async def tick(request: Request) -> Response:
        body = orjson.loads(await request.body())
        count = feed.start_ticker(body["rate"], body["seconds"])
        return Response(orjson.dumps({"events": count}), headers=JSON_HEADERS)

    async def stats(request: Request) -> Response:
        return Response(feed.stats(), headers=JSON_HEADERS)

    app = Starlette(routes=[
        Route("/v1/sessions/{sid}/events", publish, methods=["POST"]),
        Route("/v1/sessions/{sid}/stream", stream),
        Route("/bench/tick", tick, methods=["POST"]),
        Route("/bench/stats", stats),
    ])

    class EmbeddedServer(uvicorn.Server):
        """uvicorn inside a loop it does not own: the hub keeps SIGINT and SIGTERM."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(app, loop="none", http=http, ws="none", lifespan="off",
                            access_log=False, log_config=None, backlog=2048)
    server = EmbeddedServer(config)
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    print("listening", sock.getsockname()[1], flush=True)
    await stop.wait()
    server.should_exit = True
    await serving


async def serve(library: str) -> None:
    """Serve the handler set with ``library`` on a free port until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    feed = Feed()
    if library == "aiohttp":
        await _serve_aiohttp(feed, sock, stop)
    else:
        await _serve_starlette(feed, sock, stop, library.removeprefix("starlette-"))


# ---------------------------------------------------------------- the bench process


class Server:
    """One server process: started on a free port, stopped with SIGTERM."""

    def __init__(self, library: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", library], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if line[:1] != ["listening"]:
            self.process.kill()
            raise RuntimeError(f"{library} server did not start")
        self.url = f"http://127.0.0.1:{line[1]}"

    def rss_kb(self) -> int:
        """The server's resident memory in kB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]

    def cpu_seconds(self) -> float:
        """User and system CPU time the server has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited within 5 s."""
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def pct(ordered: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of a sorted, non-empty list."""
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


async def _until(check: Callable[[], Awaitable[bool]], timeout: float) -> float | None:
    """Poll ``check`` every 10 ms: seconds until it held, or None after ``timeout``."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if await check():
            return time.perf_counter() - start
        await asyncio.sleep(0.01)
    return None


async def _streams(session: Any, url: str) -> int:
    async with session.get(f"{url}/bench/stats") as response:
        return int(orjson.loads(await response.read())["streams"])


async def measure_publish(server: Server, seconds: float) -> dict[str, float]:
    """POST load from 10 keep-alive aiohttp clients: requests/s, p50, p99 (ms)."""
    import aiohttp

    url = f"{server.url}/v1/sessions/bench/events"
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:

        async def client(until: float, keep: bool) -> None:
            while (now := time.perf_counter()) < until:
                async with session.post(url, data=BODY, headers=JSON_HEADERS) as response:
                    assert response.status == 200
                    orjson.loads(await response.read())
                if keep:
                    latencies.append(time.perf_counter() - now)

        for warm_up in (True, False):
            span = 1.0 if warm_up else seconds
            cpu = server.cpu_seconds()
            until = time.perf_counter() + span
            await asyncio.gather(*(client(until, not warm_up) for _ in range(CLIENTS)))
    cpu = server.cpu_seconds() - cpu
    latencies.sort()
    return {"rps": len(latencies) / seconds, "p50_ms": pct(latencies, 50) * 1e3,
            "p99_ms": pct(latencies, 99) * 1e3, "cpu_us": cpu / len(latencies) * 1e6}


def measure_publish_wrk(server: Server, seconds: float) -> dict[str, float]:
    """The same POST load from ``wrk`` (1 thread, 10 connections): requests/s, p50, p99."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY.decode())}\n'
                     f'wrk.headers["Content-Type"] = "application/json"\n')
    cpu = server.cpu_seconds()
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{CLIENTS}", f"-d{seconds:g}s", "--latency", "-s", script.name,
             f"{server.url}/v1/sessions/bench/events"],
            capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def latency(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * scale[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise RuntimeError(f"wrk: {non_2xx.group(1)} failed requests")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    cpu = server.cpu_seconds() - cpu
    return {"rps": rps, "p50_ms": latency("50"), "p99_ms": latency("99"),
            "cpu_us": cpu / (rps * seconds) * 1e6}


async def measure_sse(server: Server, seconds: float) -> dict[str, float]:
    """10 SSE readers, 2,000 events/s pushed: publish-to-receive p50/p99/max (ms)."""
    import aiohttp

    url = f"{server.url}/v1/sessions/bench/stream"
    expected = int(SSE_RATE * seconds)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=seconds + 30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:
        ready = [asyncio.Event() for _ in range(CLIENTS)]

        async def reader(n: int) -> tuple[list[int], list[float]]:
            seen: list[int] = []
            lags: list[float] = []
            buffer = b""
            async with session.get(url) as response:
                assert response.status == 200
                async for chunk in response.content.iter_any():
                    now = time.perf_counter_ns()
                    *messages, buffer = (buffer + chunk).split(b"\n\n")
                    for message in messages:
                        if message.startswith(b"retry:"):
                            ready[n].set()
                            continue
                        data = orjson.loads(message.split(b"data: ", 1)[1])["data"]
                        seen.append(data["i"])
                        lags.append((now - data["sentNs"]) / 1e6)
                    if len(seen) >= expected:
                        break
            return seen, lags

        readers = [asyncio.create_task(reader(n)) for n in range(CLIENTS)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 10)
        if await _streams(session, server.url) != CLIENTS:
            raise RuntimeError("the server does not count 10 streams")
        cpu = server.cpu_seconds()
        async with session.post(f"{server.url}/bench/tick",
                                json={"rate": SSE_RATE, "seconds": seconds}) as response:
            assert (await response.json())["events"] == expected
        results = await asyncio.wait_for(asyncio.gather(*readers), seconds + 30)
        cpu = server.cpu_seconds() - cpu
    for seen, _ in results:
        if seen != list(range(expected)):
            raise RuntimeError("an SSE reader lost, duplicated or reordered events")
    lags = sorted(lag for _, reader_lags in results for lag in reader_lags)
    return {"p50_ms": pct(lags, 50), "p99_ms": pct(lags, 99), "max_ms": lags[-1],
            "cpu_pct": cpu / seconds * 100}


async def measure_memory(server: Server) -> dict[str, float]:
    """RSS of 1,000 idle SSE streams above a warmed-up server; how long closing is noticed."""
    import aiohttp

    url = f"{server.url}/v1/sessions/bench/stream"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:
        for _ in range(5):
            async with session.post(f"{server.url}/v1/sessions/bench/events", data=BODY,
                                    headers=JSON_HEADERS) as response:
                await response.read()
        responses: list[Any] = []

        async def open_streams(count: int, expect: int) -> None:
            async def one() -> None:
                response = await session.get(url)
                assert await response.content.readuntil(b"\n\n") == PRELUDE
                responses.append(response)

            await asyncio.gather(*(one() for _ in range(count)))

            async def counted() -> bool:
                return await _streams(session, server.url) == expect

            if await _until(counted, 10) is None:
                raise RuntimeError(f"the server does not count {expect} streams")

        await open_streams(WARM_STREAMS, WARM_STREAMS)
        idle = server.rss_kb()
        await open_streams(IDLE_STREAMS, WARM_STREAMS + IDLE_STREAMS)
        loaded = server.rss_kb()
        for response in responses:
            response.close()

        async def none_left() -> bool:
            return await _streams(session, server.url) == 0

        noticed = await _until(none_left, 3.0)
    return {"idle_mb": idle / 1e3, "per_stream_kb": (loaded - idle) / IDLE_STREAMS,
            "close_noticed_ms": math.nan if noticed is None else noticed * 1e3}


def measure_import(library: str) -> dict[str, float]:
    """Seconds to import ``library`` in a fresh interpreter after the hub's own imports."""
    code = (f"{HUB_IMPORTS}\nimport sys, time\nn = len(sys.modules)\n"
            f"t = time.perf_counter()\n{LIBRARY_IMPORTS[library]}\n"
            "print(time.perf_counter() - t, len(sys.modules) - n)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    return {"import_ms": float(out[0]) * 1e3, "modules": float(out[1])}


def _available(library: str) -> bool:
    return library != "starlette-httptools" or importlib.util.find_spec("httptools") is not None


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * (IDLE_STREAMS + WARM_STREAMS) + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def _loop_run(coroutine: Awaitable[dict[str, float]]) -> dict[str, float]:
    import uvloop

    async def main() -> dict[str, float]:
        return await coroutine

    return uvloop.run(main())


def bench(libraries: list[str], reps: int, seconds: float) -> dict[str, Any]:
    """Every measurement, ``reps`` times each, the libraries alternating: all samples."""
    kinds: dict[str, Callable[[Server], dict[str, float]]] = {
        "publish": lambda s: _loop_run(measure_publish(s, seconds)),
        "sse": lambda s: _loop_run(measure_sse(s, seconds)),
        "memory": lambda s: _loop_run(measure_memory(s)),
    }
    if shutil.which("wrk"):
        kinds["publish_wrk"] = lambda s: measure_publish_wrk(s, seconds)
    samples: dict[str, dict[str, list[dict[str, float]]]] = {}
    for kind, run in kinds.items():
        for rep in range(reps):
            for library in libraries[rep % len(libraries):] + libraries[:rep % len(libraries)]:
                server = Server(library)
                try:
                    sample = run(server)
                finally:
                    server.stop()
                samples.setdefault(kind, {}).setdefault(library, []).append(sample)
                print(f"  {kind:<11} {library:<19} "
                      + "  ".join(f"{k} {v:,.2f}" for k, v in sample.items()), flush=True)
    for rep in range(max(reps, 5)):
        for library in libraries[rep % len(libraries):] + libraries[:rep % len(libraries)]:
            samples.setdefault("import", {}).setdefault(library, []).append(
                measure_import(library))
    return samples


def medians(samples: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """The median of every figure, by measurement and library."""
    return {kind: {lib: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
                   for lib, runs in by_library.items()}
            for kind, by_library in samples.items()}


ROWS = [  # measurement, figure, label
    ("publish", "rps", "POST req/s (aiohttp client)"),
    ("publish", "p50_ms", "POST p50 ms (aiohttp client)"),
    ("publish", "p99_ms", "POST p99 ms (aiohttp client)"),
    ("publish", "cpu_us", "server CPU us/POST (aiohttp client)"),
    ("publish_wrk", "rps", "POST req/s (wrk)"),
    ("publish_wrk", "p50_ms", "POST p50 ms (wrk)"),
    ("publish_wrk", "p99_ms", "POST p99 ms (wrk)"),
    ("publish_wrk", "cpu_us", "server CPU us/POST (wrk)"),
    ("sse", "p50_ms", "SSE p50 ms (10 x 2,000/s)"),
    ("sse", "p99_ms", "SSE p99 ms"),
    ("sse", "max_ms", "SSE max ms"),
    ("sse", "cpu_pct", "server CPU % during SSE push"),
    ("memory", "idle_mb", "idle server RSS MB"),
    ("memory", "per_stream_kb", "RSS per idle SSE stream kB"),
    ("memory", "close_noticed_ms", "idle stream close noticed ms"),
    ("import", "import_ms", "import ms (after hub's)"),
    ("import", "modules", "modules imported"),
]


def table(figures: dict[str, dict[str, dict[str, float]]], libraries: list[str]) -> str:
    """The medians as a Markdown table, with each library's ratio to aiohttp."""
    others = [lib for lib in libraries if lib != "aiohttp"]
    head = ["figure (median)", *libraries, *(f"{lib} / aiohttp" for lib in others)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, key, label in ROWS:
        if kind not in figures:
            continue
        values = [figures[kind][lib][key] for lib in libraries]
        base = figures[kind]["aiohttp"][key] if "aiohttp" in libraries else math.nan
        ratios = [figures[kind][lib][key] / base if base else math.nan for lib in others]
        cells = [_fmt(v) for v in values] + ["-" if math.isnan(r) else f"{r:.2f}x" for r in ratios]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "not noticed"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def main() -> int:
    """Parse the command line; serve (child) or run the bench and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--only", help="comma-separated: " + ",".join(LIBRARIES))
    parser.add_argument("--json", type=Path, help="also write every sample here")
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(args.serve))
        return 0
    _raise_fd_limit()
    chosen = args.only.split(",") if args.only else list(LIBRARIES)
    libraries = [lib for lib in chosen if _available(lib)]
    for lib in set(chosen) - set(libraries):
        print(f"skipped {lib}: httptools is not importable (pip install httptools)")
    print(f"load average before: {os.getloadavg()[0]:.2f}; cpus {os.cpu_count()}", flush=True)
    samples = bench(libraries, args.reps, args.seconds)
    figures = medians(samples)
    print(table(figures, libraries))
    if args.json:
        args.json.write_text(json.dumps({"samples": samples, "medians": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
