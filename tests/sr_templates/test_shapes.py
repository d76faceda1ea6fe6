"""Pixel-space shapes: polylines, areas, rasterisation."""

from __future__ import annotations

import numpy as np
import pytest

from inference.findings import BoundingBox
from sr_templates.shapes import closed_polyline, polygon_area, rasterize_box, rasterize_polygon


def test_closed_polyline_repeats_the_first_point() -> None:
    line = closed_polyline(np.array([[0, 0], [4, 0], [4, 3]]))
    assert line.shape == (4, 2)
    assert np.array_equal(line[0], line[-1])


def test_closed_polyline_rejects_too_few_points() -> None:
    with pytest.raises(ValueError, match="three distinct"):
        closed_polyline(np.array([[0, 0], [1, 1], [0, 0]]))


def test_closed_polyline_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        closed_polyline(np.zeros((4, 3)))


def test_polygon_area_of_a_rectangle() -> None:
    assert polygon_area(BoundingBox(1, 2, 5, 5).polyline()) == pytest.approx(12.0)


def test_box_mask_covers_the_pixels_inside_the_box() -> None:
    mask = rasterize_box(BoundingBox(2, 1, 5, 4), rows=6, columns=8)
    expected = np.zeros((6, 8), dtype=bool)
    expected[1:4, 2:5] = True
    assert np.array_equal(mask, expected)


def test_box_touching_the_border_is_clipped_to_the_image() -> None:
    mask = rasterize_box(BoundingBox(0, 0, 8, 6), rows=6, columns=8)
    assert mask.all()


def test_triangle_mask_uses_pixel_centres() -> None:
    mask = rasterize_polygon(np.array([[0, 0], [4, 0], [0, 4]]), rows=4, columns=4)
    assert mask[0, 0] and mask[0, 2] and not mask[3, 3] and not mask[2, 2]


def test_sliver_polygon_still_marks_one_pixel() -> None:
    mask = rasterize_polygon(np.array([[1.1, 1.1], [1.2, 1.1], [1.2, 1.2]]), rows=4, columns=4)
    assert mask.sum() == 1 and mask[1, 1]
