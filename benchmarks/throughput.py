"""Bulk throughput: images per second through the fleet at several concurrencies,
against a direct in-process loop over the same images.

    .venv/bin/python benchmarks/throughput.py --images 8          # tiny, 1024 px input

Each image is new to the fleet (no embedding reuse); one point per image. The
ratio fleet / direct at concurrency 4 is the figure to watch (target ≥ 0.95).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

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
    args = parser.parse_args()
    point = [[300, 200]]

    def images(round_: int) -> list[np.ndarray]:
        return [scene(1024, 768, seed=1000 * round_ + i) for i in range(args.images)]

    with local_fleet("throughput", args.image_size) as (fleet, ckpt, _):
        predictor = direct_predictor(ckpt, args.image_size)

        def direct(batch: list[np.ndarray]) -> float:
            started = time.perf_counter()
            with torch.inference_mode():
                for img in batch:
                    predictor.set_image(img)
                    predictor.predict(
                        point_coords=np.array(point, dtype=np.float32), point_labels=np.array([1])
                    )
            return len(batch) / (time.perf_counter() - started)

        def through(batch: list[np.ndarray], concurrency: int) -> float:
            bodies = [
                {"image": b64(encode(img)), "prompts": [{"points": point, "labels": [1]}]}
                for img in batch
            ]
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                jobs = list(pool.map(lambda b: run(fleet.base_url, b, timeout=600), bodies))
            assert all(j["status"] == "succeeded" for j in jobs)
            return len(batch) / (time.perf_counter() - started)

        direct(images(99)[:1])  # warm-up
        rows = []
        for n, concurrency in enumerate(args.concurrency, start=1):
            d = direct(images(n))
            f = through(images(n + 100), concurrency)
            rows.append(
                {
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
        "cross_job_batching": False,
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "results" / "throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
