"""Masks as COCO polygons, traced by OpenCV.

Coordinates follow COCO: pixel (x, y) is the unit square [x, x+1) x [y, y+1), and
pycocotools fills a polygon's pixels whose centres lie inside it. OpenCV traces the
centres of a mask's boundary pixels, a line half a pixel inside the true edge that
would cut every boundary pixel in two. Tracing the mask at twice its size instead
puts the line a quarter pixel inside the edge: every pixel of the mask has its
centre inside the polygon and every other pixel outside, so the exact polygon
(tolerance 0) rasterises back to the mask itself.

COCO polygons cannot say "hole": a list of polygons is their union. Each hole is
therefore spliced into the ring around it by a bridge there and back along one
segment; pycocotools fills by crossing parity, so the bridge adds nothing and the
hole stays empty. Islands inside holes are polygons of their own.
"""

from __future__ import annotations

import cv2
import numpy as np


def mask_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[list[float]]:
    """COCO polygons `[[x1, y1, x2, y2, ...], ...]` of an HxW bool mask.

    `tolerance` > 0 simplifies each ring (Douglas-Peucker, `cv2.approxPolyDP`): no
    vertex dropped lies farther than `tolerance` pixels from the simplified ring.
    Rings that simplify below three vertices keep their exact shape if they are an
    object's outline and are dropped if they are a hole."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return []
    # Trace only the mask's bounding box (plus a margin so no ring touches the edge).
    x0, y0 = int(xs.min()) - 1, int(ys.min()) - 1
    crop = np.zeros((int(ys.max()) - y0 + 2, int(xs.max()) - x0 + 2), dtype=np.uint8)
    crop[ys - y0, xs - x0] = 1
    doubled = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    # Never empty: the crop holds at least one pixel of the mask.
    contours, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    origin = np.array([x0, y0], dtype=np.float64)
    rings = [(c.reshape(-1, 2).astype(np.float64) + 0.5) / 2 + origin for c in contours]
    parents = hierarchy[0][:, 3]
    holes: dict[int, list[np.ndarray]] = {}
    for i, parent in enumerate(parents):
        if parent >= 0:
            hole = _simplify(rings[i], tolerance)
            if hole is not None:
                holes.setdefault(int(parent), []).append(hole)
    out = []
    for i, parent in enumerate(parents):
        if parent < 0:
            outer = _simplify(rings[i], tolerance)
            ring = _splice(rings[i] if outer is None else outer, holes.get(i, []))
            out.append([round(float(v), 3) for v in ring.ravel()])
    return out


def _simplify(ring: np.ndarray, tolerance: float) -> np.ndarray | None:
    """The ring simplified to within `tolerance`; None when under three vertices remain."""
    if tolerance > 0:
        approx = cv2.approxPolyDP(ring.astype(np.float32), tolerance, closed=True)
        ring = approx.reshape(-1, 2).astype(np.float64)
    return ring if len(ring) >= 3 else None


def _splice(outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """One ring: `outer` with each hole reached by a bridge from its nearest outer
    vertex, walked all the way round, and left by the same bridge."""
    if not holes:
        return outer
    at: dict[int, list[np.ndarray]] = {}
    for hole in holes:
        # The hole's first vertex is its top-left one: close enough to be a short bridge.
        nearest = int(np.argmin(((outer - hole[0]) ** 2).sum(axis=1)))
        at.setdefault(nearest, []).append(hole)
    parts: list[np.ndarray] = []
    for i, vertex in enumerate(outer):
        parts.append(vertex[None])
        for hole in at.get(i, []):
            parts += [hole, hole[:1], vertex[None]]
    return np.concatenate(parts)
