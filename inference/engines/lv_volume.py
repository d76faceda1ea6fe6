"""Left-ventricular volume from a cavity mask by the single-plane method of discs.

The cavity is sliced perpendicular to its long axis (apex to the middle of
the mitral annulus) into 20 discs of equal height ``h = L / 20``; the
diameter of disc ``i`` is the cavity area inside its slab divided by ``h``
(the mean width of the slab), and ``V = pi / 4 * sum d_i^2 * h``.

The long axis is found from the mask alone: the principal axis of the cavity
pixels, oriented away from the probe (the apex is the end nearest the top of
the image), then refined once through the apex and the centre of the basal
end.  Pixel sizes may differ along x and y; with no calibration, pass
``(1, 1)`` and read the volume in cubic pixels (the EF ratio is unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import structlog

logger = structlog.get_logger(__name__)

N_DISCS = 20
"""Discs of the single-plane method of discs."""

BASE_FRACTION = 0.04
"""Share of the long axis at the basal end whose centre is the annulus midpoint."""


@dataclass(frozen=True)
class DiscMeasurement:
    """Method-of-discs result for one mask.

    Attributes
    ----------
    volume:
        Volume in the cube of the pixel-size unit / 1000 (ml for mm pixels).
    length:
        Long-axis length, in the pixel-size unit.
    apex, base:
        ``(x, y)`` pixel-centre coordinates of the apex and of the middle of
        the base.
    diameters:
        Disc diameters, in the pixel-size unit.
    """

    volume: float
    length: float
    apex: tuple[float, float]
    base: tuple[float, float]
    diameters: np.ndarray


def measure_discs(mask: np.ndarray, pixel_size: tuple[float, float] = (1.0, 1.0)
                  ) -> DiscMeasurement | None:
    """Single-plane method-of-discs volume of a cavity mask.

    Parameters
    ----------
    mask:
        Boolean ``(rows, columns)`` cavity mask.
    pixel_size:
        ``(dx, dy)`` size of a pixel (mm for a volume in ml).

    Returns
    -------
    DiscMeasurement or None
        ``None`` when the mask has fewer than 20 pixels.
    """
    rows, cols = np.nonzero(mask)
    if rows.size < N_DISCS:
        return None
    dx, dy = float(pixel_size[0]), float(pixel_size[1])
    points = np.stack([(cols + 0.5) * dx, (rows + 0.5) * dy], axis=1)
    centre = points.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((points - centre).T))
    axis = vectors[:, -1]
    if axis[1] < 0:
        axis = -axis
    apex, base = _ends(points, axis)
    refined = base - apex
    if np.linalg.norm(refined) > 0:
        apex, base = _ends(points, refined / np.linalg.norm(refined))
    direction = base - apex
    length = float(np.linalg.norm(direction))
    if length <= 0:
        return None
    direction /= length
    # Each pixel counts for its area; its projection picks its slab.
    along = (points - apex) @ direction
    height = length / N_DISCS
    slab = np.clip((along / height).astype(int), 0, N_DISCS - 1)
    areas = np.bincount(slab, minlength=N_DISCS) * dx * dy
    diameters = areas / height
    volume = float(np.pi / 4.0 * np.sum(diameters**2) * height / 1000.0)
    return DiscMeasurement(
        volume=volume,
        length=length,
        apex=(float(apex[0] / dx - 0.5), float(apex[1] / dy - 0.5)),
        base=(float(base[0] / dx - 0.5), float(base[1] / dy - 0.5)),
        diameters=diameters,
    )


def _ends(points: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apex (the nearest point to the top along ``axis``) and the basal centre."""
    along = points @ axis
    low, high = float(along.min()), float(along.max())
    span = max(high - low, 1e-9)
    apical = points[along <= low + BASE_FRACTION * span]
    basal = points[along >= high - BASE_FRACTION * span]
    apex_centre = apical.mean(axis=0)
    base_centre = basal.mean(axis=0)
    # Put the apex on the tip: its projection is the minimum along the axis.
    apex = apex_centre - ((apex_centre @ axis) - low) * axis
    base = base_centre + (high - (base_centre @ axis)) * axis
    return apex, base
