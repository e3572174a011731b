"""The floor: the least a Python program must do to be the hub on W1 and W2.

``python -m bench.floor --data-dir D [--durability full|normal]`` serves one session over
the hub's protocol (``initialize``, ``session/create``, ``session/get``,
``session/history``, ``session/subscribe``, ``session/unsubscribe``, ``session/publish``,
``/healthz``), so the very same ``HubClient`` harness drives it. It does only what the hub
must do for a publish: decode the request, encode the event once (the same JSON envelope
as the hub's, ``seq``, ``id``, ``ts``, ``type``, ``source``, ``data``), commit a group of
events in one SQLite transaction (WAL, ``synchronous=FULL``: fsynced, like the hub's
``durability: full``) in a writer thread, one thread hop per group, then answer each
publisher and write the same ``session/events`` frame to every subscriber with
``websockets.broadcast`` (no per-client buffer or lag accounting, no awaits).

Left out, because the floor never meets them on W1/W2: validation beyond the shapes used,
roles and tokens, idempotency keys, state, agents, more than one session, slow-subscriber
cut-off, catch-up beyond ``session/history``. It is a yardstick, not a server to use.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

SESSION = "floor"
EPOCH = "floor-epoch"
MAX_BATCH = 1024


def _event_id() -> str:
    return os.urandom(16).hex()


class Floor:
    """One session: a SQLite log, a writer task, live subscribers."""

    def __init__(self, path: Path, durability: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self.db.execute("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY,"
                        " ts INTEGER NOT NULL, type TEXT NOT NULL, raw TEXT NOT NULL)")
        row = self.db.execute("SELECT max(seq) FROM events").fetchone()
        self.head = int(row[0] or 0)
        self.queue: list[tuple[ServerConnection, Any, str, bytes, bytes]] = []
        self.subscribers: set[ServerConnection] = set()
        self.writer_thread = ThreadPoolExecutor(1, thread_name_prefix="floor-writer")
        self.wake = asyncio.Event()
        self.deliveries = 0

    def _commit(self, rows: list[tuple[int, int, str, bytes]]) -> None:
        """The whole transaction in the writer thread: one hop per group."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT INTO events VALUES (?, ?, ?, CAST(? AS TEXT))", rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    async def write_loop(self) -> None:
        """Group commit: everything queued goes into one transaction, then out."""
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            ts = time.time_ns() // 1_000_000
            rows, raws = [], []
            seq = self.head
            for _, _, type_, source, data in batch:
                seq += 1
                raw = b'{"seq":%d,"id":"%s","ts":%d,"type":"%s","source":%s,"data":%s}' % (
                    seq, _event_id().encode(), ts, type_.encode(), source, data)
                rows.append((seq, ts, type_, raw))
                raws.append(raw)
            await loop.run_in_executor(self.writer_thread, self._commit, rows)
            first = self.head + 1
            self.head = seq
            for n, (conn, request_id, _, _, _) in enumerate(batch):
                reply = {"jsonrpc": "2.0", "id": request_id,
                         "result": {"seq": first + n, "ts": ts, "duplicate": False}}
                broadcast([conn], orjson.dumps(reply), text=True)
            if self.subscribers:
                frame = b"".join((b'{"jsonrpc":"2.0","method":"session/events","params":'
                                  b'{"sessionId":"floor","events":[', b",".join(raws), b"]}}"))
                broadcast(self.subscribers, frame, text=True)
                self.deliveries += len(raws) * len(self.subscribers)

    def session(self) -> dict[str, Any]:
        """The one session, shaped like the hub's."""
        return {"sessionId": SESSION, "title": "floor", "agent": None, "epoch": EPOCH,
                "headSeq": self.head, "agentState": "none", "createdAt": 0, "updatedAt": 0,
                "metadata": {}}

    def history(self, after: int, limit: int) -> list[bytes]:
        """Events after ``after`` (a read on the loop: the floor only uses it at setup)."""
        rows = self.db.execute("SELECT raw FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                               (after, limit)).fetchall()
        return [r[0].encode() if isinstance(r[0], str) else r[0] for r in rows]

    async def handle(self, ws: ServerConnection) -> None:
        """One client connection."""
        source = b'{"kind":"client","name":"local","client":"unknown"}'
        try:
            async for message in ws:
                msg = orjson.loads(message)
                method, rid, params = msg.get("method"), msg.get("id"), msg.get("params") or {}
                result: Any
                if method == "session/publish":
                    data = params.get("data") or {}
                    if not isinstance(data, dict) or not isinstance(params.get("type"), str):
                        await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": {
                            "code": -32602, "message": "bad publish"}}), text=True)
                        continue
                    self.queue.append((ws, rid, params["type"], source, orjson.dumps(data)))
                    self.wake.set()
                    continue
                if method == "initialize":
                    kind = (params.get("clientInfo") or {}).get("kind") or "unknown"
                    source = orjson.dumps({"kind": "client", "name": "local", "client": kind})
                    result = {"protocolVersion": 1, "hubInfo": {"name": "floor", "version": "0"},
                              "principal": {"name": "local", "role": "admin"}}
                elif method in ("session/create", "session/get"):
                    result = {"session": self.session()}
                elif method == "session/history":
                    raws = self.history(int(params.get("afterSeq") or 0),
                                        int(params.get("limit") or 200))
                    result = None
                    reply = b'{"jsonrpc":"2.0","id":%s,"result":{"events":[%s],"headSeq":%d}}' % (
                        orjson.dumps(rid), b",".join(raws), self.head)
                    await ws.send(reply, text=True)
                    continue
                elif method == "session/subscribe":
                    after = int(params.get("afterSeq") or 0)
                    if after != self.head:  # the harness subscribes at the head
                        await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": {
                            "code": -32010, "message": "the floor subscribes at the head only"}}),
                            text=True)
                        continue
                    result = {"sessionId": SESSION, "epoch": EPOCH, "headSeq": self.head}
                    self.subscribers.add(ws)
                elif method == "session/unsubscribe":
                    self.subscribers.discard(ws)
                    result = {}
                else:
                    await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": {
                        "code": -32601, "message": f"the floor has no {method}"}}), text=True)
                    continue
                await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": result}),
                              text=True)
        except ConnectionClosed:
            pass
        finally:
            self.subscribers.discard(ws)

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """``/healthz`` and ``/metrics`` (deliveries only) on the websocket port."""
        if request.path == "/healthz":
            return ws.respond(HTTPStatus.OK, "ok\n")
        if request.path == "/metrics":
            return ws.respond(HTTPStatus.OK, f"axtui_deliveries_total {self.deliveries}\n")
        return None


async def main(data_dir: Path, durability: str) -> None:
    """Serve until SIGTERM."""
    import signal

    data_dir.mkdir(parents=True, exist_ok=True)
    floor = Floor(data_dir / "floor.db", durability)
    writer = asyncio.create_task(floor.write_loop())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with serve(floor.handle, "127.0.0.1", 0, process_request=floor.process_request,
                     compression=None, max_size=4 * 1024 * 1024) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"floor listening on ws://127.0.0.1:{port}/ws", file=sys.stderr, flush=True)
        await stop.wait()
    writer.cancel()
    floor.writer_thread.shutdown()
    floor.db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--durability", choices=["full", "normal"], default="full")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.data_dir, args.durability))
    else:
        uvloop.run(main(args.data_dir, args.durability))
