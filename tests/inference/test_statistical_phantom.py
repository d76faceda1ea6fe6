"""Tests of the statistical display-space B-mode phantom generator."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, BoundingBox
from inference.phantoms import statistical
from inference.phantoms.generator import PhantomSample
from inference.phantoms.statistical import generate_statistical

ROWS, COLS = 240, 320
SEEDS = range(40)


@functools.cache
def _sample(organ: str, seed: int) -> PhantomSample:
    return generate_statistical(organ, seed, ROWS, COLS, annotations=False)


def _samples(organ: str) -> list[PhantomSample]:
    return [_sample(organ, seed) for seed in SEEDS]


def _region(frame: np.ndarray, r0: float, r1: float, c0: float, c1: float) -> np.ndarray:
    """Pixels of a clipped rectangle that lie in the field of view (non-zero)."""
    rows, cols = frame.shape
    r0, r1 = max(0, int(r0)), min(rows, int(r1))
    c0, c1 = max(0, int(c0)), min(cols, int(c1))
    patch = frame[r0:r1, c0:c1].astype(float)
    return patch[patch > 0]


def _measures(organ: str, label: str) -> list[dict[str, float]]:
    """Inner, beside, below and beside-below grey means of every visible lesion of a class."""
    out = []
    for sample in _samples(organ):
        frame = sample.frames[0]
        for truth in sample.truths[0]:
            if truth.label != label:
                continue
            b = truth.box
            w, h = b.width, b.height
            inner = _region(frame, b.y0 + h / 4, b.y1 - h / 4, b.x0 + w / 4, b.x1 - w / 4)
            beside = np.concatenate([
                _region(frame, b.y0, b.y1, b.x0 - w / 2 - 2, b.x0 - 2),
                _region(frame, b.y0, b.y1, b.x1 + 2, b.x1 + w / 2 + 2)])
            below = _region(frame, b.y1 + 2, b.y1 + 2 + h / 2, b.x0 + w / 4, b.x1 - w / 4)
            below_side = np.concatenate([
                _region(frame, b.y1 + 2, b.y1 + 2 + h / 2, b.x0 - w / 2 - 2, b.x0 - 2),
                _region(frame, b.y1 + 2, b.y1 + 2 + h / 2, b.x1 + 2, b.x1 + w / 2 + 2)])
            if min(inner.size, beside.size, below.size, below_side.size) < 4:
                out.append({"aspect": w / h})
                continue
            out.append({"inner": inner.mean(), "beside": beside.mean(), "below": below.mean(),
                        "below_side": below_side.mean(), "aspect": w / h})
    return out


def _median(measures: list[dict[str, float]], key: str, other: str) -> float:
    diffs = [m[key] - m[other] for m in measures if key in m]
    assert len(diffs) >= 3, "too few lesions to measure"
    return float(np.median(diffs))


def test_same_seed_same_image_and_different_seeds_differ() -> None:
    a = generate_statistical("liver", 7, ROWS, COLS)
    b = generate_statistical("liver", 7, ROWS, COLS)
    c = generate_statistical("liver", 8, ROWS, COLS)
    assert np.array_equal(a.frames, b.frames)
    assert a.truths == b.truths and a.labels == b.labels and a.params == b.params
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("organ", ["liver", "breast"])
@pytest.mark.parametrize("shape", [(240, 320), (384, 512)])
def test_shapes_dtype_and_fields(organ: str, shape: tuple[int, int]) -> None:
    sample = generate_statistical(organ, 3, *shape)
    assert sample.frames.shape == (1, *shape)
    assert sample.frames.dtype == np.uint8
    assert sample.organ == organ and sample.seed == 3
    assert len(sample.truths) == 1
    assert sample.probe is None and sample.settings is None
    assert 0.02 < sample.pixel_mm < 1.0
    assert all(isinstance(v, float) for v in sample.params.values())
    assert sample.params["probe_kind"] in statistical.PROBE_CODES.values()


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_black_outside_scan_box_and_boxes_inside(organ: str) -> None:
    for sample in _samples(organ)[:20]:
        frame = sample.frames[0]
        box = sample.scan_box
        outside = np.ones(frame.shape, bool)
        outside[int(box.y0):int(box.y1), int(box.x0):int(box.x1)] = False
        assert not frame[outside].any()
        assert frame[int(box.y0):int(box.y1), int(box.x0):int(box.x1)].mean() > 20
        for truth in sample.truths[0]:
            b = truth.box
            assert box.x0 <= b.x0 < b.x1 <= box.x1 and box.y0 <= b.y0 < b.y1 <= box.y1
            assert sample.labels[truth.lesion_index] == truth.label
            assert 0 < truth.area_px <= b.width * b.height


@pytest.mark.parametrize(("organ", "classes"), [("liver", LIVER_CLASSES),
                                                ("breast", BREAST_CLASSES)])
def test_every_class_appears_and_some_images_have_no_lesion(organ: str, classes: tuple) -> None:
    samples = _samples(organ)
    placed = {label for s in samples for label in s.labels}
    visible = {t.label for s in samples for t in s.truths[0]}
    assert placed == set(classes)
    assert visible == set(classes)
    assert any(not s.labels for s in samples)
    assert any(len(s.truths[0]) >= 2 for s in samples)
    assert any(len(s.truths[0]) < len(s.labels) for s in samples)


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_truths_are_at_least_three_mm(organ: str) -> None:
    for sample in _samples(organ):
        for truth in sample.truths[0]:
            assert min(truth.box.width, truth.box.height) * sample.pixel_mm >= 3.0
            assert truth.area_px * sample.pixel_mm**2 >= 7.0


def test_cysts_are_dark_with_posterior_enhancement() -> None:
    measures = _measures("liver", "cyst") + _measures("breast", "simple_cyst")
    assert _median(measures, "inner", "beside") < -30
    assert _median(measures, "below", "below_side") > 5


def test_hemangiomas_are_brighter() -> None:
    assert _median(_measures("liver", "hemangioma"), "inner", "beside") > 20


def test_carcinomas_are_dark_and_shadow() -> None:
    measures = _measures("breast", "carcinoma")
    assert _median(measures, "inner", "beside") < -30
    assert _median(measures, "below", "below_side") < -15


def test_fibroadenomas_are_wider_than_tall() -> None:
    aspects = [m["aspect"] for m in _measures("breast", "fibroadenoma")]
    assert len(aspects) >= 3
    assert np.median(aspects) > 1.2


def test_visibility_rejects_flat_and_tiny_lesions() -> None:
    p = 0.2
    image = np.full((120, 120), 120.0, np.float32)
    image += np.random.default_rng(0).normal(0, 3, image.shape).astype(np.float32)
    fov = np.ones(image.shape, bool)
    yy, xx = np.mgrid[:120, :120]
    disk = (yy - 60) ** 2 + (xx - 60) ** 2 < 25**2
    background = fov & ~disk
    assert not statistical._visible(disk, image, fov, background, p, 5.0)
    dark = np.where(disk, 40.0, image).astype(np.float32)
    assert statistical._visible(disk, dark, fov, background, p, 5.0)
    tiny = (yy - 60) ** 2 + (xx - 60) ** 2 < 5**2
    dark_tiny = np.where(tiny, 40.0, image).astype(np.float32)
    assert not statistical._visible(tiny, dark_tiny, fov, fov & ~tiny, p, 1.0)


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_annotations_never_change_truths(organ: str) -> None:
    for seed in range(6):
        plain = generate_statistical(organ, seed, ROWS, COLS, annotations=False)
        marked = generate_statistical(organ, seed, ROWS, COLS, annotations=True)
        drawn = generate_statistical(organ, seed, ROWS, COLS)
        assert marked.truths == plain.truths and marked.labels == plain.labels
        assert drawn.truths == plain.truths
        changed = marked.frames[0] != plain.frames[0]
        assert changed.any()
        box = plain.scan_box
        outside = np.ones(changed.shape, bool)
        outside[int(box.y0):int(box.y1), int(box.x0):int(box.x1)] = False
        assert (changed & outside).any()
        assert np.array_equal(drawn.frames, marked.frames) or np.array_equal(
            drawn.frames, plain.frames)


def test_invalid_organ() -> None:
    with pytest.raises(ValueError):
        generate_statistical("heart", 0)  # type: ignore[arg-type]


def test_scan_box_is_a_bounding_box() -> None:
    sample = _sample("liver", 0)
    assert isinstance(sample.scan_box, BoundingBox)
    assert sample.scan_box.width > COLS / 3 and sample.scan_box.height > ROWS / 3
