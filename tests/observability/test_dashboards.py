"""Every dashboard query, evaluated by a real Prometheus scraping the real fleet.

Prometheus is Debian's `prometheus` binary (`make test` installs it); it runs with a
copy of deploy/prometheus/prometheus.yml whose targets point at this test's API and
workers and whose scrape interval is 1 s. A panel query that returns nothing fails.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sam2fleet.launcher.redis_server import free_port
from tests.observability.conftest import WORKERS, ObsFleet, Traffic
from tests.support import ROOT, prometheus_binary

DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROM_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GENERATOR = ROOT / "deploy" / "grafana" / "generate.py"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
# What Grafana substitutes: "All" of each variable, and a rate window of a few scrapes.
VARIABLES = {"$model": ".*", "$mode": ".*", "$worker": ".*", "$__rate_interval": "1m"}


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"unknown template variable in {expr}"
    return expr


def dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in dashboard(path)["panels"]:
            for t in panel.get("targets", []):
                out.append((path.name, panel["title"], t["expr"]))
    return out


@pytest.fixture(scope="module")
def prometheus(obs: ObsFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = prometheus_binary()
    workdir = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(PROM_CONFIG.read_text())
    jobs = {c["job_name"]: c for c in config["scrape_configs"]}
    assert set(jobs) == {"sam2fleet-api", "sam2fleet-worker"}, set(jobs)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    targets = {
        "sam2fleet-api": [f"127.0.0.1:{obs.fleet.port}"],
        "sam2fleet-worker": [f"127.0.0.1:{obs.worker_ports[w]}" for w in WORKERS],
    }
    for name, job in jobs.items():
        for key in [k for k in job if k.endswith("_sd_configs")]:
            del job[key]  # docker-compose's DNS names mean nothing here
        job["static_configs"] = [{"targets": targets[name]}]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (workdir / "prometheus.log").read_text()[-3000:]
            try:
                targets_up = httpx.get(f"{url}/api/v1/targets", timeout=2).json()["data"]
                health = [t["health"] for t in targets_up["activeTargets"]]
                if len(health) == 1 + len(WORKERS) and set(health) == {"up"}:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, "Prometheus targets not up"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def query(url: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


@pytest.fixture(scope="module")
def scraped(prometheus: str, obs: ObsFleet, traffic: Traffic) -> str:
    """Prometheus has seen jobs happen (not only their totals): rates are non-zero."""
    obs.run_traffic(traffic)  # the shared record, so test_metrics totals stay exact
    finished = sum(
        float(v)
        for line in (httpx.get(obs.worker_url(w)).text for w in WORKERS)
        for v in re.findall(r"^sam2fleet_jobs_finished_total\{[^}]*\} (\S+)$", line, re.M)
    )
    deadline = time.monotonic() + 30
    while True:
        result = query(prometheus, "sum(sam2fleet_jobs_finished_total)")
        if result and float(result[0]["value"][1]) == finished:
            break
        assert time.monotonic() < deadline, f"Prometheus did not catch up: {result}"
        time.sleep(0.5)
    # A rate needs two samples of a series after it last changed.
    wait_for_scrapes(prometheus, after=time.time(), count=2)
    return prometheus


def wait_for_scrapes(url: str, after: float, count: int, timeout: float = 30) -> None:
    """Wait until Prometheus has scraped every target `count` times since `after`."""
    seen: dict[str, set[float]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for series in query(url, "timestamp(up)"):  # when each target was last scraped
            at = float(series["value"][1])
            if at > after:
                seen.setdefault(series["metric"]["instance"], set()).add(at)
        if len(seen) == 1 + len(WORKERS) and all(len(s) >= count for s in seen.values()):
            return
        assert time.monotonic() < deadline, f"targets not scraped {count} times: {seen}"
        time.sleep(0.2)


def test_every_panel_query_returns_data(scraped: str) -> None:
    queries = panel_queries()
    assert len(queries) >= 20
    empty = [
        f"{board} / {title}: {expr}"
        for board, title, expr in queries
        if not query(scraped, substitute(expr))
    ]
    assert not empty, "dashboard queries that match nothing:\n" + "\n".join(empty)


def test_template_variables_and_annotations_resolve(scraped: str) -> None:
    for path in DASHBOARDS:
        board = dashboard(path)
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
            assert m, var
            values = httpx.get(
                f"{scraped}/api/v1/label/{m.group(2)}/values",
                params={"match[]": substitute(m.group(1))},
            ).json()["data"]
            assert values, f"{path.name}: variable {var['name']} has no values"
        for ann in board["annotations"]["list"]:
            if "expr" not in ann:
                continue
            query(scraped, substitute(ann["expr"]))  # valid PromQL
            # Its series exist (on a CPU fleet no cache is ever cleared, so no marks).
            for metric in set(re.findall(r"\bsam2fleet_\w+", ann["expr"])):
                assert query(scraped, metric), f"{path.name}: annotation {ann['name']}"


def test_dashboards_are_provisionable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(GENERATOR.parent))  # as when run as a script
    spec = importlib.util.spec_from_file_location("generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert {p.name for p in DASHBOARDS} == set(generate.BOARDS)
    for name, text in generate.render().items():
        assert (ROOT / "deploy/grafana/dashboards" / name).read_text() == text, (
            f"{name} is stale: run python deploy/grafana/generate.py"
        )
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uids = set()
    for path in DASHBOARDS:
        board = dashboard(path)
        uids.add(board["uid"])
        names = {v["name"] for v in board["templating"]["list"]}
        assert {"model", "worker"} <= names, path.name
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["targets"] and panel["description"], panel["title"]
            assert panel["datasource"]["uid"] == source["uid"]
    assert len(uids) == len(DASHBOARDS)
