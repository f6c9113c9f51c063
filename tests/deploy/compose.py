"""docker-compose.yml read for the deploy tests (PyYAML, no Docker): services, their
environment, commands, builds, volumes and ports as compose would resolve them with
no variable set, and the image each one runs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from sam2fleet.shared.settings import Settings
from tests.deploy import dockerfile
from tests.support import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
PREFIX: str = Settings.model_config["env_prefix"]

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME:+alt}
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
)


def resolve(value: str) -> str:
    """The value compose uses when no variable is set: each ${X:-d} becomes d."""

    def default(m: re.Match[str]) -> str:
        assert m.group("op") in (":-", "-"), (
            f"{m.group(0)} has no default: the file must work without a .env"
        )
        return m.group("arg")

    return INTERPOLATION.sub(default, value)


def _mapping(raw: dict[str, Any] | list[str] | None) -> dict[str, str]:
    """A compose mapping (environment, build args) from either of its syntaxes, with
    values resolved; a bare `KEY` in list syntax (taken from the shell) is empty."""
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    out = {}
    for key, value in (raw or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        out[key] = resolve("" if value is None else str(value))
    return out


@dataclass(frozen=True)
class Build:
    dockerfile: Path
    target: str | None
    args: dict[str, str] = field(default_factory=dict)

    def read(self) -> dockerfile.Dockerfile:
        return dockerfile.Dockerfile.read(self.dockerfile)

    def instructions(self) -> list[dockerfile.Instruction]:
        return self.read().instructions(self.target, self.args)


@dataclass(frozen=True)
class Service:
    name: str
    spec: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        return _mapping(self.spec.get("environment"))

    @property
    def command(self) -> list[str]:
        cmd = self.spec.get("command")
        if cmd is None:
            return []
        if isinstance(cmd, str):
            cmd = shlex.split(cmd)
        return [resolve(str(word)) for word in cmd]

    @property
    def build(self) -> Build | None:
        """How the service's image is built from this repository, if it is."""
        build = self.spec.get("build")
        if build is None:
            return None
        if isinstance(build, str):
            build = {"context": build}
        context = ROOT / build.get("context", ".")
        dockerfile_path = context / build.get("dockerfile", "Dockerfile")
        return Build(dockerfile_path, build.get("target"), _mapping(build.get("args")))

    @property
    def mounts(self) -> list[tuple[str, str]]:
        """(source, target) of each volume entry, short or long syntax."""
        out = []
        for entry in self.spec.get("volumes", []):
            if isinstance(entry, str):
                parts = entry.split(":")
                assert len(parts) >= 2, f"anonymous volume {entry!r}: data would not be shared"
                out.append((parts[0], parts[1]))
            else:
                out.append((entry.get("source", ""), entry["target"]))
        return out

    @property
    def ports(self) -> list[tuple[int, int]]:
        """(published, container) port of each mapping, short or long syntax."""
        out = []
        for entry in self.spec.get("ports", []):
            if isinstance(entry, dict):
                target = int(entry["target"])
                out.append((int(resolve(str(entry.get("published", target)))), target))
            else:
                parts = resolve(str(entry)).split("/")[0].split(":")
                out.append((int(parts[-2] if len(parts) >= 2 else parts[-1]), int(parts[-1])))
        return out

    def image_instructions(self) -> list[dockerfile.Instruction]:
        assert self.build is not None, f"{self.name} does not build an image"
        return self.build.instructions()

    def setting(self, name: str) -> str:
        """A setting as the container sees it: compose env, else the image's ENV, else
        the default."""
        key = PREFIX + name.upper()
        if key in self.env:
            return self.env[key]
        if self.build is not None:
            image_env = dockerfile.env(self.image_instructions())
            if key in image_env:
                return image_env[key]
        return str(Settings.model_fields[name].default)


@dataclass(frozen=True)
class Compose:
    text: str
    spec: dict[str, Any]

    @property
    def services(self) -> dict[str, Service]:
        return {name: Service(name, spec) for name, spec in self.spec["services"].items()}

    @property
    def volumes(self) -> dict[str, Any]:
        return self.spec.get("volumes") or {}

    def project_services(self) -> list[Service]:
        """Services that run this project's image (built from a Dockerfile here)."""
        return sorted((s for s in self.services.values() if s.build), key=lambda s: s.name)

    def built_images(self) -> dict[str, list[Service]]:
        """The project's image names (e.g. sam2fleet:gpu) -> the services that build
        them; every service building one image must build it the same way."""
        out: dict[str, list[Service]] = {}
        for service in self.project_services():
            out.setdefault(str(service.spec.get("image", service.name)), []).append(service)
        return out


@cache
def load(path: Path = COMPOSE_FILE) -> Compose:
    text = path.read_text()
    return Compose(text, yaml.safe_load(text))
