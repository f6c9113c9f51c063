"""docker-compose.yml and deploy/Dockerfile, checked against the code they run.

No Docker needed: the compose file is read with PyYAML, the Dockerfile with a small
parser, and every name they use (CLI subcommands and options, SAM2FLEET_* settings,
model names, the sam2 pin) is compared with the real objects in the code, so a rename
on either side fails here instead of in a container.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from sam2fleet import cli
from sam2fleet.shared.models import MODELS
from sam2fleet.shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_TEXT = COMPOSE_FILE.read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PREFIX: str = Settings.model_config["env_prefix"]

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME:+alt}
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
)


# --------------------------------------------------------------------------- compose helpers


def resolve(value: str) -> str:
    """The value compose uses when no variable is set: each ${X:-d} becomes d."""

    def default(m: re.Match[str]) -> str:
        assert m.group("op") in (":-", "-"), (
            f"{m.group(0)} has no default: the file must work without a .env"
        )
        return m.group("arg")

    return INTERPOLATION.sub(default, value)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    out = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        out[key] = resolve("" if value is None else str(value))
    return out


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    if cmd is None:
        return []
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    return [resolve(str(word)) for word in cmd]


def build_of(service: dict[str, Any]) -> tuple[Path, str | None]:
    """(Dockerfile path, target) of a service that builds its image."""
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = ROOT / build.get("context", ".")
    return context / build.get("dockerfile", "Dockerfile"), build.get("target")


def mounts_of(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            assert len(parts) >= 2, f"anonymous volume {entry!r}: data would not be shared"
            out.append((parts[0], parts[1]))
        else:
            out.append((entry.get("source", ""), entry["target"]))
    return out


def container_ports(service: dict[str, Any]) -> set[int]:
    out = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.add(int(entry["target"]))
        else:
            out.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return out


def published_ports(service: dict[str, Any]) -> set[int]:
    out = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.add(int(resolve(str(entry.get("published", entry["target"])))))
        else:
            parts = resolve(str(entry)).split("/")[0].split(":")
            out.add(int(parts[-2] if len(parts) >= 2 else parts[-1]))
    return out


def sam2fleet_services() -> list[str]:
    """Services that run this project's image (built from a Dockerfile in the repo)."""
    return sorted(name for name, svc in SERVICES.items() if "build" in svc)


# --------------------------------------------------------------------------- Dockerfile helpers


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages(path: Path) -> dict[str, Stage]:
    """Stages by name (unnamed ones by index), each with its logical instructions."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit inside a continued instruction too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    if pending:
        logical.append(pending)

    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for text in logical:
        instr, _, args = text.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages[name] = Stage(base=words[0])
        elif current is not None:
            current.instructions.append((instr, args.strip()))
    return stages


def target_instructions(stages: dict[str, Stage], target: str) -> list[tuple[str, str]]:
    """Instructions that make up `target`, through the stages it is built FROM."""
    chain: list[Stage] = []
    name: str | None = target
    while name in stages:
        stage = stages[name]
        chain.insert(0, stage)
        name = stage.base
    return [ins for stage in chain for ins in stage.instructions]


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in instructions:
        if instr != "ENV":
            continue
        words = shlex.split(args)
        if words and "=" not in words[0]:  # legacy `ENV KEY value`
            env[words[0]] = " ".join(words[1:])
        else:
            env.update(w.split("=", 1) for w in words)
    return env


@dataclass
class PipInstall:
    position: tuple[int, int]  # (instruction index, segment index): install order
    env: dict[str, str]
    args: list[str]

    def requirement(self, project: str) -> str | None:
        pattern = re.compile(rf"^{re.escape(project)}(\[[^\]]*\])?([<>=!~].*)?$", re.IGNORECASE)
        return next((a for a in self.args if pattern.match(a)), None)


def pip_installs(instructions: list[tuple[str, str]]) -> list[PipInstall]:
    out = []
    for i, (instr, args) in enumerate(instructions):
        if instr != "RUN" or args.startswith("["):
            continue
        lexer = shlex.shlex(args, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        segments: list[list[str]] = [[]]
        for token in lexer:
            if token in ("&&", "||", ";", "|", "&"):
                segments.append([])
            else:
                segments[-1].append(token)
        for j, words in enumerate(segments):
            env = {}
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                key, value = words.pop(0).split("=", 1)
                env[key] = value
            if words[:1] in (["pip"], ["pip3"]) and words[1:2] == ["install"]:
                out.append(PipInstall((i, j), env, words[2:]))
            elif words[:4] in (
                ["python", "-m", "pip", "install"],
                ["python3", "-m", "pip", "install"],
            ):
                out.append(PipInstall((i, j), env, words[4:]))
    return out


def image_instructions(service_name: str) -> list[tuple[str, str]]:
    dockerfile, target = build_of(SERVICES[service_name])
    stages = dockerfile_stages(dockerfile)
    return target_instructions(stages, target or list(stages)[-1])


def effective_setting(service_name: str, name: str) -> str:
    """A setting as the container sees it: compose env, else the image's ENV, else default."""
    key = PREFIX + name.upper()
    env = env_of(SERVICES[service_name])
    if key in env:
        return env[key]
    image_env = dockerfile_env(image_instructions(service_name))
    if key in image_env:
        return image_env[key]
    return str(Settings.model_fields[name].default)


