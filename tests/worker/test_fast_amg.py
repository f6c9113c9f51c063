"""worker/fast_amg.py gives Meta's automatic masks, for the real tiny architecture at
256 px: the same masks in the same order within the guarantee that holds on every CPU
(`oracle.assert_same_generated`: mask IoU >= 0.999, scores within tolerance), and the
number of records that are not bit-identical, printed (`pytest -s`) for the table in
docs/performance.md. Run it under other CPU code paths too, e.g. `MKL_CBWR=COMPATIBLE`
or `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from sam2fleet.worker.fast_amg import FastAutomaticMaskGenerator
from tests import oracle
from tests.conftest import SMALL
from tests.support import scene

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
    diff = oracle.assert_same_generated(got, direct)
    print(
        f"{name}: {len(direct)} masks; not bit-identical to Meta's: {diff.records} records, "
        f"{diff.masks} masks (lowest mask IoU {diff.min_mask_iou:.5f}); torch CPU "
        f"capability {torch.backends.cpu.get_cpu_capability()}"
    )


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


def test_the_comparison_counts_a_flipped_pixel_and_fails_on_more() -> None:
    """`oracle.assert_same_generated` (used above) can fail: a changed mask, a changed
    score or another order does not pass as Meta's."""
    mask = np.zeros((100, 120), dtype=bool)
    mask[10:90, 20:100] = True  # 6400 pixels

    def record(m: np.ndarray, point: float = 50.0, iou: float = 0.9) -> dict[str, Any]:
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        return {
            "segmentation": {"size": list(m.shape), "counts": rle["counts"].decode()},
            "area": int(m.sum()),
            "bbox": [20.0, 10.0, 80.0, 80.0],
            "predicted_iou": iou,
            "point_coords": [[point, point]],
            "stability_score": 0.5,
            "crop_box": [0.0, 0.0, 120.0, 100.0],
        }

    meta = [record(mask), record(mask, point=10.0)]
    assert oracle.assert_same_generated(meta, meta) == (0, 0, 1.0)
    one_pixel = mask.copy()
    one_pixel[50, 50] = False  # IoU 0.99984
    diff = oracle.assert_same_generated([record(one_pixel), meta[1]], meta)
    assert diff[:2] == (1, 1) and diff.min_mask_iou == pytest.approx(6399 / 6400)
    many = mask.copy()
    many[50:60, 50:60] = False  # IoU 0.984
    for wrong in (
        [record(many), meta[1]],
        [record(mask, iou=0.9001), meta[1]],
        meta[::-1],
        meta[:1],
    ):
        with pytest.raises(AssertionError):
            oracle.assert_same_generated(wrong, meta)
