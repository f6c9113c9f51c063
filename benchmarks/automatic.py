"""Automatic mode: worker/fast_amg.py vs Meta's SAM2AutomaticMaskGenerator, in-process.

Same model (SAM 2.1 tiny at its full 1024 input, seeded random weights written with
worker/weights.py), a 1024x768 synthetic image, 16 and 32 points per side, runs
interleaved (Meta, fast, Meta, fast, ...), medians of wall-clock and of process CPU
seconds (all threads; steadier than wall-clock on a shared machine), speedups, and
whether the records
matched (same count, and how many records differ in any field: RLE, area, box, scores).
Writes benchmarks/results/automatic.json with the CPU it ran on (model name, the SIMD
flags that decide which kernels torch, MKL and oneDNN take, torch's CPU capability).

    .venv/bin/python benchmarks/automatic.py                 # 2 rounds at 16, 1 at 32
    .venv/bin/python benchmarks/automatic.py --rounds 16:3,32:1 --iou 0.8 --stability 0.95
    .venv/bin/python benchmarks/automatic.py --rounds 16:1 --also REV   # + fast_amg.py at REV
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import DEVICE  # noqa: E402


def _image() -> np.ndarray:
    from tests.support import scene

    return scene(1024, 768, seed=1)


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16")


def _cpu() -> dict[str, object]:
    """The CPU as lscpu names it (first processor of /proc/cpuinfo on Linux)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not line.strip():
                break
            info[key.strip()] = value.strip()
    except OSError:
        pass
    flags = info.get("flags", "").split()
    return {
        "model_name": info.get("model name", platform.processor()),
        "simd_flags": [f for f in flags if f in SIMD_FLAGS],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _against_meta(meta: list[dict], other: list[dict]) -> dict[str, Any]:
    pairs = list(zip(meta, other, strict=False))
    differing = sum(a != b for a, b in pairs)
    return {
        "same_count": len(meta) == len(other),
        "records_differing": differing,
        "identical_records_in_order": len(meta) == len(other) and differing == 0,
        "max_predicted_iou_diff": max(
            (abs(a["predicted_iou"] - b["predicted_iou"]) for a, b in pairs),
            default=0.0,
        ),
    }


def _generator_at(rev: str) -> type:
    """FastAutomaticMaskGenerator as worker/fast_amg.py was at git revision `rev`."""
    source = subprocess.run(
        ["git", "show", f"{rev}:worker/fast_amg.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType(f"fast_amg_{rev}")
    exec(compile(source, f"{rev}:worker/fast_amg.py", "exec"), module.__dict__)
    return module.FastAutomaticMaskGenerator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", default="16:2,32:1", help="pps:rounds,...")
    ap.add_argument("--iou", type=float, default=0.0, help="pred_iou_thresh")
    ap.add_argument("--stability", type=float, default=0.0, help="stability_score_thresh")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/automatic.json"))
    ap.add_argument(
        "--also", metavar="REV", help="also time worker/fast_amg.py as it was at git REV"
    )
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
    contenders: list[tuple[str, type]] = [
        ("meta", SAM2AutomaticMaskGenerator),
        ("fast", FastAutomaticMaskGenerator),
    ]
    if args.also:
        contenders.append((f"fast@{args.also}", _generator_at(args.also)))
    results = []
    for item in args.rounds.split(","):
        pps, rounds = (int(v) for v in item.split(":"))
        knobs = {
            "points_per_side": pps,
            "points_per_batch": 64,
            "pred_iou_thresh": args.iou,
            "stability_score_thresh": args.stability,
        }
        times: dict[str, list[float]] = {name: [] for name, _ in contenders}
        cpu: dict[str, list[float]] = {name: [] for name, _ in contenders}
        outputs: dict[str, list] = {}
        for _ in range(rounds):
            for name, cls in contenders:
                gen = cls(model, output_mode="coco_rle", **knobs)
                started, cpu_started = time.perf_counter(), time.process_time()
                with torch.inference_mode():
                    anns = gen.generate(image)
                times[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - cpu_started)
                outputs[name] = anns
                print(
                    f"pps={pps} {name}: {times[name][-1]:.1f}s wall, {cpu[name][-1]:.1f}s CPU, "
                    f"{len(anns)} masks",
                    flush=True,
                )
        row: dict[str, Any] = {
            "points_per_side": pps,
            "rounds": rounds,
            "knobs": knobs,
            "meta_s": times["meta"],
            "meta_median_s": statistics.median(times["meta"]),
            "meta_cpu_s": cpu["meta"],
            "masks": {"meta": len(outputs["meta"])},
        }
        for name, _ in contenders[1:]:
            key = "fast" if name == "fast" else "also"
            row[key + "_s"] = times[name]
            row[key + "_median_s"] = statistics.median(times[name])
            row[key + "_cpu_s"] = cpu[name]
            row["masks"][name] = len(outputs[name])
            row |= {
                f"{key}_{k}": v for k, v in _against_meta(outputs["meta"], outputs[name]).items()
            }
            row[key + "_speedup"] = row["meta_median_s"] / row[key + "_median_s"]
            row[key + "_cpu_speedup"] = statistics.median(cpu["meta"]) / statistics.median(
                cpu[name]
            )
        if args.also:
            row["also_rev"] = args.also
        print(json.dumps(row), flush=True)
        results.append(row)
    out = {
        "what": "seconds per image, wall-clock (*_s) and process CPU (*_cpu_s), generate "
        "only, encoder included, SAM 2.1 tiny at 1024 px, random weights, 1024x768 "
        "synthetic image, in-process, interleaved",
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": DEVICE,
            "cpu": _cpu(),
        },
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