def built_targets() -> dict[str, list[str]]:
    """Dockerfile target -> services that build it."""
    out: dict[str, list[str]] = {}
    for name in sam2fleet_services():
        _, target = build_of(SERVICES[name])
        out.setdefault(target or "", []).append(name)
    return out


# --------------------------------------------------------------------------- CLI helpers


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


def parse_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> argparse.Namespace:
    """What `sam2fleet <argv>` parses to, stopping before any command runs."""
    real = argparse.ArgumentParser.parse_args

    def stop_after_parsing(self, args=None, namespace=None):
        raise _Parsed(real(self, args, namespace))

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", stop_after_parsing)
        try:
            cli.main(argv)
        except _Parsed as parsed:
            return parsed.namespace
        except SystemExit as exc:
            err = capsys.readouterr().err
            pytest.fail(f"`sam2fleet {shlex.join(argv)}` is rejected (exit {exc.code}): {err}")
    pytest.fail(f"`sam2fleet {shlex.join(argv)}` did not reach argument parsing")


def cli_help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    captured = capsys.readouterr()
    assert exc.value.code == 0, f"`sam2fleet {shlex.join(argv)} --help`: {captured.err}"
    return captured.out


def cli_subcommands(capsys) -> set[str]:
    out = cli_help([], capsys)
    m = re.search(r"\{([\w,-]+)\}", out)
    assert m, f"no subcommand list in `sam2fleet --help`:\n{out}"
    return set(m.group(1).split(","))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built here see only what the test passes, not this machine's env."""
    for key in list(os.environ):
        if key.startswith(PREFIX):
            monkeypatch.delenv(key)


# --------------------------------------------------------------------------- the tests


def test_compose_has_the_expected_services() -> None:
    assert {"redis", "api", "worker-gpu", "worker-cpu", "checkpoints"} <= set(SERVICES)
    assert sam2fleet_services(), "no service builds the project image"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_image_or_build(name: str) -> None:
    assert "image" in SERVICES[name] or "build" in SERVICES[name]


@pytest.mark.parametrize("name", sam2fleet_services())
def test_build_points_at_a_dockerfile_target(name: str) -> None:
    dockerfile, target = build_of(SERVICES[name])
    assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
    stages = dockerfile_stages(dockerfile)
    assert target is not None, f"{name}: a multi-stage Dockerfile needs an explicit target"
    assert target in stages, f"{name}: target {target!r} not among {sorted(stages)}"


