"""Which weights a worker loads, and refusing to start without any."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from sam2fleet.shared.errors import ModelUnavailable
from sam2fleet.shared.settings import Settings
from sam2fleet.worker.weights import RANDOM_MARKER, resolve_weights, weights_kind


def test_missing_checkpoint_is_refused_with_directions(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as info:
        resolve_weights(Settings(checkpoint_dir=tmp_path))
    message = info.value.message
    assert "sam2fleet checkpoints download sam2.1_hiera_tiny" in message
    assert "SAM2FLEET_RANDOM_WEIGHTS=1" in message and "SAM2FLEET_CHECKPOINT" in message


def test_worker_command_exits_with_the_message(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "SAM2FLEET_CHECKPOINT_DIR": str(tmp_path),
        "SAM2FLEET_REDIS_URL": "redis://127.0.0.1:1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "sam2fleet.cli", "worker"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no checkpoint for sam2.1_hiera_tiny" in done.stderr
    assert "Traceback" not in done.stderr


def test_official_file_and_explicit_path_are_checkpoint_weights(tmp_path: Path) -> None:
    official = tmp_path / "sam2.1_hiera_small.pt"
    torch.save({"model": {}}, official)
    found = resolve_weights(Settings(checkpoint_dir=tmp_path, model="sam2.1_hiera_small"))
    assert (found.path, found.kind, found.spec.name) == (
        official,
        "checkpoint",
        "sam2.1_hiera_small",
    )
    tuned = tmp_path / "my-finetune.pt"
    torch.save({"model": {}}, tuned)
    assert resolve_weights(Settings(checkpoint=tuned)).path == tuned
    with pytest.raises(ModelUnavailable, match="does not exist"):
        resolve_weights(Settings(checkpoint=tmp_path / "nope.pt"))


def test_random_weights_are_an_explicit_opt_in_written_in_meta_format(tmp_path: Path) -> None:
    found = resolve_weights(Settings(checkpoint_dir=tmp_path, random_weights=True, random_seed=7))
    assert found.kind == "random"
    payload = torch.load(found.path, map_location="cpu", weights_only=True)
    assert payload[RANDOM_MARKER] == 7
    assert "image_encoder.trunk.patch_embed.proj.weight" in payload["model"]
    assert weights_kind(found.path) == "random"
    # Same seed, same weights: a restarted worker serves the same model.
    again = resolve_weights(
        Settings(checkpoint_dir=tmp_path / "other", random_weights=True, random_seed=7)
    )
    other = torch.load(again.path, map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(payload["model"][k], other[k]) for k in payload["model"])


def test_production_refuses_random_weights() -> None:
    with pytest.raises(ValidationError, match="random_weights is refused"):
        Settings(environment="production", random_weights=True)


def test_visibility_timeout_must_exceed_the_hard_limit() -> None:
    with pytest.raises(ValidationError, match="visibility_timeout_s must exceed"):
        Settings(task_time_limit_s=600, task_soft_time_limit_s=500, visibility_timeout_s=600)
