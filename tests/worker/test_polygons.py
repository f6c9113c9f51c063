"""COCO polygons of SAM 2's masks on real photos, checked by pycocotools' own rasteriser."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam2fleet.shared.schemas import OutputOptions, Prompt
from sam2fleet.shared.settings import Settings
from sam2fleet.worker.masks import prompt_records, rle_decode
from sam2fleet.worker.model import SegmentationModel
from sam2fleet.worker.polygons import mask_polygons
from tests.conftest import SMALL
from tests.support import photo


def rasterise(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """What any COCO reader sees: pycocotools fills each polygon, then takes the union."""
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects(polygons, height, width)
    decoded: np.ndarray = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    return decoded


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def vertices(polygons: list[list[float]]) -> int:
    return sum(len(p) // 2 for p in polygons)


@pytest.fixture(scope="module")
def photo_masks(tiny_checkpoint: Path) -> list[np.ndarray]:
    """SAM 2's masks (three candidates per click) on the two test photos."""
    model = SegmentationModel(
        Settings(checkpoint=tiny_checkpoint, model_image_size=SMALL, device="cpu")
    )
    masks = []
    for name in ("chelsea", "coffee"):
        image = photo(name)
        h, w = image.shape[:2]
        model.embed(image)
        clicks = [Prompt(points=[[w * fx, h * fy]], labels=[1]) for fx, fy in _GRID]
        for obj in model.predict(clicks, multimask=True):
            masks += [m for m in obj.masks if 0 < m.sum() < m.size]
    return masks


_GRID = [(0.3, 0.3), (0.5, 0.5), (0.7, 0.6), (0.45, 0.8)]


def test_exact_polygons_rasterise_back_to_the_mask(photo_masks: list[np.ndarray]) -> None:
    assert len(photo_masks) >= 12
    holes = 0
    for mask in photo_masks:
        polygons = mask_polygons(mask)
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
        back = rasterise(polygons, *mask.shape)
        assert iou(back, mask) >= 0.98
        assert np.array_equal(back, mask)  # exact, not just close
        _, hierarchy = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
        )
        holes += int((hierarchy[0][:, 3] >= 0).sum())
    assert holes > 0  # the photos' masks have holes, so the splicing was exercised


def outlines_in_photos() -> list[np.ndarray]:
    """Objects with the photos' own edges: the largest region brighter than a
    threshold, holes included. Random-weight SAM masks are speckle of a hundred
    pieces or more, which no simplification keeps and no annotator draws; real
    outlines are what simplification is for."""
    out = []
    for name in ("chelsea", "coffee"):
        gray = cv2.GaussianBlur(cv2.cvtColor(photo(name), cv2.COLOR_RGB2GRAY), (0, 0), 1.5)
        for percentile in (25, 50, 75):
            above = (gray > np.percentile(gray, percentile)).astype(np.uint8)
            _, labels, stats, _ = cv2.connectedComponentsWithStats(above)
            out.append(labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])))
    return out


def test_simplified_polygons_stay_close_with_far_fewer_vertices() -> None:
    for mask in outlines_in_photos():
        exact, simple = mask_polygons(mask), mask_polygons(mask, 1.0)
        assert np.array_equal(rasterise(exact, *mask.shape), mask)
        assert iou(rasterise(simple, *mask.shape), mask) >= 0.95
        assert vertices(simple) <= vertices(exact) / 4, (vertices(simple), vertices(exact))


def test_holes_are_spliced_into_their_outline_and_islands_stay_apart() -> None:
    mask = np.zeros((60, 80), dtype=bool)
    mask[5:55, 5:75] = True
    mask[15:45, 15:65] = False  # a hole ...
    mask[25:35, 30:50] = True  # ... with an island in it
    mask[20:23, 20:23] = False  # and a second, small hole
    polygons = mask_polygons(mask)
    assert len(polygons) == 2  # the outline with both holes, and the island
    assert np.array_equal(rasterise(polygons, 60, 80), mask)
    # Each polygon on its own is what a COCO reader fills: the hole is empty in it.
    outline = rasterise([max(polygons, key=len)], 60, 80)
    assert not outline[30, 20] and outline[10, 10]


