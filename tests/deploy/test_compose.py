"""docker-compose.yml, checked against the code it runs.

No Docker needed: the file is read with PyYAML (tests/deploy/compose.py) and every
name it uses (CLI subcommands and options, SAM2FLEET_* settings, model names, API
routes) is compared with the real objects in the code, so a rename on either side
fails here instead of in a container.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from sam2fleet.shared.models import MODELS
from tests.deploy import dockerfile
from tests.deploy.code_names import PREFIX, api_paths, check_settings, parse_command
from tests.deploy.compose import INTERPOLATION, load, resolve

COMPOSE = load()
SERVICES = COMPOSE.services
PROJECT = [s.name for s in COMPOSE.project_services()]


def test_compose_has_the_expected_services() -> None:
    assert {"redis", "api", "worker-gpu", "worker-cpu", "checkpoints"} <= set(SERVICES)
    assert PROJECT, "no service builds the project image"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_image_or_build(name: str) -> None:
    assert "image" in SERVICES[name].spec or "build" in SERVICES[name].spec


@pytest.mark.parametrize("name", PROJECT)
def test_build_names_its_flavour_of_the_dockerfile(name: str) -> None:
    build = SERVICES[name].build
    assert build is not None and build.dockerfile.is_file(), f"{name}: no Dockerfile"
    image = build.read()
    assert build.target is None or build.target in image.stages, f"{name}: {build.target}"
    # The last stage is built FROM the flavour's base: name it, never take a default.
    assert "FLAVOR" in build.args, f"{name}: the build must name its FLAVOR (cpu or gpu)"
    chain = image.chain(build.target, build.args)
    assert f"{build.args['FLAVOR']}-base" in [s.name for s in chain], [s.name for s in chain]
    base = image.base_image(build.target, build.args)
    assert "$" not in base and base not in image.stages, f"{name}: unresolved base {base}"


@pytest.mark.parametrize("name", PROJECT)
def test_command_is_a_real_cli_subcommand(name: str) -> None:
    argv = SERVICES[name].command
    assert argv, f"{name}: no command (the image's default would run instead)"
    parse_command(argv)  # a real subcommand, real options, values that parse


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_sam2fleet_environment_names_real_settings(name: str) -> None:
    check_settings(SERVICES[name].env, name)


def test_every_interpolation_has_a_default() -> None:
    found = list(INTERPOLATION.finditer(COMPOSE.text))
    assert found
    for m in found:
        resolve(m.group(0))


def test_compose_default_model_is_a_known_checkpoint() -> None:
    defaults = [
        m.group("arg")
        for m in INTERPOLATION.finditer(COMPOSE.text)
        if m.group("name") == PREFIX + "MODEL"
    ]
    assert defaults, f"no ${{{PREFIX}MODEL:-...}} in the compose file"
    for model in defaults:
        assert model in MODELS, f"default model {model!r} not in {sorted(MODELS)}"


def test_api_workers_and_downloader_agree_on_the_model() -> None:
    models = {name: SERVICES[name].setting("model") for name in PROJECT if name != "checkpoints"}
    # The downloader fetches the model its command names, else its own setting.
    downloaded = parse_command(SERVICES["checkpoints"].command).model
    models["checkpoints"] = downloaded or SERVICES["checkpoints"].setting("model")
    assert len(set(models.values())) == 1, f"services disagree on the model: {models}"
    assert set(models.values()) <= set(MODELS)


def test_redis_is_durable_and_never_evicts() -> None:
    redis = SERVICES["redis"]
    words = redis.command
    options = {word[2:]: words[i + 1] for i, word in enumerate(words[:-1]) if word.startswith("--")}
    assert options.get("appendonly") == "yes", words
    assert options.get("appendfsync") == "everysec", words
    assert options.get("maxmemory-policy") == "noeviction", words
    assert "/data" in {target for _, target in redis.mounts}
    assert "redis-cli" in redis.spec["healthcheck"]["test"]


@pytest.mark.parametrize(
    "name",
    # the downloader never talks to Redis
    [n for n in PROJECT if SERVICES[n].command[:1] != ["checkpoints"]],
)
def test_redis_url_points_at_the_redis_service(name: str) -> None:
    url = urlsplit(SERVICES[name].setting("redis_url"))
    assert url.hostname in SERVICES, f"{name}: Redis host {url.hostname!r} is no service"
    redis = SERVICES[url.hostname].spec
    assert str(redis.get("image", "")).startswith("redis"), f"{name}: {url.hostname} is no Redis"
    assert redis.get("profiles") is None, "Redis must start with every profile"
    assert url.hostname in (SERVICES[name].spec.get("depends_on") or {}), (
        f"{name} does not wait for {url.hostname}"
    )


def test_gpu_worker_reserves_an_nvidia_gpu() -> None:
    gpu = SERVICES["worker-gpu"]
    devices = gpu.spec["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices
    ), devices
    assert gpu.setting("device").startswith("cuda")
    assert gpu.build is not None and gpu.build.args.get("FLAVOR") == "gpu", "a CUDA torch"
    cpu = SERVICES["worker-cpu"]
    assert "deploy" not in cpu.spec, "the CPU worker must not reserve a GPU"
    assert cpu.setting("device") == "cpu"
    assert cpu.build is not None and cpu.build.args.get("FLAVOR") == "cpu", "a CPU-only torch"


def test_worker_kinds_sit_behind_their_own_profiles() -> None:
    assert SERVICES["worker-gpu"].spec.get("profiles") == ["gpu"]
    assert SERVICES["worker-cpu"].spec.get("profiles") == ["cpu"]
    assert SERVICES["checkpoints"].spec.get("profiles") == ["setup"]
    for always in ("redis", "api"):
        assert "profiles" not in SERVICES[always].spec


@pytest.mark.parametrize("name", ["worker-gpu", "worker-cpu", "checkpoints"])
def test_checkpoint_volume_is_mounted_where_the_setting_points(name: str) -> None:
    checkpoint_dir = SERVICES[name].setting("checkpoint_dir")
    sources = [src for src, target in SERVICES[name].mounts if target == checkpoint_dir]
    assert sources, f"{name}: nothing mounted at SAM2FLEET_CHECKPOINT_DIR={checkpoint_dir}"
    assert sources[0] in COMPOSE.volumes, (
        f"{name}: {sources[0]!r} is not a named volume, so the weights are not shared"
    )
    # The downloader must write into the very volume the workers read.
    downloader = SERVICES["checkpoints"]
    downloader_dir = downloader.setting("checkpoint_dir")
    (downloader_volume,) = [src for src, target in downloader.mounts if target == downloader_dir]
    assert sources[0] == downloader_volume


def test_api_port_matches_its_command_healthcheck_and_image() -> None:
    api = SERVICES["api"]
    args = parse_command(api.command)
    assert args.host == "0.0.0.0", "the API must listen on all interfaces to be published"
    assert {c for _, c in api.ports} == {args.port}, "the port mapping misses the API's port"
    assert {p for p, _ in api.ports} == {args.port}, "publish the API on the port it listens on"
    assert args.port in dockerfile.exposed_ports(api.image_instructions())

    probe = " ".join(api.spec["healthcheck"]["test"])
    found = re.search(r"https?://[^'\"\s]+", probe)
    assert found, probe
    url = urlsplit(found.group(0))
    assert url.port == args.port
    assert url.path in api_paths(), f"healthcheck probes unknown route {url.path}"
