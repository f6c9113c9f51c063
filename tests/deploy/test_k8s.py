"""deploy/k8s checked against the code it runs, as tests/ checks docker-compose.yml.

Every name the manifests use is compared with the real object in the code: CLI
subcommands and options (`build_parser()`), SAM2FLEET_* settings (the `Settings`
class, values included), image tags (Dockerfile targets), ports, probe paths (the
API's routes), the job time limits behind the grace period. A rename on either side
fails here instead of in a cluster. No cluster exists here: see docs/deploy.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sam2fleet.cli import build_parser
from sam2fleet.shared.models import MODELS
from sam2fleet.shared.settings import Settings
from tests.deploy.k8s_manifests import (  # noqa: F401  clean_env: a fixture
    DOCKERFILE,
    OVERLAYS,
    PREFIX,
    RENDERINGS,
    Container,
    Doc,
    clean_env,
    container,
    containers,
    find,
    fleet_containers,
    one,
    pod_spec,
    render,
    settings_env,
    settings_of,
)
from tests.support import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


pytestmark = pytest.mark.usefixtures("clean_env")


def cli_args(argv: list[str]) -> object:
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`sam2fleet {' '.join(argv)}` is not a command the CLI accepts")


def dockerfile_flavours() -> set[str]:
    """The FLAVOR build argument's values: one `<flavour>-base` stage each."""
    return set(
        re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)-base\s*$", DOCKERFILE.read_text(), re.I | re.M)
    )


# --------------------------------------------------------------------------- images, commands


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_images_are_the_projects_dockerfile_flavours(rendering: str) -> None:
    docs = render(rendering)
    ours = fleet_containers(docs)
    assert {c.workload for c in ours} == {"sam2fleet-api", "sam2fleet-worker"}
    compose_flavours = {
        svc["image"]: svc["build"]["args"]["FLAVOR"]
        for svc in COMPOSE["services"].values()
        if "build" in svc
    }
    for c in ours:
        tag = c.image.rsplit(":", 1)[1]
        assert tag in dockerfile_flavours(), f"{c}: no Dockerfile flavour {tag!r}"
        # The same image name means the same build as in docker-compose.yml.
        assert compose_flavours.get(c.image, tag) == tag, c
    others = {c.image for c in containers(docs)} - {c.image for c in ours}
    assert all(re.fullmatch(r"redis:\d+\.\d+", image) for image in others), others


