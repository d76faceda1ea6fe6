"""Tests of inference.phantoms.convolution: the convolution-model B-mode generator."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, BoundingBox
from inference.phantoms import convolution
from inference.phantoms.convolution import generate_convolution
from inference.phantoms.generator import PhantomSample

ROWS, COLS = 240, 320
SEEDS = range(40)


@functools.cache
def _sample(organ: str, seed: int) -> PhantomSample:
    return generate_convolution(organ, seed, ROWS, COLS, annotations=False)


def _samples(organ: str) -> list[PhantomSample]:
    return [_sample(organ, seed) for seed in SEEDS]


def _region(frame: np.ndarray, r0: float, r1: float, c0: float, c1: float) -> np.ndarray:
    """Non-black pixels of a clipped rectangle."""
    rows, cols = frame.shape
    sub = frame[max(int(r0), 0) : min(int(r1), rows), max(int(c0), 0) : min(int(c1), cols)]
    return sub[sub > 0].astype(float)


def _appearance(sample: PhantomSample, box: BoundingBox) -> dict[str, float] | None:
    """Mean grey of the lesion centre, its surround, below it and beside that region."""
    f = sample.frames[0]
    w, h = box.width, box.height
    centre = _region(f, box.y0 + h / 4, box.y1 - h / 4, box.x0 + w / 4, box.x1 - w / 4)
    around = np.concatenate(
        [
            _region(f, box.y0, box.y1, box.x0 - w / 2, box.x0 - 2),
            _region(f, box.y0, box.y1, box.x1 + 2, box.x1 + w / 2),
        ]
    )
    below = _region(f, box.y1 + 2, box.y1 + 2 + h / 2, box.x0 + w / 4, box.x1 - w / 4)
    beside = np.concatenate(
        [
            _region(f, box.y1 + 2, box.y1 + 2 + h / 2, box.x0 - w, box.x0 - w / 2),
            _region(f, box.y1 + 2, box.y1 + 2 + h / 2, box.x1 + w / 2, box.x1 + w),
        ]
    )
    if min(centre.size, around.size, below.size, beside.size) < 5:
        return None
    return {
        "centre": centre.mean(),
        "around": around.mean(),
        "below": below.mean(),
        "beside": beside.mean(),
        "aspect": w / h,
    }


def _measures(organ: str, label: str) -> list[dict[str, float]]:
    out = []
    for sample in _samples(organ):
        for truth in sample.truths[0]:
            if truth.label == label:
                m = _appearance(sample, truth.box)
                if m is not None:
                    out.append(m)
    assert len(out) >= 3, f"too few measurable {label}"
    return out


def _median(measures: list[dict[str, float]], fn) -> float:
    return float(np.median([fn(m) for m in measures]))


def test_same_seed_same_image_and_truths() -> None:
    a = generate_convolution("liver", 7, ROWS, COLS)
    b = generate_convolution("liver", 7, ROWS, COLS)
    c = generate_convolution("liver", 8, ROWS, COLS)
    assert np.array_equal(a.frames, b.frames)
    assert a.truths == b.truths and a.labels == b.labels and a.params == b.params
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("organ", ["liver", "breast"])
@pytest.mark.parametrize("size", [(240, 320), (384, 512), (600, 800)])
def test_shape_dtype_black_outside_scan_box(organ: str, size: tuple[int, int]) -> None:
    sample = generate_convolution(organ, 3, *size, annotations=False)
    frame = sample.frames[0]
    assert sample.frames.shape == (1, *size) and sample.frames.dtype == np.uint8
    assert sample.organ == organ and sample.seed == 3 and sample.pixel_mm > 0
    box = sample.scan_box
    outside = np.ones(size, dtype=bool)
    outside[int(box.y0) : int(box.y1), int(box.x0) : int(box.x1)] = False
    assert 0 <= box.x0 < box.x1 <= size[1] and 0 <= box.y0 < box.y1 <= size[0]
    assert not frame[outside].any()
    assert all(isinstance(v, float) for v in sample.params.values())
    assert sample.probe is None and sample.settings is None


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_boxes_inside_scan_box_and_labels_consistent(organ: str) -> None:
    for sample in _samples(organ):
        frame = sample.frames[0]
        assert not frame[:, : int(sample.scan_box.x0)].any()
        assert not frame[: int(sample.scan_box.y0)].any()
        for truth in sample.truths[0]:
            b, s = truth.box, sample.scan_box
            assert s.x0 <= b.x0 < b.x1 <= s.x1 and s.y0 <= b.y0 < b.y1 <= s.y1
            assert sample.labels[truth.lesion_index] == truth.label
            assert 0 < truth.area_px <= b.width * b.height
            assert min(b.width, b.height) * sample.pixel_mm >= convolution.MIN_EXTENT_MM
        indices = [t.lesion_index for t in sample.truths[0]]
        assert len(set(indices)) == len(indices)


@pytest.mark.parametrize(
    ("organ", "classes"), [("liver", LIVER_CLASSES), ("breast", BREAST_CLASSES)]
)
def test_every_class_visible_and_some_images_empty(organ: str, classes: tuple[str, ...]) -> None:
    samples = _samples(organ)
    seen = {t.label for s in samples for t in s.truths[0]}
    assert seen == set(classes)
    empty = sum(not s.truths[0] for s in samples)
    assert 2 <= empty <= 20
    placed = sum(len(s.labels) for s in samples)
    visible = sum(len(s.truths[0]) for s in samples)
    assert visible < placed


@pytest.mark.parametrize(("organ", "label"), [("liver", "cyst"), ("breast", "simple_cyst")])
def test_cyst_dark_with_enhancement(organ: str, label: str) -> None:
    m = _measures(organ, label)
    assert _median(m, lambda v: v["around"] - v["centre"]) > 40
    assert _median(m, lambda v: v["below"] - v["beside"]) > 0


def test_hemangioma_brighter() -> None:
    m = _measures("liver", "hemangioma")
    assert _median(m, lambda v: v["centre"] - v["around"]) > 10


def test_hcc_and_metastasis_differ_from_liver() -> None:
    for label in ("hcc", "metastasis"):
        m = _measures("liver", label)
        assert _median(m, lambda v: abs(v["centre"] - v["around"])) > 8


def test_carcinoma_dark_with_shadow_and_tall() -> None:
    m = _measures("breast", "carcinoma")
    assert _median(m, lambda v: v["around"] - v["centre"]) > 20
    assert _median(m, lambda v: v["beside"] - v["below"]) > 10
    assert _median(m, lambda v: v["aspect"]) < 1.0


def test_fibroadenoma_wider_than_tall() -> None:
    m = _measures("breast", "fibroadenoma")
    assert _median(m, lambda v: v["aspect"]) > 1.2
    assert _median(m, lambda v: v["around"] - v["centre"]) > 0


def test_lesions_without_contrast_are_not_truths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        convolution, "_display", lambda image, fov, chain: np.where(fov, 128, 0).astype(np.uint8)
    )
    placed = 0
    for seed in range(4):
        sample = generate_convolution("liver", seed, ROWS, COLS, annotations=False)
        placed += len(sample.labels)
        assert sample.truths == [[]]
    assert placed > 0


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_annotations_never_change_truths(organ: str) -> None:
    changed = 0
    for seed in range(5):
        plain = _sample(organ, seed)
        marked = generate_convolution(organ, seed, ROWS, COLS, annotations=True)
        assert marked.truths == plain.truths and marked.labels == plain.labels
        assert marked.scan_box == plain.scan_box
        changed += int(not np.array_equal(marked.frames, plain.frames))
    assert changed == 5


def test_unknown_organ_rejected() -> None:
    with pytest.raises(ValueError, match="organ"):
        generate_convolution("heart", 1)  # type: ignore[arg-type]
