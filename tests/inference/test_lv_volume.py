"""Tests of the single-plane method of discs on masks."""

from __future__ import annotations

import numpy as np
import pytest

from inference.engines.lv_volume import N_DISCS, measure_discs


def _ellipse(rows: int, cols: int, centre: tuple[float, float], semi: tuple[float, float],
             angle_deg: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:cols] + 0.5
    a = np.deg2rad(angle_deg)
    dx, dy = xx - centre[0], yy - centre[1]
    u = dx * np.sin(a) + dy * np.cos(a)
    v = dx * np.cos(a) - dy * np.sin(a)
    return (u / semi[0]) ** 2 + (v / semi[1]) ** 2 <= 1.0


def _spheroid_ml(length_mm: float, diameter_mm: float) -> float:
    return np.pi / 6.0 * length_mm * diameter_mm**2 / 1000.0


@pytest.mark.parametrize("angle", [0.0, 20.0, -35.0])
def test_ellipse_gives_the_prolate_spheroid_volume(angle: float) -> None:
    mask = _ellipse(300, 300, (150, 150), semi=(90, 40), angle_deg=angle)
    result = measure_discs(mask, (0.5, 0.5))
    assert result is not None
    assert result.length == pytest.approx(90.0, rel=0.02)
    assert result.volume == pytest.approx(_spheroid_ml(90.0, 40.0), rel=0.03)
    assert len(result.diameters) == N_DISCS
    assert result.apex[1] < result.base[1]


def test_anisotropic_pixels_are_converted() -> None:
    # 80 x 40 mm ellipse drawn with 0.5 mm columns and 0.25 mm rows.
    mask = _ellipse(400, 200, (100, 200), semi=(160, 40))
    result = measure_discs(mask, (0.5, 0.25))
    assert result is not None
    assert result.length == pytest.approx(80.0, rel=0.02)
    assert result.volume == pytest.approx(_spheroid_ml(80.0, 40.0), rel=0.03)


def test_ejection_fraction_is_scale_free() -> None:
    big = _ellipse(300, 300, (150, 150), semi=(90, 40))
    small = _ellipse(300, 300, (150, 150), semi=(80, 30))
    ratio = [measure_discs(big, p).volume / measure_discs(small, p).volume  # type: ignore[union-attr]
             for p in ((1.0, 1.0), (0.3, 0.3))]
    assert ratio[0] == pytest.approx(ratio[1], rel=1e-6)


def test_tiny_mask_is_not_measured() -> None:
    mask = np.zeros((50, 50), dtype=bool)
    mask[10:13, 10:13] = True
    assert measure_discs(mask) is None
