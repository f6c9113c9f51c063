"""The multi-host fleet of these tests (tests/multihost/fleet.py), once per module, and
Prometheus on the monitor host when a test asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import SMALL
from tests.multihost.fleet import (
    API_PORT,
    PROMETHEUS_PORT,
    WORKER_METRICS_PORT,
    WORKERS,
    MultiHost,
    multihost,
    wait_answers,
)
from tests.multihost.netns import NamespaceError
from tests.support import ROOT, prometheus_binary


@pytest.fixture(scope="module")
def hosts(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiHost]:
    try:
        fleet = multihost(tmp_path_factory.mktemp("hosts"), tiny_checkpoint, image_size=SMALL)
        with fleet as f:
            yield f
    except NamespaceError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def prometheus(hosts: MultiHost) -> str:
    """Prometheus on the monitor host, scraping the API host and every worker host."""
    binary = prometheus_binary()
    monitor = hosts.host("monitor")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    targets = {
        "sam2fleet-api": [f"{hosts.host('api').address}:{API_PORT}"],
        "sam2fleet-worker": [f"{hosts.host(w).address}:{WORKER_METRICS_PORT}" for w in WORKERS],
    }
    for job in config["scrape_configs"]:
        for key in [k for k in job if k.endswith("_sd_configs")]:
            del job[key]
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    (monitor.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
    monitor.spawn(
        "prometheus",
        [binary, f"--config.file={monitor.dir / 'prometheus.yml'}",
         f"--storage.tsdb.path={monitor.dir / 'data'}",
         f"--web.listen-address={monitor.address}:{PROMETHEUS_PORT}"],
        hosts.env,
        monitor.dir,
    )  # fmt: skip
    url = f"http://{monitor.address}:{PROMETHEUS_PORT}"
    wait_answers(hosts, f"{url}/-/ready", "Prometheus", monitor, "prometheus")
    return url
