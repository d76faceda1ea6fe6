"""Scanner post-processing of a rendered frame: the last step of a scanner's image chain.

Scanners sharpen or smooth their images, map grey levels through their own
display curves and store them at other resolutions.  The primitives here make
one such change to a ``uint8`` frame; :func:`random_change` draws one with a
random strength, to teach an engine that these changes are not lesion
appearances (:mod:`inference.training.verifier`), and the evaluation applies
them with fixed strengths (:mod:`inference.evaluation.robustness`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def gamma(frame: np.ndarray, value: float) -> np.ndarray:
    """Grey levels through a display gamma ``value`` (below 1 brighter, above 1 darker)."""
    table = (255.0 * (np.arange(256) / 255.0) ** value).round().astype(np.uint8)
    return table[frame]


def contrast(frame: np.ndarray, factor: float) -> np.ndarray:
    """Grey levels pulled towards mid-grey by ``factor``; the black outside the scan
    area stays black, as on a scanner."""
    table = np.clip(128.0 + (np.arange(256) - 128.0) * factor, 0, 255).round().astype(np.uint8)
    table[0] = 0
    return table[frame]


def filtered(frame: np.ndarray, image_filter: ImageFilter.Filter) -> np.ndarray:
    """``frame`` through a PIL filter (edge enhancement, smoothing)."""
    return np.asarray(Image.fromarray(frame).filter(image_filter))


def resampled(frame: np.ndarray, factor: float) -> np.ndarray:
    """``frame`` scaled down by ``factor`` and back up (bilinear): detail lost to a
    coarser stored resolution."""
    rows, cols = frame.shape
    small = Image.fromarray(frame).resize((max(int(cols * factor), 1),
                                           max(int(rows * factor), 1)), Image.BILINEAR)
    return np.asarray(small.resize((cols, rows), Image.BILINEAR))


def random_change(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One post-processing change of random kind and strength.

    Edge enhancement (unsharp mask, radius 1-3 px, 50-200 %), speckle reduction
    (Gaussian blur, 0.6-1.6 px), display gamma (0.55-1.8), softer grey scale
    (contrast 0.55-0.9) or a coarser resolution (down to 45-80 % and back), each
    as likely.
    """
    kind = int(rng.integers(5))
    if kind == 0:
        return filtered(frame, ImageFilter.UnsharpMask(radius=float(rng.uniform(1.0, 3.0)),
                                                       percent=int(rng.uniform(50, 200)),
                                                       threshold=0))
    if kind == 1:
        return filtered(frame, ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.6))))
    if kind == 2:
        return gamma(frame, float(np.exp(rng.uniform(np.log(0.55), np.log(1.8)))))
    if kind == 3:
        return contrast(frame, float(rng.uniform(0.55, 0.9)))
    return resampled(frame, float(rng.uniform(0.45, 0.8)))
