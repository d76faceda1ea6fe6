"""Scanner post-processing of rendered frames (training changes)."""

from __future__ import annotations

import numpy as np

from inference.phantoms.generator import generate
from inference.phantoms.scanner import contrast, gamma, random_change, resampled


def test_random_changes_keep_the_frame_and_repeat_with_the_seed() -> None:
    frame = generate("liver", 7, 240, 320).frames[0]
    changed = [random_change(frame, np.random.default_rng(seed)) for seed in range(20)]
    for seed, image in enumerate(changed):
        assert image.shape == frame.shape and image.dtype == np.uint8
        assert np.array_equal(image, random_change(frame, np.random.default_rng(seed)))
    different = {image.tobytes() for image in changed}
    assert len(different) == 20 and frame.tobytes() not in different


def test_grey_level_changes_keep_black_and_white_ends() -> None:
    ramp = np.arange(256, dtype=np.uint8)[None, :]
    assert gamma(ramp, 0.6)[0, 0] == 0 and gamma(ramp, 0.6)[0, 255] == 255
    assert gamma(ramp, 0.6)[0, 64] > 64 > gamma(ramp, 1.6)[0, 64]
    soft = contrast(ramp, 0.6)
    assert soft[0, 0] == 0 and soft[0, 1] > 1 and soft[0, 255] < 255


def test_resampling_loses_detail_but_not_size() -> None:
    frame = generate("liver", 7, 240, 320).frames[0]
    coarse = resampled(frame, 0.5)
    assert coarse.shape == frame.shape

    def detail(image: np.ndarray) -> float:
        return float(np.abs(np.diff(image.astype(float), axis=1)).mean())

    assert detail(coarse) < 0.8 * detail(frame)