@pytest.mark.parametrize("target", sorted(built_targets()))
def test_image_runs_the_sam2fleet_cli_as_non_root(target: str) -> None:
    instructions = image_instructions(built_targets()[target][0])
    (script,) = [k for k, v in PYPROJECT["project"]["scripts"].items() if v == "sam2fleet.cli:main"]
    entrypoints = [json.loads(args) for instr, args in instructions if instr == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == [script], (
        f"{target}: ENTRYPOINT must be exec-form [{script!r}] so compose commands are "
        f"subcommands; got {entrypoints}"
    )
    users = [args.split(":")[0] for instr, args in instructions if instr == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{target}: runs as root"


@pytest.mark.parametrize("name", sam2fleet_services())
def test_command_is_a_real_cli_subcommand(name: str, monkeypatch, capsys) -> None:
    argv = command_of(SERVICES[name])
    assert argv, f"{name}: no command (the image's default would run instead)"
    assert argv[0] in cli_subcommands(capsys), f"{name}: `sam2fleet {argv[0]}` does not exist"

    # The deepest parser's help: `checkpoints download X --help` is download's.
    help_text = cli_help(argv, capsys)
    for word in argv:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text), (
                f"{name}: {option} is not an option of `sam2fleet {argv[0]}`"
            )
    parse_cli(argv, monkeypatch, capsys)  # the whole command line parses, values included


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_sam2fleet_environment_names_real_settings(name: str) -> None:
    fields = {}
    for key, value in env_of(SERVICES[name]).items():
        if not key.startswith(PREFIX):
            continue
        field_name = key[len(PREFIX) :].lower()
        assert field_name in Settings.model_fields, f"{name}: {key} is not a setting"
        Settings(**{field_name: value})  # raises ValidationError on a bad value
        fields[field_name] = value
    Settings(**fields)  # and together (cross-field checks)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("target", sorted(built_targets()))
def test_image_environment_names_real_settings(target: str) -> None:
    env = dockerfile_env(image_instructions(built_targets()[target][0]))
    fields = {k[len(PREFIX) :].lower(): v for k, v in env.items() if k.startswith(PREFIX)}
    unknown = set(fields) - set(Settings.model_fields)
    assert not unknown, f"{target}: ENV sets unknown settings {sorted(unknown)}"
    Settings(**fields)


def test_every_interpolation_has_a_default() -> None:
    found = list(INTERPOLATION.finditer(COMPOSE_TEXT))
    assert found
    for m in found:
        resolve(m.group(0))


def test_compose_default_model_is_a_known_checkpoint() -> None:
    defaults = [
        m.group("arg")
        for m in INTERPOLATION.finditer(COMPOSE_TEXT)
        if m.group("name") == PREFIX + "MODEL"
    ]
    assert defaults, f"no ${{{PREFIX}MODEL:-...}} in the compose file"
    for model in defaults:
        assert model in MODELS, f"default model {model!r} not in {sorted(MODELS)}"


def test_api_workers_and_downloader_agree_on_the_model(monkeypatch, capsys) -> None:
    models = {
        name: effective_setting(name, "model")
        for name in sam2fleet_services()
        if name != "checkpoints"
    }
    # The downloader fetches the model its command names, else its own setting.
    downloaded = parse_cli(command_of(SERVICES["checkpoints"]), monkeypatch, capsys).model
    models["checkpoints"] = downloaded or effective_setting("checkpoints", "model")
    assert len(set(models.values())) == 1, f"services disagree on the model: {models}"
    assert set(models.values()) <= set(MODELS)


def test_redis_is_durable_and_never_evicts() -> None:
    words = [str(w) for w in command_of(SERVICES["redis"])]
    options = {word[2:]: words[i + 1] for i, word in enumerate(words[:-1]) if word.startswith("--")}
    assert options.get("appendonly") == "yes", words
    assert options.get("appendfsync") == "everysec", words
    assert options.get("maxmemory-policy") == "noeviction", words
    assert "/data" in {target for _, target in mounts_of(SERVICES["redis"])}
    assert "redis-cli" in SERVICES["redis"]["healthcheck"]["test"]


@pytest.mark.parametrize(
    "name",
    # the downloader never talks to Redis
    [n for n in sam2fleet_services() if (SERVICES[n].get("command") or [""])[0] != "checkpoints"],
)
def test_redis_url_points_at_the_redis_service(name: str) -> None:
    url = urlsplit(effective_setting(name, "redis_url"))
    assert url.hostname in SERVICES, f"{name}: Redis host {url.hostname!r} is no service"
    redis = SERVICES[url.hostname]
    assert str(redis.get("image", "")).startswith("redis"), f"{name}: {url.hostname} is no Redis"
    assert redis.get("profiles") is None, "Redis must start with every profile"
    assert url.hostname in (SERVICES[name].get("depends_on") or {}), (
        f"{name} does not wait for {url.hostname}"
    )


def test_gpu_worker_reserves_an_nvidia_gpu() -> None:
    gpu = SERVICES["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices
    ), devices
    assert effective_setting("worker-gpu", "device").startswith("cuda")
    assert "deploy" not in SERVICES["worker-cpu"], "the CPU worker must not reserve a GPU"
    assert effective_setting("worker-cpu", "device") == "cpu"


def test_worker_kinds_sit_behind_their_own_profiles() -> None:
    assert SERVICES["worker-gpu"].get("profiles") == ["gpu"]
    assert SERVICES["worker-cpu"].get("profiles") == ["cpu"]
    assert SERVICES["checkpoints"].get("profiles") == ["setup"]
    for always in ("redis", "api"):
        assert "profiles" not in SERVICES[always]


@pytest.mark.parametrize("name", ["worker-gpu", "worker-cpu", "checkpoints"])
def test_checkpoint_volume_is_mounted_where_the_setting_points(name: str) -> None:
    checkpoint_dir = effective_setting(name, "checkpoint_dir")
    sources = [src for src, target in mounts_of(SERVICES[name]) if target == checkpoint_dir]
    assert sources, f"{name}: nothing mounted at SAM2FLEET_CHECKPOINT_DIR={checkpoint_dir}"
    assert sources[0] in (COMPOSE.get("volumes") or {}), (
        f"{name}: {sources[0]!r} is not a named volume, so the weights are not shared"
    )
    # The downloader must write into the very volume the workers read.
    downloader_dir = effective_setting("checkpoints", "checkpoint_dir")
    (downloader_volume,) = [
        src for src, target in mounts_of(SERVICES["checkpoints"]) if target == downloader_dir
    ]
    assert sources[0] == downloader_volume


@pytest.mark.usefixtures("clean_env")  # importing the app reads the settings
def test_api_port_matches_its_command_healthcheck_and_image(monkeypatch, capsys) -> None:
    api = SERVICES["api"]
    args = parse_cli(command_of(api), monkeypatch, capsys)
    assert args.host == "0.0.0.0", "the API must listen on all interfaces to be published"
    assert container_ports(api) == {args.port}, "the port mapping misses the API's port"
    assert published_ports(api) == {args.port}, "publish the API on the port it listens on"
    exposed = {
        int(p.split("/")[0])
        for instr, rest in image_instructions("api")
        if instr == "EXPOSE"
        for p in rest.split()
    }
    assert args.port in exposed

    from sam2fleet.api.main import app

    probe = " ".join(api["healthcheck"]["test"])
    url = urlsplit(re.search(r"https?://[^'\"\s]+", probe).group(0))
    assert url.port == args.port
    assert url.path in app.openapi()["paths"], f"healthcheck probes unknown route {url.path}"


@pytest.mark.parametrize("target", sorted(built_targets()))
def test_dockerfile_installs_torch_then_sam2_then_the_project(target: str) -> None:
    services = built_targets()[target]
    instructions = image_instructions(services[0])
    installs = pip_installs(instructions)
    image_env = dockerfile_env(instructions)

    def first(project: str) -> PipInstall:
        hits = [p for p in installs if p.requirement(project)]
        assert hits, f"{target}: nothing installs {project}"
        return hits[0]

    torch, torchvision, sam2 = first("torch"), first("torchvision"), first("sam2")
    project = next(
        (p for p in installs if any(re.fullmatch(r"\.\[server,model\]", a) for a in p.args)),
        None,
    )
    assert project, f"{target}: the project is not installed with `pip install .[server,model]`"
    assert torch.position < sam2.position, "torch must be installed before sam2"
    assert torchvision.position < sam2.position, "torchvision must be installed before sam2"
    assert sam2.position < project.position, "sam2 must be installed before the project"

    (pin,) = [
        r for r in PYPROJECT["project"]["optional-dependencies"]["model"] if re.match(r"^sam2\b", r)
    ]
    assert "==" in pin, f"pyproject must pin sam2 exactly, not {pin!r}"
    assert sam2.requirement("sam2") == pin.replace(" ", ""), (
        f"{target}: installs {sam2.requirement('sam2')}, pyproject pins {pin}"
    )
    assert "--no-build-isolation" in sam2.args
    assert {**image_env, **sam2.env}.get("SAM2_BUILD_CUDA") in ("0", "1"), (
        f"{target}: set SAM2_BUILD_CUDA for the sam2 install"
    )

    # Images whose services run on the CPU take torch from the CPU-only index.
    if any(effective_setting(s, "device") == "cpu" for s in services if s.startswith("worker")):
        indexes = [
            torch.args[i + 1]
            for i, a in enumerate(torch.args[:-1])
            if a in ("--index-url", "--extra-index-url", "-i")
        ]
        indexes += [a.split("=", 1)[1] for a in torch.args if a.startswith("--index-url=")]
        assert any(url.rstrip("/").endswith("/whl/cpu") for url in indexes), (
            f"{target}: CPU image must install torch from the CPU index, got {indexes}"
        )


@pytest.mark.parametrize("target", sorted(built_targets()))
def test_image_holds_every_package_the_project_installs(target: str) -> None:
    """`pip install .` inside the image only installs the packages copied into it; the
    console script imports all of them (the client's subcommands too)."""
    instructions = image_instructions(built_targets()[target][0])
    copied = {  # the sources of every COPY (all its words but the destination)
        Path(source).name
        for instr, rest in instructions
        if instr == "COPY"
        for source in rest.split()[:-1]
        if not source.startswith("--")
    }
    folders = {Path(d).parts[0] for d in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}
    missing = sorted(folders - copied)
    assert not missing, f"{target}: the image does not COPY {missing}"
