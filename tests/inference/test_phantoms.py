"""Tests of the liver and breast phantoms: determinism, ground truth, appearances."""

from __future__ import annotations

import numpy as np
import pytest

from inference.findings import BREAST_CLASSES, LIVER_CLASSES
from inference.phantoms import acoustics as ac
from inference.phantoms.anatomy import SceneConfig
from inference.phantoms.generator import MIN_ROSE_INDEX, generate, rose_index
from inference.phantoms.lesions import BREAST_FACTORIES, LIVER_FACTORIES
from inference.phantoms.scene import Grid, Scene


def test_same_seed_same_image_and_truth() -> None:
    a = generate("liver", 123, 240, 320)
    b = generate("liver", 123, 240, 320)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.truths == b.truths
    assert not np.array_equal(a.frames, generate("liver", 124, 240, 320).frames)


@pytest.mark.parametrize(("organ", "classes"), [("liver", LIVER_CLASSES),
                                                ("breast", BREAST_CLASSES)])
def test_truth_boxes_lie_in_the_scan_area(organ: str, classes: tuple[str, ...]) -> None:
    seen = set()
    for seed in range(12):
        sample = generate(organ, seed, 240, 320)  # type: ignore[arg-type]
        assert sample.frames.shape == (1, 240, 320)
        for truth in sample.truths[0]:
            seen.add(truth.label)
            assert truth.label in classes
            assert sample.scan_box.x0 <= truth.box.x0 and truth.box.x1 <= sample.scan_box.x1
            assert sample.scan_box.y0 <= truth.box.y0 and truth.box.y1 <= sample.scan_box.y1
        # Black background in the corners below the annotations.
        assert sample.frames[0, -1, sample.frames.shape[2] // 2] == 0 or organ == "breast"
    assert len(seen) >= 3


def test_cine_tracks_keep_their_index_and_move() -> None:
    clip = generate("liver", 7, 240, 320, n_frames=8,
                    config=SceneConfig(lesion_counts=(0.0, 1.0), classes=("hcc",)))
    assert clip.frames.shape[0] == 8 and clip.frame_time_ms is not None
    spans = [[t for t in frame if t.lesion_index == 0] for frame in clip.truths]
    assert sum(1 for s in spans if s) >= 5
    centres = [s[0].box.center for s in spans if s]
    assert centres[0] != centres[-1]
    assert not np.array_equal(clip.frames[0], clip.frames[-1])


def _disc_frames(inside: float, halo: float | None, background: float, shadow: bool = False,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A speckle-like frame with a 20-pixel disc of mean ``inside`` (rim ``halo``), the
    same frame without the disc, and the disc; ``shadow`` blacks out the left part of
    both frames, disc included, as a rib shadow would."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:120, 0:120]
    r = np.hypot(xs - 60, ys - 60)
    empty_mean = np.full(r.shape, background)
    mean = np.where(r < 20, inside, background)
    if halo is not None:
        mean = np.where((r >= 14) & (r < 20), halo, mean)
    if shadow:
        mean[:, :85] = empty_mean[:, :85] = 0.0
    speckle = rng.rayleigh(1.0, r.shape) / 1.25
    frame, empty = (np.clip(m * speckle, 0, 255).astype(np.uint8) for m in (mean, empty_mean))
    return frame, empty, r < 20


@pytest.mark.parametrize(("inside", "halo", "background", "shadow", "visible"), [
    (2.0, None, 120.0, False, True),      # anechoic cyst in tissue
    (120.0, 30.0, 120.0, False, True),    # target lesion: core like the tissue, dark halo
    (0.0, None, 0.0, False, False),       # black on black
    (2.0, None, 120.0, True, False),      # under a rib shadow, tissue beside it
    (900.0, None, 900.0, False, False),   # blown-out region: white on white
    (124.0, None, 120.0, False, False),   # too faint for its size
])
def test_ground_truth_needs_a_visible_lesion(inside: float, halo: float | None,
                                             background: float, shadow: bool,
                                             visible: bool) -> None:
    frame, empty, disc = _disc_frames(inside, halo, background, shadow)
    scan = np.ones_like(disc)
    assert (rose_index(frame, empty, disc, scan, cell_px=6.0) >= MIN_ROSE_INDEX) is visible


def test_generator_drops_lesions_nobody_could_see(monkeypatch: pytest.MonkeyPatch) -> None:
    def count() -> int:
        return sum(len(generate("liver", seed, 240, 320).truths[0]) for seed in range(30))

    shown = count()
    monkeypatch.setattr("inference.phantoms.generator.MIN_ROSE_INDEX", 0.0)
    assert 0 < shown < count()


def _render_single(label: str, size_mm: float, seed: int = 0) -> tuple[np.ndarray, ac.ScanLayout]:
    rng = np.random.default_rng(seed)
    geometry = ac.ProbeGeometry("linear", 60.0, width_mm=60.0)
    layout = ac.layout_scan(geometry, 400, 500, rng, fill=1.0)
    factory = {**LIVER_FACTORIES, **BREAST_FACTORIES}[label]
    scene = Scene("test", 1.0, 0.5, lesions=[factory(rng, 0.0, 25.0, size_mm)])
    echo, atten, masks = scene.paint(Grid(layout.x_mm, layout.z_mm))
    settings = ac.ScannerSettings(frequency_mhz=5.0, noise_db=-90.0)
    frame = ac.render(layout, echo, atten, settings, rng).astype(float)
    assert masks[0] is not None
    return frame, layout


def _regions(frame: np.ndarray, layout: ac.ScanLayout, size_mm: float
             ) -> dict[str, float]:
    col = int(layout.centre_col)
    row = int(layout.skin_row + 25.0 / layout.pixel_mm)
    r = int(size_mm / 2 / layout.pixel_mm)
    q = max(r // 3, 2)
    return {
        "inside": frame[row - q:row + q, col - q:col + q].mean(),
        "beside": frame[row - q:row + q, col + 2 * r:col + 2 * r + 2 * q].mean(),
        "behind": frame[row + r + 4 * q:row + r + 8 * q, col - q:col + q].mean(),
        "behind_beside": frame[row + r + 4 * q:row + r + 8 * q,
                               col + 2 * r:col + 2 * r + 2 * q].mean(),
    }


@pytest.mark.parametrize("label", ["cyst", "simple_cyst"])
def test_cysts_are_anechoic_with_posterior_enhancement(label: str) -> None:
    frame, layout = _render_single(label, 16.0)
    r = _regions(frame, layout, 16.0)
    assert r["inside"] < 0.3 * r["beside"]
    assert r["behind"] > r["behind_beside"]


def test_hemangioma_is_hyperechoic() -> None:
    frame, layout = _render_single("hemangioma", 16.0)
    r = _regions(frame, layout, 16.0)
    assert r["inside"] > r["beside"] + 10


def test_carcinoma_is_hypoechoic_and_shadows() -> None:
    shadows = 0
    for seed in range(6):
        frame, layout = _render_single("carcinoma", 14.0, seed)
        r = _regions(frame, layout, 14.0)
        assert r["inside"] < r["beside"]
        shadows += r["behind"] < r["behind_beside"] - 10
    assert shadows >= 3


def test_fibroadenoma_is_wider_than_tall() -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        blob = BREAST_FACTORIES["fibroadenoma"](rng, 0.0, 20.0, 15.0).blob
        assert blob.aspect > 1.2
