"""Overlay pictures: the image with coloured masks, their outlines, and the prompts.

Each prompt object gets one colour, shared by its mask, its box and its points, so
a person can see at a glance which click or box produced which mask. Foreground
points are filled dots, background points crosses; automatic-mode masks show the
grid point that produced them as a small white dot.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

# Tableau-like colours: distinct, readable on photos.
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (219, 219, 141),
    (158, 218, 229),
    (174, 199, 232),
]


def colour(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask that touch a pixel outside it (4-neighbourhood)."""
    m = np.pad(mask, 1, constant_values=False)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    edge: np.ndarray = mask & ~inner
    return edge


def _thicken(edge: np.ndarray, radius: int) -> np.ndarray:
    out = edge.copy()
    for _ in range(radius):
        p = np.pad(out, 1, constant_values=False)
        out = out | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    return out


def draw_overlay(
    image: Image.Image,
    masks: Sequence[np.ndarray],
    *,
    groups: Sequence[int] | None = None,
    scores: Sequence[float] | None = None,
    prompts: Sequence[Mapping[str, Any]] | None = None,
    grid_points: Sequence[Sequence[float] | None] | None = None,
    alpha: float = 0.45,
    min_size: int = 0,
) -> Image.Image:
    """Draw `masks` (HxW bool) over `image`.

    `groups[i]` picks mask i's colour (its prompt index; default: its own index),
    `scores[i]` is written next to it, `prompts` (API shape) are drawn in their
    group's colour, `grid_points[i]` is an automatic-mode mask's source point.
    `min_size` upscales small images first so the drawing stays readable.
    """
    base = ImageOps.exif_transpose(image).convert("RGB")
    w, h = base.size
    scale = max(1.0, min_size / max(w, h)) if min_size else 1.0
    arr = np.asarray(base, dtype=np.float32).copy()
    groups = list(groups) if groups is not None else list(range(len(masks)))
    edges = np.zeros((h, w), dtype=bool)
    edge_rgb = np.zeros((h, w, 3), dtype=np.float32)
    # Largest first, so small masks on top of big ones stay visible.
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
    for i in order:
        m = masks[i].astype(bool)
        if m.shape != (h, w):
            raise ValueError(f"mask {i} is {m.shape[::-1]}, image is {w}x{h}")
        tint = np.array(colour(groups[i]), dtype=np.float32)
        arr[m] = arr[m] * (1 - alpha) + tint * alpha
        e = _thicken(_outline(m), max(0, round(min(w, h) / 400)))
        edges |= e
        edge_rgb[e] = tint
    arr[edges] = edge_rgb[edges]
    out = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if scale > 1:
        out = out.resize((round(w * scale), round(h * scale)), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(out)
    s = scale
    lw = max(1, round(min(out.size) / 250))
    r = max(3, round(min(out.size) / 90))
    for k, prompt in enumerate(prompts or []):
        c = colour(k)
        if prompt.get("box"):
            x1, y1, x2, y2 = (v * s for v in prompt["box"])
            draw.rectangle([x1, y1, x2, y2], outline=c, width=lw + 1)
        for (x, y), label in zip(
            prompt.get("points") or [], prompt.get("labels") or [], strict=False
        ):
            x, y = x * s, y * s
            if label:
                draw.ellipse(
                    [x - r, y - r, x + r, y + r], fill=c, outline=(255, 255, 255), width=max(1, lw)
                )
            else:
                for dx in (-1, 1):
                    draw.line(
                        [x - r, y - dx * r, x + r, y + dx * r], fill=(255, 255, 255), width=lw + 2
                    )
                    draw.line([x - r, y - dx * r, x + r, y + dx * r], fill=c, width=lw)
    for point in grid_points or []:
        if point:
            x, y = point[0] * s, point[1] * s
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(255, 255, 255), outline=(0, 0, 0))
    if scores is not None:
        font = _font(max(10, round(min(out.size) / 28)))
        for i in order[::-1]:
            ys, xs = np.nonzero(masks[i])
            if len(xs) == 0:
                continue
            x, y = xs.min() * s + 2, ys.min() * s + 1
            text = f"{scores[i]:.2f}"
            box = draw.textbbox((x, y), text, font=font)
            draw.rectangle(box, fill=(0, 0, 0))
            draw.text((x, y), text, fill=colour(groups[i]), font=font)
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def overlay_from_result(
    image: Image.Image,
    result: Mapping[str, Any],
    *,
    prompts: Sequence[Mapping[str, Any]] | None = None,
    best_only: bool = True,
    min_size: int = 0,
) -> Image.Image:
    """Overlay of one job's `result` (the API's JSON). With `best_only`, prompt mode shows
    each object's best candidate (masks come best first within a prompt)."""
    from sam2fleet.client import decode_segmentation

    records = list(result["masks"])
    if best_only:
        seen: set[int] = set()
        kept = []
        for m in records:
            p = m.get("prompt_index")
            if p is None or p not in seen:
                kept.append(m)
                if p is not None:
                    seen.add(p)
        records = kept
    masks = [decode_segmentation(m["segmentation"]) for m in records]
    groups = [
        m["prompt_index"] if m.get("prompt_index") is not None else i for i, m in enumerate(records)
    ]
    return draw_overlay(
        image,
        masks,
        groups=groups,
        scores=[float(m["predicted_iou"]) for m in records],
        prompts=prompts,
        grid_points=[(m.get("point_coords") or [None])[0] for m in records],
        min_size=min_size,
    )


# --- the `sam2fleet overlay` command ------------------------------------------------

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def _find_in_run(run: Path, job_id: str) -> Path | None:
    for path in sorted((run / "jobs").glob("*.json")):
        try:
            if json.loads(path.read_text())["job"]["id"] == job_id:
                return path
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def run_command(args: argparse.Namespace) -> int:
    """`sam2fleet overlay`: see the subcommand's help in sam2fleet/cli.py."""
    from sam2fleet.client import ApiError, Client

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
