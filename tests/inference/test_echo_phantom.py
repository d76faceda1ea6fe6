"""Tests of the apical four-chamber echo phantom and its ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from inference.engines.lv_volume import measure_discs
from inference.phantoms.echo import (
    HeartParameters,
    disc_volume_ml,
    random_echo_spec,
    random_heart,
    render_echo,
)


def _spec(seed: int, n_frames: int | None = None):
    return random_echo_spec(np.random.default_rng(seed), size=(200, 260), n_frames=n_frames)


def test_rendering_is_deterministic() -> None:
    a = render_echo(_spec(3, 4))
    b = render_echo(_spec(3, 4))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.lv_masks, b.lv_masks)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (4, 200, 260)


def test_subset_rendering_keeps_truth_of_the_full_cine() -> None:
    spec = _spec(4)
    full = render_echo(spec, text=False)
    part = render_echo(spec, [0, spec.n_frames - 1], text=False)
    np.testing.assert_allclose(part.volumes_ml, full.volumes_ml[[0, -1]])
    np.testing.assert_array_equal(part.lv_masks[0], full.lv_masks[0])


def test_heart_cycle_phase() -> None:
    heart = random_heart(np.random.default_rng(0))
    ivc, ejection, ivr = heart.timing()
    assert float(heart.phase(0.0)) == pytest.approx(0.0, abs=1e-9)
    assert float(heart.phase(ivc / 2)) == pytest.approx(0.0, abs=1e-9)
    assert float(heart.phase(ivc + ejection / 2)) == pytest.approx(0.5, abs=1e-6)
    # End-systole lasts through isovolumic relaxation, with the mitral valve shut.
    for t in (ivc + ejection, ivc + ejection + ivr / 2):
        assert float(heart.phase(t)) == pytest.approx(1.0, abs=1e-6)
        assert float(heart.mitral_opening(t)) == 0.0
    assert float(heart.mitral_opening(ivc + ejection + ivr + 0.05)) > 0.5
    phases = heart.phase(np.linspace(0.0, 3 * heart.period_s, 400))
    assert phases.min() >= 0.0 and phases.max() <= 1.0
    assert heart.volume_ml(0.0) == pytest.approx(heart.edv_ml)
    assert heart.volume_ml(1.0) == pytest.approx(heart.esv_ml)


def test_profile_scale_reproduces_the_volume_by_the_disc_formula() -> None:
    heart = random_heart(np.random.default_rng(1))
    s = (np.arange(20) + 0.5) / 20
    for phase in (0.0, 0.4, 1.0):
        d = heart.diameter_scale_mm(phase) * heart.profile(s)
        assert disc_volume_ml(d, heart.length_mm(phase)) == pytest.approx(heart.volume_ml(phase))


@pytest.mark.parametrize("seed", range(6))
def test_ground_truth_masks_measure_the_known_volumes(seed: int) -> None:
    spec = random_echo_spec(np.random.default_rng(100 + seed), size=(360, 480))
    times = np.arange(spec.n_frames) * spec.frame_time_ms / 1000.0
    phases = spec.heart.phase(spec.start_s + times)
    cine = render_echo(spec, [int(np.argmin(phases)), int(np.argmax(phases))], text=False)
    measured = [measure_discs(m, (cine.pixel_mm, cine.pixel_mm)) for m in cine.lv_masks]
    for result, truth in zip(measured, cine.volumes_ml, strict=True):
        assert result is not None
        assert result.volume == pytest.approx(truth, rel=0.05)
    ef = 100 * (measured[0].volume - measured[1].volume) / measured[0].volume
    ef_true = 100 * (cine.volumes_ml[0] - cine.volumes_ml[1]) / cine.volumes_ml[0]
    assert abs(ef - ef_true) < 2.0


def test_lv_is_never_cut_by_the_sector_and_ef_covers_the_range() -> None:
    efs = []
    for seed in range(12):
        spec = random_echo_spec(np.random.default_rng(seed), size=(200, 260), n_frames=1)
        cine = render_echo(spec, text=False)
        result = measure_discs(cine.lv_masks[0], (cine.pixel_mm, cine.pixel_mm))
        # A cavity cut by the sector edge would lose volume.
        assert result is not None
        assert result.volume == pytest.approx(cine.volumes_ml[0], rel=0.08)
        efs.append(spec.heart.ef_percent)
    assert min(efs) >= 15.0 and max(efs) <= 75.0
    assert max(efs) - min(efs) > 30.0


def test_cine_ejection_fraction_uses_rendered_frames() -> None:
    cine = render_echo(_spec(7), text=False)
    assert cine.spec is not None
    heart: HeartParameters = cine.spec.heart
    assert cine.ejection_fraction <= heart.ef_percent + 1e-6
    assert cine.ejection_fraction > heart.ef_percent - 3.0
    assert cine.volumes_ml[cine.ed_index] == cine.volumes_ml.max()
