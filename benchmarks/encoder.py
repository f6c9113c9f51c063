"""Image-encoder latency per image, by model, batch size and precision, in-process.

The worker's own code path (`SegmentationModel.embed` for batch 1, `embed_batch`
for more: the pass cross-job batching makes), seeded random weights of each real
architecture, 1024x768 synthetic images. Reports the median milliseconds per
image of each configuration and, on CUDA, the peak memory allocated. Writes
benchmarks/results/encoder-{device}.json.

    .venv/bin/python benchmarks/encoder.py                                  # CPU: tiny
    .venv/bin/python benchmarks/encoder.py --models tiny large --batches 1 8 \\
        --precisions fp32 bf16 --rounds 20                                   # a GPU
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

import torch
from common import ROOT

from sam2fleet.shared.models import MODELS
from sam2fleet.shared.settings import Settings
from sam2fleet.worker.model import SegmentationModel, resolve_device
from sam2fleet.worker.weights import write_random_checkpoint
from tests.support import scene

SHORT = {"tiny": "sam2.1_hiera_tiny", "small": "sam2.1_hiera_small"}
SHORT |= {"base_plus": "sam2.1_hiera_base_plus", "large": "sam2.1_hiera_large"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: SegmentationModel, batch: int, rounds: int) -> dict[str, float]:
    images = [scene(1024, 768, seed=i) for i in range(batch)]

    def once() -> None:
        if batch == 1:
            model.embed(images[0])
        else:
            model.embed_batch(images)
        _sync(model.device)

    once()  # warm-up: kernels chosen, memory reserved (and compiled, if asked)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    row = {
        "batch": batch,
        "ms_per_image_median": round(1000 * statistics.median(times) / batch, 2),
        "ms_per_image_min": round(1000 * min(times) / batch, 2),
        "images_per_s": round(batch / statistics.median(times), 2),
    }
    if model.device.type == "cuda":
        row["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(model.device) / 2**20)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny"], choices=sorted(SHORT))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--precisions", nargs="+", default=["fp32"])
    ap.add_argument("--compile", default="off", help="SAM2FLEET_COMPILE_ENCODER mode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default=None, help="default: the device setting (auto)")
    ap.add_argument("--out", type=Path, default=None, help="default: results/encoder-DEVICE.json")
    args = ap.parse_args()
    device_setting = args.device or Settings().device

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for short in args.models:
            spec = MODELS[SHORT[short]]
            ckpt = write_random_checkpoint(spec, Path(tmp) / f"{short}.pt", 0)
            for precision in args.precisions:
                settings = Settings(
                    model=spec.name,
                    checkpoint=ckpt,
                    device=device_setting,
                    precision=precision,
                    compile_encoder=args.compile,
                    embedding_cache_bytes=0,
                )
                model = SegmentationModel(settings)
                for batch in args.batches:
                    row = {
                        "model": spec.name,
                        "precision": model.precision,
                        **measure(model, batch, args.rounds),
                    }
                    rows.append(row)
                    print(row, flush=True)
                del model
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
    device = resolve_device(device_setting).type
    result = {
        "benchmark": "encoder",
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
        },
        "image": "1024x768 synthetic, model input 1024",
        "compile": args.compile,
        "rounds": args.rounds,
        "rows": rows,
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"encoder-{device}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
