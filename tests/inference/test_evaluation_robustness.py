"""Held-out detection on images changed the way other scanners and generators differ."""

from __future__ import annotations

import numpy as np

from inference.evaluation.lesion import evaluate_organ
from inference.evaluation.report import robustness_lines
from inference.evaluation.robustness import PERTURBATIONS, UNCHANGED, perturb
from inference.phantoms.generator import generate


def _detail(frame: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels (speckle detail)."""
    return float(np.abs(np.diff(frame.astype(float), axis=1)).mean())


def test_every_change_keeps_the_frames_and_is_repeatable() -> None:
    frames = generate("liver", 5, 240, 320).frames
    for name in PERTURBATIONS:
        changed = perturb(frames, name, seed=5)
        assert changed.shape == frames.shape and changed.dtype == np.uint8
        assert not np.array_equal(changed, frames), name
        assert np.array_equal(changed, perturb(frames, name, seed=5)), name
    sharp = perturb(frames, "edge enhancement (unsharp mask, radius 2 px, 150 %)", 5)
    smooth = perturb(frames, "speckle reduction (Gaussian blur, 1.2 px)", 5)
    assert _detail(sharp[0]) > 1.2 * _detail(frames[0]) > 1.2 * _detail(smooth[0])


def test_evaluation_scores_each_change_on_the_same_images() -> None:
    ev = evaluate_organ("liver", n_images=3, n_clips=0, n_perturbed=3)
    assert ev.perturbed_images == 3 and ev.perturbed_lesions == ev.lesions > 0
    assert list(ev.perturbed) == [UNCHANGED, *PERTURBATIONS]
    # The first three held-out images have their regions: as they are, they score as in
    # the main figures.
    assert ev.perturbed[UNCHANGED] == ev.matches
    # Their ROIs are classified on every image set, unchanged as in the main figures.
    assert all(len(correct) == ev.lesions for correct in ev.perturbed_roi.values())
    assert ev.roi_accuracy_under(UNCHANGED) == ev.summary("roi")["accuracy"]
    table = [line for line in robustness_lines(ev) if line.startswith("| ")]
    assert len(table) == 2 + len(PERTURBATIONS)  # header and one row per image set
