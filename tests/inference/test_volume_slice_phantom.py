"""Tests of the evaluation-only volume-slice phantom generator."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import ndimage

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, BoundingBox
from inference.phantoms.generator import Organ, PhantomSample
from inference.phantoms.volume_slice import generate_volume_slice

SMALL = {"rows": 240, "cols": 320}


@functools.cache
def _sample(organ: Organ, seed: int, annotations: bool | None = False,
            **kw: float) -> PhantomSample:
    return generate_volume_slice(organ, seed, annotations=annotations, **SMALL, **kw)


def _scan_area(sample: PhantomSample) -> np.ndarray:
    """Scan-area mask: every non-black pixel, closed over the speckle holes."""
    frame = sample.frames[0]
    return ndimage.binary_closing(frame > 0, iterations=3)


def test_same_seed_same_image() -> None:
    a = generate_volume_slice("liver", 7, **SMALL)
    b = generate_volume_slice("liver", 7, **SMALL)
    assert np.array_equal(a.frames, b.frames)
    assert a.truths == b.truths and a.labels == b.labels
    c = generate_volume_slice("liver", 8, **SMALL)
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_shapes_and_dtype(organ: str) -> None:
    s = generate_volume_slice(organ, 3, rows=300, cols=400)
    assert s.frames.shape == (1, 300, 400) and s.frames.dtype == np.uint8
    assert len(s.truths) == 1 and s.pixel_mm > 0
    assert all(isinstance(v, float) for v in s.params.values())


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_black_outside_scan_area_and_boxes_inside(organ: str) -> None:
    classes = LIVER_CLASSES if organ == "liver" else BREAST_CLASSES
    for seed in range(10):
        s = _sample(organ, seed)
        frame = s.frames[0]
        sb = s.scan_box
        outside = np.ones(frame.shape, bool)
        outside[int(sb.y0):int(sb.y1), int(sb.x0):int(sb.x1)] = False
        assert frame[outside].max() == 0
        assert set(s.labels) <= set(classes)
        for t in s.truths[0]:
            assert t.label == s.labels[t.lesion_index]
            b = t.box
            assert 0 <= b.x0 < b.x1 <= frame.shape[1] and 0 <= b.y0 < b.y1 <= frame.shape[0]
            assert sb.x0 <= b.x0 and b.x1 <= sb.x1 and sb.y0 <= b.y0 and b.y1 <= sb.y1


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_class_coverage_and_empty_images(organ: str) -> None:
    classes = LIVER_CLASSES if organ == "liver" else BREAST_CLASSES
    seen: set[str] = set()
    empty = 0
    for seed in range(40):
        s = _sample(organ, seed)
        seen.update(s.labels)
        empty += not s.truths[0]
    assert seen == set(classes)
    assert empty >= 2


def _contrast_regions(frame: np.ndarray, box: BoundingBox, scan: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the lesion's inner half, and of the scan area around its box."""
    x0, y0, x1, y1 = (round(v) for v in (box.x0, box.y0, box.x1, box.y1))
    w, h = x1 - x0, y1 - y0
    inner = frame[y0 + h // 4:y1 - h // 4, x0 + w // 4:x1 - w // 4].astype(float)
    ring = np.zeros(frame.shape, bool)
    ring[max(y0 - h // 2, 0):y1 + h // 2, max(x0 - w // 2, 0):x1 + w // 2] = True
    ring[y0:y1, x0:x1] = False
    ring &= scan
    return inner, frame[ring].astype(float)


def test_cyst_dark_with_posterior_enhancement() -> None:
    darker = brighter = total = 0
    for seed in range(60):
        s = _sample("liver", seed)
        frame = s.frames[0]
        scan = _scan_area(s)
        for t in s.truths[0]:
            if t.label != "cyst":
                continue
            inner, ring = _contrast_regions(frame, t.box, scan)
            b = t.box
            x0, x1 = int(b.x0), int(b.x1)
            w = x1 - x0
            ya, yb = int(b.y1) + 1, min(int(b.y1) + max(int(b.height) // 2, 3), frame.shape[0])
            below = frame[ya:yb, x0 + w // 4:x1 - w // 4]
            beside = np.concatenate([frame[ya:yb, max(x0 - w, 0):x0 - w // 4].ravel(),
                                     frame[ya:yb, x1 + w // 4:x1 + w].ravel()])
            beside_scan = np.concatenate([scan[ya:yb, max(x0 - w, 0):x0 - w // 4].ravel(),
                                          scan[ya:yb, x1 + w // 4:x1 + w].ravel()])
            below_scan = scan[ya:yb, x0 + w // 4:x1 - w // 4]
            if inner.size == 0 or below.size == 0 or beside_scan.sum() < 10 \
                    or not below_scan.all():
                continue
            total += 1
            darker += inner.mean() < ring.mean() - 5
            brighter += below.mean() > beside[beside_scan].mean()
    assert total >= 3
    assert darker == total
    assert brighter >= 0.7 * total


def test_partial_volume_lowers_contrast() -> None:
    checked = 0
    for seed in range(40):
        s0 = _sample("liver", seed, elevation_offset=0.0)
        for t in s0.truths[0]:
            if t.label != "cyst" or t.box.width < 8:
                continue
            s1 = _sample("liver", seed, elevation_offset=0.85)
            scan = _scan_area(s0)
            in0, ring0 = _contrast_regions(s0.frames[0], t.box, scan)
            in1, ring1 = _contrast_regions(s1.frames[0], t.box, scan)
            c0 = abs(in0.mean() - ring0.mean())
            c1 = abs(in1.mean() - ring1.mean())
            assert c1 < c0
            checked += 1
            break
        if checked >= 2:
            break
    assert checked >= 1
