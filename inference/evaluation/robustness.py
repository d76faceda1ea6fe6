"""Held-out images changed the way other scanners and phantom generators differ.

The engines learn from one phantom generator.  Scanners post-process their
images (edge enhancement, speckle reduction, display gamma), store them at
other resolutions and compress them; another phantom generator renders speckle
and grey levels its own way.  Each perturbation here is one such difference,
with fixed parameters, applied to every frame of a held-out image; the
evaluation reports detection on the changed images beside the unchanged ones.
A large drop names an appearance the engine has learnt from this generator's
quirks rather than from the published lesion appearances.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from inference.phantoms import scanner

Perturbation = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""``(uint8 frame (rows, cols), rng) -> uint8 frame`` of the same shape."""


def _gamma(value: float) -> Perturbation:
    return lambda frame, _rng: scanner.gamma(frame, value)


def _contrast(factor: float) -> Perturbation:
    return lambda frame, _rng: scanner.contrast(frame, factor)


def _filtered(image_filter: ImageFilter.Filter) -> Perturbation:
    return lambda frame, _rng: scanner.filtered(frame, image_filter)


def _half_resolution(frame: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
    return scanner.resampled(frame, 0.5)


def _noise(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = frame + rng.normal(0.0, 12.0, frame.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def _jpeg(frame: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG", quality=40)
    return np.asarray(Image.open(buffer))


PERTURBATIONS: dict[str, Perturbation] = {
    "edge enhancement (unsharp mask, radius 2 px, 150 %)": _filtered(
        ImageFilter.UnsharpMask(radius=2, percent=150, threshold=0)),
    "speckle reduction (Gaussian blur, 1.2 px)": _filtered(ImageFilter.GaussianBlur(1.2)),
    "display gamma 0.6 (brighter)": _gamma(0.6),
    "display gamma 1.6 (darker)": _gamma(1.6),
    "contrast 0.6 (softer grey scale)": _contrast(0.6),
    "half resolution (down and up again)": _half_resolution,
    "electronic noise (sigma 12 grey levels)": _noise,
    "JPEG quality 40": _jpeg,
}
"""The image changes, by the name the report gives them."""

UNCHANGED = "unchanged"
"""Name the report gives the images as they are, beside :data:`PERTURBATIONS`."""


def perturb(frames: np.ndarray, name: str, seed: int) -> np.ndarray:
    """Every frame of ``frames`` (``(n, rows, cols)`` uint8) changed by ``PERTURBATIONS[name]``.

    ``seed`` fixes the randomness (only the noise uses it), so the changed images are
    the same in every run.
    """
    rng = np.random.default_rng(seed)
    change = PERTURBATIONS[name]
    return np.stack([change(frame, rng) for frame in frames])
