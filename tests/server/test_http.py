"""Plain HTTP on the hub's port: /healthz and /metrics."""

from __future__ import annotations

import asyncio

from server.hub import Hub
from tests.conftest import Raw


async def http_get(hub: Hub, path: str) -> tuple[int, str]:
    """A minimal HTTP/1.1 GET over a real socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_healthz_answers_ok(hub: Hub) -> None:
    """GET /healthz answers 200 ok."""
    assert await http_get(hub, "/healthz") == (200, "ok\n")


async def test_metrics_count_what_happened(hub: Hub, raw: Raw) -> None:
    """GET /metrics reports connections, sessions, events, deliveries, latency histogram."""
    await raw.call("session/create", {"sessionId": "m"})
    await raw.call("session/subscribe", {"sessionId": "m"})
    await raw.events("m", 1)
    for _ in range(3):
        await raw.call("session/publish", {"sessionId": "m", "type": "note"})
    await raw.events("m", 3)
    status, body = await http_get(hub, "/metrics")
    assert status == 200
    values = dict(line.rsplit(" ", 1) for line in body.splitlines() if not line.startswith("#"))
    assert values["axtui_connections"] == "1"
    assert values["axtui_sessions_open"] == "1"
    assert values["axtui_events_appended_total"] == "4"
    assert values["axtui_deliveries_total"] == "4"
    assert values["axtui_publish_commit_seconds_count"] == "3"  # the publishes
    assert values['axtui_publish_commit_seconds_bucket{le="+Inf"}'] == "3"
    assert values["axtui_slow_subscriber_disconnects_total"] == "0"


async def test_unknown_path_is_404(hub: Hub) -> None:
    """Anything but /ws, /healthz and /metrics is 404."""
    status, _ = await http_get(hub, "/nope")
    assert status == 404
