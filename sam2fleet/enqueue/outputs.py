"""What a run writes into its folder, besides the journal."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sam2fleet import coco
from sam2fleet.client import Job
from sam2fleet.enqueue.journal import Journal
from sam2fleet.enqueue.options import Options
from sam2fleet.enqueue.plan import Planned
from sam2fleet.sources import Source


def write_run_file(out: Path, source: Source, opts: Options) -> None:
    """run.json: the options of the latest run (without the API key)."""
    run = {
        "source_kind": source.kind,
        "items": len(source.items),
        "options": opts.public(),
        "started_at": time.time(),
    }
    coco.atomic_write_text(out / "run.json", json.dumps(run, indent=2))


def write_outputs(out: Path, planned: Planned, job: Job, opts: Options) -> dict[str, Any]:
    """jobs/<name>.json, and the PNG masks and overlay when asked for; the record."""
    item = planned.item
    record = {
        "item": {
            "key": item.key,
            "path": str(item.path.resolve()),
            "file_name": item.file_name,
            "sha256": planned.sha256,
            "image_id": item.image_id,
            "prompt_meta": item.prompt_meta,
        },
        "spec": planned.spec,
        "job": job.raw,
    }
    coco.atomic_write_text(out / "jobs" / f"{item.safe_name}.json", json.dumps(record))
    if opts.png_masks or opts.overlays:
        result = job.result_or_raise()
        if opts.png_masks:
            folder = out / "masks" / item.safe_name
            folder.mkdir(parents=True, exist_ok=True)
            for k, m in enumerate(result.decode_masks()):
                Image.fromarray(m.astype(np.uint8) * 255).save(folder / f"{k:03d}.png")
        if opts.overlays:
            from sam2fleet.overlay import overlay_from_result

            with Image.open(item.path) as img:
                pic = overlay_from_result(img, result.raw, prompts=planned.spec.get("prompts"))
            (out / "overlays").mkdir(exist_ok=True)
            pic.save(out / "overlays" / f"{item.safe_name}.png", optimize=True)
    return record


def write_coco(out: Path, source: Source, journal: Journal, bases: dict[str, str]) -> Path:
    """results.json + detections.json from every item of this source done so far."""
    records = []
    for item in source.items:
        base = bases.get(item.key)
        if base is None or journal.state(item.key, base).done is None:
            continue
        try:
            path = out / "jobs" / f"{item.safe_name}.json"
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    dataset = coco.build(
        records,
        source.categories,
        source.default_category_id,
        f"sam2fleet enqueue of {len(records)} images",
    )
    return coco.write(dataset, out)[0]
