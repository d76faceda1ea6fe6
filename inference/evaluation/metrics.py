"""Metrics of the lesion evaluation: detection matching, PR, ROC AUC, confusion,
bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from inference.findings import MALIGNANT_CLASSES, BoundingBox


@dataclass(frozen=True)
class Match:
    """A detection and the ground-truth lesion it matched (``-1``: false positive)."""

    score: float
    truth: int


def match_detections(boxes: Sequence[BoundingBox], scores: Sequence[float],
                     truths: Sequence[BoundingBox], iou: float = 0.25) -> list[Match]:
    """Greedy matching in decreasing score order, each lesion matched at most once."""
    used: set[int] = set()
    out = []
    for i in np.argsort(-np.asarray(scores, dtype=float), kind="stable"):
        best, best_iou = -1, iou
        for j, truth in enumerate(truths):
            value = boxes[i].iou(truth)
            if j not in used and value >= best_iou:
                best, best_iou = j, value
        if best >= 0:
            used.add(best)
        out.append(Match(float(scores[i]), best))
    return out


def prf(matches: Sequence[Match], n_truth: int, threshold: float) -> tuple[float, float, float]:
    """Precision, recall and F1 of the detections scoring at least ``threshold``."""
    kept = [m for m in matches if m.score >= threshold]
    tp = sum(m.truth >= 0 for m in kept)
    precision = tp / len(kept) if kept else 1.0
    recall = tp / n_truth if n_truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def pr_curve(matches: Sequence[Match], n_truth: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every score threshold (decreasing)."""
    order = sorted(matches, key=lambda m: -m.score)
    tp = np.cumsum([m.truth >= 0 for m in order])
    count = np.arange(1, len(order) + 1)
    return tp / count, tp / max(n_truth, 1)


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive, dtype=bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def confusion(truth: Sequence[int], pred: Sequence[int], n: int) -> np.ndarray:
    """``(n, n)`` counts, rows = truth, columns = prediction."""
    out = np.zeros((n, n), dtype=int)
    for t, p in zip(truth, pred, strict=True):
        out[t, p] += 1
    return out


def classification_summary(truth: Sequence[str], pred: Sequence[str],
                           malignancy: Sequence[float], classes: Sequence[str]
                           ) -> dict[str, float]:
    """4-class and benign/malignant figures of labelled predictions.

    A prediction outside ``classes`` (e.g. ``"missed"``) counts as wrong.
    """
    t = np.array([classes.index(c) for c in truth], dtype=int)
    p = np.array([classes.index(c) if c in classes else -1 for c in pred], dtype=int)
    tm = np.array([c in MALIGNANT_CLASSES for c in truth], dtype=bool)
    # A missed lesion (no class) counts as wrong for benign/malignant too.
    pm = np.array([(c in MALIGNANT_CLASSES) if c in classes else not m
                   for c, m in zip(pred, tm, strict=True)], dtype=bool)
    out = {
        "n": float(len(t)),
        "accuracy": float((t == p).mean()) if len(t) else float("nan"),
        "bm_accuracy": float((tm == pm).mean()) if len(t) else float("nan"),
        "sensitivity": float(pm[tm].mean()) if tm.any() else float("nan"),
        "specificity": float((~pm[~tm]).mean()) if (~tm).any() else float("nan"),
        "auc": roc_auc(malignancy, tm),
    }
    for k, name in enumerate(classes):
        out[f"accuracy_{name}"] = float((p[t == k] == k).mean()) if (t == k).any() else float("nan")
    return out


BOOTSTRAP_DRAWS = 2000
"""Resamples behind each bootstrap interval."""


def bootstrap_intervals(statistic: Callable[[np.ndarray], Sequence[float]], units: int,
                        draws: int = BOOTSTRAP_DRAWS, level: float = 0.95, seed: int = 0
                        ) -> list[tuple[float, float]]:
    """Percentile bootstrap intervals of each figure ``statistic`` computes.

    ``statistic`` gets the indices of ``units`` drawn with replacement (the
    images, ROIs or clips of an evaluation) and returns its figures; the
    interval of each figure ignores draws where it is undefined (NaN).  The
    draws come from a fixed seed, so a report is reproducible.
    """
    if units == 0:
        return []
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, units, units)) for _ in range(draws)],
                      dtype=float)
    tail = 100 * (1 - level) / 2
    out = []
    for column in values.T:
        defined = column[~np.isnan(column)]
        out.append((float(np.percentile(defined, tail)), float(np.percentile(defined, 100 - tail)))
                   if len(defined) else (float("nan"), float("nan")))
    return out
