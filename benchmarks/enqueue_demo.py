"""A real `sam2fleet enqueue` run, for throughput and for the docs' pictures.

Starts Redis, one worker (SAM 2 tiny, seeded random weights: masks are not
meaningful, speed does not depend on weight values) and the API on this machine,
writes a folder of synthetic images plus a JSONL manifest with prompts, and runs

    sam2fleet enqueue IMAGES --out OUT --concurrency J          (automatic mode)
    sam2fleet enqueue prompts.jsonl --out OUT2 --overlays       (a box + clicks each)
    sam2fleet overlay OUT2/jobs/<first>.json --out docs/images/overlay-example.png

printing each command's terminal output (progress bar, summary) and images/s.

    .venv/bin/python benchmarks/enqueue_demo.py --images 100 --image-size 256
    .venv/bin/python benchmarks/enqueue_demo.py --overlay docs/images/overlay-example.png
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sam2fleet.shared.models import MODELS  # noqa: E402
from sam2fleet.worker.weights import write_random_checkpoint  # noqa: E402
from tests.support import Fleet, RedisServer, encode, fleet_env, scene  # noqa: E402


def last_bar(stderr: str) -> str:
    """The final state of a tqdm bar written without a terminal (\\r-separated updates)."""
    frames = [f.strip() for f in re.split(r"[\r\n]", stderr) if "img/s" in f or "s/img" in f]
    return frames[-1] if frames else ""


def run_cli(args: list[str], env: dict[str, str]) -> tuple[str, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "sam2fleet.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.monotonic() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(
            f"sam2fleet {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout, proc.stderr, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=256, help="model input size")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--overlay", type=Path, default=None, help="also write the docs' overlay example here"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sam2fleet-demo-") as tmp_s:
        tmp = Path(tmp_s)
        ckpt = write_random_checkpoint(MODELS["sam2.1_hiera_tiny"], tmp / "tiny.pt", 0)
        redis = RedisServer.start(tmp / "redis")
        fleet = Fleet(fleet_env(redis.url, ckpt, "demo", args.image_size), tmp)
        try:
            fleet.start_worker("w0")
            fleet.start_api()
            fleet.wait_ready()
            images = tmp / "photos"
            sizes = [(320, 240), (240, 320), (400, 300), (256, 256)]
            manifest = []
            for i in range(args.images):
                w, h = sizes[i % len(sizes)]
                fmt, ext = [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")][i % 3]
                path = images / f"{i // 50:02d}" / f"photo{i:04d}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode(scene(w, h, seed=i), fmt))
                manifest.append(
                    {
                        "image": str(path),
                        "prompts": [
                            {"box": [w // 8, h // 8, w // 2, h // 2], "category": "thing"},
                            {
                                "points": [[3 * w // 4, 3 * h // 4], [w // 2, h // 5]],
                                "labels": [1, 0],
                                "category": "stuff",
                            },
                        ],
                    }
                )
            (tmp / "prompts.jsonl").write_text("\n".join(json.dumps(m) for m in manifest))
            env = {
                **os.environ,
                "COLUMNS": "100",
                "SAM2FLEET_SERVER": fleet.base_url,
            }

            print(
                f"$ sam2fleet enqueue photos/ --out out --concurrency {args.concurrency} "
                "--points-per-side 4"
            )
            out, err, took = run_cli(
                [
                    "enqueue",
                    str(images),
                    "--out",
                    str(tmp / "out"),
                    "--concurrency",
                    str(args.concurrency),
                    "--points-per-side",
                    "4",
                ],
                env,
            )
            print(last_bar(err))
            print(out.replace(str(tmp) + "/", ""))
            print(
                f"$ sam2fleet enqueue prompts.jsonl --out out2 --concurrency "
                f"{args.concurrency} --overlays"
            )
            out2, err2, _ = run_cli(
                [
                    "enqueue",
                    str(tmp / "prompts.jsonl"),
                    "--out",
                    str(tmp / "out2"),
                    "--concurrency",
                    str(args.concurrency),
                    "--overlays",
                ],
                env,
            )
            print(last_bar(err2))
            print(out2.replace(str(tmp) + "/", ""))
            if args.overlay is not None:
                record = sorted((tmp / "out2" / "jobs").glob("*.json"))[0]
                o, _, _ = run_cli(
                    ["overlay", str(record), "--out", str(args.overlay), "--min-size", "480"], env
                )
                print(o.strip())
        finally:
            fleet.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
