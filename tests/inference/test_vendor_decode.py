"""What the analysis path makes of every real vendor ultrasound file pydicom ships.

The integration test (tests/dicom_node/test_vendor_files.py) checks that each file is
received and analysed or reported; this one pins what decoding and the quality gate
conclude, so that a wrong but plausible decode (a palette read with the wrong byte
order, YCbCr taken for RGB) turns into a failure instead of another "not assessed".
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydicom import dcmread

from inference.preprocessing import image_input_from_dataset
from inference.quality import check_quality
from tests.dicom_node.test_vendor_files import ultrasound_files

VERDICTS: dict[str, str | None] = {
    # B-mode images the engines get.
    "examples_palette.dcm": None,
    "examples_ybr_color.dcm": None,  # 30-frame JPEG baseline YBR_FULL_422
    "JPGLosslessP14SV1_1s_1f_8b.dcm": None,
    "color3d_jpeg_baseline.dcm": None,  # 120 frames
    "gdcm-US-ALOKA-16.dcm": None,  # 16-bit palette
    "gdcm-US-ALOKA-16_big.dcm": None,  # the same, big endian
    # Power Doppler of a lymph node (GE), in every encoding pydicom ships it in.
    "examples_jpeg2k.dcm": "non_bmode",
    "examples_rgb_color.dcm": "non_bmode",
    "US1_J2KI.dcm": "non_bmode",
    "US1_J2KR.dcm": "non_bmode",
    "US1_UNCI.dcm": "non_bmode",
    "US1_UNCR.dcm": "non_bmode",
    "color-pl.dcm": "non_bmode",  # planar configuration 1
    "color-px.dcm": "non_bmode",
    "ExplVR_BigEnd.dcm": "non_bmode",  # a colour test pattern
    # A Philips OB screen whose sector is nearly all black; its 2-frame copies have a
    # colour overlay on the second frame.  Little and big endian and RLE read the same.
    "OBXXXX1A.dcm": "image_quality",
    "OBXXXX1A_expb.dcm": "image_quality",
    "OBXXXX1A_rle.dcm": "image_quality",
    "OBXXXX1A_2frame.dcm": "non_bmode",
    "OBXXXX1A_expb_2frame.dcm": "non_bmode",
    "OBXXXX1A_rle_2frame.dcm": "non_bmode",
}
"""The quality gate's reason for each file, ``None`` for an image analysed."""


@pytest.mark.parametrize("path", ultrasound_files(), ids=lambda p: p.name)
def test_every_vendor_file_decodes_to_its_verdict(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path)
    image = image_input_from_dataset(ds)
    verdict = check_quality(image)
    assert path.name in VERDICTS, f"a new US file in pydicom's data: {path.name}"
    assert (verdict.reason.value if verdict else None) == VERDICTS[path.name], (
        verdict.detail if verdict else "analysed")
    assert image.frames.max() > 100  # not decoded dark
