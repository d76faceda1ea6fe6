"""Image transforms shared by lesion training and inference (numpy + Pillow).

* :func:`letterbox`: the scan area of a frame scaled into a square detector
  input, with the :class:`Letterbox` transform to map boxes back;
* :func:`roi_crop`: a square crop around a lesion box (with context below
  the lesion, where posterior enhancement or shadowing shows) resized for the
  classifier, optionally rotated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from inference.findings import BoundingBox

DETECTOR_SIZE = 256
"""Side of the square detector input, pixels."""

CLASSIFIER_SIZE = 64
"""Side of the square classifier input, pixels."""

ROI_CONTEXT = 1.8
"""Crop side as a multiple of the lesion box's longer side."""

ROI_POSTERIOR_SHIFT = 0.15
"""Crop centre shift below the lesion centre, as a fraction of the crop side."""


@dataclass(frozen=True)
class Letterbox:
    """Maps between original pixels and the square detector input."""

    x0: float
    y0: float
    scale: float
    pad_x: int
    pad_y: int

    def to_input(self, box: BoundingBox) -> tuple[float, float, float, float]:
        """Original-pixel box -> input-pixel ``(x0, y0, x1, y1)``."""
        return (
            (box.x0 - self.x0) * self.scale + self.pad_x,
            (box.y0 - self.y0) * self.scale + self.pad_y,
            (box.x1 - self.x0) * self.scale + self.pad_x,
            (box.y1 - self.y0) * self.scale + self.pad_y,
        )

    def to_original(self, x0: float, y0: float, x1: float, y1: float) -> BoundingBox:
        """Input-pixel box -> original-pixel box."""
        return BoundingBox(
            (x0 - self.pad_x) / self.scale + self.x0,
            (y0 - self.pad_y) / self.scale + self.y0,
            (x1 - self.pad_x) / self.scale + self.x0,
            (y1 - self.pad_y) / self.scale + self.y0,
        )


def letterbox(frame: np.ndarray, scan_area: BoundingBox, size: int = DETECTOR_SIZE
              ) -> tuple[np.ndarray, Letterbox]:
    """Crop ``scan_area`` from ``frame`` and fit it, centred, in a ``size`` square.

    Parameters
    ----------
    frame:
        ``uint8`` ``(rows, cols)`` frame.
    scan_area:
        Box of the B-mode area.
    size:
        Output side.

    Returns
    -------
    tuple
        ``uint8`` ``(size, size)`` input and the transform.
    """
    x0, y0 = max(int(scan_area.x0), 0), max(int(scan_area.y0), 0)
    x1 = min(int(np.ceil(scan_area.x1)), frame.shape[1])
    y1 = min(int(np.ceil(scan_area.y1)), frame.shape[0])
    crop = frame[y0:y1, x0:x1]
    scale = size / max(crop.shape)
    width = max(1, min(size, round(crop.shape[1] * scale)))
    height = max(1, min(size, round(crop.shape[0] * scale)))
    resized = np.asarray(Image.fromarray(crop).resize((width, height), Image.BILINEAR))
    out = np.zeros((size, size), dtype=np.uint8)
    pad_x, pad_y = (size - width) // 2, (size - height) // 2
    out[pad_y:pad_y + height, pad_x:pad_x + width] = resized
    return out, Letterbox(float(x0), float(y0), float(scale), pad_x, pad_y)


def roi_square(box: BoundingBox) -> tuple[float, float, float]:
    """Centre ``(x, y)`` and side of the classifier crop of a lesion box."""
    side = max(box.width, box.height) * ROI_CONTEXT + 6.0
    cx, cy = box.center
    return cx, cy + ROI_POSTERIOR_SHIFT * side, side


def roi_crop(frame: np.ndarray, box: BoundingBox, size: int = CLASSIFIER_SIZE,
             angle_deg: float = 0.0) -> np.ndarray:
    """Classifier input for a lesion box: a square crop, zero outside the frame.

    Parameters
    ----------
    frame:
        ``uint8`` ``(rows, cols)`` frame.
    box:
        Lesion box in frame pixels.
    size:
        Output side.
    angle_deg:
        Rotation of the crop about its centre (augmentation).

    Returns
    -------
    numpy.ndarray
        ``uint8`` ``(size, size)`` crop.
    """
    cx, cy, side = roi_square(box)
    half = side * (0.75 if angle_deg else 0.5)
    x0, y0 = round(cx - half), round(cy - half)
    span = round(2 * half)
    padded = np.zeros((span, span), dtype=np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + span, frame.shape[1]), min(y0 + span, frame.shape[0])
    if sx1 > sx0 and sy1 > sy0:
        padded[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    image = Image.fromarray(padded)
    if angle_deg:
        image = image.rotate(angle_deg, resample=Image.BILINEAR)
        margin = (span - side) / 2.0
        image = image.crop((round(margin), round(margin), round(margin + side),
                            round(margin + side)))
    return np.asarray(image.resize((size, size), Image.BILINEAR))