def test_the_gpu_overlay_runs_the_gpu_image_on_one_gpu_per_pod() -> None:
    docs = render("gpu")
    worker_pod = [c for c in containers(docs) if c.workload == "sam2fleet-worker"]
    # One image per GPU node: the downloader runs the worker's image too.
    assert {c.image for c in worker_pod} == {"sam2fleet:gpu"}
    worker = container(docs, "sam2fleet-worker", "worker")
    assert str(worker.spec["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert settings_of(docs, worker).device.startswith("cuda")
    for c in containers(docs):
        if c.name != "worker":
            assert "nvidia.com/gpu" not in str(c.spec.get("resources")), c
    deployment = one(docs, "Deployment", "sam2fleet-worker")
    assert any(t["key"] == "nvidia.com/gpu" for t in pod_spec(deployment)["tolerations"])
    # A rollout must not need a spare GPU: it replaces workers in place.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_the_cpu_overlay_asks_for_no_gpu() -> None:
    docs = render("cpu")
    assert "nvidia.com/gpu" not in yaml.safe_dump(list(docs))
    assert {c.image for c in fleet_containers(docs)} == {"sam2fleet:cpu"}
    worker = container(docs, "sam2fleet-worker", "worker")
    settings = settings_of(docs, worker)
    assert settings.device == "cpu"
    assert settings.torch_threads == int(worker.spec["resources"]["requests"]["cpu"])


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_commands_are_real_cli_commands_run_by_the_image_entrypoint(rendering: str) -> None:
    # Only `args`: the image's exec-form ENTRYPOINT ["sam2fleet"] stays PID 1, and
    # `sam2fleet worker` execs Celery in that same process, so the kubelet's SIGTERM
    # reaches Celery itself (tests/faults/test_scale_in.py runs it for real).
    entrypoints = re.findall(r"^ENTRYPOINT\s+(.+)$", DOCKERFILE.read_text(), re.M)
    assert entrypoints and set(entrypoints) == {'["sam2fleet"]'}, entrypoints
    for c in fleet_containers(render(rendering)):
        assert "command" not in c.spec, f"{c}: `command` would replace the entrypoint"
        args = cli_args(c.spec["args"])
        assert args.command == c.spec["args"][0]  # type: ignore[attr-defined]


def test_roles_run_the_expected_commands() -> None:
    docs = render("gpu")
    api = container(docs, "sam2fleet-api", "api")
    assert api.spec["args"][0] == "api"
    assert cli_args(api.spec["args"]).host == "0.0.0.0"  # type: ignore[attr-defined]
    assert container(docs, "sam2fleet-worker", "worker").spec["args"][0] == "worker"
    download = cli_args(container(docs, "sam2fleet-worker", "checkpoint").spec["args"])
    assert (download.command, download.action) == ("checkpoints", "download")  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_environment_names_real_settings_with_valid_values(rendering: str) -> None:
    docs = render(rendering)
    for c in fleet_containers(docs):
        unknown = set(settings_env(docs, c)) - set(Settings.model_fields)
        assert not unknown, f"{c}: {sorted(PREFIX + u.upper() for u in unknown)} are no settings"
        settings_of(docs, c)  # every value parses, and together they pass the validators


def test_every_process_runs_the_same_model_in_production() -> None:
    docs = render("gpu")
    settings = {str(c): settings_of(docs, c) for c in fleet_containers(docs)}
    assert {s.model for s in settings.values()} <= set(MODELS)
    assert len({s.model for s in settings.values()}) == 1, settings
    assert len({s.redis_url for s in settings.values()}) == 1
    for name, s in settings.items():
        assert s.environment == "production", name
        assert not s.random_weights and not s.fault_injection, name


def test_api_keys_come_from_a_secret_documented_in_deploy_md() -> None:
    docs = render("gpu")
    api = container(docs, "sam2fleet-api", "api")
    (var,) = [v for v in api.spec["env"] if v["name"] == f"{PREFIX}API_KEY_HASHES"]
    ref = var["valueFrom"]["secretKeyRef"]
    assert settings_of(docs, api).auth_enabled
    doc = DEPLOY_DOC.read_text()
    assert re.search(
        rf"create secret generic {ref['name']}\b[^\n]*--from-literal={ref['key']}=", doc
    ), f"docs/deploy.md does not show how to create Secret {ref['name']} key {ref['key']}"
    assert not find(docs, "Secret"), "keys are never committed: the Secret is made by hand"


# --------------------------------------------------------------------------- ports and probes


def test_api_ports_and_probes_match_the_code() -> None:
    from sam2fleet.api.main import app

    routes = set(app.openapi()["paths"])
    docs = render("gpu")
    api = container(docs, "sam2fleet-api", "api")
    port = cli_args(api.spec["args"]).port  # type: ignore[attr-defined]
    assert api.port("http") == port
    probes = {kind: api.spec[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in routes
        assert api.port(probe["port"]) == port
    service = one(docs, "Service", "sam2fleet-api")
    for p in service["spec"]["ports"]:
        assert api.port(p["targetPort"]) == port
    monitor = one(docs, "ServiceMonitor", "sam2fleet-api")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] in routes


def test_scale_to_zero_keeps_the_api_routable_without_workers() -> None:
    # With no worker /readyz is 503 by design, yet the API must take submits: its
    # refusals are what wakes a worker.
    probe = container(render("gpu+scale-to-zero"), "sam2fleet-api", "api").spec["readinessProbe"]
    assert probe["httpGet"]["path"] == "/livez"
    assert (
        one(render("gpu+scale-to-zero"), "ScaledObject", "sam2fleet-worker")["spec"][
            "minReplicaCount"
        ]
        == 0
    )


def test_worker_metrics_port_is_the_one_the_pod_monitor_scrapes() -> None:
    docs = render("gpu")
    worker = container(docs, "sam2fleet-worker", "worker")
    settings = settings_of(docs, worker)
    assert settings.worker_metrics_host == "0.0.0.0"  # reachable from outside the pod
    monitor = one(docs, "PodMonitor", "sam2fleet-worker")
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert worker.port(endpoint["port"]) == settings.worker_metrics_port
        assert endpoint["path"] == "/metrics"


def test_worker_probes_run_worker_ready_long_enough_for_a_model_load() -> None:
    worker = container(render("gpu"), "sam2fleet-worker", "worker")
    for kind in ("startupProbe", "readinessProbe"):
        command = worker.spec[kind]["exec"]["command"]
        assert command[0] == "sam2fleet"
        assert cli_args(command[1:]).command == "worker-ready"  # type: ignore[attr-defined]
    startup = worker.spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    # The probe imports no torch and reads Redis with 3 s timeouts: within its time.
    assert worker.spec["readinessProbe"]["timeoutSeconds"] >= 6
    assert "livenessProbe" not in worker.spec  # why: worker.yaml


def test_grace_period_outlasts_the_longest_job() -> None:
    docs = render("gpu")
    worker = container(docs, "sam2fleet-worker", "worker")
    settings = settings_of(docs, worker)
    grace = pod_spec(one(docs, "Deployment", "sam2fleet-worker"))["terminationGracePeriodSeconds"]
    # The hard limit ends any job; beyond it Celery needs a moment to ack and exit.
    assert grace >= settings.task_time_limit_s + 30, (grace, settings.task_time_limit_s)
    api_grace = pod_spec(one(docs, "Deployment", "sam2fleet-api"))["terminationGracePeriodSeconds"]
    assert api_grace > settings_of(docs, container(docs, "sam2fleet-api", "api")).max_wait_s


# --------------------------------------------------------------------------- checkpoint


@pytest.mark.parametrize("rendering", OVERLAYS)
def test_checkpoint_is_downloaded_into_the_volume_the_worker_reads(rendering: str) -> None:
    docs = render(rendering)
    init = container(docs, "sam2fleet-worker", "checkpoint")
    worker = container(docs, "sam2fleet-worker", "worker")
    fetched = cli_args(init.spec["args"]).model or settings_of(docs, init).model  # type: ignore[attr-defined]
    assert fetched == settings_of(docs, worker).model

    def volume_at(c: Container, path: Path) -> str:
        (name,) = [m["name"] for m in c.spec["volumeMounts"] if Path(m["mountPath"]) == path]
        return str(name)

    assert volume_at(init, settings_of(docs, init).checkpoint_dir) == volume_at(
        worker, settings_of(docs, worker).checkpoint_dir
    )
    assert settings_of(docs, worker).checkpoint is None  # found by name in that folder


# --------------------------------------------------------------------------- dashboards, docs


def test_dashboards_config_map_is_generated_from_the_dashboard_files() -> None:
    docs = render("gpu")
    maps = [
        d
        for d in find(docs, "ConfigMap")
        if d["metadata"].get("labels", {}).get("grafana_dashboard")
    ]
    assert len(maps) == 1
    assert maps[0]["data"] == {p.name: p.read_text() for p in DASHBOARDS}
    # The data source uid the dashboards name is the one this deployment provides.
    uids = set(
        re.findall(
            r'"datasource": \{[^}]*"uid": "([^"]+)"', "".join(p.read_text() for p in DASHBOARDS)
        )
    )
    provided = one(docs, "ConfigMap", "sam2fleet-grafana-datasource")["data"]
    sources = yaml.safe_load(next(iter(provided.values())))["datasources"]
    assert {s["uid"] for s in sources} <= uids
    assert uids - {s["uid"] for s in sources} <= {"-- Grafana --"}


def test_deploy_doc_covers_each_overlay_and_says_no_cluster_ran_it() -> None:
    doc = DEPLOY_DOC.read_text()
    for overlay in OVERLAYS:
        assert f"kubectl apply -k deploy/k8s/overlays/{overlay}" in doc
    assert "components/scale-to-zero" in doc
    assert re.search(r"no (Kubernetes )?cluster", doc, re.I)
