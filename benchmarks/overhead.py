"""Fleet overhead: one point job through the fleet against the same call in-process.

Both sides use the same checkpoint, model size and prompt, on a fresh image each
round (so no embedding is reused), interleaved round by round so machine noise hits
both alike. The fleet side is the whole path a client sees: HTTP submit → Redis →
Celery worker → Redis → long-poll answer.

    .venv/bin/python benchmarks/overhead.py --rounds 10            # tiny, 1024 px
    .venv/bin/python benchmarks/overhead.py --image-size 256        # quick look

Without real weights a random checkpoint of the real architecture is written first;
speed does not depend on weight values. Results go to benchmarks/results/ as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, direct_predictor, local_fleet

from tests.support import encode, scene
from tests.system.client import b64, submit, wait


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=None, help="model input (1024)")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    # The embedding cache is off: each round is a fresh image anyway, and the point
    # is the cost of the path, not of reuse.
    with local_fleet("overhead", args.image_size, SAM2FLEET_EMBEDDING_CACHE_BYTES="0") as (
        fleet,
        checkpoint,
        _,
    ):
        predictor = direct_predictor(checkpoint, args.image_size)
        point = [args.width // 2, args.height // 2]
        body = {"prompts": [{"points": [point], "labels": [1]}], "multimask": True}

        def run_direct(img: np.ndarray) -> float:
            started = time.perf_counter()
            with torch.inference_mode():
                predictor.set_image(img)
                predictor.predict(
                    point_coords=np.array([point], dtype=np.float32),
                    point_labels=np.array([1]),
                    multimask_output=True,
                )
            return time.perf_counter() - started

        def run_fleet(data: bytes) -> tuple[float, dict]:
            started = time.perf_counter()
            job = wait(fleet.base_url, submit(fleet.base_url, {**body, "image": b64(data)})["id"])
            elapsed = time.perf_counter() - started
            assert job["status"] == "succeeded", job
            return elapsed, job["result"]["timings"]

        # One warm-up each (first-call allocations), not counted.
        warm = scene(args.width, args.height, seed=10_000)
        run_direct(warm)
        run_fleet(encode(warm))
        direct, through, stages = [], [], []
        for i in range(args.rounds):
            img = scene(args.width, args.height, seed=i)
            data = encode(img)  # PNG bytes a client would send; decoding is the fleet's job
            if i % 2:  # alternate the order so neither side always goes first
                direct.append(run_direct(img))
                t, s = run_fleet(data)
            else:
                t, s = run_fleet(data)
                direct.append(run_direct(img))
            through.append(t)
            stages.append(s)
            print(
                f"round {i + 1}/{args.rounds}: direct {direct[-1] * 1000:.0f} ms, "
                f"fleet {through[-1] * 1000:.0f} ms",
                flush=True,
            )

    med_d, med_f = statistics.median(direct), statistics.median(through)
    result = {
        "benchmark": "overhead",
        "model": "sam2.1_hiera_tiny",
        "image_size": args.image_size or 1024,
        "image": [args.width, args.height],
        "rounds": args.rounds,
        "machine": {
            "platform": platform.platform(),
            "cpus": torch.get_num_threads(),
            "device": "cpu",
            "torch": torch.__version__,
        },
        "direct_median_s": round(med_d, 4),
        "fleet_median_s": round(med_f, 4),
        "ratio_fleet_over_direct": round(med_f / med_d, 3),
        "fleet_stage_medians_s": {
            k: round(statistics.median(s[k] for s in stages), 4) for k in stages[0]
        },
        "direct_s": [round(x, 4) for x in direct],
        "fleet_s": [round(x, 4) for x in through],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"overhead-{result['image_size']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps({k: v for k, v in result.items() if k not in ("direct_s", "fleet_s")}, indent=2)
    )
    print(f"ratio fleet/direct (medians): {result['ratio_fleet_over_direct']}  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
