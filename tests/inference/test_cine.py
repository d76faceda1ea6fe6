"""Tests of lesion tracking, k-of-n voting and smoothing."""

from __future__ import annotations

import numpy as np

from inference.cine import Detection, smooth, track, vote
from inference.findings import BoundingBox


def _det(frame: int, x: float, y: float, size: float = 20.0, score: float = 0.9) -> Detection:
    return Detection(frame, BoundingBox(x, y, x + size, y + size), score)


def test_two_moving_lesions_become_two_tracks_despite_a_missed_frame() -> None:
    frames = []
    for f in range(8):
        dets = [_det(f, 10 + 3 * f, 10)]
        if f != 4:  # lesion B missed once
            dets.append(_det(f, 100 - 2 * f, 80))
        frames.append(dets)
    tracks = track(frames)
    assert len(tracks) == 2
    assert [len(t.detections) for t in tracks] == [8, 7]
    assert all(d.box.x0 < 50 for d in tracks[0].detections)


def test_track_ends_after_a_long_gap() -> None:
    frames = [[_det(0, 10, 10)], [_det(1, 11, 10)], [], [], [], [_det(5, 12, 10)]]
    assert len(track(frames)) == 2


def test_vote_three_of_five_and_fallback() -> None:
    a, b = [0.8, 0.2], [0.3, 0.7]
    # Class 1 wins 3 of the 5 evenly sampled frames of 9.
    probs = np.array([b, a, a, a, b, a, b, a, a])
    picks = probs[[0, 2, 4, 6, 8]]
    assert (picks.argmax(1) == 1).sum() == 3
    assert vote(probs) == (1, True)
    # No class reaches 3 of 5 with three classes: mean decides.
    c = [0.1, 0.2, 0.7]
    three = np.array([[0.6, 0.4, 0.0], [0.0, 0.6, 0.4], c, c, [0.6, 0.3, 0.1]])
    assert vote(three, k=3, n=5) == (2, False)
    # Fewer frames than n: majority of those.
    assert vote(np.array([a, a, b])) == (0, True)


def test_smoothing_reduces_flicker() -> None:
    flicker = np.array([[0.9, 0.1], [0.1, 0.9]] * 5)
    smoothed = smooth(flicker)
    assert np.abs(np.diff(smoothed[:, 0])).max() < np.abs(np.diff(flicker[:, 0])).max()
    np.testing.assert_allclose(smoothed.sum(1), 1.0)


def test_evidence_weighs_persistence_and_confidence() -> None:
    faint_everywhere = [[_det(f, 10, 10, score=0.25)] for f in range(16)]
    clear_flicker = [[_det(f, 10, 10, score=0.9)] if f in (3, 4) else [] for f in range(16)]
    faint, flicker = track(faint_everywhere)[0], track(clear_flicker)[0]
    assert np.isclose(faint.evidence(16), 0.25)
    assert np.isclose(flicker.evidence(16), 1.8 / 16)
    assert faint.evidence(16) > flicker.evidence(16)
