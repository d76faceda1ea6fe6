"""Pixel-space shapes: closed polylines, polygon area and rasterisation.

Coordinates follow the SCOORD convention of :mod:`inference.findings`: the
origin is the top-left corner of the top-left pixel, so the centre of pixel
``(row, column)`` is at ``(column + 0.5, row + 0.5)``.
"""

from __future__ import annotations

import itertools

import numpy as np

from inference.findings import BoundingBox


def closed_polyline(points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` float32 ``(x, y)`` points with the first point repeated last.

    Raises
    ------
    ValueError
        If ``points`` is not ``(N, 2)`` with at least three distinct points.
    """
    array = np.asarray(points, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError("A contour must be an (N, 2) array of (x, y) points.")
    if not np.array_equal(array[0], array[-1]):
        array = np.concatenate([array, array[:1]], axis=0)
    if len(np.unique(array, axis=0)) < 3:
        raise ValueError("A contour needs at least three distinct points.")
    return array


def polygon_area(points: np.ndarray) -> float:
    """Area of a closed polygon in square pixels (shoelace formula)."""
    x = points[:, 0].astype(np.float64)
    y = points[:, 1].astype(np.float64)
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def polygon_bounds(points: np.ndarray) -> BoundingBox:
    """Bounding box of a polygon."""
    return BoundingBox(
        float(points[:, 0].min()),
        float(points[:, 1].min()),
        float(points[:, 0].max()),
        float(points[:, 1].max()),
    )


def rasterize_polygon(points: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside a closed polygon.

    Uses the even-odd rule.  A polygon too thin to contain any pixel centre
    still marks the pixel under its centroid, so the mask is never empty.
    """
    polygon = closed_polyline(points).astype(np.float64)
    mask = np.zeros((rows, columns), dtype=bool)
    c0 = int(np.clip(np.floor(polygon[:, 0].min()), 0, columns))
    c1 = int(np.clip(np.ceil(polygon[:, 0].max()), 0, columns))
    r0 = int(np.clip(np.floor(polygon[:, 1].min()), 0, rows))
    r1 = int(np.clip(np.ceil(polygon[:, 1].max()), 0, rows))
    px, py = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
    inside = np.zeros(px.shape, dtype=bool)
    for (xa, ya), (xb, yb) in itertools.pairwise(polygon):
        if ya == yb:
            continue
        crosses = (ya > py) != (yb > py)
        x_at = xa + (py - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (px < x_at)
    mask[r0:r1, c0:c1] = inside
    if not mask.any():
        centre = polygon[:-1].mean(axis=0)
        column = int(np.clip(np.floor(centre[0]), 0, columns - 1))
        row = int(np.clip(np.floor(centre[1]), 0, rows - 1))
        mask[row, column] = True
    return mask


def rasterize_box(box: BoundingBox, rows: int, columns: int) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside ``box``."""
    return rasterize_polygon(box.polyline(), rows, columns)
