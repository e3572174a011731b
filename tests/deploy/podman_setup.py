"""Podman for the deployment tests: installed, configured, and the images built (cached).

No registry of container images is reachable on these machines, so the base image is
made from Debian packages (``debootstrap --variant=minbase`` with python3 and its venv,
``podman import``) and kept as ``localhost/axtui-base:bookworm``: it is built once per
machine. The hub's image (``deploy/Containerfile``) and the test's Redis image
(``deploy/kubernetes/overlays/podman/redis.Containerfile``) are built on it each run;
podman's layer cache makes that instant while the sources are unchanged.

Podman here needs ``runc`` (crun fails: "cgroups in hybrid mode not supported") and no
default ulimits (setrlimit is refused). When the machine has no containers.conf of its
own, the tests give podman theirs through ``CONTAINERS_CONF`` (nothing on the machine is
changed); a machine with its own is used as it is configured.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAY = DEPLOY / "kubernetes" / "overlays" / "podman"
BASE_IMAGE = "localhost/axtui-base:bookworm"
HUB_IMAGE = "localhost/axtui:test"  # the overlay's images: entry
REDIS_IMAGE = "localhost/axtui-redis:bookworm"
SYSTEM_CONF = Path("/etc/containers/containers.conf")
TEST_CONF = """\
# podman as the axtui deployment tests run it (tests/deploy/podman_setup.py)
[engine]
runtime = "runc"

[containers]
default_ulimits = []
"""
PACKAGES = ("podman", "runc", "debootstrap")
BUILD_CA = "/run/axtui-build-ca.crt"  # where a build sees the machine's CA bundle


class Podman:
    """Runs ``podman`` with the environment chosen for these tests."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, *args: str, check: bool = True, timeout: float = 600,
            stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
        """``podman ARGS`` (``stdin`` fed to it); raises with its output when ``check`` and
        it fails."""
        raw = subprocess.run(["podman", *args], env=self.env, capture_output=True,
                             timeout=timeout, check=False, input=stdin)
        done = subprocess.CompletedProcess(raw.args, raw.returncode,
                                           raw.stdout.decode(errors="replace"),
                                           raw.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        return done

    def image_exists(self, name: str) -> bool:
        """Whether the local store has image ``name``."""
        return self.run("image", "exists", name, check=False).returncode == 0


def _apt_install(packages: Sequence[str]) -> str | None:
    """Install Debian packages as the other test setups do (root, apt-get); the reason it
    cannot be done, or ``None``."""
    missing = [p for p in packages if shutil.which(p) is None]
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{', '.join(missing)} missing and not installable here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *PACKAGES]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr[-500:]}"
    return None


def _environment(cache: Path) -> dict[str, str]:
    """podman's environment: the machine's config if it has one, else the tests'."""
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and not SYSTEM_CONF.exists():
        conf = cache / "containers.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(TEST_CONF)
        env["CONTAINERS_CONF"] = str(conf)
    return env


def _build_base(podman: Podman) -> None:
    """Debian bookworm with python3 and python3-venv, imported as :data:`BASE_IMAGE`."""
    tree = Path(tempfile.mkdtemp(prefix="axtui-base-", dir="/var/tmp"))
    try:
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv",
             "bookworm", str(tree)], capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise AssertionError(f"debootstrap failed:\n{done.stdout[-3000:]}")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (tree / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.run(["tar", "-C", str(tree), "-c", "."], capture_output=True,
                             check=True, timeout=300).stdout
        podman.run("import", "-", BASE_IMAGE, stdin=tar, timeout=300)
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def _build_args_for_ca() -> list[str]:
    """Let the image's pip trust the CA bundle this machine trusts (a TLS-intercepting
    proxy's, where there is one): mounted for the build only, never stored."""
    bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    if not Path(bundle).is_file():
        return []
    return ["-v", f"{bundle}:{BUILD_CA}:ro", "--build-arg", f"CA_CERT={BUILD_CA}"]


def build_images(podman: Podman) -> None:
    """The hub's image and the test's Redis image, on the cached base."""
    podman.run("build", "--format", "docker", "-f", str(DEPLOY / "Containerfile"),
               "--build-arg", f"BASE={BASE_IMAGE}", *_build_args_for_ca(),
               "-t", HUB_IMAGE, str(ROOT), timeout=900)
    podman.run("build", "-f", str(OVERLAY / "redis.Containerfile"),
               "--build-arg", f"BASE={BASE_IMAGE}", "-t", REDIS_IMAGE, str(OVERLAY),
               timeout=900)


def ready_podman(cache: Path) -> Podman:
    """Podman installed and able to run a container of the base image (built first if
    missing); skips the test, saying why, only where containers cannot run at all."""
    problem = _apt_install(PACKAGES)
    if problem is not None:
        pytest.skip(f"containers cannot run here: {problem}")
    podman = Podman(_environment(cache))
    info = podman.run("info", check=False, timeout=120)
    if info.returncode != 0:
        pytest.skip(f"containers cannot run here: podman info failed: {info.stderr[-500:]}")
    if not podman.image_exists(BASE_IMAGE):
        _build_base(podman)
    probe = podman.run("run", "--rm", BASE_IMAGE, "/bin/true", check=False, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"containers cannot run here (podman run of {BASE_IMAGE} failed: "
                    f"{probe.stderr.strip()[-500:]}); podman needs runc and a"
                    f" containers.conf with runtime = \"runc\" and default_ulimits = []")
    return podman
