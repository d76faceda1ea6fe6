"""Tests of the evaluation metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from inference.evaluation.metrics import (
    bootstrap_intervals,
    classification_summary,
    confusion,
    match_detections,
    pr_curve,
    prf,
    roc_auc,
)
from inference.findings import LIVER_CLASSES, BoundingBox


def test_matching_precision_recall_at_iou_025() -> None:
    truths = [BoundingBox(0, 0, 10, 10), BoundingBox(50, 50, 60, 60)]
    boxes = [BoundingBox(2, 2, 12, 12), BoundingBox(1, 1, 11, 11), BoundingBox(80, 80, 90, 90)]
    matches = match_detections(boxes, [0.9, 0.8, 0.7], truths)
    assert [m.truth for m in matches] == [0, -1, -1]  # duplicate and stray are false positives
    assert prf(matches, 2, 0.0) == pytest.approx((1 / 3, 0.5, 0.4))
    assert prf(matches, 2, 0.85) == pytest.approx((1.0, 0.5, 2 / 3))
    precision, recall = pr_curve(matches, 2)
    np.testing.assert_allclose(precision, [1.0, 0.5, 1 / 3])
    np.testing.assert_allclose(recall, [0.5, 0.5, 0.5])


def test_auc_and_confusion() -> None:
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5
    np.testing.assert_array_equal(confusion([0, 1, 1], [0, 1, 0], 2), [[1, 0], [1, 1]])


def test_classification_summary_counts_missed_as_wrong() -> None:
    truth = ["hcc", "cyst", "metastasis", "hemangioma"]
    pred = ["metastasis", "cyst", "missed", "hemangioma"]
    s = classification_summary(truth, pred, [0.9, 0.1, 0.0, 0.2], LIVER_CLASSES)
    assert s["accuracy"] == 0.5
    assert s["bm_accuracy"] == 0.75
    assert s["sensitivity"] == 0.5 and s["specificity"] == 1.0


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_units() -> None:
    def accuracy_of(correct: np.ndarray) -> Callable[[np.ndarray], list[float]]:
        return lambda drawn: [float(correct[drawn].mean()), float("nan")]

    few = np.array([True] * 30 + [False] * 10)
    many = np.tile(few, 10)
    (low, high), undefined = bootstrap_intervals(accuracy_of(few), len(few))
    assert low < 0.75 < high
    assert np.isnan(undefined).all()
    assert bootstrap_intervals(accuracy_of(few), len(few))[0] == (low, high)  # fixed seed
    (low_many, high_many), _ = bootstrap_intervals(accuracy_of(many), len(many))
    assert low < low_many < 0.75 < high_many < high
    assert bootstrap_intervals(accuracy_of(few), 0) == []


def test_the_box_of_a_mask_encloses_its_pixels_edge_to_edge() -> None:
    mask = np.zeros((10, 12), bool)
    mask[2, 3] = mask[6, 8] = True
    assert BoundingBox.of_mask(mask) == BoundingBox(3.0, 2.0, 9.0, 7.0)
    with pytest.raises(ValueError, match="Empty mask"):
        BoundingBox.of_mask(np.zeros((4, 4), bool))
