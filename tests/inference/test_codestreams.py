"""Sizes that compressed frames declare are read as their decoders read them."""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    generate_uid,
)

from inference.codestreams import declared_size

ARR = np.random.default_rng(7).integers(0, 256, size=(2, 48, 80), dtype=np.uint8)


def _pillow_jpeg(rows: int, columns: int, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((rows, columns), np.uint8)).save(buffer, "JPEG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"dpi": (72, 72)},
                                     {"comment": b"x" * 300}])
def test_jpeg_frames(options: dict[str, object]) -> None:
    assert declared_size(_pillow_jpeg(37, 53, **options)) == (37, 53)


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless,
                                    JPEG2000])
def test_frames_encoded_by_pydicom(syntax: UID) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    ds.set_pixel_data(ARR, "MONOCHROME2", 8)
    options: dict[str, object] = {JPEGLSNearLossless: {"jls_error": 2},
                                  JPEG2000: {"j2k_psnr": [60]}}.get(syntax, {})
    ds.compress(syntax, **options)
    frames = list(generate_frames(ds.PixelData, number_of_frames=2))
    assert [declared_size(frame) for frame in frames] == [(48, 80), (48, 80)]


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("SC_rgb_jpeg_gdcm.dcm", (100, 100)),  # JPEG lossless
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", (100, 100)),  # JPEG baseline
        ("JPEG2000.dcm", (1024, 256)),
        ("MR_small_jpeg_ls_lossless.dcm", (64, 64)),
    ],
)
def test_vendor_frames(name: str, size: tuple[int, int]) -> None:
    ds = pydicom.dcmread(get_testdata_file(name, download=False))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert declared_size(frame) == size == (ds.Rows, ds.Columns)


def test_a_jp2_file_is_read_through_its_boxes() -> None:
    codestream = b"\xff\x4f\xff\x51" + struct.pack(">HHIIII", 41, 0, 640, 480, 0, 0)
    box = struct.pack(">I", 8 + len(codestream)) + b"jp2c" + codestream
    jp2 = b"\x00\x00\x00\x0c\x6a\x50\x20\x20\x0d\x0a\x87\x0a" + box
    assert declared_size(jp2) == (480, 640)


def test_a_jpeg_2000_image_offset_is_taken_off() -> None:
    codestream = b"\xff\x4f\xff\x51" + struct.pack(">HHIIII", 41, 0, 650, 490, 10, 10)
    assert declared_size(codestream) == (480, 640)


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\xff\xd8", b"\xff\xd8\xff\xe0\x00", b"\xff\xd8\x00\x00\x00\x00",
     b"\xff\xd8\xff\xe0\x00\x01\x00\x00", b"\xff\x4f\xff\x51\x00", _pillow_jpeg(8, 8)[:20]],
    ids=["empty", "garbage", "soi-only", "cut-segment", "no-marker", "short-length",
         "short-siz", "cut-jpeg"],
)
def test_unreadable_headers_declare_nothing(data: bytes) -> None:
    assert declared_size(data) is None