def test_triangles_simplify_to_three_vertices_outline_and_hole_alike() -> None:
    yy, xx = np.mgrid[0:100, 0:100]
    mask = (xx >= 5) & (yy >= 5) & (xx + yy <= 90)  # a right triangle, stairs on its long side
    hole = (xx >= 20) & (yy >= 20) & (xx + yy <= 60)  # and a triangular hole in it
    mask &= ~hole
    polygons = mask_polygons(mask, 2.0)
    assert len(polygons) == 1
    # Three vertices each, the hole's ring walked into the outline's by one bridge
    # (there and back: the outline vertex and the hole's first vertex repeat).
    assert len(polygons[0]) // 2 == 3 + 3 + 2
    drawn = rasterise(polygons, 100, 100)
    assert iou(drawn, mask) >= 0.9
    assert not drawn[25, 25] and drawn[10, 10]  # inside the hole; inside the outline


def test_a_hole_is_bridged_from_the_outline_vertex_nearest_to_it() -> None:
    mask = np.zeros((60, 80), dtype=bool)
    mask[5:55, 5:75] = True
    mask[40:50, 60:70] = False  # a hole by the outline's bottom-right corner
    [ring] = mask_polygons(mask)
    points = [tuple(ring[i : i + 2]) for i in range(0, len(ring), 2)]
    start = points.index((59.75, 40.25))  # the hole's first vertex (its top-left corner)
    # Any outline vertex would fill the same pixels; the nearest makes the shortest
    # bridge, which is what a person sees in an annotation tool.
    assert points[start - 1] == (74.75, 54.75)
    assert np.array_equal(rasterise([ring], 60, 80), mask)


def test_simplification_never_collapses_a_thin_part_to_a_line() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[4, 3:6] = True  # a row of three pixels: at 2 px it would simplify to 2 vertices
    mask[1, 8] = mask[2, 9] = mask[3, 10] = True  # a diagonal, likewise
    assert np.array_equal(rasterise(mask_polygons(mask, 2.0), 10, 12), mask)


def test_rings_are_simplified_as_closed_rings() -> None:
    """The trace's starting vertex is not kept for its own sake: a small disk at 3 px
    is four vertices, where an open polyline from that start needs five."""
    yy, xx = np.mgrid[0:60, 0:60]
    disk = (xx - 30) ** 2 + (yy - 30) ** 2 < 25
    [ring] = mask_polygons(disk, 3.0)
    assert len(ring) // 2 == 4


def test_one_pixel_parts_and_empty_masks() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    assert mask_polygons(mask) == []
    mask[0, 0] = mask[9, 9] = mask[4, 5] = True  # corners of the image, and a diagonal pair
    mask[5, 6] = True
    assert np.array_equal(rasterise(mask_polygons(mask), 10, 10), mask)
    # Simplification never drops a whole object: a pixel keeps its square.
    assert rasterise(mask_polygons(mask, 5.0), 10, 10).sum() >= 3


def test_polygon_records_carry_size_and_the_masks_area(photo_masks: list[np.ndarray]) -> None:
    from sam2fleet.worker.model import ObjectMasks

    mask = photo_masks[0]
    obj = ObjectMasks(0, mask[None], np.array([0.9]), np.array([0.95]))
    record = prompt_records([obj], OutputOptions(format="polygon", polygon_tolerance=0.5))[0]
    [rle_record] = prompt_records([obj], OutputOptions())
    seg = record["segmentation"]
    assert seg["size"] == list(mask.shape) and "counts" not in seg
    assert record["area"] == int(mask.sum()) == rle_record["area"]
    assert record["bbox"] == rle_record["bbox"]
    back = rasterise(seg["polygons"], *mask.shape)
    assert iou(back, rle_decode(rle_record["segmentation"])) >= 0.95
