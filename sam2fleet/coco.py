"""COCO-format output of an enqueue run.

Two files, both loadable by pycocotools:

- `results.json`: a full COCO dataset (`info`, `images`, `annotations`,
  `categories`): `COCO("results.json")` loads it on its own.
- `detections.json`: the same annotations as a plain list, the "results" format of
  `COCO(ground_truth).loadRes("detections.json")` and `COCOeval`.

Each annotation is one mask: compressed RLE `segmentation`, `area`, `bbox`,
`score` (SAM's predicted IoU), plus the linkage back to what produced it:
`prompt_index`, the `prompt` itself, `source_annotation_id` for COCO-box input,
`candidate` rank in multimask mode, and the fleet's `job_id`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def annotations_for(
    record: Mapping[str, Any], image_id: int, default_category: int, first_id: int
) -> list[dict[str, Any]]:
    """COCO annotations of one saved job record (`jobs/<name>.json`)."""
    item = record["item"]
    prompts = record["spec"].get("prompts") or []
    meta = item.get("prompt_meta") or []
    result = record["job"]["result"]
    out = []
    rank: dict[int, int] = {}
    for k, m in enumerate(result["masks"]):
        p = m.get("prompt_index")
        seg = m["segmentation"]
        ann: dict[str, Any] = {
            "id": first_id + k,
            "image_id": image_id,
            "category_id": default_category,
            "segmentation": {"size": seg["size"], "counts": seg["counts"]},
            "area": m["area"],
            "bbox": m["bbox"],
            "score": m["predicted_iou"],
            "iscrowd": 0,
            "predicted_iou": m["predicted_iou"],
            "stability_score": m.get("stability_score"),
            "job_id": record["job"]["id"],
        }
        if p is not None:
            ann["prompt_index"] = p
            ann["candidate"] = rank.get(p, 0)
            rank[p] = ann["candidate"] + 1
            if p < len(prompts):
                ann["prompt"] = prompts[p]
            if p < len(meta):
                pm = meta[p]
                if pm.get("category_id") is not None:
                    ann["category_id"] = pm["category_id"]
                for key, value in pm.items():
                    if key not in ("category_id", "category"):
                        ann.setdefault(key, value)
        else:
            ann["point_coords"] = m.get("point_coords")
            ann["crop_box"] = m.get("crop_box")
        out.append(ann)
    return out


def build(
    records: Iterable[Mapping[str, Any]],
    categories: list[dict[str, Any]],
    default_category: int,
    description: str = "",
) -> dict[str, Any]:
    """The dataset dict from saved job records, in the order given.

    A record's `item.image_id` is used when the source named one (COCO input,
    manifest `image_id`); other images are numbered after the largest such id.
    """
    records = list(records)
    named = [r["item"].get("image_id") for r in records]
    next_id = max((i for i in named if isinstance(i, int)), default=0) + 1
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for r in records:
        image_id = r["item"].get("image_id")
        if not isinstance(image_id, int):
            image_id, next_id = next_id, next_id + 1
        info = r["job"]["result"]["image"]
        images.append(
            {
                "id": image_id,
                "file_name": r["item"]["file_name"],
                "width": info["width"],
                "height": info["height"],
                "sha256": r["item"]["sha256"],
                "job_id": r["job"]["id"],
            }
        )
        annotations += annotations_for(r, image_id, default_category, len(annotations) + 1)
    return {
        "info": {
            "description": description or "sam2fleet enqueue results",
            "date_created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "version": "1.0",
        },
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write(dataset: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write results.json and detections.json atomically; return their paths."""
    results, detections = out_dir / "results.json", out_dir / "detections.json"
    atomic_write_text(results, json.dumps(dataset))
    atomic_write_text(detections, json.dumps(dataset["annotations"]))
    return results, detections


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
