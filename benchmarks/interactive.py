"""Interactive annotation: ten clicks on one image through the fleet.

The first click pays for the image encoder; clicks 2-10 should be answered from
the worker's embedding cache (image affinity routes them to it). Reports the first
click, the median of clicks 2-10 and their ratio (target ≤ 0.05), beside the same
clicks made in-process with SAM2ImagePredictor (set_image once, then predict).

    .venv/bin/python benchmarks/interactive.py            # tiny, 1024 px input
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from common import ROOT, direct_predictor, local_fleet

from tests.support import encode, scene
from tests.system.client import b64, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=None, help="model input (1024)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    img = scene(1024, 768, seed=77)
    clicks = [[100 + 80 * i, 120 + 50 * i] for i in range(args.clicks)]

    with local_fleet("interactive", args.image_size, workers=args.workers) as (fleet, ckpt, _):
        fleet_s, hits, stages = [], [], []
        first_body = {
            "image": b64(encode(img)),
            "prompts": [{"points": [clicks[0]], "labels": [1]}],
        }
        warm = run(
            fleet.base_url,
            {
                "image": b64(encode(scene(64, 64))),
                "prompts": [{"points": [[10, 10]], "labels": [1]}],
            },
        )
        assert warm["status"] == "succeeded"
        image_id = None
        for i, point in enumerate(clicks):
            body = (
                first_body
                if i == 0
                else {"image_id": image_id, "prompts": [{"points": [point], "labels": [1]}]}
            )
            started = time.perf_counter()
            job = run(fleet.base_url, body)
            fleet_s.append(time.perf_counter() - started)
            hits.append(job["result"]["timings"].get("embedding_cache_hit"))
            stages.append(job["result"]["timings"])
            image_id = job["image_id"]
        predictor = direct_predictor(ckpt, args.image_size)
        direct_s = []
        with torch.inference_mode():
            started = time.perf_counter()
            predictor.set_image(img)
            for i, point in enumerate(clicks):
                if i:
                    started = time.perf_counter()
                predictor.predict(
                    point_coords=np.array([point], dtype=np.float32), point_labels=np.array([1])
                )
                direct_s.append(time.perf_counter() - started)

    rest = statistics.median(fleet_s[1:])
    result = {
        "benchmark": "interactive",
        "model": "sam2.1_hiera_tiny",
        "image_size": args.image_size or 1024,
        "workers": args.workers,
        "fleet_first_click_s": round(fleet_s[0], 4),
        "fleet_clicks_2_on_median_s": round(rest, 4),
        "ratio_later_over_first": round(rest / fleet_s[0], 4),
        "cache_hits": hits,
        "fleet_clicks_2_on_stage_medians_s": {
            k: round(statistics.median(t[k] for t in stages[1:]), 4)
            for k in ("queue_s", "decode_s", "embed_s", "predict_s", "encode_s")
        },
        "direct_first_click_s": round(direct_s[0], 4),
        "direct_clicks_2_on_median_s": round(statistics.median(direct_s[1:]), 4),
        "fleet_s": [round(x, 4) for x in fleet_s],
        "direct_s": [round(x, 4) for x in direct_s],
    }
    out = ROOT / "benchmarks" / "results" / "interactive.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps({k: v for k, v in result.items() if k not in ("fleet_s", "direct_s")}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
