"""Demo studies: simulated ultrasound written as real DICOM files.

``dicom-node demo-study OUT_DIR`` writes a liver, a breast and an echo study
(phantoms of the project's generator, with a Sequence of Ultrasound Regions
giving the true pixel size) so that an admin can try the node end to end with
``storescu`` without patient data.  The images are marked as phantoms in the
series description and the patient name.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    JPEGBaseline8Bit,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from inference.findings import BoundingBox

DemoKind = Literal["liver", "breast", "echo"]

DEMO_KINDS: tuple[DemoKind, ...] = ("liver", "breast", "echo")


def _region(box: BoundingBox, pixel_mm: float) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = 1  # 2D
    item.RegionDataType = 1  # tissue
    item.RegionFlags = 0
    item.RegionLocationMinX0 = int(box.x0)
    item.RegionLocationMinY0 = int(box.y0)
    item.RegionLocationMaxX1 = int(box.x1) - 1
    item.RegionLocationMaxY1 = int(box.y1) - 1
    item.PhysicalUnitsXDirection = 3  # cm
    item.PhysicalUnitsYDirection = 3
    item.PhysicalDeltaX = pixel_mm / 10.0
    item.PhysicalDeltaY = pixel_mm / 10.0
    return item


def _jpeg_fragments(frames: np.ndarray) -> list[bytes]:
    fragments = []
    for frame in frames:
        buffer = io.BytesIO()
        rgb = np.repeat(frame[..., None], 3, axis=2)
        Image.fromarray(rgb, "RGB").save(buffer, "JPEG", quality=92, subsampling=1)
        fragments.append(buffer.getvalue())
    return fragments


def ultrasound_dataset(
    frames: np.ndarray,
    scan_box: BoundingBox,
    pixel_mm: float,
    study_uid: str,
    series_uid: str,
    description: str,
    frame_time_ms: float | None = None,
    body_part: str = "",
) -> Dataset:
    """A US Image (one frame) or US Multi-frame Image, JPEG baseline YBR_FULL_422.

    Parameters
    ----------
    frames:
        ``uint8`` grayscale ``(n, rows, columns)``.
    scan_box, pixel_mm:
        The B-mode area and its pixel size, written as an Ultrasound Region.
    study_uid, series_uid, description:
        Identity of the study and series; the description says "phantom".
    frame_time_ms:
        Frame time of a cine.
    body_part:
        BodyPartExamined; empty, as most scanners leave it.
    """
    n, rows, columns = frames.shape
    now = datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if n > 1 else UltrasoundImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "PHANTOM^DEMO"
    ds.PatientID = "PHANTOM-0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = "DEMO"
    ds.AccessionNumber = ""
    ds.StudyDescription = "Ultrasound phantom (demo)"
    ds.Modality = "US"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"{description} phantom"
    ds.Manufacturer = "US-AI DICOM Node project (phantom generator)"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ImageType = ["DERIVED", "SECONDARY"]
    if body_part:
        ds.BodyPartExamined = body_part
    else:
        ds.Laterality = ""  # Type 2C: unknown without a body part
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.SequenceOfUltrasoundRegions = [_region(scan_box, pixel_mm)]
    if n > 1:
        ds.NumberOfFrames = n
        ds.FrameIncrementPointer = 0x00181063  # FrameTime
        ds.FrameTime = round(frame_time_ms or 33.3, 3)
    ds.PixelData = encapsulate(_jpeg_fragments(frames))
    ds["PixelData"].VR = "OB"
    return ds


def demo_dataset(kind: DemoKind, seed: int, study_uid: str, frames: int = 1) -> Dataset:
    """One phantom image (or clip) of ``kind`` as a DICOM dataset."""
    series_uid = generate_uid()
    if kind == "echo":
        from inference.phantoms.echo import random_echo_spec, render_echo

        spec = random_echo_spec(
            np.random.default_rng(seed), size=(480, 640), n_frames=max(frames, 30)
        )
        cine = render_echo(spec)
        x0, y0, x1, y1 = cine.scan_box
        return ultrasound_dataset(
            cine.frames,
            BoundingBox(x0, y0, x1, y1),
            cine.pixel_mm,
            study_uid,
            series_uid,
            "Echo apical 4-chamber",
            frame_time_ms=spec.frame_time_ms,
        )
    from inference.phantoms.generator import generate

    sample = generate(kind, seed, n_frames=frames)
    return ultrasound_dataset(
        sample.frames,
        sample.scan_box,
        sample.pixel_mm,
        study_uid,
        series_uid,
        kind.capitalize(),
        frame_time_ms=sample.frame_time_ms,
    )


def write_demo_studies(
    out_dir: Path, kinds: Sequence[DemoKind] = DEMO_KINDS, seed: int = 1, images: int = 2
) -> list[Path]:
    """Write one study per kind into ``out_dir/<kind>/``; returns the files.

    Liver and breast studies get ``images`` stills; an echo study one cine.
    """
    written = []
    for offset, kind in enumerate(kinds):
        folder = out_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        study_uid = generate_uid()
        count = 1 if kind == "echo" else images
        for i in range(count):
            ds = demo_dataset(kind, seed + 1000 * offset + i, study_uid)
            ds.InstanceNumber = i + 1
            path = folder / f"{kind}-{i + 1}.dcm"
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
    return written
