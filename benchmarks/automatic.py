"""Automatic mode: worker/fast_amg.py vs Meta's SAM2AutomaticMaskGenerator, in-process.

Same model (SAM 2.1 tiny at its full 1024 input, seeded random weights written with
worker/weights.py), a 1024x768 synthetic image, 16 and 32 points per side, runs
interleaved (Meta, fast, Meta, fast, ...), medians, speedup, and whether the masks
matched (same count, same RLE in order). Writes benchmarks/results/automatic.json.

    .venv/bin/python benchmarks/automatic.py                 # 2 rounds at 16, 1 at 32
    .venv/bin/python benchmarks/automatic.py --rounds 16:3,32:1 --iou 0.8 --stability 0.95
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import DEVICE  # noqa: E402


def _image() -> np.ndarray:
    from tests.support import scene

    return scene(1024, 768, seed=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", default="16:2,32:1", help="pps:rounds,...")
    ap.add_argument("--iou", type=float, default=0.0, help="pred_iou_thresh")
    ap.add_argument("--stability", type=float, default=0.0, help="stability_score_thresh")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/automatic.json"))
    args = ap.parse_args()

    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.build_sam import build_sam2

    from sam2fleet.shared.models import MODELS
    from sam2fleet.worker.fast_amg import FastAutomaticMaskGenerator
    from sam2fleet.worker.weights import write_random_checkpoint

    spec = MODELS["sam2.1_hiera_tiny"]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_random_checkpoint(spec, Path(tmp) / "tiny-random.pt", 0)
        model = build_sam2(spec.config, str(ckpt), device=DEVICE, mode="eval")
    image = _image()
    results = []
    for item in args.rounds.split(","):
        pps, rounds = (int(v) for v in item.split(":"))
        knobs = {
            "points_per_side": pps,
            "points_per_batch": 64,
            "pred_iou_thresh": args.iou,
            "stability_score_thresh": args.stability,
        }
        times: dict[str, list[float]] = {"meta": [], "fast": []}
        outputs: dict[str, list] = {}
        for _ in range(rounds):
            for name, cls in (
                ("meta", SAM2AutomaticMaskGenerator),
                ("fast", FastAutomaticMaskGenerator),
            ):
                gen = cls(model, output_mode="coco_rle", **knobs)
                started = time.perf_counter()
                with torch.inference_mode():
                    anns = gen.generate(image)
                times[name].append(time.perf_counter() - started)
                outputs[name] = anns
                print(f"pps={pps} {name}: {times[name][-1]:.1f}s, {len(anns)} masks", flush=True)
        meta, fast = outputs["meta"], outputs["fast"]
        same_rle = len(meta) == len(fast) and all(
            a["segmentation"] == b["segmentation"] for a, b in zip(meta, fast, strict=True)
        )
        iou_diff = max(
            (
                abs(a["predicted_iou"] - b["predicted_iou"])
                for a, b in zip(meta, fast, strict=False)
            ),
            default=0.0,
        )
        row = {
            "points_per_side": pps,
            "rounds": rounds,
            "knobs": knobs,
            "meta_s": times["meta"],
            "fast_s": times["fast"],
            "meta_median_s": statistics.median(times["meta"]),
            "fast_median_s": statistics.median(times["fast"]),
            "masks": {"meta": len(meta), "fast": len(fast)},
            "same_count": len(meta) == len(fast),
            "identical_rle_in_order": same_rle,
            "max_predicted_iou_diff": iou_diff,
        }
        row["speedup"] = row["meta_median_s"] / row["fast_median_s"]
        print(json.dumps(row), flush=True)
        results.append(row)
    out = {
        "what": "seconds per image (generate only, encoder included), SAM 2.1 tiny at "
        "1024 px, random weights, 1024x768 synthetic image, in-process, interleaved",
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": DEVICE,
        },
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
