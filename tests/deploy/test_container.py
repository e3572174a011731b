"""The image and the Kubernetes manifests, really run: ``podman kube play`` of the test
overlay (three hub replicas and Redis in pods), driven from outside over the hostPorts.

Builds the base image once per machine (debootstrap, about a minute) and the images on it
each run (cached layers); skips only where containers cannot run at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from axtui.client import HubClient
from tests.deploy.podman_setup import HUB_IMAGE, Podman, build_images, ready_podman
from tests.deploy.pods import PodCluster, Replica

pytestmark = pytest.mark.timeout(900)  # from nothing: apt, debootstrap, two image builds

SESSION = "deploy-test"
BEFORE, AFTER = 20, 20  # events published before and after the owner's container is killed


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """Podman ready, the images built."""
    ready = ready_podman(Path.home() / ".cache" / "axtui-tests")
    started = time.monotonic()
    build_images(ready)
    print(f"images built in {time.monotonic() - started:.1f} s")
    return ready


@pytest.fixture
def pods(podman: Podman, tmp_path: Path) -> Iterator[PodCluster]:
    """The podman overlay played; ``podman kube down`` at the end, and checked."""
    cluster = PodCluster(podman, tmp_path)
    try:
        cluster.up()
        yield cluster
    finally:
        down = cluster.down()
        left = podman.run("pod", "ps", "--filter", "name=axtui-", "--format", "{{.Name}}",
                          check=False).stdout.split()
    assert down.returncode == 0, f"podman kube down failed: {down.stderr}"
    assert not left, f"pods left after podman kube down: {left}"


def test_image_runs_alone_non_root_and_passes_its_health_check(
        podman: Podman, tmp_path: Path) -> None:
    """The image on its own (``docker run`` style): a numeric non-root user, the config
    from a mounted file, the token from the environment, a read-only root, and its
    HEALTHCHECK (on /healthz) passing; nothing secret in the image's environment."""
    image = json.loads(podman.run("image", "inspect", HUB_IMAGE).stdout)[0]
    assert image["Config"]["User"] == "10001:10001"
    assert image["Config"]["Entrypoint"] == ["axtui", "serve"]
    env = dict(item.split("=", 1) for item in image["Config"]["Env"])
    assert env["PATH"].startswith("/opt/axtui/bin:")
    assert not [k for k in env if any(w in k for w in ("TOKEN", "SECRET", "PASSWORD", "CERT"))]
    config = tmp_path / "axtui.yaml"
    config.write_text('auth: {tokens: [{name: ops, token: "${AXTUI_ADMIN_TOKEN}", role: admin}]}\n')
    name = f"axtui-alone-{os.getpid()}"
    podman.run("run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp",
               "-v", "/var/lib/axtui", "-v", f"{config}:/etc/axtui/axtui.yaml:ro",
               "-e", "AXTUI_ADMIN_TOKEN=t0ken", HUB_IMAGE)
    try:
        deadline = time.monotonic() + 30
        while podman.run("healthcheck", "run", name, check=False).returncode != 0:
            logs = podman.run("logs", name, check=False)
            assert time.monotonic() < deadline, f"never healthy: {logs.stdout}{logs.stderr}"
            time.sleep(0.2)
        user = podman.run("exec", name, "id", "-u").stdout.strip()
        assert user == "10001"
    finally:
        podman.run("rm", "--force", "--volumes", name, check=False)


@contextlib.asynccontextmanager
async def client(replica: Replica, token: str, reconnect: bool = True
                 ) -> AsyncIterator[HubClient]:
    """A connected client of ``replica`` (``reconnect``: keyed publishes retried on -32029)."""
    async with HubClient(replica.url, token=token, reconnect=reconnect) as hub:
        yield hub


async def owned(replica: Replica, token: str) -> float | None:
    """``axtui_cluster_owned_sessions`` of ``replica`` (``None`` if it does not answer)."""
    def get() -> str:
        request = urllib.request.Request(f"{replica.http}/metrics",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=3) as response:
            return str(response.read().decode())
    try:
        text = await asyncio.to_thread(get)
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "axtui_cluster_owned_sessions":
            return float(value)
    raise AssertionError("no axtui_cluster_owned_sessions in /metrics")


async def until(check: Any, timeout: float, what: str) -> None:
    """Wait for ``check()`` to be true (awaited when it is a coroutine)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def test_three_replicas_in_pods_lose_nothing_when_the_owner_dies(
        pods: PodCluster) -> None:
    """Created through replica 1, published through replica 2, followed on replica 3; the
    owner's container SIGKILLed; publishing goes on and every event is there once."""
    one, two, three = pods.replicas
    token = pods.admin_token
    async with client(one, token, reconnect=False) as c1, client(two, token) as c2, \
            client(three, token) as c3:
        await c1.create_session(sessionId=SESSION, title="in pods")
        assert await owned(one, token) == 1, "the replica that created it owns it"
        seen: list[dict[str, Any]] = []

        async def follow() -> None:
            async for event in c3.subscribe(SESSION):
                seen.append(event)

        follower = asyncio.create_task(follow())

        def notes() -> list[int]:
            return [e["data"]["i"] for e in seen if e["type"] == "test.note"]

        for i in range(BEFORE):
            await c2.publish(SESSION, "test.note", {"i": i}, idempotency_key=f"k{i}")
        await until(lambda: len(notes()) == BEFORE, 20, "replica 3's subscriber sees them")

        pods.kill(one)
        killed = time.monotonic()
        for i in range(BEFORE, BEFORE + AFTER):  # retried on -32029 until the lease runs out
            await c2.publish(SESSION, "test.note", {"i": i}, idempotency_key=f"k{i}")
            if i == BEFORE:
                print(f"first publish after the kill acknowledged in"
                      f" {time.monotonic() - killed:.2f} s")
        await until(lambda: len(notes()) == BEFORE + AFTER, 20,
                    f"every event on replica 3 (saw {notes()})")
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower

        assert notes() == list(range(BEFORE + AFTER)), "each event once, in order"
        seqs = [e["seq"] for e in seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gap in the stream"
        history = await c3.history(SESSION, limit=1000)
        stored = [e["data"]["i"] for e in history["events"] if e["type"] == "test.note"]
        assert stored == list(range(BEFORE + AFTER)), "the log has every event once"
        assert (await c2.get_session(SESSION))["sessionId"] == SESSION
        owners = [await owned(r, token) for r in (two, three)]
        assert sorted(o or 0 for o in owners) == [0, 1] and None not in owners, \
            f"one survivor took the session over: {owners}"
