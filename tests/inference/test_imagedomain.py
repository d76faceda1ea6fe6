"""Tests of the second, image-domain phantom generator: determinism, ground truth and the
published appearances of its lesions, measured on the rendered pixels."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, BoundingBox
from inference.phantoms.generator import LesionTruth, PhantomSample
from inference.phantoms.imagedomain import (
    _field,
    _speckle,
    generate_image_domain,
    generate_image_domain_clip,
)

SEEDS = range(40)
"""Seeds the appearance tests look through (fixed: the tests are deterministic)."""


@functools.cache
def _render(organ: str, seed: int) -> PhantomSample:
    return generate_image_domain(organ, seed)  # type: ignore[arg-type]


def _lesions(organ: str, label: str) -> Iterator[tuple[PhantomSample, LesionTruth]]:
    """Every lesion of class ``label`` on the images of :data:`SEEDS`, at least 8 mm wide,
    alone in its column of the image."""
    for seed in SEEDS:
        sample = _render(organ, seed)
        truths = sample.truths[0]
        for truth in truths:
            others = [t.box for t in truths if t is not truth]
            if (truth.label == label and truth.box.width * sample.pixel_mm >= 8
                    and not any(o.x1 > truth.box.x0 and o.x0 < truth.box.x1 for o in others)):
                yield sample, truth


def _mean(frame: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> float:
    return float(frame[int(y0):int(y1), int(x0):int(x1)].astype(float).mean())


def _inner(box: BoundingBox) -> tuple[float, float, float, float]:
    """The middle third of a box."""
    return (box.x0 + box.width / 3, box.y0 + box.height / 3,
            box.x1 - box.width / 3, box.y1 - box.height / 3)


def _beside(box: BoundingBox) -> tuple[float, float, float, float]:
    """Tissue at the same depth, one box width to the side (the side nearer the middle
    of the image)."""
    shift = box.width * 1.5 if box.center[0] < 320 else -box.width * 1.5
    return (box.x0 + shift, box.y0, box.x1 + shift, box.y1)


def _posterior(sample: PhantomSample, box: BoundingBox) -> tuple[float, float]:
    """Mean grey below the lesion's middle, and at the same depth beside it."""
    depth = min(box.height, sample.scan_box.y1 - box.y1 - 2)
    below = (box.x0 + box.width / 4, box.y1 + 1, box.x1 - box.width / 4, box.y1 + 1 + depth)
    return _mean(sample.frames[0], *below), _mean(sample.frames[0], *_beside(BoundingBox(*below)))


def test_same_seed_same_image() -> None:
    a = generate_image_domain("liver", 7, 240, 320)
    b = generate_image_domain("liver", 7, 240, 320)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.truths == b.truths
    assert not np.array_equal(a.frames, generate_image_domain("liver", 8, 240, 320).frames)


@pytest.mark.parametrize(("organ", "classes"), [("liver", LIVER_CLASSES),
                                                ("breast", BREAST_CLASSES)])
def test_truths_lie_in_the_field_of_view(organ: str, classes: tuple[str, ...]) -> None:
    counts = set()
    seen = set()
    for seed in range(30):
        sample = generate_image_domain(organ, seed, 300, 400)  # type: ignore[arg-type]
        assert sample.frames.shape == (1, 300, 400) and sample.frames.dtype == np.uint8
        counts.add(len(sample.truths[0]))
        box = sample.scan_box
        for truth in sample.truths[0]:
            seen.add(truth.label)
            assert box.x0 <= truth.box.x0 and truth.box.x1 <= box.x1
            assert box.y0 <= truth.box.y0 and truth.box.y1 <= box.y1
        # Black around the field of view but for a few annotations.
        outside = np.ones((300, 400), bool)
        outside[int(box.y0):int(box.y1), int(box.x0):int(box.x1)] = False
        assert np.mean(sample.frames[0][outside] > 0) < 0.05
    assert seen == set(classes)
    assert {0, 1} <= counts and max(counts) >= 2


@pytest.mark.parametrize(("organ", "label"), [("liver", "cyst"), ("breast", "simple_cyst")])
def test_cysts_are_anechoic_with_posterior_enhancement(organ: str, label: str) -> None:
    found = list(_lesions(organ, label))
    assert len(found) >= 4
    for sample, truth in found:
        frame = sample.frames[0]
        assert _mean(frame, *_inner(truth.box)) < 0.45 * _mean(frame, *_beside(truth.box))
    below, side = zip(*(_posterior(s, t.box) for s, t in found), strict=True)
    assert np.median(np.subtract(below, side)) > 8


