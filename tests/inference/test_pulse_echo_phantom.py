"""Tests of the independent pulse-echo phantom generator (evaluation only)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, BoundingBox
from inference.phantoms.generator import Organ, PhantomSample
from inference.phantoms.pulse_echo import generate_pulse_echo

CLASSES = {"liver": LIVER_CLASSES, "breast": BREAST_CLASSES}
SEEDS = range(40)


@cache
def _sample(organ: Organ, seed: int) -> PhantomSample:
    return generate_pulse_echo(organ, seed, rows=240, cols=320)


def test_same_seed_same_image() -> None:
    a = generate_pulse_echo("liver", 7)
    b = generate_pulse_echo("liver", 7)
    assert np.array_equal(a.frames, b.frames)
    assert a.truths == b.truths and a.labels == b.labels and a.params == b.params
    assert not np.array_equal(a.frames, generate_pulse_echo("liver", 8).frames)


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_shapes_dtype_and_black_outside(organ: str) -> None:
    for seed in range(3):
        s = generate_pulse_echo(organ, seed, rows=300, cols=400, annotations=False)
        assert s.frames.dtype == np.uint8 and s.frames.shape == (1, 300, 400)
        f = s.frames[0]
        b = s.scan_box
        outside = np.ones_like(f, bool)
        outside[int(b.y0):int(b.y1), int(b.x0):int(b.x1)] = False
        assert f[outside].max() == 0
        assert f[int(b.y0):int(b.y1), int(b.x0):int(b.x1)].mean() > 20
        assert s.pixel_mm > 0 and all(isinstance(v, float) for v in s.params.values())


def test_fan_corners_black_for_convex() -> None:
    for seed in range(10):
        s = _sample("liver", seed)
        if s.params["probe_kind"] == 1.0:
            b = s.scan_box
            assert s.frames[0, int(b.y1) - 1, int(b.x0)] == 0
            assert s.frames[0, int(b.y0), int(b.x0)] == 0
            return
    pytest.fail("no convex probe drawn")


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_truths_inside_frame_and_scan_box(organ: str) -> None:
    empty = 0
    for seed in range(10):
        s = _sample(organ, seed)
        h, w = s.frames.shape[1:]
        assert len(s.truths) == 1
        for t in s.truths[0]:
            assert t.label == s.labels[t.lesion_index]
            b = t.box
            assert 0 <= b.x0 < b.x1 <= w and 0 <= b.y0 < b.y1 <= h
            sb = s.scan_box
            assert sb.x0 <= b.x0 and b.x1 <= sb.x1 and sb.y0 <= b.y0 and b.y1 <= sb.y1
            assert t.area_px > 0
        empty += not s.truths[0]
    assert empty > 0


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_every_class_over_40_seeds(organ: str) -> None:
    counts = dict.fromkeys(CLASSES[organ], 0)
    no_lesion = 0
    for seed in SEEDS:
        labels = _sample(organ, seed).labels
        no_lesion += not labels
        for lab in labels:
            assert lab in CLASSES[organ]
            counts[lab] += 1
    assert all(c > 0 for c in counts.values()), counts
    assert no_lesion > 0


def _regions(frame: np.ndarray, box: BoundingBox) -> tuple[float, float, float, float] | None:
    """Means of lesion centre, ring beside it, region below, region beside below."""
    x0, y0, x1, y1 = (round(v) for v in (box.x0, box.y0, box.x1, box.y1))
    w, h = x1 - x0, y1 - y0
    if w < 8 or h < 8:
        return None
    cx0, cx1 = x0 + w // 4, x1 - w // 4
    inner = frame[y0 + h // 4: y1 - h // 4, cx0:cx1]
    yb0, yb1 = y1 + 2, min(y1 + 2 + max(h // 2, 6), frame.shape[0])
    if yb1 - yb0 < 4:
        return None
    below = frame[yb0:yb1, cx0:cx1]
    for shift in (w, -w):
        if cx0 + shift < 0 or cx1 + shift > frame.shape[1]:
            continue
        beside_below = frame[yb0:yb1, cx0 + shift:cx1 + shift]
        beside = frame[y0 + h // 4: y1 - h // 4, cx0 + shift:cx1 + shift]
        if (beside_below == 0).mean() < 0.02 and (below == 0).mean() < 0.02:
            return (float(inner.mean()), float(beside.mean()), float(below.mean()),
                    float(beside_below.mean()))
    return None


def _posterior_cases(organ: str, label: str, att_sel, n: int) -> list[tuple[float, ...]]:
    out = []
    for seed in range(500, 530):
        s = generate_pulse_echo(organ, seed, rows=240, cols=320, annotations=False,
                                lesion_classes=[label])
        if len(s.truths[0]) != 1:
            continue
        t = s.truths[0][0]
        if not att_sel(s.params[f"lesion{t.lesion_index}_att_db_cm_mhz"]):
            continue
        r = _regions(s.frames[0].astype(np.float32), t.box)
        if r is not None:
            out.append(r)
        if len(out) >= n:
            break
    return out


def test_cyst_dark_with_posterior_enhancement() -> None:
    cases = _posterior_cases("liver", "cyst", lambda a: a < 0.1, 5)
    cases += _posterior_cases("breast", "simple_cyst", lambda a: a < 0.1, 5)
    assert len(cases) >= 8
    darker = np.mean([inner < beside for inner, beside, _, _ in cases])
    enhanced = np.mean([below > bb for _, _, below, bb in cases])
    assert darker == 1.0 and enhanced >= 0.75, cases


def test_carcinoma_posterior_shadowing() -> None:
    cases = _posterior_cases("breast", "carcinoma", lambda a: a > 1.5, 5)
    assert len(cases) >= 4
    assert np.mean([below < bb for _, _, below, bb in cases]) >= 0.75, cases
