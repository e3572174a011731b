"""The event stream of http.md §5 (Server-Sent Events) against a real hub: every event after
the cursor once, in order, backlog then live, while publishers race the reader; resume with
Last-Event-ID; filters; keepalives; slow readers cut off; streams ended by a delete or a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import pytest

import server.sse
from server.hub import Hub
from tests.conftest import HubFactory
from tests.server.http_helpers import Http, Message, SseReader, auth_headers, http_client, sse


def seqs(messages: list[Message]) -> list[int]:
    """The seqs of ``messages``, checking each ``id:`` is its event's seq."""
    out = []
    for message in messages:
        event = message.event
        assert message.id == str(event["seq"]), (message.id, event["seq"])
        out.append(event["seq"])
    return out


async def publish_many(http: Http, sid: str, count: int, publishers: int = 4,
                       **params: Any) -> None:
    """``count`` events published by ``publishers`` concurrent clients."""
    async def one(n: int) -> None:
        for i in range(n, count, publishers):
            await http.publish(sid, data={"i": i}, **params)
    await asyncio.gather(*[one(n) for n in range(publishers)])


async def until_seq(reader: SseReader, last: int, timeout: float = 20.0) -> list[Message]:
    """Messages until the one with seq ``last``."""
    out: list[Message] = []
    async with asyncio.timeout(timeout):
        while not out or out[-1].event["seq"] < last:
            message = await reader.next(timeout)
            assert message is not None, "the stream ended early"
            out.append(message)
    return out


async def test_stream_from_zero_while_publishers_race(hub: Hub) -> None:
    """A stream opened while four clients publish gets every event from 1 once, in order,
    each as the event session/history gives."""
    count = 400
    async with http_client(hub) as http:
        await http.create("s")
        async with sse(http, "s") as reader:
            assert reader.response.headers["Content-Type"].startswith("text/event-stream")
            assert reader.response.headers["Cache-Control"] == "no-cache"
            publishing = asyncio.create_task(publish_many(http, "s", count))
            messages = await until_seq(reader, count + 1)
            await publishing
        assert reader.retry == "1000"
        assert seqs(messages) == list(range(1, count + 2))
        history = await http.events("s")
    assert [m.event for m in messages] == history


async def test_dropped_and_resumed_with_last_event_id(hub: Hub) -> None:
    """A reader dropped mid-way while publishing goes on resumes with Last-Event-ID:
    nothing missed, nothing twice."""
    count = 300
    async with http_client(hub) as http:
        await http.create("s")
        publishing = asyncio.create_task(publish_many(http, "s", count))
        async with sse(http, "s") as reader:
            first = await reader.take(40)
        assert not publishing.done()
        last_id = first[-1].id
        assert last_id is not None
        async with sse(http, "s", headers={"Last-Event-ID": last_id}) as again:
            rest = await until_seq(again, count + 1)
        await publishing
    assert seqs(first) + seqs(rest) == list(range(1, count + 2))


async def test_last_event_id_wins_over_after_seq(hub: Hub) -> None:
    """With both, the stream starts after Last-Event-ID (what EventSource sends)."""
    async with http_client(hub) as http:
        await http.create("s")
        await publish_many(http, "s", 9, publishers=1)
        async with sse(http, "s", "?afterSeq=2", headers={"Last-Event-ID": "7"}) as reader:
            messages = await until_seq(reader, 10)
    assert seqs(messages) == [8, 9, 10]


async def test_after_seq_and_epoch(hub: Hub) -> None:
    """?afterSeq= starts after it; the session's own epoch is accepted; afterSeq = head
    gives only live events."""
    async with http_client(hub) as http:
        session = await http.create("s")
        await publish_many(http, "s", 9, publishers=1)
        async with sse(http, "s", f"?afterSeq=5&epoch={session['epoch']}") as reader:
            backlog = await until_seq(reader, 10)
        assert seqs(backlog) == [6, 7, 8, 9, 10]
        async with sse(http, "s", "?afterSeq=10") as reader:
            await http.publish("s")
            (live,) = await reader.take(1)
        assert seqs([live]) == [11]


async def test_epoch_mismatch_is_409_before_the_stream(hub: Hub) -> None:
    """Another epoch: 409 -32010, a JSON body, no event stream."""
    async with http_client(hub) as http:
        await http.create("s")
        answer = await http.get("/v1/sessions/s/stream?epoch=0000")
        assert answer.status == 409 and answer.code == -32010
        assert answer.headers["Content-Type"].startswith("application/json")
        ahead = await http.get("/v1/sessions/s/stream?afterSeq=2")
        assert ahead.status == 409 and ahead.code == -32010


async def test_types_filter_keeps_ids_as_seqs(hub: Hub) -> None:
    """?types= sends only matching events, id: still their seq; a resume from such an id
    skips nothing that matches."""
    async with http_client(hub) as http:
        await http.create("s")
        for i in range(12):
            await http.publish("s", "ci.failed" if i % 3 == 0 else "note", data={"i": i})
        async with sse(http, "s", "?types=ci.*,session.created") as reader:
            messages = await reader.take(3)
        assert seqs(messages) == [1, 2, 5]
        assert [m.event["type"] for m in messages] == ["session.created", "ci.failed",
                                                       "ci.failed"]
        async with sse(http, "s", "?types=ci.*",
                       headers={"Last-Event-ID": str(messages[-1].id)}) as again:
            await http.publish("s", "ci.passed")
            rest = await until_seq(again, 14)
    assert seqs(rest) == [8, 11, 14]


