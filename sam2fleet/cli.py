"""The client-side subcommands of `sam2fleet`: `enqueue` and `overlay`.

`shared/cli.py` registers them and imports this module only when one of them runs,
so the server commands never load the client, and the client never loads torch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any


def add_enqueue(sub: Any) -> None:
    from sam2fleet.enqueue import add_arguments

    p = sub.add_parser(
        "enqueue",
        help="run a folder / glob / JSONL manifest / COCO file through the fleet",
        description="Submit every image of SOURCE with bounded concurrency, write COCO "
        "results (and optionally PNG masks and overlays) to --out. Re-running with the "
        "same --out resumes: done images are skipped, failed ones retried.",
    )
    add_arguments(p)


def add_overlay(sub: Any) -> None:
    p = sub.add_parser(
        "overlay",
        help="draw one job's masks and prompts over its image",
        description="TARGET is a per-image record written by `enqueue` (DIR/jobs/NAME.json), "
        "a job JSON saved from the API (needs --image), or a job id (fetched from "
        "--server, or looked up in --run DIR).",
    )
    p.add_argument("target", help="jobs/NAME.json, a saved job JSON, or a job id")
    p.add_argument("--image", type=Path, default=None, help="the job's image file")
    p.add_argument(
        "--prompts",
        default=None,
        help='prompts to draw, as JSON: [{"box": [...]}, {"points": ...}]',
    )
    p.add_argument(
        "--run", type=Path, default=None, help="an enqueue output folder to look a job id up in"
    )
    p.add_argument(
        "--out", "-o", type=Path, default=None, help="output PNG (default: <target>.overlay.png)"
    )
    p.add_argument(
        "--all-candidates",
        action="store_true",
        help="draw every multimask candidate, not only each object's best",
    )
    p.add_argument(
        "--min-size",
        type=int,
        default=0,
        help="upscale small images so the long side is at least this many pixels",
    )
    p.add_argument("--server", default=None, help="API base URL (default SAM2FLEET_SERVER)")
    p.add_argument("--api-key", default=None, help="API key (default SAM2FLEET_API_KEY)")


def enqueue(args: argparse.Namespace) -> int:
    from sam2fleet.enqueue import main

    return main(args)


_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def _find_in_run(run: Path, job_id: str) -> Path | None:
    for path in sorted((run / "jobs").glob("*.json")):
        try:
            if json.loads(path.read_text())["job"]["id"] == job_id:
                return path
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def overlay(args: argparse.Namespace) -> int:
    from PIL import Image

    from sam2fleet.client import ApiError, Client
    from sam2fleet.overlay import overlay_from_result

    target = Path(args.target)
    prompts: list[dict[str, Any]] | None = json.loads(args.prompts) if args.prompts else None
    image_path: Path | None = args.image
    if not target.is_file() and args.run is not None:
        found = _find_in_run(args.run, args.target)
        if found is None:
            print(f"sam2fleet overlay: no job {args.target} in {args.run}/jobs", file=sys.stderr)
            return 2
        target = found
    if target.is_file():
        data = json.loads(target.read_text())
        if "item" in data and "job" in data:  # an enqueue record knows image and prompts
            job = data["job"]
            image_path = image_path or Path(data["item"]["path"])
            prompts = prompts if prompts is not None else data["spec"].get("prompts")
        else:
            job = data
        default_out = target.with_suffix(".overlay.png")
    elif _JOB_ID.match(args.target):
        try:
            with Client(args.server, args.api_key) as client:
                job = client.get(args.target).raw
        except ApiError as exc:
            print(f"sam2fleet overlay: {exc}", file=sys.stderr)
            return 2
        default_out = Path(f"{args.target}.overlay.png")
    else:
        print(f"sam2fleet overlay: {args.target} is neither a file nor a job id", file=sys.stderr)
        return 2
    if job.get("status") != "succeeded" or not job.get("result"):
        err = job.get("error") or {}
        print(
            f"sam2fleet overlay: job {job.get('id')} is {job.get('status')}"
            f"{': ' + err.get('message', '') if err else ''}; nothing to draw",
            file=sys.stderr,
        )
        return 1
    if image_path is None:
        print(
            "sam2fleet overlay: the API does not return images; pass --image FILE", file=sys.stderr
        )
        return 2
    with Image.open(image_path) as img:
        size = job["result"]["image"]
        if img.size != (size["width"], size["height"]) and img.size != (
            size["height"],
            size["width"],
        ):
            print(
                f"sam2fleet overlay: {image_path} is {img.size[0]}x{img.size[1]}, the job's "
                f"image was {size['width']}x{size['height']}",
                file=sys.stderr,
            )
            return 2
        pic = overlay_from_result(
            img,
            job["result"],
            prompts=prompts,
            best_only=not args.all_candidates,
            min_size=args.min_size,
        )
    out = args.out or default_out
    out.parent.mkdir(parents=True, exist_ok=True)
    pic.save(out, optimize=True)
    print(f"{out} ({pic.width}x{pic.height}, {len(job['result']['masks'])} masks)")
    return 0
