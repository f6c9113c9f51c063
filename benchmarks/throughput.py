"""Bulk throughput: images per second through the fleet at several concurrencies,
against a direct in-process loop over the same images.

    .venv/bin/python benchmarks/throughput.py --images 8          # tiny, 1024 px input

Each image is new to the fleet (no embedding reuse); one point per image. The
fleet runs twice, without and with cross-job batching (jobs waiting in the queue
encoded in one forward pass), each beside a fresh direct round. The ratio
fleet / direct at concurrency 4 is the figure to watch (target ≥ 0.95).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from common import ROOT, direct_predictor, local_fleet

from tests.support import encode, scene
from tests.system.client import b64, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=None, help="model input (1024)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batch-max-size", type=int, default=8, help="when batching is on")
    parser.add_argument(
        "--batching",
        choices=["off", "on"],
        nargs="+",
        default=["off", "on"],
        help="run the fleet without and/or with cross-job batching",
    )
    args = parser.parse_args()
    args.batching = [b == "on" for b in args.batching]
    point = [[300, 200]]

    def images(round_: int) -> list[np.ndarray]:
        return [scene(1024, 768, seed=1000 * round_ + i) for i in range(args.images)]

    def direct(predictor: Any, batch: list[np.ndarray]) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            for img in batch:
                predictor.set_image(img)
                predictor.predict(
                    point_coords=np.array(point, dtype=np.float32), point_labels=np.array([1])
                )
        return len(batch) / (time.perf_counter() - started)

    def through(fleet: Any, batch: list[np.ndarray], concurrency: int) -> float:
        bodies = [
            {"image": b64(encode(img)), "prompts": [{"points": point, "labels": [1]}]}
            for img in batch
        ]
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            jobs = list(pool.map(lambda b: run(fleet.base_url, b, timeout=600), bodies))
        assert all(j["status"] == "succeeded" for j in jobs)
        return len(batch) / (time.perf_counter() - started)

    predictor = None
    rows = []
    for batching in args.batching:
        env = {"SAM2FLEET_BATCH_MAX_SIZE": str(args.batch_max_size if batching else 1)}
        with local_fleet("throughput", args.image_size, **env) as (fleet, ckpt, _):
            if predictor is None:
                predictor = direct_predictor(ckpt, args.image_size)
                direct(predictor, images(99)[:1])  # warm-up
            for n, concurrency in enumerate(args.concurrency, start=1):
                d = direct(predictor, images(n))
                f = through(fleet, images(n + 100), concurrency)
                rows.append(
                    {
                        "cross_job_batching": batching,
                        "concurrency": concurrency,
                        "fleet_images_per_s": round(f, 3),
                        "direct_images_per_s": round(d, 3),
                        "ratio": round(f / d, 3),
                    }
                )
                print(rows[-1], flush=True)

    result = {
        "benchmark": "throughput",
        "model": "sam2.1_hiera_tiny",
        "image_size": args.image_size or 1024,
        "images_per_round": args.images,
        "workers": 1,
        "batch_max_size": args.batch_max_size,
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "results" / "throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
