"""Measurement calipers burned into training images.

Sonographers measure what they find before they store an image: a ``+`` or
``x`` mark at each end of a lesion's diameter, often joined by a dotted line,
sometimes a second pair across it.  Stored clinical images, and every
independently written phantom generator but the first, carry such marks on
lesions; the first generator draws its calipers at random places only.  The
detector's and the verifier's training burn them in with these functions
(``--calipers``), so that a measured lesion is still a lesion to them.
"""

from __future__ import annotations

import numpy as np

ON_LESION = 0.7
"""Share of the calipers of :func:`burn_calipers` that measure a lesion (when there is one)."""


def _cross(image: np.ndarray, x: float, y: float, half: int, diagonal: bool, value: float
           ) -> None:
    """Burn a caliper mark (``+``, or ``x`` when ``diagonal``) centred on ``(x, y)``."""
    rows, cols = image.shape
    steps = np.arange(-half, half + 1)
    cx, cy = round(float(x)), round(float(y))
    if diagonal:
        xs = np.concatenate([cx + steps, cx + steps])
        ys = np.concatenate([cy + steps, cy - steps])
    else:
        xs = np.concatenate([cx + steps, np.full_like(steps, cx)])
        ys = np.concatenate([np.full_like(steps, cy), cy + steps])
    keep = (xs >= 0) & (xs < cols) & (ys >= 0) & (ys < rows)
    image[ys[keep], xs[keep]] = value


def burn_measurement(image: np.ndarray, a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                     value: float, scale: float = 1.0) -> None:
    """Two caliper marks at ``a`` and ``b`` (``x, y`` pixels) of 2-4 pixels' reach times
    ``scale``, joined by a dotted line on most images, burned into ``image`` (2-D)."""
    half = max(round(int(rng.integers(2, 5)) * scale), 1)
    diagonal = bool(rng.random() < 0.4)
    _cross(image, *a, half, diagonal, value)
    _cross(image, *b, half, diagonal, value)
    length = float(np.hypot(*(b - a)))
    if rng.random() < 0.7 and length > 4 * half:
        rows, cols = image.shape
        step = rng.uniform(3.0, 5.0) * scale
        for t in np.arange(half + 2, length - half - 1, step) / length:
            x, y = np.round(a + t * (b - a)).astype(int)
            if 0 <= x < cols and 0 <= y < rows:
                image[y, x] = value


def burn_calipers(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, value: float,
                  scale: float = 1.0) -> None:
    """Burn one measurement into ``image``: on :data:`ON_LESION` of the images with
    lesions, a lesion (one of ``boxes``, ``(k, 4)`` as ``x0, y0, x1, y1``) measured along
    a random direction, the marks on its outline (the ellipse inscribed in its box) give
    or take a tenth of its radius, on half of them a second diameter across it;
    otherwise a distance of 10-60 pixels (times ``scale``) from a random non-black pixel.
    Marks are 1 pixel wide, of grey ``value``."""
    if len(boxes) and rng.random() < ON_LESION:
        box = np.asarray(boxes[rng.integers(len(boxes))], np.float64)
        centre, radii = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2
        angle = rng.uniform(0.0, np.pi)
        for turn in range(1 + int(rng.random() < 0.5)):
            direction = np.array([np.cos(angle + turn * np.pi / 2),
                                  np.sin(angle + turn * np.pi / 2)]) * radii
            a = centre - direction * rng.uniform(0.9, 1.1)
            b = centre + direction * rng.uniform(0.9, 1.1)
            burn_measurement(image, a, b, rng, value, scale)
        return
    ys, xs = np.nonzero(image > 0)
    if len(ys):
        i = int(rng.integers(len(ys)))
        a = np.array([xs[i], ys[i]], np.float64)
        angle = rng.uniform(0.0, 2 * np.pi)
        b = a + rng.uniform(10.0, 60.0) * scale * np.array([np.cos(angle), np.sin(angle)])
        burn_measurement(image, a, b, rng, value, scale)
