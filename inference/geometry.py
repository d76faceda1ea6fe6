"""Image geometry of ultrasound images: regions, pixel-to-mm mapping.

The Sequence of Ultrasound Regions (0018,6011) is the only trustworthy source
of physical size on an ultrasound image; ``PixelSpacing`` is usually absent and
must never be guessed.  This module reads the regions into plain objects that
the engines (volumes, sizes) and the result builders (axes in mm) share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom import Dataset

from inference.findings import BoundingBox

UNITS_CM = 3
"""PhysicalUnitsXDirection / YDirection value for centimetres."""

TISSUE = 0x0001
"""RegionDataType of a B-mode (tissue) region."""

SPATIAL_DATA_TYPES = frozenset({TISSUE, 0x0002})
"""RegionDataType values of spatial (tissue / colour-flow) regions."""

FORMAT_2D = 0x0001
FORMAT_M_MODE = 0x0002
"""RegionSpatialFormat values (PS3.3 C.8.5.5.1.1) of a 2D and an M-mode region."""


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of the Sequence of Ultrasound Regions, in pixel space.

    ``x0, y0, x1, y1`` are inclusive pixel indices as in the DICOM attributes;
    ``delta_x_mm`` / ``delta_y_mm`` are the physical size of one pixel in mm,
    or ``None`` when the region has no spatial units; ``spatial_format`` is
    the RegionSpatialFormat (0 when absent).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    data_type: int
    delta_x_mm: float | None
    delta_y_mm: float | None
    spatial_format: int = 0

    @property
    def is_spatial(self) -> bool:
        """True when the region maps pixels to millimetres on both axes."""
        return self.delta_x_mm is not None and self.delta_y_mm is not None

    @property
    def box(self) -> BoundingBox:
        """The region as a box in pixel-edge coordinates (``x1``/``y1`` exclusive)."""
        return BoundingBox(self.x0, self.y0, self.x1 + 1, self.y1 + 1)

    def contains(self, box: BoundingBox) -> bool:
        """Whether ``box`` lies entirely inside the region."""
        return (
            box.x0 >= self.x0
            and box.y0 >= self.y0
            and box.x1 <= self.x1 + 1
            and box.y1 <= self.y1 + 1
        )


MAX_PIXEL_MM = 10.0
"""Largest physical size of a pixel taken from a region (mm); a larger, infinite or
unreadable Physical Delta is a wrong one, and the region then gives no mm sizes."""


def _delta_mm(item: Dataset, units_kw: str, delta_kw: str) -> float | None:
    units = item.get(units_kw)
    delta = item.get(delta_kw)
    if units != UNITS_CM or delta is None:
        return None
    try:
        value = abs(float(delta)) * 10.0
    except (TypeError, ValueError):
        return None
    return value if 0 < value <= MAX_PIXEL_MM else None


def regions_from_dataset(ds: Dataset) -> list[UltrasoundRegion]:
    """Read the Sequence of Ultrasound Regions of ``ds``.

    Items missing their bounds are skipped; an absent sequence gives ``[]``.  A
    region reaching past the image (a maximum written one past the last pixel, or a
    region left from another layout) is cut to the image, and one wholly outside
    it is skipped: every box found inside a region then lies inside the image.
    """
    last_x = int(ds.get("Columns", 0) or 0) - 1
    last_y = int(ds.get("Rows", 0) or 0) - 1
    regions: list[UltrasoundRegion] = []
    for item in ds.get("SequenceOfUltrasoundRegions", []):
        bounds = [
            item.get(kw)
            for kw in (
                "RegionLocationMinX0",
                "RegionLocationMinY0",
                "RegionLocationMaxX1",
                "RegionLocationMaxY1",
            )
        ]
        if any(b is None for b in bounds):
            continue
        x0, y0, x1, y1 = (int(b) for b in bounds)
        if last_x >= 0 and last_y >= 0:
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, last_x), min(y1, last_y)
        if x1 < x0 or y1 < y0:
            continue
        regions.append(
            UltrasoundRegion(
                x0=x0,
                y0=y0,
                x1=x1,
                y1=y1,
                data_type=int(item.get("RegionDataType", 0) or 0),
                delta_x_mm=_delta_mm(item, "PhysicalUnitsXDirection", "PhysicalDeltaX"),
                delta_y_mm=_delta_mm(item, "PhysicalUnitsYDirection", "PhysicalDeltaY"),
                spatial_format=int(item.get("RegionSpatialFormat", 0) or 0),
            )
        )
    return regions


def spatial_region_for(
    regions: Sequence[UltrasoundRegion], box: BoundingBox
) -> UltrasoundRegion | None:
    """The smallest spatial region that fully contains ``box``, if any: a view's own
    calibration wins over that of a whole-screen region around it (a zoomed view of a
    dual display has deltas of its own)."""
    containing = [r for r in regions if r.is_spatial and r.contains(box)]
    if not containing:
        return None
    return min(containing, key=lambda r: (r.x1 - r.x0) * (r.y1 - r.y0))


def box_size_mm(
    regions: Sequence[UltrasoundRegion], box: BoundingBox
) -> tuple[float, float] | None:
    """Width (horizontal) and height (depth) of ``box`` in mm, or ``None`` without a
    spatial region, converted with the physical deltas of the region that holds it.

    They are the extent of the box, not a lesion's long and short axes: for an oblique
    lesion those differ, and sorting them would hide a lesion taller than wide.
    """
    region = spatial_region_for(regions, box)
    if region is None or region.delta_x_mm is None or region.delta_y_mm is None:
        return None
    return (box.width * region.delta_x_mm, box.height * region.delta_y_mm)


@dataclass(frozen=True)
class ImageGeometry:
    """Geometry an engine needs besides the pixels.

    ``pixel_size_mm`` is ``(dx, dy)`` of the main spatial region, or ``None``
    when the image carries no physical calibration.  ``scan_area`` is the
    bounding box of the B-mode area when known from the regions.
    """

    pixel_size_mm: tuple[float, float] | None
    scan_area: BoundingBox | None
    regions: tuple[UltrasoundRegion, ...] = ()

    @classmethod
    def from_dataset(cls, ds: Dataset) -> ImageGeometry:
        """Build the geometry from the ultrasound regions of ``ds``."""
        regions = tuple(regions_from_dataset(ds))
        spatial = [r for r in regions if r.is_spatial and r.data_type in SPATIAL_DATA_TYPES]
        if not spatial:
            spatial = [r for r in regions if r.is_spatial]
        if not spatial:
            return cls(pixel_size_mm=None, scan_area=None, regions=regions)
        main = max(spatial, key=lambda r: (r.x1 - r.x0) * (r.y1 - r.y0))
        assert main.delta_x_mm is not None and main.delta_y_mm is not None
        return cls(
            pixel_size_mm=(main.delta_x_mm, main.delta_y_mm),
            scan_area=main.box,
            regions=regions,
        )
