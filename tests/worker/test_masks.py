"""Mask records as a result carries them: RLE, PNG or polygons, area and box from the
mask itself, the score filter at its boundary, each candidate's own logits."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sam2fleet.shared.schemas import OutputOptions
from sam2fleet.worker.masks import auto_records, prompt_records, rle_decode, rle_encode
from sam2fleet.worker.model import ObjectMasks

H, W = 30, 40


def _rect(x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y : y + h, x : x + w] = True
    return mask


def _object(scores: list[float]) -> ObjectMasks:
    masks = np.stack([_rect(3, 4, 10 + i, 5) for i in range(len(scores))])
    low_res = np.stack([np.full((8, 8), float(i), np.float32) for i in range(len(scores))])
    return ObjectMasks(
        prompt_index=2,
        masks=masks,
        scores=np.array(scores),
        stability=np.array([0.5 + i / 10 for i in range(len(scores))]),
        low_res=low_res,
    )


def test_rle_round_trips_and_reads_as_coco_does() -> None:
    mask = _rect(5, 6, 7, 8)
    mask[0, W - 1] = True
    rle = rle_encode(mask)
    assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
    assert np.array_equal(rle_decode(rle), mask)


def test_prompt_records_measure_each_mask_and_keep_its_own_logits() -> None:
    records = prompt_records([_object([0.9, 0.7, 0.8])], OutputOptions(logits=True))
    assert [r["predicted_iou"] for r in records] == [0.9, 0.7, 0.8]
    for k, record in enumerate(records):
        assert record["area"] == (10 + k) * 5
        assert record["bbox"] == [3.0, 4.0, float(10 + k), 5.0]  # x, y, w, h
        assert record["prompt_index"] == 2
        assert record["stability_score"] == 0.5 + k / 10
        assert np.array_equal(rle_decode(record["segmentation"]), _rect(3, 4, 10 + k, 5))
        raw = base64.b64decode(record["logits"]["data"])
        assert np.array_equal(np.frombuffer(raw, "<f2"), np.full(64, k, np.float16))
    assert "logits" not in prompt_records([_object([0.9])], OutputOptions())[0]


def test_the_score_filter_keeps_a_mask_of_exactly_the_minimum() -> None:
    kept = prompt_records([_object([0.5, 0.49, 0.51])], OutputOptions(min_score=0.5))
    assert [r["predicted_iou"] for r in kept] == [0.5, 0.51]
    anns = [_ann(0.5), _ann(0.49), _ann(0.8)]
    assert [r["predicted_iou"] for r in auto_records(anns, OutputOptions(min_score=0.5))] == [
        0.5,
        0.8,
    ]


def _ann(score: float) -> dict[str, Any]:
    """One record as SAM's automatic generator gives it."""
    mask = _rect(1, 2, 3, 4)
    return {
        "segmentation": rle_encode(mask),
        "area": 12,
        "bbox": [1, 2, 3, 4],
        "predicted_iou": score,
        "stability_score": 0.9,
        "point_coords": [[2.0, 3.0]],
        "crop_box": [0, 0, W, H],
    }


def test_automatic_records_keep_sams_fields_as_floats() -> None:
    [record] = auto_records([_ann(0.7)], OutputOptions())
    assert record["bbox"] == [1.0, 2.0, 3.0, 4.0] and record["area"] == 12
    assert record["crop_box"] == [0.0, 0.0, float(W), float(H)]
    assert record["prompt_index"] is None and record["point_coords"] == [[2.0, 3.0]]


def test_png_and_polygon_formats_hold_the_same_mask() -> None:
    obj = _object([0.9])
    [png] = prompt_records([obj], OutputOptions(format="png"))
    assert png["segmentation"]["size"] == [H, W]
    image = Image.open(io.BytesIO(base64.b64decode(png["segmentation"]["png"])))
    assert np.array_equal(np.asarray(image).astype(bool), obj.masks[0])
    [poly] = prompt_records([obj], OutputOptions(format="polygon"))
    # A rectangle's exact outline: its four corners, a quarter pixel inside the edge.
    assert poly["segmentation"]["polygons"] == [[3.25, 4.25, 3.25, 8.75, 12.75, 8.75, 12.75, 4.25]]
    [auto] = auto_records([_ann(0.9)], OutputOptions(format="png"))
    assert "png" in auto["segmentation"]


def test_candidates_and_scores_that_disagree_in_number_are_a_bug_not_a_short_result() -> None:
    obj = _object([0.9, 0.8, 0.7])
    obj.scores = obj.scores[:2]
    with pytest.raises(ValueError, match="zip"):
        prompt_records([obj], OutputOptions())