def test_carcinomas_are_hypoechoic_taller_than_wide_and_shadow() -> None:
    found = list(_lesions("breast", "carcinoma"))
    assert len(found) >= 4
    for sample, truth in found:
        frame = sample.frames[0]
        assert _mean(frame, *_inner(truth.box)) < _mean(frame, *_beside(truth.box)) - 20
    assert np.median([t.box.height / t.box.width for _, t in found]) > 1.0
    below, side = zip(*(_posterior(s, t.box) for s, t in found), strict=True)
    assert np.median(np.subtract(below, side)) < -8


def test_fibroadenomas_are_wider_than_tall() -> None:
    found = list(_lesions("breast", "fibroadenoma"))
    assert len(found) >= 4
    assert np.median([t.box.height / t.box.width for _, t in found]) < 0.8


def test_hemangiomas_are_hyperechoic() -> None:
    found = list(_lesions("liver", "hemangioma"))
    assert len(found) >= 4
    for sample, truth in found:
        frame = sample.frames[0]
        assert _mean(frame, *_inner(truth.box)) > _mean(frame, *_beside(truth.box)) + 10


@functools.cache
def _clip(organ: str, seed: int) -> PhantomSample:
    return generate_image_domain_clip(organ, seed, 12, lesions=1)  # type: ignore[arg-type]


def test_same_seed_same_clip() -> None:
    a = generate_image_domain_clip("breast", 3, 4, 240, 320)
    b = generate_image_domain_clip("breast", 3, 4, 240, 320)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.truths == b.truths and a.frame_time_ms == b.frame_time_ms
    assert a.frames.shape == (4, 240, 320)


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_clip_tissue_moves_and_speckle_decorrelates(organ: str) -> None:
    clip = _clip(organ, 1)
    inside = clip.frames.min(axis=0) > 0
    frames = clip.frames.astype(float)
    next_frame = np.mean([np.corrcoef(a[inside], b[inside])[0, 1]
                          for a, b in itertools.pairwise(frames)])
    last_frame = np.corrcoef(frames[0][inside], frames[-1][inside])[0, 1]
    assert 0.2 < next_frame < 0.995
    assert last_frame < next_frame


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_clip_truths_follow_the_lesion_through_the_frames(organ: str) -> None:
    moved = resized = 0
    for seed in range(8):
        clip = _clip(organ, seed)
        assert len(clip.labels) == 1
        boxes = [truths[0].box for truths in clip.truths if truths]
        assert all(t.label == clip.labels[0] for truths in clip.truths for t in truths)
        assert all(clip.scan_box.x0 <= b.x0 and b.x1 <= clip.scan_box.x1 + 1 for b in boxes)
        if len(boxes) >= 2:
            moved += np.hypot(*np.subtract(boxes[0].center, boxes[-1].center)) >= 2
            resized += abs(boxes[0].width - boxes[-1].width) >= 2
    assert moved >= 4 and resized >= 2


def test_clip_cysts_stay_anechoic_under_their_moving_truth() -> None:
    checked = 0
    for seed in range(30):
        clip = _clip("liver", seed)
        if clip.labels != ["cyst"]:
            continue
        for frame, truths in zip(clip.frames, clip.truths, strict=True):
            if truths and truths[0].box.width * clip.pixel_mm >= 8:
                box = truths[0].box
                assert _mean(frame, *_inner(box)) < 0.5 * _mean(frame, *_beside(box))
                checked += 1
    assert checked >= 12


def test_an_echo_map_dipping_below_zero_gives_finite_grey_levels() -> None:
    # Multiplicative textures can, very rarely, take a pixel's echogenicity below 0; its
    # square root was NaN and spread over the whole image (2 of 4,000 breast images).
    rng = np.random.default_rng(5)
    field = _field(rng, "breast", 120, 160)
    echo = np.ones((120, 160), np.float32)
    echo[60, 80] = -0.2
    grey, _, _ = _speckle(rng, "breast", field, echo)
    assert np.isfinite(grey).all()
