"""deploy/k8s as a whole: who may reach whom, how the fleet finds Redis, what scales.

NetworkPolicies are evaluated here for the subset the manifests use (matchLabels
selectors, named ports), the Sentinel URL is taken apart and compared with the
StatefulSet and its scripts, and the autoscalers' queries with the metrics the code
registers. No cluster is contacted.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from prometheus_client import REGISTRY

from sam2fleet.shared.metrics import STAGES, error_types
from tests.deploy.k8s_manifests import (  # noqa: F401  clean_env: a fixture
    PREFIX,
    RENDERINGS,
    Doc,
    clean_env,
    container,
    find,
    fleet_containers,
    one,
    pod_labels,
    pod_spec,
    promql_selectors,
    render,
    settings_of,
    workloads,
)

# Labels Prometheus itself adds to every scraped series (target labels).
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "service", "endpoint"}


pytestmark = pytest.mark.usefixtures("clean_env")


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


# --------------------------------------------------------------------------- network policy


def ingress_rules(docs: tuple[Doc, ...], workload: Doc) -> list[tuple[list[Doc] | None, set[int]]]:
    """(sources or None for anywhere, container ports) of every rule admitting traffic
    into this workload's pods."""
    labels, spec = pod_labels(workload), pod_spec(workload)
    ports = {p.get("name"): p["containerPort"] for c in spec["containers"] for p in c["ports"]}
    out = []
    for policy in find(docs, "NetworkPolicy"):
        if not selects(policy["spec"]["podSelector"], labels):
            continue
        assert "Ingress" in policy["spec"]["policyTypes"], policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            allowed = {ports.get(p["port"], p["port"]) for p in rule.get("ports", [])}
            assert allowed <= set(ports.values()), f"{policy['metadata']['name']}: {allowed}"
            out.append((rule.get("from"), allowed or set(ports.values())))
    return out


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_only_the_api_is_reachable_from_outside(rendering: str) -> None:
    docs = render(rendering)
    deny = [p for p in find(docs, "NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert deny and all(not p["spec"].get("ingress") for p in deny), "no default deny"
    api = one(docs, "Deployment", "sam2fleet-api")
    api_port = container(docs, "sam2fleet-api", "api").port("http")
    open_rules = [ports for sources, ports in ingress_rules(docs, api) if sources is None]
    assert open_rules == [{api_port}], open_rules
    for workload in workloads(docs):
        if workload is api:
            continue
        for sources, _ in ingress_rules(docs, workload):
            assert sources, f"{workload['metadata']['name']} is open to anyone"
            for source in sources:
                assert "ipBlock" not in source, f"{workload['metadata']['name']}: {source}"


def test_redis_is_reachable_from_fleet_pods_only() -> None:
    docs = render("gpu")
    redis = one(docs, "StatefulSet", "redis")
    fleet = {w["metadata"]["name"]: pod_labels(w) for w in workloads(docs)}
    rules = ingress_rules(docs, redis)
    assert rules
    reachable_from: set[str] = set()
    for sources, _ in rules:
        assert sources is not None
        for source in sources:
            # A podSelector alone means pods of this namespace; a namespaceSelector
            # would open Redis to other namespaces.
            assert set(source) == {"podSelector"}, source
            reachable_from |= {
                n for n, labels in fleet.items() if selects(source["podSelector"], labels)
            }
    assert reachable_from == set(fleet), (
        f"Redis reachable from {reachable_from}, fleet is {set(fleet)}"
    )


def test_worker_metrics_are_open_to_the_monitoring_namespace_only() -> None:
    docs = render("gpu")
    worker = one(docs, "Deployment", "sam2fleet-worker")
    port = settings_of(docs, container(docs, "sam2fleet-worker", "worker")).worker_metrics_port
    rules = ingress_rules(docs, worker)
    assert [ports for _, ports in rules] == [{port}]
    (sources,) = [s for s, _ in rules]
    assert sources == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


# --------------------------------------------------------------------------- Redis and Sentinel


def redis_scripts(docs: tuple[Doc, ...]) -> dict[str, str]:
    (scripts,) = [
        d for d in find(docs, "ConfigMap") if d["metadata"]["name"].startswith("redis-scripts")
    ]
    data: dict[str, str] = scripts["data"]
    return data


def test_the_fleet_reaches_redis_through_every_sentinel() -> None:
    docs = render("gpu")
    url = urlsplit(settings_of(docs, container(docs, "sam2fleet-api", "api")).redis_url)
    assert url.scheme == "sentinel"
    redis = one(docs, "StatefulSet", "redis")
    service = one(docs, "Service", redis["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"  # a DNS name per pod
    sentinel_port = container(docs, "redis", "sentinel").port("sentinel")
    pods = {f"redis-{i}.{service['metadata']['name']}" for i in range(redis["spec"]["replicas"])}
    hosts = [h.rsplit(":", 1) for h in url.netloc.split(",")]
    assert {h for h, _ in hosts} == pods, "list every sentinel, so any one of them will do"
    assert {int(p) for _, p in hosts} == {sentinel_port}
    assert sentinel_port in {p["port"] for p in service["spec"]["ports"]}
    scripts = redis_scripts(docs)
    (master,) = parse_qs(url.query)["master"]
    assert f"MASTER_NAME={master}\n" in scripts["primary.sh"]
    # primary.sh asks each peer's sentinel: it must know every pod of the set.
    (loop,) = re.findall(r"for i in ([\d ]+);", scripts["primary.sh"])
    assert [int(i) for i in loop.split()] == list(range(redis["spec"]["replicas"]))
    assert "redis-0.redis" in scripts["primary.sh"]  # the primary of a new set


def test_redis_scripts_are_valid_shell_and_durable() -> None:
    scripts = redis_scripts(render("gpu"))
    for name, text in scripts.items():
        done = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True)
        assert done.returncode == 0, f"{name}: {done.stderr}"
    start = scripts["start-redis.sh"]
    for option in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert option in start
    assert "--sentinel" in scripts["start-sentinel.sh"]
    for c in ("redis", "sentinel"):
        command = container(render("gpu"), "redis", c).spec["command"]
        assert command[-1].removeprefix("/scripts/") in scripts, command


# --------------------------------------------------------------------------- autoscaling, PDBs


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_autoscaled_deployments_leave_the_count_to_the_autoscaler(rendering: str) -> None:
    docs = render(rendering)
    targets = [h["spec"]["scaleTargetRef"] for h in find(docs, "HorizontalPodAutoscaler")]
    targets += [s["spec"]["scaleTargetRef"] for s in find(docs, "ScaledObject")]
    assert {t["name"] for t in targets} == {"sam2fleet-api", "sam2fleet-worker"}
    for target in targets:
        deployment = one(docs, target.get("kind", "Deployment"), target["name"])
        assert "replicas" not in deployment["spec"], f"{target['name']}: apply would reset it"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_disruption_budget_covers_a_workload(rendering: str) -> None:
    docs = render(rendering)
    budgets = find(docs, "PodDisruptionBudget")
    for workload in workloads(docs):
        covering = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(workload))]
        assert len(covering) == 1, workload["metadata"]["name"]
    assert len(budgets) == len(workloads(docs))


def registered_metrics() -> dict[str, set[str]]:
    """Every metric series name the API and the worker register, with its labels."""
    import sam2fleet.api.metrics
    import sam2fleet.worker.metrics  # noqa: F401

    out: dict[str, set[str]] = {}
    for name, collector in REGISTRY._names_to_collectors.items():  # noqa: SLF001
        out[name] = set(getattr(collector, "_labelnames", ()))
    return out


def test_keda_queries_read_metrics_the_fleet_exports() -> None:
    docs = render("gpu")
    scaled = one(docs, "ScaledObject", "sam2fleet-worker")
    namespace = scaled["metadata"]["namespace"]
    model = settings_of(docs, container(docs, "sam2fleet-worker", "worker")).model
    known = registered_metrics()
    known_values = {"model": {model}, "namespace": {namespace}, "stage": set(STAGES)}
    known_values["error_type"] = set(error_types())
    used = set()
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "prometheus"
        query = trigger["metadata"]["query"]
        selectors = promql_selectors(query)
        assert selectors, query
        for name, matchers in selectors:
            assert name in known, f"{name} is not a metric of the fleet"
            labels = {label for label, _, _ in matchers}
            assert labels <= known[name] | TARGET_LABELS, (name, labels)
            # Pinned to this fleet: its namespace, and its model where the metric has one.
            assert ("namespace", "=", namespace) in matchers, (name, matchers)
            if "model" in known[name]:
                assert ("model", "=", model) in matchers, (name, matchers)
            for label, _, value in matchers:
                assert value in known_values.get(label, {value}), (name, label, value)
            used.add(name)
        # Empty series (no worker yet) must read 0, not "no data".
        assert query.count("or vector(0)") >= 1, query
    # Waiting jobs, jobs in service, and refusals for want of a worker.
    assert used == {
        "sam2fleet_queue_depth",
        "sam2fleet_job_stage_duration_seconds_sum",
        "sam2fleet_http_errors_total",
    }
    assert scaled["spec"]["scaleTargetRef"]["name"] == "sam2fleet-worker"


def test_scaled_object_and_monitors_share_one_prometheus_address() -> None:
    docs = render("gpu")
    addresses = {
        t["metadata"]["serverAddress"]
        for t in one(docs, "ScaledObject", "sam2fleet-worker")["spec"]["triggers"]
    }
    source = one(docs, "ConfigMap", "sam2fleet-grafana-datasource")["data"]
    urls = {s["url"] for s in yaml.safe_load(next(iter(source.values())))["datasources"]}
    assert len(addresses) == 1 and addresses == urls
