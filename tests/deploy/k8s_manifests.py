"""deploy/k8s rendered as `kubectl apply -k` would send it, and read back as objects.

Rendering is kustomize's own (`kubectl kustomize`, kustomize v5), not a re-implementation:
what the tests check is what a cluster would receive. No cluster is contacted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from sam2fleet.shared.settings import Settings
from tests.support import ROOT

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
SCALE_TO_ZERO = K8S / "components" / "scale-to-zero"
PREFIX: str = Settings.model_config["env_prefix"]
# A value the tests stand in for a Secret's, which is made by hand in a cluster.
SECRET_PLACEHOLDER = ""

Doc = dict[str, Any]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built in a test see only what the test gives them, not this machine's
    SAM2FLEET_* environment."""
    for key in list(os.environ):
        if key.startswith(PREFIX):
            monkeypatch.delenv(key)


def kubectl() -> str:
    # On PATH, or where tests/install-kubectl.sh (run by `make test`) puts it.
    beside = Path(sys.executable).parent / "kubectl"
    found = shutil.which("kubectl") or (str(beside) if beside.is_file() else None)
    if found is None:
        pytest.fail(
            "tests/deploy renders deploy/k8s with `kubectl kustomize` (kustomize v5); "
            "run `bash tests/install-kubectl.sh` (make test does), or install kubectl 1.27+"
        )
    version = json.loads(
        subprocess.run(
            [found, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    kustomize = version.get("kustomizeVersion", "v0")
    if int(kustomize.lstrip("v").split(".")[0]) < 5:
        pytest.fail(f"kubectl at {found} carries kustomize {kustomize}; 5 or newer is needed")
    return found


def kustomize(directory: Path) -> list[Doc]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kustomize {directory} failed:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@cache
def render(name: str) -> tuple[Doc, ...]:
    """An overlay's manifests; `gpu+scale-to-zero` adds that component to the gpu overlay."""
    overlay, _, component = name.partition("+")
    if not component:
        return tuple(kustomize(K8S / "overlays" / overlay))
    # A throwaway kustomization beside nothing of the repository's; kustomize takes
    # relative paths only.
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"sam2fleet-k8s-{os.getpid()}-{overlay}"
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / overlay, scratch)],
                "components": [os.path.relpath(K8S / "components" / component, scratch)],
            }
        )
    )
    try:
        return tuple(kustomize(scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


RENDERINGS = (*OVERLAYS, "gpu+scale-to-zero")


def find(docs: tuple[Doc, ...], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(docs: tuple[Doc, ...]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


@dataclass(frozen=True)
class Container:
    workload: str
    init: bool
    spec: Doc

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def image(self) -> str:
        return str(self.spec["image"])

    def port(self, name_or_number: str | int) -> int:
        """A container port, by name or number; fails when the container has none such."""
        for p in self.spec.get("ports", []):
            if name_or_number in (p.get("name"), p["containerPort"]):
                return int(p["containerPort"])
        raise AssertionError(f"{self}: no container port {name_or_number!r}")

    def __str__(self) -> str:
        return f"{self.workload}/{'init:' if self.init else ''}{self.name}"


def containers(docs: tuple[Doc, ...]) -> list[Container]:
    out = []
    for w in workloads(docs):
        spec = pod_spec(w)
        name = w["metadata"]["name"]
        out += [Container(name, True, c) for c in spec.get("initContainers", [])]
        out += [Container(name, False, c) for c in spec["containers"]]
    return out


def fleet_containers(docs: tuple[Doc, ...]) -> list[Container]:
    """Containers that run this project's image (`sam2fleet:<target>`)."""
    return [c for c in containers(docs) if c.image.rsplit(":", 1)[0] == "sam2fleet"]


def container(docs: tuple[Doc, ...], workload: str, name: str) -> Container:
    (found,) = [c for c in containers(docs) if c.workload == workload and c.name == name]
    return found


def environment(docs: tuple[Doc, ...], c: Container) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env."""
    env: dict[str, str] = {}
    for source in c.spec.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{c}: unsupported envFrom {source}"
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in c.spec.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var["valueFrom"]
        if "secretKeyRef" in ref:
            env[var["name"]] = SECRET_PLACEHOLDER
        elif "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[var["name"]] = one(docs, "ConfigMap", key["name"])["data"][key["key"]]
        else:
            raise AssertionError(f"{c}: unsupported valueFrom {ref}")
    return env


def settings_env(docs: tuple[Doc, ...], c: Container) -> dict[str, str]:
    """The container's SAM2FLEET_* variables as Settings field names."""
    return {
        key[len(PREFIX) :].lower(): value
        for key, value in environment(docs, c).items()
        if key.startswith(PREFIX)
    }


DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def image_settings() -> dict[str, str]:
    """SAM2FLEET_* variables the image itself sets (`ENV` in deploy/Dockerfile), as
    Settings field names; the same in every target."""
    found: dict[str, set[str]] = {}
    for name, value in re.findall(rf"\b{PREFIX}(\w+)=(\S+)", DOCKERFILE.read_text()):
        found.setdefault(name.lower(), set()).add(value)
    assert all(len(v) == 1 for v in found.values()), f"targets disagree: {found}"
    return {name: values.pop() for name, values in found.items()}


def settings_of(docs: tuple[Doc, ...], c: Container) -> Settings:
    """The Settings the container's process builds: the image's ENV, then the pod's."""
    return Settings(**{**image_settings(), **settings_env(docs, c)})


_SELECTOR = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<matchers>[^}]*)\}")
_MATCHER = re.compile(r'(?P<label>[a-zA-Z_]\w*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>[^"]*)"')


def promql_selectors(query: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric name, [(label, op, value), ...]) of every `name{...}` selector."""
    return [
        (m.group("name"), [mm.groups() for mm in _MATCHER.finditer(m.group("matchers"))])
        for m in _SELECTOR.finditer(query)
    ]
