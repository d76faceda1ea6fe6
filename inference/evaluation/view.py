"""Evaluate the anatomy/view classifier on held-out phantom images.

Held-out images use phantom seeds from ``VIEW_EVAL_SEED`` (2,000,000) up;
training draws its seeds below 1,000,000.  Every other image is passed
without its ultrasound regions, so the scan area comes from the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from inference.engines.base import ImageInput
from inference.engines.view import VIEW_CLASSES, ViewClassifier
from inference.findings import BoundingBox
from inference.geometry import ImageGeometry
from inference.training.view import render_view_sample

logger = structlog.get_logger(__name__)

VIEW_EVAL_SEED = 2_000_000
"""First phantom seed of the held-out view images."""


@dataclass(frozen=True)
class ViewEvaluation:
    """Held-out classifier results.

    Attributes
    ----------
    confusion:
        ``(classes, classes)`` counts, rows = truth, columns = prediction.
    """

    confusion: np.ndarray

    @property
    def accuracy(self) -> float:
        """Share of images classified correctly."""
        return float(np.trace(self.confusion) / max(self.confusion.sum(), 1))

    def class_accuracy(self, index: int) -> float:
        """Recall of class ``index``."""
        return float(self.confusion[index, index] / max(self.confusion[index].sum(), 1))


def evaluate_view(n_per_class: int, weights_dir: Path | None = None,
                  seed: int = VIEW_EVAL_SEED, size: tuple[int, int] = (360, 480),
                  image_domain: bool = False) -> ViewEvaluation:
    """Classify ``n_per_class`` held-out phantom images of every class.

    Parameters
    ----------
    n_per_class:
        Images per class.
    weights_dir:
        Classifier weights (the shipped ones when ``None``).
    seed:
        First phantom seed.
    size:
        ``(rows, cols)`` of the images.
    image_domain:
        Draw the liver and breast images with the image-domain generator
        (:mod:`inference.phantoms.imagedomain`) instead of the first one.

    Returns
    -------
    ViewEvaluation
        The confusion matrix.
    """
    classifier = ViewClassifier(weights_dir)
    confusion = np.zeros((len(VIEW_CLASSES), len(VIEW_CLASSES)), dtype=int)
    for truth, anatomy in enumerate(VIEW_CLASSES):
        for k in range(n_per_class):
            frame, box = render_view_sample(anatomy, seed + k, *size, image_domain)
            if k % 2 == 0:
                scan = box if isinstance(box, BoundingBox) else BoundingBox(*map(float, box))
                geometry = ImageGeometry(pixel_size_mm=None, scan_area=scan)
            else:
                geometry = ImageGeometry(pixel_size_mm=None, scan_area=None)
            image = ImageInput(f"2.25.{seed + k}", frame[None], geometry)
            predicted = VIEW_CLASSES.index(classifier.predict(image).anatomy)
            confusion[truth, predicted] += 1
        logger.info("view_class_evaluated", anatomy=anatomy.value,
                    recall=round(confusion[truth, truth] / max(n_per_class, 1), 3))
    return ViewEvaluation(confusion)


def view_markdown(ev: ViewEvaluation) -> list[str]:
    """Markdown lines: accuracy and the confusion matrix."""
    names = [c.value for c in VIEW_CLASSES]
    lines = [f"Anatomy/view classifier: accuracy {ev.accuracy:.3f} on "
             f"{int(ev.confusion.sum())} held-out phantom images "
             f"(seeds from {VIEW_EVAL_SEED}; half without regions).", "",
             "| truth \\ predicted | " + " | ".join(names) + " | recall |",
             "|---" * (len(names) + 2) + "|"]
    for i, name in enumerate(names):
        counts = " | ".join(str(int(v)) for v in ev.confusion[i])
        lines.append(f"| {name} | {counts} | {ev.class_accuracy(i):.3f} |")
    return [*lines, ""]
