"""Video jobs: speed against Meta's predictor in-process, memory against video length,
and clicks answered while a long video is tracked.

    .venv/bin/python benchmarks/video.py throughput   # fleet frames/s vs in-process
    .venv/bin/python benchmarks/video.py memory       # ours vs Meta's at frame 100/500/2000
    .venv/bin/python benchmarks/video.py fairness     # click latency during a long video

Each writes benchmarks/results/video-<part>.json (or --out). Seeded random weights
of the real tiny architecture, with the object-score bias the tests use so objects
are tracked (speed does not depend on weight values). On CPU every side runs one
torch thread (SAM2FLEET_TORCH_THREADS=1): on a shared 2-core machine two threads
contended badly (one frame at 128 px: 0.25 s with one thread, 4 s with two).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import httpx
import torch
from common import DEVICE, ROOT, local_fleet

from tests.support import encode, scene
from tests.system.client import b64, run, submit
from tests.system.video_client import upload, wait_end
from tests.video_support import encode_video, moving_frames

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
CLICK = {"obj_id": 1, "frame": 0, "points": [[80, 60]], "labels": [1]}
RESULTS = ROOT / "benchmarks" / "results"


def video_checkpoint() -> Path:
    """Random tiny weights with tests/conftest.py's object-score bias (objects present)."""
    from sam2fleet.shared.models import MODELS
    from sam2fleet.worker.weights import write_random_checkpoint
    from tests.conftest import VIDEO_OBJECT_BIAS

    work = Path(tempfile.mkdtemp(prefix="sam2fleet-video-"))
    checkpoint = write_random_checkpoint(MODELS["sam2.1_hiera_tiny"], work / "tiny.pt", 0)
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    payload["model"]["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += VIDEO_OBJECT_BIAS
    torch.save(payload, checkpoint)  # keeps the random marker: results say "random"
    return checkpoint


def meta_predictor(checkpoint: Path, size: int | None) -> Any:
    """Meta's SAM2VideoPredictor on the benchmark's device, built as Meta builds it."""
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [] if size in (None, 1024) else [f"++model.image_size={size}"]
    return build_sam2_video_predictor(
        CONFIG, str(checkpoint), device=DEVICE, hydra_overrides_extra=overrides
    )


def compute(precision: str) -> Any:
    """Meta's examples: bf16 autocast around everything."""
    kind = DEVICE.split(":")[0]
    if precision == "bf16":
        return torch.autocast(kind, dtype=torch.bfloat16)
    return torch.autocast(kind, enabled=False)


def meta_in_process(checkpoint: Path, size: int | None, data: bytes, precision: str) -> float:
    """Meta's predictor as shipped, as a script runs it: init_state over a folder of
    frames, one click, propagate, masks thresholded to bool on the host. Seconds."""
    from tests.video_support import decode_video

    frames = decode_video(data)
    predictor = meta_predictor(checkpoint, size)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode(), compute(precision):
        folder = Path(tmp)
        for i, img in enumerate(frames):
            from PIL import Image

            Image.fromarray(img).save(folder / f"{i:05d}.jpg", format="PNG")
        started = time.perf_counter()
        state = predictor.init_state(str(folder))
        predictor.add_new_points_or_box(state, 0, 1, points=CLICK["points"], labels=CLICK["labels"])
        for _, _, masks in predictor.propagate_in_video(state):
            (masks > 0.0).cpu().numpy()
        return time.perf_counter() - started


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    size = args.image_size
    data = encode_video(moving_frames(args.frames, 320, 240))
    checkpoint = video_checkpoint()
    env = {
        "SAM2FLEET_TORCH_THREADS": "1",
        "SAM2FLEET_PRECISION": args.precision,
        "SAM2FLEET_CHECKPOINT": str(checkpoint),
    }
    torch.set_num_threads(1 if DEVICE == "cpu" else torch.get_num_threads())
    runs, direct = [], []
    with local_fleet("vthroughput", size, **env) as (fleet, _, _r):
        video = upload(fleet.base_url, data)
        # Interleaved rounds (fleet, then in-process, with the idle fleet still up), so
        # both sides see the same machine: a shared one drifts by 10-20 % over minutes.
        for _ in range(args.rounds):
            started = time.perf_counter()
            body = {"mode": "video", "video_id": video["video_id"], "prompts": [CLICK]}
            done = wait_end(fleet.base_url, submit(fleet.base_url, body)["id"], timeout=3600)
            assert done["status"] == "succeeded", done
            runs.append(
                {
                    "end_to_end_s": time.perf_counter() - started,
                    "worker_s": done["finished_at"] - done["started_at"],
                    "timings": done["result"]["timings"],
                }
            )
            direct.append(meta_in_process(checkpoint, size, data, args.precision))
    n = args.frames
    e2e = statistics.median(r["end_to_end_s"] for r in runs)
    in_process = statistics.median(direct)
    return {
        "device": DEVICE,
        "image_size": size or 1024,
        "precision": args.precision,
        "frames": n,
        "video": "320x240 H.264, one object clicked on frame 0",
        "rounds": args.rounds,
        "in_process_fps": n / in_process,
        "fleet_end_to_end_fps": n / e2e,
        "fleet_worker_fps": n / statistics.median(r["worker_s"] for r in runs),
        "ratio_end_to_end": in_process / e2e,
        "runs": runs,
        "in_process_s": direct,
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_run(args: argparse.Namespace) -> None:
    """One implementation over one long video, in a process of its own: prints JSON."""
    from sam2fleet.worker.video_tracker import held_bytes

    torch.set_num_threads(1)
    checkpoint = Path(args.checkpoint)
    data = Path(args.video).read_bytes()
    marks = set(args.marks)
    samples = {}
    started = time.perf_counter()
    base_rss = _rss()
    if args.impl == "meta":
        predictor = meta_predictor(checkpoint, args.image_size)
        with torch.inference_mode(), compute("bf16"):  # as Meta runs it
            base_rss = _rss()
            state = predictor.init_state(args.frames_dir)  # Meta's loader: every frame
            points, labels = CLICK["points"], CLICK["labels"]
            predictor.add_new_points_or_box(state, 0, 1, points=points, labels=labels)
            for n, (_, _, masks) in enumerate(predictor.propagate_in_video(state), 1):
                (masks > 0.0).cpu().numpy()
                if n in marks:
                    samples[n] = _sample(held_bytes(state), state["images"].nbytes, base_rss)
    else:
        from sam2fleet.shared.video_files import open_frames
        from sam2fleet.shared.video_schemas import VideoJobSpec, plan
        from sam2fleet.worker.video_frames import LazyFrames
        from sam2fleet.worker.video_tracker import VideoTracker, build_video_predictor

        predictor = build_video_predictor(
            CONFIG, str(checkpoint), torch.device(DEVICE), args.image_size
        )
        tracker = VideoTracker(predictor, "bf16")
        base_rss = _rss()
        frames = LazyFrames(open_frames(io.BytesIO(data), max_pixels=10**9), args.image_size)
        spec = VideoJobSpec.model_validate({"mode": "video", "prompts": [CLICK]})
        for n, _ in enumerate(
            tracker.track(frames, (240, 320), spec.prompts, plan(spec, len(frames))), 1
        ):
            if n in marks:
                cached = sum(a.nbytes for a in frames.cache.values())
                samples[n] = _sample(held_bytes(tracker.state), cached, base_rss)
    print(
        json.dumps(
            {
                "impl": args.impl,
                "samples": samples,
                "seconds": time.perf_counter() - started,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def _sample(outputs: int, frames: int, base_rss: int) -> dict[str, int]:
    return {
        "outputs_bytes": outputs,
        "frames_bytes": frames,
        "rss_bytes": _rss(),
        "rss_growth_bytes": _rss() - base_rss,
    }


def memory(args: argparse.Namespace) -> dict[str, Any]:
    checkpoint = video_checkpoint()
    video = checkpoint.with_name("long.mp4")
    video.write_bytes(encode_video(moving_frames(args.frames, 320, 240), options={"g": "50"}))
    # Meta's loader reads a folder of numbered frames: the same decoded pixels, as PNG.
    folder = checkpoint.with_name("frames")
    folder.mkdir()
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            frame.to_image().save(folder / f"{i:05d}.jpg", format="PNG")
    marks = [m for m in (100, 500, 2000) if m <= args.frames] or [args.frames]
    out: dict[str, Any] = {
        "image_size": args.image_size,
        "frames": args.frames,
        "video": "320x240 H.264",
        "precision": "bf16",
    }
    for impl in ("ours", "meta"):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "memory-run",
                "--impl",
                impl,
                "--checkpoint",
                str(checkpoint),
                "--video",
                str(video),
                "--frames-dir",
                str(folder),
                "--image-size",
                str(args.image_size),
                "--marks",
                *map(str, marks),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        out[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def fairness(args: argparse.Namespace) -> dict[str, Any]:
    """Click latency while one worker tracks a long video: clicks answered between
    frames (video_inline_jobs=4) against none (0: they wait for the video)."""
    data = encode_video(moving_frames(args.frames, 320, 240))
    checkpoint = video_checkpoint()
    out: dict[str, Any] = {"image_size": args.image_size, "frames": args.frames}
    for inline in (4, 0):
        env = {
            "SAM2FLEET_TORCH_THREADS": "1",
            "SAM2FLEET_PRECISION": "fp32",
            "SAM2FLEET_VIDEO_INLINE_JOBS": str(inline),
            "SAM2FLEET_CHECKPOINT": str(checkpoint),
        }
        with local_fleet(f"vfair{inline}", args.image_size, **env) as (fleet, _, _r):
            image = b64(encode(scene(320, 240, seed=3)))
            run(fleet.base_url, {"image": image, "prompts": [{"box": [10, 10, 100, 100]}]})
            video = upload(fleet.base_url, data)
            job = submit(
                fleet.base_url, {"mode": "video", "video_id": video["video_id"], "prompts": [CLICK]}
            )
            while httpx.get(f"{fleet.base_url}/v1/jobs/{job['id']}").json()["status"] != "running":
                time.sleep(0.1)
            latencies = clicks(fleet.base_url, image, args.clicks)
            done = wait_end(fleet.base_url, job["id"], timeout=3600)
            out[f"inline_{inline}"] = {
                "click_latency_s": latencies,
                "click_latency_median_s": statistics.median(latencies),
                "video_s": done["finished_at"] - done["started_at"],
                "video_fps": done["result"]["timings"]["frames_per_s"],
                "notes": done["result"]["notes"],
            }
    return out


def clicks(base_url: str, image: str, n: int) -> list[float]:
    """`n` clicks arriving every 2 s from 2 s on, each on its own as annotators' clicks
    would: each one's seconds from submit to result."""

    def click(i: int) -> float:
        time.sleep(2.0 * (i + 1))
        started = time.perf_counter()
        body = {"image": image, "prompts": [{"points": [[50 + 10 * i, 60]], "labels": [1]}]}
        job = wait_end(base_url, submit(base_url, body)["id"], timeout=3600)
        assert job["status"] == "succeeded", job
        return time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(click, range(n)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--frames", type=int, default=60)
    t.add_argument("--image-size", type=int, default=256)
    t.add_argument("--precision", default="bf16")
    t.add_argument("--rounds", type=int, default=1)
    m = sub.add_parser("memory")
    m.add_argument("--frames", type=int, default=2000)
    m.add_argument("--image-size", type=int, default=64)
    r = sub.add_parser("memory-run")
    r.add_argument("--impl", choices=("ours", "meta"), required=True)
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--video", required=True)
    r.add_argument("--frames-dir", required=True)
    r.add_argument("--image-size", type=int, required=True)
    r.add_argument("--marks", type=int, nargs="+", required=True)
    f = sub.add_parser("fairness")
    f.add_argument("--frames", type=int, default=150)
    f.add_argument("--image-size", type=int, default=128)
    f.add_argument("--clicks", type=int, default=5)
    for p in (t, m, f):
        p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.part == "memory-run":
        memory_run(args)
        return 0
    result = {"throughput": throughput, "memory": memory, "fairness": fairness}[args.part](args)
    out = args.out or RESULTS / f"video-{args.part}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
