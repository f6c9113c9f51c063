"""The playground page in headless chromium: click-to-mask time as a person feels it.

Runs the browser test's annotation (tests/browser/playground.py: three clicks on one
object, the second a background click, then a box) against a local fleet, reads the
page's own performance.now() timings, and reports the first click (upload, decode,
encoder) against clicks 2-3 (cached embedding, previous mask) as a ratio (CPU
target ≤ 0.05), with the fleet's own time per click (HTTP time minus the worker's
stage times). Saves the screenshot README.md shows.

    .venv/bin/python benchmarks/playground.py            # tiny, 1024 px input
"""

from __future__ import annotations

import argparse
import json
import sys

from common import ROOT, local_fleet

from tests.browser.playground import Playground, annotate, chromium, click_figures
from tests.support import PHOTOS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=None, help="model input (1024)")
    parser.add_argument("--screenshot", default=str(ROOT / "docs" / "images" / "playground.png"))
    args = parser.parse_args()
    with local_fleet("playground", args.image_size) as (fleet, _, _), chromium() as browser:
        page = Playground(browser, fleet.base_url, width=1200, height=640)
        page.open_image(PHOTOS / "coffee.jpg")
        clicks = annotate(page)
        # Hover over the first object's mask so the picture shows a score too.
        page.page.mouse.move(*page.screen_point(300, 200))
        page.page.screenshot(path=args.screenshot)
        assert page.errors == [], page.errors
    result = {
        "benchmark": "playground",
        "model": "sam2.1_hiera_tiny",
        "image_size": args.image_size or 1024,
        "photo": "coffee.jpg (600x400)",
        **click_figures(clicks),
        "clicks": clicks,
    }
    out = ROOT / "benchmarks" / "results" / "playground.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "clicks"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
