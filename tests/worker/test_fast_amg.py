"""worker/fast_amg.py gives Meta's automatic masks: the same records, field for field
and bit for bit (RLE, area, box, predicted IoU, stability score), in the same order,
for the real tiny architecture at 256 px. The generator runs every floating-point step
whose rounding can depend on the processor as Meta's own call on Meta's shapes, so
this holds on any CPU; run it under other code paths too, e.g. `MKL_CBWR=COMPATIBLE`
or `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests import oracle
from tests.conftest import SMALL
from tests.support import scene
from worker.fast_amg import FastAutomaticMaskGenerator

WIDTH, HEIGHT = 256, 192

KNOB_SETS: dict[str, dict[str, Any]] = {
    # Every candidate through (NMS at 1.0 keeps all): 8*8 points x 3 masks.
    "all-candidates": {
        "points_per_side": 8,
        "points_per_batch": 32,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "box_nms_thresh": 1.0,
    },
    # Thresholds that bite, and a decoder batch that does not divide the points.
    # Seeded random weights give predicted IoUs of 0.477-0.504 and logits near 0, so
    # the IoU threshold sits inside that range (points with no mask above it are
    # never upsampled) and a small stability offset gives scores of 0.5-0.9: about
    # half the 147 candidates pass both, and box NMS then keeps a handful.
    "thresholds": {
        "points_per_side": 7,
        "points_per_batch": 20,
        "pred_iou_thresh": 0.485,
        "stability_score_thresh": 0.65,
        "stability_score_offset": 0.01,
        "box_nms_thresh": 0.95,
    },
    # Crop layer: 1 + 4 crops, cross-crop NMS, min_mask_region_area (hole filling).
    "crops": {
        "points_per_side": 4,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "crop_n_layers": 1,
        "crop_nms_thresh": 0.9,
        "box_nms_thresh": 0.9,
        "min_mask_region_area": 50,
    },
}


@pytest.mark.parametrize("name", list(KNOB_SETS))
def test_fast_generator_matches_meta(tiny_checkpoint: Path, name: str) -> None:
    knobs = KNOB_SETS[name]
    image = scene(WIDTH, HEIGHT, seed=3)
    direct = oracle.generate(tiny_checkpoint, SMALL, image, **knobs)
    gen = FastAutomaticMaskGenerator(oracle.sam2_model(tiny_checkpoint, SMALL), **knobs)
    oracle._fix_sizes(gen.predictor, SMALL)
    with torch.inference_mode():
        got = gen.generate(image)

    # Something to compare in every case: masks that are neither empty nor the image.
    assert len(direct) > 0
    assert any(0 < d["area"] < WIDTH * HEIGHT for d in direct)
    assert all(d["predicted_iou"] > knobs["pred_iou_thresh"] for d in direct)
    assert all(d["stability_score"] >= knobs["stability_score_thresh"] for d in direct)
    differing = [i for i, (g, d) in enumerate(zip(got, direct, strict=False)) if g != d]
    print(f"{name}: {len(direct)} masks, {len(differing)} not bit-identical to Meta's")
    assert len(got) == len(direct)
    assert all(isinstance(g["segmentation"]["counts"], str) for g in got)
    assert not differing, f"records {differing} differ from Meta's"


def test_fast_generator_calls_set_image_once_per_crop(tiny_checkpoint: Path) -> None:
    """The pipeline times the encoder and checks cancellation through this hook."""
    gen = FastAutomaticMaskGenerator(
        oracle.sam2_model(tiny_checkpoint, SMALL),
        points_per_side=2,
        crop_n_layers=1,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
    )
    oracle._fix_sizes(gen.predictor, SMALL)
    calls = []
    set_image = gen.predictor.set_image

    def hooked(img: np.ndarray) -> None:
        calls.append(img.shape)
        set_image(img)

    gen.predictor.set_image = hooked
    with torch.inference_mode():
        gen.generate(scene(200, 160, seed=11))
    assert len(calls) == 5
