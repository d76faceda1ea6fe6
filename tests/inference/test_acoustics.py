"""Tests of the acoustic phantom core."""

from __future__ import annotations

import numpy as np
import pytest

from inference.phantoms import acoustics as ac


@pytest.mark.parametrize("kind", ["linear", "convex", "sector"])
def test_scan_mask_fits_image_with_black_margins(kind: ac.ProbeKind) -> None:
    rng = np.random.default_rng(0)
    geometry = ac.random_probe(kind, rng, (40.0, 160.0))
    mask, (dx, dy) = ac.make_scan_mask(geometry, 480, 640, rng)
    assert mask.shape == (480, 640)
    assert dx == dy > 0
    assert not mask[0].any() and not mask[:, 0].any() and not mask[:, -1].any()
    width_mm, height_mm = geometry.extent_mm
    ys, xs = np.nonzero(mask)
    assert (ys.max() - ys.min() + 1) * dy == pytest.approx(height_mm, rel=0.03)
    assert (xs.max() - xs.min() + 1) * dx == pytest.approx(width_mm, rel=0.03)


def test_sector_is_a_fan_and_linear_a_rectangle() -> None:
    rng = np.random.default_rng(1)
    fan = ac.layout_scan(ac.ProbeGeometry("sector", 150.0, angle_deg=80.0), 480, 640, rng)
    x0, y0, x1, y1 = fan.bbox
    assert fan.mask[y0:y1, x0:x1].mean() < 0.75
    rect = ac.layout_scan(ac.ProbeGeometry("linear", 40.0, width_mm=40.0), 480, 640, rng)
    x0, y0, x1, y1 = rect.bbox
    assert rect.mask[y0:y1, x0:x1].mean() > 0.99


def test_speckle_is_rayleigh_and_follows_echogenicity() -> None:
    rng = np.random.default_rng(2)
    echo = np.ones((400, 400), dtype=np.float32)
    echo[:, 200:] = 0.25
    env = ac.speckle_image(echo, 0.2, 5.0, rng)
    left, right = env[20:380, 20:180], env[20:380, 220:380]
    # Rayleigh: std/mean = sqrt(4/pi - 1) ~ 0.52.
    assert left.std() / left.mean() == pytest.approx(0.523, abs=0.05)
    assert right.mean() / left.mean() == pytest.approx(0.25, rel=0.1)


def test_speckle_cell_shrinks_with_frequency() -> None:
    def corr_length(freq: float) -> float:
        env = ac.speckle_image(np.ones((300, 300)), 0.1, freq, np.random.default_rng(3))
        env = env - env.mean()
        lag = [np.mean(env[:, k:] * env[:, : env.shape[1] - k]) for k in range(1, 30)]
        return float(np.argmax(np.array(lag) < 0.5 * np.mean(env * env)))

    assert corr_length(12.0) < corr_length(3.0)


def test_bmode_shadow_enhancement_and_gain() -> None:
    rng = np.random.default_rng(4)
    env = np.ones((300, 90), dtype=np.float32)
    alpha = np.full_like(env, 0.5)
    alpha[50:100, :30] = 4.0  # attenuating mass -> shadow
    alpha[50:100, 60:] = 0.0  # fluid -> enhancement
    img = ac.bmode(env, 100.0, alpha, 3.5, gain_db=0.0, dynamic_range_db=60.0, rng=rng)
    behind = img[150:250].astype(float)
    assert behind[:, :30].mean() < behind[:, 30:60].mean() < behind[:, 60:].mean()
    brighter = ac.bmode(env, 100.0, alpha, 3.5, gain_db=10.0, rng=np.random.default_rng(4))
    assert brighter.astype(float).mean() > img.astype(float).mean()


def test_render_black_outside_and_text_mostly_outside() -> None:
    rng = np.random.default_rng(5)
    layout = ac.layout_scan(ac.random_probe("convex", rng, (100.0, 160.0)), 480, 640, rng)
    settings = ac.random_settings(rng, (2.5, 5.0))
    frame = ac.render(layout, np.ones((480, 640)), 0.5, settings, rng)
    assert frame.dtype == np.uint8
    assert frame[~layout.mask].max() == 0
    assert frame[layout.mask].mean() > 20
    annotated = ac.burn_in_text(frame, rng, inside_probability=0.0, layout=layout)
    changed = annotated != frame
    assert changed.sum() > 50
    assert changed[layout.mask].sum() < 0.1 * changed.sum()


def test_decorrelate_and_shift() -> None:
    rng = np.random.default_rng(6)
    scat = ac.make_scatterers((200, 200), rng)
    moved = ac.decorrelate(scat, 0.3, rng)
    power = np.vdot(scat, scat).real * np.vdot(moved, moved).real
    corr = np.abs(np.vdot(scat, moved)) / np.sqrt(power)
    assert corr == pytest.approx(np.sqrt(0.7), abs=0.03)
    echo = np.zeros((50, 50), dtype=np.float32)
    echo[10, 10] = 1.0
    shifted = ac.shift_map(echo, 3.0, 5.0)
    assert np.unravel_index(np.argmax(shifted), shifted.shape) == (15, 13)
    assert ac.breathing_offset_mm(0.0) == pytest.approx(0.0)
    assert ac.breathing_offset_mm(2.0, period_s=4.0, amplitude_mm=8.0) == pytest.approx(8.0)


def test_shift_scatterers_moves_content_and_refreshes_edges() -> None:
    rng = np.random.default_rng(7)
    scat = ac.make_scatterers((40, 30), rng)
    moved = ac.shift_scatterers(scat, 3, -2, rng)
    np.testing.assert_array_equal(moved[3:, :-2], scat[:-3, 2:])
    assert not np.allclose(moved[:3], scat[-3:])
    layout = ac.layout_scan(ac.ProbeGeometry("linear", 40.0, width_mm=40.0), 480, 640, rng)
    assert ac.make_scatterers(layout.beam_shape, rng).shape == layout.beam_shape
    assert layout.beam_shift(0.0, 10 * layout.axial_step_mm) == (10, 0)
