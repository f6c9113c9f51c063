"""The model module over the real tiny architecture (reduced input size)."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch

from sam2fleet.shared.schemas import Prompt
from sam2fleet.shared.settings import Settings
from sam2fleet.worker.gpu import CacheClearer
from sam2fleet.worker.masks import prompt_records, rle_decode
from sam2fleet.worker.model import SegmentationModel, feature_sizes
from tests import oracle
from tests.conftest import SMALL
from tests.support import ROOT, scene


def test_feature_sizes_follow_the_input_size() -> None:
    assert feature_sizes(1024) == [(256, 256), (128, 128), (64, 64)]
    assert feature_sizes(256) == [(64, 64), (32, 32), (16, 16)]


def test_loads_checkpoint_and_predicts_like_meta(tiny_checkpoint: Path) -> None:
    model = SegmentationModel(
        Settings(checkpoint=tiny_checkpoint, model_image_size=SMALL, device="cpu")
    )
    assert model.image_size == SMALL and model.stamp.weights == "random"
    assert model.warmup() > 0
    image = scene(160, 120, seed=21)
    prompts = [{"points": [[50, 40], [90, 80]], "labels": [1, 0]}, {"box": [10, 10, 120, 100]}]
    model.embed(image)
    objects = model.predict([Prompt(**p) for p in prompts], multimask=True)
    direct = oracle.predict(tiny_checkpoint, SMALL, image, prompts, True)
    records = prompt_records(objects, "rle", 0.0)
    assert [r["segmentation"]["counts"] for r in records] == [c for obj in direct for c, _ in obj]
    for r in records:
        assert rle_decode(r["segmentation"]).sum() == r["area"]


def test_cache_clearer_is_a_no_op_on_cpu() -> None:
    clearer = CacheClearer("always", 0, torch.device("cpu"))
    assert clearer.after_batch() == 0 and clearer.clears == 0


def test_the_worker_turns_on_expandable_segments_unless_told_otherwise() -> None:
    code = "import os, sam2fleet.worker.celery_app; print(os.environ['PYTORCH_CUDA_ALLOC_CONF'])"
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    env["SAM2FLEET_RANDOM_WEIGHTS"] = "1"  # importing the app resolves no weights
    run = partial(subprocess.run, [sys.executable, "-c", code], cwd=ROOT, text=True)
    out = run(env=env, capture_output=True, check=True).stdout
    assert out.strip() == "expandable_segments:True"
    env["PYTORCH_CUDA_ALLOC_CONF"] = "max_split_size_mb:128"
    out = run(env=env, capture_output=True, check=True).stdout
    assert out.strip() == "max_split_size_mb:128"
