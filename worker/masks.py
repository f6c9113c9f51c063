"""Mask encoding: COCO compressed RLE (what SAM itself emits) or 1-bit PNG."""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from sam2fleet.worker.model import ObjectMasks


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of one HxW bool mask, with a JSON-safe `counts` string."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def rle_decode(segmentation: dict[str, Any]) -> np.ndarray:
    rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    mask: np.ndarray = mask_utils.decode(rle).astype(bool)
    return mask


def png_encode(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask).convert("1").save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def _segmentation(rle: dict[str, Any], fmt: Literal["rle", "png"]) -> dict[str, Any]:
    if fmt == "rle":
        return rle
    return {"size": rle["size"], "png": png_encode(rle_decode(rle))}


def prompt_records(
    objects: list[ObjectMasks], fmt: Literal["rle", "png"], min_score: float
) -> list[dict[str, Any]]:
    records = []
    for obj in objects:
        for mask, score, stability in zip(obj.masks, obj.scores, obj.stability, strict=True):
            if float(score) < min_score:
                continue
            rle = rle_encode(mask)
            records.append(
                {
                    "segmentation": _segmentation(rle, fmt),
                    "area": int(mask_utils.area(_bytes_rle(rle))),
                    "bbox": [float(v) for v in mask_utils.toBbox(_bytes_rle(rle))],
                    "predicted_iou": float(score),
                    "stability_score": float(stability),
                    "prompt_index": obj.prompt_index,
                }
            )
    return records


def auto_records(
    anns: list[dict[str, Any]], fmt: Literal["rle", "png"], min_score: float
) -> list[dict[str, Any]]:
    """SAM's automatic generator records, reshaped only where the contract says."""
    return [
        {
            "segmentation": _segmentation(ann["segmentation"], fmt),
            "area": int(ann["area"]),
            "bbox": [float(v) for v in ann["bbox"]],
            "predicted_iou": float(ann["predicted_iou"]),
            "stability_score": float(ann["stability_score"]),
            "prompt_index": None,
            "point_coords": ann["point_coords"],
            "crop_box": [float(v) for v in ann["crop_box"]],
        }
        for ann in anns
        if float(ann["predicted_iou"]) >= min_score
    ]


def _bytes_rle(rle: dict[str, Any]) -> dict[str, Any]:
    return {"size": rle["size"], "counts": rle["counts"].encode()}
