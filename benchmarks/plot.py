"""Draw benchmarks/results/*.json as one picture: fleet against in-process, per benchmark.

    .venv/bin/python benchmarks/plot.py        # writes docs/images/performance.png

Pillow only (no plotting library): one panel per benchmark, a pair of bars per
figure (fleet, in-process or Meta's generator), seconds or images/s as labelled.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FLEET, DIRECT = (52, 120, 200), (200, 120, 52)


def panels() -> list[tuple[str, str, list[tuple[str, float, float]]]]:
    """(title, unit, [(label, fleet value, in-process value)]) for each result file."""
    out = []

    def load(name: str) -> dict | None:
        path = RESULTS / name
        return json.loads(path.read_text()) if path.exists() else None

    if o := load("overhead-1024.json"):
        out.append(
            (
                "one point job (median)",
                "s",
                [("1024 px", o["fleet_median_s"], o["direct_median_s"])],
            )
        )
    if i := load("interactive.json"):
        out.append(
            (
                "interactive clicks",
                "s",
                [
                    ("first", i["fleet_first_click_s"], i["direct_first_click_s"]),
                    (
                        "2-10 median",
                        i["fleet_clicks_2_on_median_s"],
                        i["direct_clicks_2_on_median_s"],
                    ),
                ],
            )
        )
    if t := load("throughput.json"):
        out.append(
            (
                "throughput",
                "img/s",
                [
                    (
                        f"c={r['concurrency']}{' batch' if r.get('cross_job_batching') else ''}",
                        r["fleet_images_per_s"],
                        r["direct_images_per_s"],
                    )
                    for r in t["rows"]
                ],
            )
        )
    if a := load("automatic.json"):
        out.append(
            (
                "automatic mode (fast vs Meta's)",
                "s",
                [
                    (f"{r['points_per_side']} pps", r["fast_median_s"], r["meta_median_s"])
                    for r in a["results"]
                ],
            )
        )
    return out


def draw(path: Path) -> None:
    data = panels()
    width = 900
    heights = [40 + 40 * len(rows) for _, _, rows in data]
    img = Image.new("RGB", (width, 60 + sum(heights)), "white")
    d = ImageDraw.Draw(img)
    d.text(
        (20, 15), "sam2fleet benchmarks (2-core CPU, SAM 2.1 tiny, random weights)", fill="black"
    )
    d.rectangle((620, 14, 632, 26), fill=FLEET)
    d.text((638, 15), "fleet / fast", fill="black")
    d.rectangle((740, 14, 752, 26), fill=DIRECT)
    d.text((758, 15), "in-process / Meta", fill="black")
    for n, (title, unit, rows) in enumerate(data):
        top = 50 + sum(heights[:n])
        d.text((20, top), f"{title} [{unit}]", fill="black")
        scale = max(max(f, g) for _, f, g in rows) or 1.0
        bar_w = (width - 260) / scale
        for k, (label, fleet, direct) in enumerate(rows):
            y = top + 22 + k * 40
            d.text((20, y + 8), label, fill="black")
            for j, (value, colour) in enumerate(((fleet, FLEET), (direct, DIRECT))):
                y0 = y + j * 16
                d.rectangle((140, y0, 140 + max(1, value * bar_w), y0 + 13), fill=colour)
                d.text((146 + value * bar_w, y0), f"{value:.3g}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def main() -> int:
    out = ROOT / "docs" / "images" / "performance.png"
    draw(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