async def test_keepalive_comment_while_idle(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """While nothing is sent, ': keepalive' comments go out; events still follow."""
    monkeypatch.setattr(server.sse, "KEEPALIVE", 0.05)
    async with http_client(hub) as http:
        await http.create("s")
        async with sse(http, "s") as reader:
            await reader.take(1)
            async with asyncio.timeout(5):
                while True:
                    line = await reader.response.content.readline()
                    assert line, "the stream ended"
                    if line == b": keepalive\n":
                        break
            await http.publish("s")
            (message,) = await reader.take(1)
    assert seqs([message]) == [2]


async def test_many_readers_get_the_same_events(hub: Hub) -> None:
    """Five streams and a publisher: each stream gets every event, identical."""
    async with http_client(hub) as http:
        await http.create("s")
        async with contextlib.AsyncExitStack() as stack:
            readers = [await stack.enter_async_context(sse(http, "s")) for _ in range(5)]
            publishing = asyncio.create_task(publish_many(http, "s", 100))
            got = await asyncio.gather(*[until_seq(r, 101) for r in readers])
            await publishing
    for messages in got:
        assert [m.data for m in messages] == [m.data for m in got[0]]
        assert seqs(messages) == list(range(1, 102))


async def test_slow_reader_is_cut_off_and_does_not_slow_another(
    hub_factory: HubFactory,
) -> None:
    """A reader that reads nothing falls past max_lag_bytes and is disconnected, while a
    reader that reads gets everything; the slow one then has a dense prefix and resumes with
    Last-Event-ID without loss."""
    hub = await hub_factory(max_lag_bytes=64 * 1024)
    assert hub.http is not None
    async with http_client(hub) as http:
        await http.create("s")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", hub.http.port))
        slow_reader, slow_writer = await asyncio.open_connection(sock=sock)
        headers = "".join(f"{k}: {v}\r\n" for k, v in auth_headers(hub).items())
        slow_writer.write(f"GET /v1/sessions/s/stream HTTP/1.1\r\nHost: x\r\n{headers}"
                          "\r\n".encode())
        await slow_writer.drain()
        async with asyncio.timeout(5):
            while len(hub.http.streams) < 1:
                await asyncio.sleep(0.01)
        blob = "x" * 50_000
        async with sse(http, "s") as fast:
            published = 1
            async with asyncio.timeout(30):
                while hub.metrics.slow_disconnects == 0:
                    published = (await http.publish("s", "load", data={"blob": blob}))["seq"]
                got = await until_seq(fast, published)
            assert seqs(got) == list(range(1, published + 1))
            # The slow stream is gone from the hub while its reader still reads nothing.
            async with asyncio.timeout(10):
                while len(hub.http.streams) > 1:
                    await asyncio.sleep(0.02)
            assert hub.metrics.slow_disconnects == 1
        received = b""
        async with asyncio.timeout(15):  # what was sent before the cut, then EOF (or a reset)
            with contextlib.suppress(ConnectionResetError):
                while chunk := await slow_reader.read(65536):
                    received += chunk
        slow_writer.close()
        complete = received.split(b"\n\n")[:-1]  # a message cut short is not one
        ids = [int(line[4:]) for block in complete for line in block.split(b"\n")
               if line.startswith(b"id: ")]
        assert ids == list(range(1, len(ids) + 1))
        last = ids[-1] if ids else 0
        async with sse(http, "s", headers={"Last-Event-ID": str(last)}) as again:
            rest = await until_seq(again, published)
        assert seqs(rest) == list(range(last + 1, published + 1))


async def test_catching_up_reader_is_not_cut_off(hub_factory: HubFactory) -> None:
    """A backlog far bigger than max_lag_bytes reaches a reader that reads."""
    hub = await hub_factory(max_lag_bytes=4000)
    async with http_client(hub) as http:
        await http.create("s")
        for i in range(20):
            await http.publish("s", data={"i": i, "pad": "p" * 1000})
        async with sse(http, "s") as reader:
            messages = await until_seq(reader, 21)
    assert seqs(messages) == list(range(1, 22))
    assert hub.metrics.slow_disconnects == 0


async def test_deleting_the_session_ends_the_stream(hub: Hub) -> None:
    """DELETE of the session: the stream ends after what was sent."""
    async with http_client(hub) as http:
        await http.create("s")
        await http.publish("s")
        async with sse(http, "s") as reader:
            assert seqs(await reader.take(2)) == [1, 2]
            await http.ok("DELETE", "/v1/sessions/s")
            assert await reader.rest(timeout=5) == []
            assert reader.ended


async def test_stopping_the_hub_ends_streams(hub_factory: HubFactory) -> None:
    """hub.stop() ends every SSE stream and returns promptly."""
    hub = await hub_factory()
    async with http_client(hub) as http:
        await http.create("s")
        async with sse(http, "s") as one, sse(http, "s") as two:
            await one.take(1)
            await two.take(1)
            stopping = asyncio.create_task(hub.stop())
            try:
                assert await one.rest(timeout=5) == []
                assert await two.rest(timeout=5) == []
            finally:
                await asyncio.wait_for(stopping, 10)


async def test_viewer_may_stream(hub_factory: HubFactory) -> None:
    """A viewer's token opens a stream (session/subscribe needs viewer)."""
    hub = await hub_factory(tokens=True)
    async with http_client(hub, "participant-token") as paul, \
            http_client(hub, "viewer-token") as vera:
        await paul.create("s")
        async with sse(vera, "s") as reader:
            await paul.publish("s")
            messages = await reader.take(2)
    assert seqs(messages) == [1, 2]
    assert messages[1].event["source"]["name"] == "paul"
