"""Who may read /metrics: anyone in local mode, an admin token's holder in token mode."""

from __future__ import annotations

import asyncio

import pytest

from server.hub import Hub
from tests.conftest import HubFactory


async def get(hub: Hub, path: str, headers: dict[str, str] | None = None,
              ) -> tuple[int, dict[str, str], str]:
    """One HTTP/1.1 GET over a real socket: status, headers (lower-case names), body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    lines = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{lines}"
                 "Connection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    status_line, *header_lines = head.split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in fields.items()}, body


async def test_metrics_need_a_token_in_token_mode(hub_factory: HubFactory) -> None:
    """Without an Authorization header /metrics is 401 with a Bearer challenge."""
    hub = await hub_factory(tokens=True)
    status, headers, body = await get(hub, "/metrics")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="axtui"'
    assert "axtui_" not in body
    assert "admin token" in body


async def test_metrics_refuse_a_bad_token(hub_factory: HubFactory) -> None:
    """A token that is not configured gets 401."""
    hub = await hub_factory(tokens=True)
    status, _, body = await get(hub, "/metrics", {"Authorization": "Bearer nope"})
    assert status == 401
    assert "axtui_" not in body


@pytest.mark.parametrize("token", ["viewer-token", "participant-token"])
async def test_metrics_refuse_tokens_below_admin(hub_factory: HubFactory, token: str) -> None:
    """A viewer's or participant's token gets 403: metrics are for the operator."""
    hub = await hub_factory(tokens=True)
    status, _, body = await get(hub, "/metrics", {"Authorization": f"Bearer {token}"})
    assert status == 403
    assert "axtui_" not in body


async def test_metrics_answer_an_admin_token(hub_factory: HubFactory) -> None:
    """An admin token as Bearer gets the Prometheus text."""
    hub = await hub_factory(tokens=True)
    status, headers, body = await get(hub, "/metrics", {"Authorization": "Bearer admin-token"})
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE axtui_connections gauge" in body


async def test_metrics_are_open_in_local_mode(hub_factory: HubFactory) -> None:
    """In local mode (loopback only) /metrics needs no token."""
    hub = await hub_factory()
    status, _, body = await get(hub, "/metrics")
    assert status == 200
    assert "axtui_connections" in body


async def test_healthz_stays_open_in_token_mode(hub_factory: HubFactory) -> None:
    """/healthz needs no token in token mode (load balancers probe it)."""
    hub = await hub_factory(tokens=True)
    status, _, body = await get(hub, "/healthz")
    assert (status, body) == (200, "ok\n")
