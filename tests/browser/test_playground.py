"""The playground page in a real headless browser (Debian's chromium, driven by
Playwright) against a real fleet with API keys on: a photo opened, three clicks and a
box, masks drawn where the fleet's masks are, downloads read back by pycocotools."""

from __future__ import annotations

import fnmatch
import io
import json
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser
from pycocotools.coco import COCO

from sam2fleet.admin import apikeys
from sam2fleet.api.routes.playground import PAGE_DIR
from sam2fleet.client import Client, Job
from tests.browser.playground import Playground, annotate, chromium, click_figures
from tests.conftest import fleet_fixture
from tests.support import PHOTOS, ROOT, Fleet

KEY = "s2f_playground_browser_test_0123456789"
fleet = fleet_fixture(
    "pg", SAM2FLEET_AUTH_ENABLED="true", SAM2FLEET_API_KEY_HASHES=apikeys.digest(KEY)
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(fleet: Fleet, browser: Browser) -> Iterator[Playground]:
    pg = Playground(browser, fleet.base_url)
    yield pg
    pg.close()
    assert pg.errors == []  # no script error on the page


def jobs(fleet: Fleet, ids: list[str]) -> list[Job]:
    with Client(fleet.base_url, KEY) as client:
        return [client.get(job_id) for job_id in ids]


def test_the_page_is_the_packaged_files_at_the_apis_root(fleet: Fleet) -> None:
    root = httpx.get(f"{fleet.base_url}/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/playground/"
    html = httpx.get(f"{fleet.base_url}/playground/").text
    assert html == (PAGE_DIR / "index.html").read_text()
    for name, kind in [("app.js", "javascript"), ("playground.css", "css")]:
        r = httpx.get(f"{fleet.base_url}/playground/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    # Every file of the page is package data, so it installs with the API.
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "sam2fleet.api.playground" in setuptools["packages"]
    patterns = setuptools["package-data"]["sam2fleet.api.playground"]
    for path in PAGE_DIR.iterdir():
        if path.suffix != ".py" and path.name != "__pycache__":
            assert any(fnmatch.fnmatch(path.name, p) for p in patterns), path.name


def test_three_clicks_and_a_box_in_a_real_browser(
    fleet: Fleet, page: Playground, tmp_path: Path
) -> None:
    page.open_image(PHOTOS / "coffee.jpg")
    assert not page.drawn().any()

    # Auth is on: without a key the fleet answers 401 and the page asks for one.
    page.page.mouse.click(*page.screen_point(300, 200))
    page.page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "API key" in page.status()
    page.press("undo")  # the unanswered click goes
    page.page.fill("#apikey", KEY)

    clicks = annotate(page)
    assert [c["what"] for c in clicks] == ["point", "background point", "point", "box"]
    assert clicks[0]["uploaded"] and not clicks[0]["cacheHit"]
    assert [c["previousMask"] for c in clicks] == [False, True, True, False]
    # What the fleet says about the same jobs: clicks 2 and 3 (and the box) were
    # answered from the worker's cached embedding, and clicks 2 and 3 refined the
    # previous click's mask, named by its job.
    answered = jobs(fleet, [c["jobId"] for c in clicks])
    results = [j.result_or_raise() for j in answered]
    assert [r.timings.embedding_cache_hit for r in results] == [False, True, True, True]
    assert [r.masks[0].mask_input for r in results] == [None, "job", "job", None]
    assert [len(r.masks) for r in results] == [3, 1, 1, 1]  # one click: three candidates

    # The masks canvas is painted exactly where the fleet's masks for both objects are.
    objects = page.objects()
    assert [o["jobId"] for o in objects] == [clicks[2]["jobId"], clicks[3]["jobId"]]
    masks = [results[2].masks[0].decode(), results[3].masks[0].decode()]
    assert all(0 < m.sum() < m.size for m in masks)
    assert np.array_equal(page.drawn(), masks[0] | masks[1])

    # Each mask's score on hover (the box's object is drawn on top).
    ys, xs = np.nonzero(masks[1])
    tip = page.hover(float(xs[len(xs) // 2]) + 0.5, float(ys[len(ys) // 2]) + 0.5)
    assert f"score {results[3].masks[0].predicted_iou:.3f}" in tip
    page.page.screenshot(path=tmp_path / "playground.png")

    # Downloads: a COCO dataset pycocotools reads, and one PNG per object.
    coco = COCO(str(page.download("download-coco", tmp_path)))
    anns = coco.loadAnns(coco.getAnnIds())
    assert [a["job_id"] for a in anns] == [o["jobId"] for o in objects]
    for ann, mask in zip(anns, masks, strict=True):
        assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
    with zipfile.ZipFile(page.download("download-png", tmp_path)) as z:
        assert z.namelist() == ["coffee-001.png", "coffee-002.png"]
        for name, mask in zip(z.namelist(), masks, strict=True):
            with Image.open(io.BytesIO(z.read(name))) as img:
                assert np.array_equal(np.asarray(img.convert("L")) > 127, mask)

    # Undo takes the box's object away, clear takes everything.
    page.press("undo")
    assert [o["jobId"] for o in page.objects()] == [clicks[2]["jobId"]]
    assert np.array_equal(page.drawn(), masks[0])
    page.press("clear")
    assert page.objects() == [] and not page.drawn().any()

    figures = click_figures(clicks)
    print("playground clicks:", json.dumps(figures))
    assert figures["cache_hit"] == [False, True, True, True]


def test_automatic_mode_draws_every_mask(page: Playground) -> None:
    page.page.fill("#apikey", KEY)
    page.open_image(PHOTOS / "chelsea.jpg")
    for field, value in [("grid", "4"), ("iou", "0"), ("stability", "0")]:
        page.page.fill(f"#{field}", value)
    page.press("auto")
    page.wait_answered(1)
    objects = page.objects()
    assert objects and all(o["auto"] for o in objects)
    [job_id] = {o["jobId"] for o in objects}
    with Client(page.page.url.split("/playground")[0], KEY) as client:
        result = client.get(job_id).result_or_raise()
    assert len(objects) == len(result.masks)
    assert np.array_equal(page.drawn(), np.logical_or.reduce(result.decode_masks()))
