"""Lesion tracking through cine frames, k-of-n class voting, probability smoothing.

* :func:`track` links per-frame detections into tracks (Hungarian matching on
  box IoU and centre distance, tolerating a few missed frames);
* :func:`vote` gives a track's class the published way: the class with the
  highest probability in at least ``k`` of ``n`` evenly sampled frames
  (default 3 of 5), falling back to the highest mean probability;
* :func:`smooth` is an exponential moving average so that per-frame
  probabilities do not flicker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import structlog
from scipy.optimize import linear_sum_assignment

from inference.findings import BoundingBox

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Detection:
    """A detection on one frame (``frame_index`` into the analysed frames)."""

    frame_index: int
    box: BoundingBox
    score: float


@dataclass
class Track:
    """Detections of one lesion, in frame order."""

    detections: list[Detection] = field(default_factory=list)

    @property
    def last(self) -> Detection:
        """The latest detection."""
        return self.detections[-1]

    @property
    def mean_score(self) -> float:
        """Mean detection score."""
        return float(np.mean([d.score for d in self.detections]))

    def evidence(self, frames: int) -> float:
        """The track's detection scores summed and divided by the ``frames`` analysed
        (a missed frame counts as 0): a lesion seen faintly on every frame and one
        seen clearly on a few score alike, and a flicker on one or two frames scores low."""
        return float(sum(d.score for d in self.detections)) / max(frames, 1)


def _affinity(a: BoundingBox, b: BoundingBox) -> float:
    """IoU, or a small positive value when the centres are close (fast motion)."""
    iou = a.iou(b)
    if iou > 0:
        return iou
    (ax, ay), (bx, by) = a.center, b.center
    reach = 0.5 * max(a.width, a.height, b.width, b.height)
    return 0.05 if np.hypot(ax - bx, ay - by) < reach else 0.0


def track(detections: list[list[Detection]], min_affinity: float = 0.05, max_gap: int = 2
          ) -> list[Track]:
    """Link per-frame detections into tracks.

    Parameters
    ----------
    detections:
        For each analysed frame, in order, its detections.
    min_affinity:
        Smallest IoU (see :func:`_affinity`) that links two detections.
    max_gap:
        Frames a track may miss before it ends.

    Returns
    -------
    list[Track]
        All tracks, in order of first appearance.
    """
    tracks: list[Track] = []
    active: list[Track] = []
    for frame_dets in detections:
        if not frame_dets:
            continue
        frame = frame_dets[0].frame_index
        active = [t for t in active if frame - t.last.frame_index <= max_gap + 1]
        unmatched = set(range(len(frame_dets)))
        if active:
            cost = np.array([[-_affinity(t.last.box, d.box) for d in frame_dets] for t in active])
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if -cost[r, c] >= min_affinity:
                    active[r].detections.append(frame_dets[c])
                    unmatched.discard(int(c))
        for c in sorted(unmatched):
            new = Track([frame_dets[c]])
            tracks.append(new)
            active.append(new)
    return tracks


def smooth(probabilities: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Exponential moving average over frames of ``(frames, classes)`` probabilities."""
    out = np.array(probabilities, dtype=np.float64, copy=True)
    for i in range(1, len(out)):
        out[i] = alpha * out[i] + (1.0 - alpha) * out[i - 1]
    return out


def sample_evenly(count: int, n: int) -> np.ndarray:
    """``min(n, count)`` evenly spaced indices into ``range(count)``."""
    if count <= n:
        return np.arange(count)
    return np.round(np.linspace(0, count - 1, n)).astype(int)


def vote(probabilities: np.ndarray, k: int = 3, n: int = 5) -> tuple[int, bool]:
    """Class of a track by k-of-n frame voting.

    Parameters
    ----------
    probabilities:
        ``(frames, classes)`` per-frame class probabilities of the track.
    k, n:
        The class must have the highest probability in at least ``k`` of
        ``n`` evenly sampled frames (with fewer frames, in a majority of
        them).

    Returns
    -------
    tuple[int, bool]
        The class index, and whether the vote reached ``k`` (otherwise the
        class of highest mean probability is returned).
    """
    picks = probabilities[sample_evenly(len(probabilities), n)]
    needed = k if len(picks) >= n else len(picks) // 2 + 1
    counts = np.bincount(picks.argmax(axis=1), minlength=probabilities.shape[1])
    if counts.max() >= needed:
        return int(counts.argmax()), True
    return int(probabilities.mean(axis=0).argmax()), False
