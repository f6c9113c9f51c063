"""The correctness oracle: Meta's classes called directly, in this process.

Only one adjustment, the same the worker makes: at a reduced input size the image
predictor's backbone feature sizes are derived from the model's image size (they
are hard-coded for 1024). At 1024 nothing is changed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

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
