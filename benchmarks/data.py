"""Synthetic ultrasound instances for the benchmarks, written once and cached.

The pixel content looks like a B-mode sector (speckle inside a fan, black
outside) so that JPEG sizes are realistic; every instance gets its own UIDs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

ROWS, COLUMNS = 480, 640
"""Frame size of the ingest instances."""

UID_ROOT = "1.2.826.0.1.3680043.8.498."
"""pydicom's UID root, used for generated UIDs."""


@dataclass(frozen=True)
class InstanceSet:
    """A named set of instances to send.

    Parameters
    ----------
    name:
        Short name used in tables (``stills-raw``, ``cine-jpeg`` ...).
    count:
        Number of instances.
    frames:
        Frames per instance; ``None`` for single-frame US Image Storage.
    jpeg:
        JPEG baseline (YBR_FULL_422) instead of uncompressed RGB.
    """

    name: str
    count: int
    frames: int | None
    jpeg: bool


SETS: dict[str, InstanceSet] = {
    s.name: s
    for s in (
        InstanceSet("stills-raw", 200, None, jpeg=False),
        InstanceSet("stills-jpeg", 200, None, jpeg=True),
        InstanceSet("cine-raw", 20, 60, jpeg=False),
        InstanceSet("cine-jpeg", 20, 60, jpeg=True),
    )
}
"""The instance sets of the issue: 200 stills and 20 cine clips of 60 frames."""


def sector_frames(count: int, seed: int = 7) -> np.ndarray:
    """``count`` RGB frames ``(count, ROWS, COLUMNS, 3)`` of a moving speckle sector."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float32)
    apex_x, apex_y = COLUMNS / 2, -40.0
    radius = np.hypot(x - apex_x, y - apex_y)
    angle = np.arctan2(x - apex_x, y - apex_y)
    fan = (np.abs(angle) < 0.6) & (radius > 60) & (radius < ROWS + 20)
    gain = np.clip(1.2 - radius / (ROWS * 1.6), 0.3, 1.0)
    base = rng.rayleigh(0.5, size=(ROWS + count, COLUMNS)).astype(np.float32)
    kernel = np.ones(3, dtype=np.float32) / 3
    base = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, base)
    frames = np.zeros((count, ROWS, COLUMNS, 3), dtype=np.uint8)
    for i in range(count):
        speckle = base[i : i + ROWS] * gain * 180
        grey = np.where(fan, np.clip(speckle, 0, 255), 0).astype(np.uint8)
        frames[i] = grey[..., None]
        frames[i, 10:24, 20:200, :] = 230  # burned-in annotation bar
    return frames


def _jpeg(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buffer, "JPEG", quality=90, subsampling=1)
    return buffer.getvalue()


@dataclass(frozen=True)
class Pixels:
    """Encoded pixel data shared by many instances.

    Parameters
    ----------
    frames:
        Number of frames; ``None`` for single-frame US Image Storage.
    rows, columns:
        Frame size.
    pixel_data:
        The Pixel Data value (native RGB, or encapsulated JPEG baseline).
    jpeg:
        Whether ``pixel_data`` is JPEG baseline (YBR_FULL_422).
    pixel_mm:
        Size of a square pixel, for the Sequence of Ultrasound Regions.
    """

    frames: int | None
    rows: int
    columns: int
    pixel_data: bytes
    jpeg: bool
    pixel_mm: float = 0.2

    @classmethod
    def encode(cls, frames: np.ndarray, jpeg: bool, cine: bool, pixel_mm: float = 0.2) -> Pixels:
        """Encode ``(n, rows, columns[, 3])`` ``uint8`` frames (grey is made RGB)."""
        if frames.ndim == 3:
            frames = np.repeat(frames[..., None], 3, axis=-1)
        data = encapsulate([_jpeg(f) for f in frames]) if jpeg else frames.tobytes()
        count = frames.shape[0] if cine else None
        return cls(count, frames.shape[1], frames.shape[2], data, jpeg, pixel_mm)


def _region(pixels: Pixels) -> Dataset:
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.RegionDataType = 1
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1 = pixels.columns - 1
    region.RegionLocationMaxY1 = pixels.rows - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = region.PhysicalDeltaY = pixels.pixel_mm / 10
    return region


def make_dataset(
    pixels: Pixels,
    study_uid: str,
    series_uid: str,
    number: int = 1,
    body_part: str = "ABDOMEN",
    description: str = "US ABDOMEN",
) -> Dataset:
    """A US Image (or Multi-frame) instance with new SOP Instance UID around ``pixels``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if pixels.frames else UltrasoundImageStorage
    ds.SOPInstanceUID = generate_uid(UID_ROOT)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Bench^Mark"
    ds.PatientID = "BENCH-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20260101"
    ds.StudyTime = "101010"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = "BENCH1"
    ds.StudyDescription = description
    ds.Modality = "US"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.Manufacturer = "Synthetic"
    ds.InstanceNumber = number
    ds.PatientOrientation = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BodyPartExamined = body_part
    ds.Rows, ds.Columns = pixels.rows, pixels.columns
    ds.SequenceOfUltrasoundRegions = [_region(pixels)]
    if pixels.frames:
        ds.NumberOfFrames = pixels.frames
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 33.3
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if pixels.jpeg:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PhotometricInterpretation = "RGB"
    ds.PixelData = pixels.pixel_data
    ds["PixelData"].VR = "OB"
    return ds


def write_study(
    folder: Path,
    images: Sequence[Pixels],
    study_uid: str | None = None,
    **attributes: str,
) -> list[Path]:
    """Write one study (one series) of ``images`` into ``folder`` as ``0000.dcm`` ...

    ``attributes`` go to :func:`make_dataset` (``body_part``, ``description``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid(UID_ROOT)
    series_uid = generate_uid(UID_ROOT)
    paths = []
    for number, pixels in enumerate(images):
        path = folder / f"{number:04d}.dcm"
        make_dataset(pixels, study_uid, series_uid, number + 1, **attributes).save_as(
            path, enforce_file_format=True
        )
        paths.append(path)
    return paths


def cached_set(root: Path, name: str, copy: int = 0) -> list[Path]:
    """The files of set ``name`` under ``root``, generating them on first use.

    ``copy`` above 0 gives the same instances under other UIDs, so that a
    receiver sent the set again stores new instances instead of finding
    duplicates (which the node and Orthanc do not write again).
    """
    instance_set = SETS[name]
    folder = root / (name if copy == 0 else f"{name}-copy{copy}")
    done = folder / "complete"
    if done.exists():
        return sorted(folder.glob("*.dcm"))
    frames = sector_frames(instance_set.frames or 1)
    pixels = Pixels.encode(frames, instance_set.jpeg, cine=instance_set.frames is not None)
    paths = write_study(folder, [pixels] * instance_set.count)
    done.write_text(str(len(paths)))
    return paths


def split(paths: Sequence[Path], parts: int) -> list[list[Path]]:
    """``paths`` dealt round-robin into ``parts`` non-empty lists."""
    return [list(paths[i::parts]) for i in range(parts) if paths[i::parts]]
