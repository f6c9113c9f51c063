"""The correctness oracle: Meta's classes called directly, in this process.

Only one adjustment, the same the worker makes: at a reduced input size the image
predictor's backbone feature sizes are derived from the model's image size (they
are hard-coded for 1024). At 1024 nothing is changed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from pycocotools import mask as mask_utils


@lru_cache(maxsize=4)
def sam2_model(checkpoint: Path, image_size: int) -> Any:
    from sam2.build_sam import build_sam2

    overrides = [] if image_size == 1024 else [f"++model.image_size={image_size}"]
    return build_sam2(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        str(checkpoint),
        device="cpu",
        hydra_overrides_extra=overrides,
    )


def _fix_sizes(predictor: Any, image_size: int) -> None:
    if image_size != 1024:
        predictor._bb_feat_sizes = [(image_size // s,) * 2 for s in (4, 8, 16)]


def rle(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


@torch.inference_mode()
def predict(
    checkpoint: Path,
    image_size: int,
    image: np.ndarray,
    prompts: list[dict[str, Any]],
    multimask: bool,
) -> list[list[tuple[str, float]]]:
    """For each prompt: [(rle counts, predicted iou)] best first."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(sam2_model(checkpoint, image_size))
    _fix_sizes(predictor, image_size)
    predictor.set_image(image)
    out = []
    for p in prompts:
        masks, scores, _ = predictor.predict(
            point_coords=np.array(p["points"], dtype=np.float32) if "points" in p else None,
            point_labels=np.array(p["labels"], dtype=np.int32) if "labels" in p else None,
            box=np.array(p["box"], dtype=np.float32) if "box" in p else None,
            multimask_output=multimask,
        )
        order = np.argsort(-scores, kind="stable")
        out.append([(rle(masks[i] > 0), float(scores[i])) for i in order])
    return out


@torch.inference_mode()
def generate(
    checkpoint: Path, image_size: int, image: np.ndarray, **knobs: Any
) -> list[dict[str, Any]]:
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    generator = SAM2AutomaticMaskGenerator(
        sam2_model(checkpoint, image_size), output_mode="coco_rle", **knobs
    )
    _fix_sizes(generator.predictor, image_size)
    return generator.generate(image)


@torch.inference_mode()
def refine(
    checkpoint: Path,
    image_size: int,
    image: np.ndarray,
    steps: list[dict[str, Any]],
    *,
    half: bool = False,
    mask_inputs: bool = True,
) -> list[list[tuple[str, float]]]:
    """SAM's own interactive loop for one object, as its demos run it: the first step
    asks for three candidates, each later step for one, with the previous step's best
    low-resolution logits as `mask_input` (through float16 first with `half`, as they
    travel on the wire). Per step: [(rle counts, predicted iou)] best first."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(sam2_model(checkpoint, image_size))
    _fix_sizes(predictor, image_size)
    predictor.set_image(image)
    previous = None
    out = []
    for k, p in enumerate(steps):
        masks, scores, low_res = predictor.predict(
            point_coords=np.array(p["points"], dtype=np.float32) if "points" in p else None,
            point_labels=np.array(p["labels"], dtype=np.int32) if "labels" in p else None,
            box=np.array(p["box"], dtype=np.float32) if "box" in p else None,
            mask_input=previous[None] if previous is not None and mask_inputs else None,
            multimask_output=k == 0,
        )
        order = np.argsort(-scores, kind="stable")
        out.append([(rle(masks[i] > 0), float(scores[i])) for i in order])
        previous = low_res[order[0]]
        if half:
            previous = previous.astype(np.float16).astype(np.float32)
    return out


# Where a result comes from other shapes than Meta's reference (the fast automatic
# generator's shared decoder layer, a batched encoder pass), a BLAS may round its
# sums differently on some CPUs; what the tests then require (docs/performance.md,
# "Automatic mode on other CPUs"): a mask pixel at the threshold may flip.
MIN_MASK_IOU = 0.999
PREDICTED_IOU_TOLERANCE = 1e-5
STABILITY_TOLERANCE = 1e-3


def _mask(segmentation: dict[str, Any]) -> np.ndarray:
    rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def assert_close_prompt_masks(
    got: list[list[tuple[str, float]]],
    direct: list[list[tuple[str, float]]],
    size: tuple[int, int],
) -> int:
    """Per prompt, [(rle counts, predicted iou)] of an image of `size` (h, w) against
    `predict`'s: same number, each mask's IoU >= MIN_MASK_IOU, scores within
    PREDICTED_IOU_TOLERANCE. Returns how many masks differ from Meta's bit for bit."""
    assert [len(g) for g in got] == [len(d) for d in direct]
    differing = 0
    flat_got, flat_direct = [m for obj in got for m in obj], [m for obj in direct for m in obj]
    for g, d in zip(flat_got, flat_direct, strict=True):
        assert abs(g[1] - d[1]) <= PREDICTED_IOU_TOLERANCE, (g[1], d[1])
        if g[0] != d[0]:
            differing += 1
            a, b = (_mask({"size": list(size), "counts": c}) for c in (g[0], d[0]))
            assert mask_iou(a, b) >= MIN_MASK_IOU
    return differing


class Differences(NamedTuple):
    records: int  # not bit-identical in some field
    masks: int  # of those, with another RLE
    min_mask_iou: float


def assert_same_generated(got: list[dict[str, Any]], direct: list[dict[str, Any]]) -> Differences:
    """Asserts that `got` are Meta's automatic records `direct` within that guarantee:
    same count, same grid point and crop box at each position, each mask's IoU with
    Meta's >= MIN_MASK_IOU, scores within the tolerances. Returns what differs from
    Meta's bit for bit."""
    assert len(got) == len(direct)
    records, masks, min_iou = 0, 0, 1.0
    for i, (g, d) in enumerate(zip(got, direct, strict=True)):
        assert (g["point_coords"], g["crop_box"]) == (d["point_coords"], d["crop_box"]), i
        assert isinstance(g["segmentation"]["counts"], str)
        if all(g[k] == d[k] for k in d):
            continue
        records += 1
        assert abs(g["predicted_iou"] - d["predicted_iou"]) <= PREDICTED_IOU_TOLERANCE, i
        assert abs(g["stability_score"] - d["stability_score"]) <= STABILITY_TOLERANCE, i
        if g["segmentation"] == d["segmentation"]:
            continue
        masks += 1
        iou = mask_iou(_mask(g["segmentation"]), _mask(d["segmentation"]))
        assert iou >= MIN_MASK_IOU, (i, iou)
        assert np.abs(np.subtract(g["bbox"], d["bbox"])).max() <= 1.0, i
        min_iou = min(min_iou, iou)
    return Differences(records, masks, min_iou)
