"""The Celery supervisor forks the pool that holds the model, so it must never have run
torch: a forked child of a process whose OpenMP thread pool has started hangs on its
first parallel operation (a first run with random weights once hung so, forever).

Checked in a fresh interpreter that does what the supervisor does before forking
(import the worker's Celery app, run its `worker_init` hooks), for every way a worker
finds its weights. tests/system/test_first_run.py checks the running supervisors of
a real fleet the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import RedisServer

SUPERVISOR = """
import json, sys
from pathlib import Path
from celery.signals import worker_init
import sam2fleet.worker.celery_app
worker_init.send(sender=None)
maps = Path("/proc/self/maps").read_text()
print(json.dumps({
    "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
    "libraries": sorted({lib for lib in ("libtorch", "libgomp") if lib in maps}),
}))
"""


@pytest.mark.parametrize("weights", ["random, not yet written", "random, written", "checkpoint"])
def test_the_supervisor_runs_no_torch_before_it_forks(
    weights: str, tmp_path: Path, redis_server: RedisServer, tiny_checkpoint: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAM2FLEET_")}
    env["SAM2FLEET_REDIS_URL"] = redis_server.url
    random_file = tmp_path / "random" / "sam2.1_hiera_tiny-seed0.pt"
    if weights == "checkpoint":
        env["SAM2FLEET_CHECKPOINT"] = str(tiny_checkpoint)
    else:
        env |= {"SAM2FLEET_RANDOM_WEIGHTS": "1", "SAM2FLEET_CHECKPOINT_DIR": str(tmp_path)}
        if weights == "random, written":
            random_file.parent.mkdir()
            random_file.symlink_to(tiny_checkpoint)
    done = subprocess.run(
        [sys.executable, "-c", SUPERVISOR],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"torch": [], "libraries": []}, done.stderr
    if weights.startswith("random"):
        # The weights a pool process will load are there before it forks: a missing
        # random checkpoint was written, by a process of its own.
        assert random_file.is_file()
        assert ("writing random sam2.1_hiera_tiny" in done.stderr) == (
            weights == "random, not yet written"
        )


def test_the_probe_sees_torch_where_it_is(tmp_path: Path) -> None:
    """The check above can fail: the same probe after one torch operation."""
    probe = SUPERVISOR.replace(
        "worker_init.send(sender=None)", "import torch; torch.ones(64, 64).sum()"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "torch" in seen["torch"] and "libtorch" in seen["libraries"], seen
