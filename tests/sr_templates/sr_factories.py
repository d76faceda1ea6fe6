"""Synthetic ultrasound sources and findings for the sr_templates tests."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
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

from inference.findings import (
    BREAST_CLASSES,
    LIVER_CLASSES,
    AlgorithmInfo,
    AnatomyValues,
    BoundingBox,
    CardiacFinding,
    ImageResult,
    LesionFinding,
    LesionObservation,
    StudyResult,
)

JAPANESE_NAME = "Yamada^Tarou=山田^太郎=やまだ^たろう"
DELTA_CM = 0.01
"""PhysicalDeltaX/Y of the synthetic regions: 0.1 mm per pixel."""

ALGORITHM = AlgorithmInfo(
    name="us-liver-lesion",
    version="1.2.0",
    weights_sha256="ab" * 32,
    parameters={"score_threshold": "0.5", "nms_iou": "0.4"},
)
BREAST_ALGORITHM = AlgorithmInfo(name="us-breast-lesion", version="1.0.0", weights_sha256="cd" * 32)
CARDIAC_ALGORITHM = AlgorithmInfo(name="us-echo-ef", version="0.9.0", weights_sha256="ef" * 32)


def _region(rows: int, columns: int) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = 1
    item.RegionDataType = 1
    item.RegionFlags = 0
    item.RegionLocationMinX0 = 0
    item.RegionLocationMinY0 = 0
    item.RegionLocationMaxX1 = columns - 1
    item.RegionLocationMaxY1 = rows - 1
    item.PhysicalUnitsXDirection = 3
    item.PhysicalUnitsYDirection = 3
    item.PhysicalDeltaX = DELTA_CM
    item.PhysicalDeltaY = DELTA_CM
    return item


def _pixels(rows: int, columns: int, frames: int, samples: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    shape = (frames, rows, columns, samples)
    return rng.integers(0, 200, size=shape, dtype=np.uint8)


def _set_pixels(ds: Dataset, photometric: str, frames: int) -> None:
    rows, columns = ds.Rows, ds.Columns
    colour = photometric != "MONOCHROME2" and photometric != "PALETTE COLOR"
    pixels = _pixels(rows, columns, frames, 3 if colour else 1)
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if colour:
        ds.PlanarConfiguration = 0
    if photometric == "PALETTE COLOR":
        ramp = (np.arange(256, dtype=np.uint16) * 257).tobytes()
        for colour_name in ("Red", "Green", "Blue"):
            setattr(ds, f"{colour_name}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{colour_name}PaletteColorLookupTableData", ramp)
    if photometric == "YBR_FULL_422":
        fragments = []
        for frame in pixels:
            buffer = io.BytesIO()
            Image.fromarray(frame, "RGB").save(buffer, "JPEG", quality=90, subsampling=1)
            fragments.append(buffer.getvalue())
        ds.PixelData = encapsulate(fragments)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = 10
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        return
    data = pixels if colour else pixels[..., 0]
    ds.PixelData = (data[0] if frames == 1 else data).tobytes()


def make_us_image(
    photometric: str = "MONOCHROME2",
    frames: int | None = None,
    regions: bool = True,
    rows: int = 120,
    columns: int = 160,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID-1",
    japanese: bool = False,
    body_part: str = "ABDOMEN",
) -> Dataset:
    """A synthetic US image that passes dciodvfy.

    ``frames=None`` makes a single-frame US Image; an int a US Multi-frame.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    multiframe = frames is not None
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if multiframe else UltrasoundImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if japanese:
        ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
        ds.PatientName = JAPANESE_NAME
    else:
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20260101"
    ds.StudyTime = "101010"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "US"
    ds.SeriesInstanceUID = study_uid + ".1"
    ds.SeriesNumber = 1
    ds.Manufacturer = "Synthetic"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.ContentDate = "20260101"
    ds.ContentTime = "101010"
    ds.Rows = rows
    ds.Columns = columns
    if regions:
        ds.SequenceOfUltrasoundRegions = [_region(rows, columns)]
    if multiframe:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 33.3
    _set_pixels(ds, photometric, frames or 1)
    return ds


def make_lesion(
    source: Dataset,
    box: BoundingBox,
    frames: Sequence[int] = (1,),
    index: int = 1,
    anatomy: AnatomyValues = AnatomyValues.LIVER,
    contour: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
) -> LesionFinding:
    """A lesion on ``source`` with a fixed class distribution."""
    classes = LIVER_CLASSES if anatomy is AnatomyValues.LIVER else BREAST_CLASSES
    probabilities = dict(zip(classes, (0.55, 0.25, 0.15, 0.05), strict=True))
    observations = [
        LesionObservation(
            frame_number=frame,
            box=box,
            score=0.9 if i == len(frames) // 2 else 0.6,
            contour=contour if i == len(frames) // 2 else None,
        )
        for i, frame in enumerate(frames)
    ]
    return LesionFinding(
        tracking_id=f"Lesion {index}",
        tracking_uid=generate_uid(),
        anatomy=anatomy,
        label=classes[0],
        probabilities=probabilities,
        malignancy_probability=0.8,
        source_sop_instance_uid=source.SOPInstanceUID,
        observations=observations,
        mask=mask,
        heatmap=heatmap,
    )


def make_cardiac(source: Dataset, with_masks: bool = True) -> CardiacFinding:
    """An echo EF finding on frames 2 (ED) and 4 (ES) of ``source``."""
    ed_mask = np.zeros((source.Rows, source.Columns), dtype=bool)
    ed_mask[30:90, 50:100] = True
    es_mask = np.zeros_like(ed_mask)
    es_mask[40:80, 60:90] = True
    return CardiacFinding(
        tracking_id="Left ventricle",
        tracking_uid=generate_uid(),
        source_sop_instance_uid=source.SOPInstanceUID,
        ejection_fraction_percent=55.5,
        end_diastolic_volume_ml=120.0,
        end_systolic_volume_ml=53.4,
        end_diastolic_frame=2,
        end_systolic_frame=4,
        end_diastolic_mask=ed_mask if with_masks else None,
        end_systolic_mask=es_mask if with_masks else None,
    )


def study_of(*images: ImageResult, source: Dataset) -> StudyResult:
    """A StudyResult of ``images`` in the study of ``source``."""
    return StudyResult(study_instance_uid=source.StudyInstanceUID, images=list(images))


def analysed(
    source: Dataset,
    lesions: Sequence[LesionFinding] = (),
    anatomy: AnatomyValues = AnatomyValues.LIVER,
    algorithm: AlgorithmInfo = ALGORITHM,
) -> ImageResult:
    """An ImageResult of an analysed image."""
    return ImageResult(
        source_sop_instance_uid=source.SOPInstanceUID,
        anatomy=anatomy,
        algorithm=algorithm,
        lesions=list(lesions),
    )


def save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file (with file meta) to ``path``."""
    ds.save_as(path, enforce_file_format=True)
    return path


def write_and_read(ds: Dataset, tmp_path: Path) -> Dataset:
    """Write ``ds`` as a DICOM file and read it back."""
    return pydicom.dcmread(save(ds, tmp_path / f"{ds.SOPInstanceUID}-rt.dcm"))
