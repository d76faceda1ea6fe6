"""Phantom echo cines as DICOM US Multi-frame data sets, for the cardiac tests."""

from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from inference.phantoms.echo import EchoCine


def echo_dataset(cine: EchoCine, *, regions: bool, description: str) -> Dataset:
    """A US Multi-frame dataset of ``cine``, with or without its region calibration."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[description, str(regions)])
    ds.Modality = "US"
    ds.StudyDescription = description
    ds.FrameTime = cine.frame_time_ms
    ds.set_pixel_data(cine.frames, "MONOCHROME2", 8)
    if regions:
        x0, y0, x1, y1 = cine.scan_box
        region = Dataset()
        region.RegionSpatialFormat = 1
        region.RegionDataType = 1
        region.RegionFlags = 0
        region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1 - 1, y1 - 1
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX = region.PhysicalDeltaY = cine.pixel_mm / 10.0
        ds.SequenceOfUltrasoundRegions = [region]
    return ds
