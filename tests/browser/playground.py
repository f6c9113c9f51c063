"""Driving the playground page in Debian's chromium through Playwright, as a person
would: open the page, open a photo, click, drag, download. Shared by the browser test
and benchmarks/playground.py."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own downloads are not used
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class Playground:
    """The page, and what a person does on it."""

    def __init__(self, browser: Browser, base_url: str, width: int = 1280, height: int = 800):
        self.context = browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(f"{base_url}/")  # the API's root leads to the page

    def close(self) -> None:
        self.context.close()

    def open_image(self, path: Path) -> None:
        self.page.set_input_files("#file", str(path))
        self.page.wait_for_function("window.playground.state.image.width > 0")

    def screen_point(self, x: float, y: float) -> tuple[float, float]:
        """Where image pixel (x, y) is on the screen."""
        box = self.page.locator("#marks").bounding_box()
        assert box is not None
        w, h = self.state("image.width"), self.state("image.height")
        return box["x"] + x * box["width"] / w, box["y"] + y * box["height"] / h

    def click(self, x: float, y: float, *, background: bool = False) -> None:
        """A left click (foreground) or a right click (background) on image pixel (x, y)."""
        n = self.answered()
        sx, sy = self.screen_point(x, y)
        self.page.mouse.click(sx, sy, button="right" if background else "left")
        self.wait_answered(n + 1)

    def drag_box(self, box: list[float]) -> None:
        n = self.answered()
        x1, y1 = self.screen_point(box[0], box[1])
        x2, y2 = self.screen_point(box[2], box[3])
        self.page.mouse.move(x1, y1)
        self.page.mouse.down()
        self.page.mouse.move((x1 + x2) / 2, (y1 + y2) / 2, steps=4)
        self.page.mouse.move(x2, y2, steps=4)
        self.page.mouse.up()
        self.wait_answered(n + 1)

    def press(self, button_id: str) -> None:
        self.page.click(f"#{button_id}")

    def answered(self) -> int:
        return int(self.page.evaluate("window.playground.state.clicks.length"))

    def wait_answered(self, n: int, timeout_s: float = 300) -> None:
        self.page.wait_for_function(
            f"window.playground.state.clicks.length >= {n}", timeout=timeout_s * 1000
        )
        self.page.evaluate("window.playground.idle()")

    def state(self, path: str) -> Any:
        return self.page.evaluate(f"window.playground.state.{path}")

    def clicks(self) -> list[dict[str, Any]]:
        clicks: list[dict[str, Any]] = self.page.evaluate("window.playground.state.clicks")
        return clicks

    def objects(self) -> list[dict[str, Any]]:
        """Each object's prompts, job and mask record (not its decoded mask)."""
        objects: list[dict[str, Any]] = self.page.evaluate(
            """window.playground.state.objects.map((o) => ({id: o.id, points: o.points,
                labels: o.labels, box: o.box, auto: o.auto,
                jobId: o.last && o.last.jobId, record: o.last && o.last.record}))"""
        )
        return objects

    def drawn(self) -> np.ndarray:
        """Where the masks canvas has paint: an HxW bool array."""
        url = self.page.evaluate("document.getElementById('masks').toDataURL('image/png')")
        data = base64.b64decode(url.split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGBA"))[:, :, 3] > 0

    def download(self, button_id: str, to: Path) -> Path:
        with self.page.expect_download() as info:
            self.press(button_id)
        path = to / info.value.suggested_filename
        info.value.save_as(path)
        return path

    def hover(self, x: float, y: float) -> str:
        """The tooltip shown over image pixel (x, y), '' when none."""
        self.page.mouse.move(*self.screen_point(x, y))
        tip = self.page.locator("#tip")
        return tip.inner_text() if tip.is_visible() else ""

    def status(self) -> str:
        return self.page.inner_text("#status")


# The annotation the browser test and the benchmark make on tests/data/photos/coffee.jpg
# (600x400): an object from three clicks, the second one a background click, and a
# second object from a box.
CLICKS = [((300.0, 200.0), False), ((150.0, 100.0), True), ((320.0, 230.0), False)]
BOX = [350.0, 80.0, 560.0, 300.0]


def annotate(pg: Playground) -> list[dict[str, Any]]:
    """Make the clicks and the box; each answered click's entry from the page's log."""
    for (x, y), background in CLICKS:
        pg.click(x, y, background=background)
    pg.press("new-object")
    pg.drag_box(BOX)
    return pg.clicks()[-4:]


def click_figures(clicks: list[dict[str, Any]]) -> dict[str, Any]:
    """The first click against the slower of clicks 2-3 (cached, refining one object)."""
    first, later = clicks[0], clicks[1:3]
    return {
        "first_click_ms": round(first["ms"], 1),
        "clicks_2_3_ms": [round(c["ms"], 1) for c in later],
        "ratio_clicks_2_3_over_first": round(max(c["ms"] for c in later) / first["ms"], 4),
        "fleet_ms_per_click": [round(c["fleetMs"], 1) for c in clicks],
        "worker_ms_per_click": [round(c["workerMs"], 1) for c in clicks],
        "cache_hit": [c["cacheHit"] for c in clicks],
        "previous_mask": [c["previousMask"] for c in clicks],
    }
