"""Tests of inference.preprocessing: decoding, grayscale conversion, tags, scan area."""

from __future__ import annotations

import copy
import dataclasses
import io
import struct
import tracemalloc
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import examples
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, convert_color_space
from pydicom.tag import Tag
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    MPEG2MPML,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from inference import preprocessing
from inference.engines.base import ImageInput
from inference.findings import AnatomyValues, BoundingBox, NotAssessedReasonValues
from inference.geometry import ImageGeometry, UltrasoundRegion, box_size_mm, regions_from_dataset
from inference.phantoms.generator import generate
from inference.preprocessing import (
    LUMA_WEIGHTS,
    PixelDataError,
    find_scan_area,
    frame_time_ms,
    image_input_from_dataset,
    image_scan_mask,
    scan_area,
    scan_areas,
    tag_anatomy,
)
from inference.quality import check_quality

RNG = np.random.default_rng(1234)
RGB = RNG.integers(0, 256, size=(3, 64, 80, 3), dtype=np.uint8)
"""Random RGB cine used by the colour tests."""
LUMA = RGB.astype(np.float64) @ LUMA_WEIGHTS.astype(np.float64)


def _dataset(arr: np.ndarray, photometric: str, bits: int = 8) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.set_pixel_data(arr, photometric, bits)
    return ds


def _local(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file(name, download=False))


def _assert_luma(ds: Dataset, tolerance: float) -> None:
    image = image_input_from_dataset(ds)
    assert image.frames.dtype == np.uint8
    assert image.frames.shape == LUMA.shape
    assert np.abs(image.frames.astype(np.float64) - LUMA).max() <= tolerance
    assert image.color_fraction > 0.5


def test_monochrome2_8bit_multiframe_is_kept_as_is() -> None:
    arr = RNG.integers(0, 256, size=(4, 32, 40), dtype=np.uint8)
    image = image_input_from_dataset(_dataset(arr, "MONOCHROME2"))
    assert image.frames.shape == (4, 32, 40)
    np.testing.assert_array_equal(image.frames, arr)
    assert image.color_fraction == 0.0


def test_single_frame_gets_a_frame_axis() -> None:
    arr = RNG.integers(0, 256, size=(32, 40), dtype=np.uint8)
    image = image_input_from_dataset(_dataset(arr, "MONOCHROME2"))
    assert image.frames.shape == (1, 32, 40)
    assert image.number_of_frames == 1


def test_monochrome1_is_inverted() -> None:
    arr = RNG.integers(0, 256, size=(32, 40), dtype=np.uint8)
    image = image_input_from_dataset(_dataset(arr, "MONOCHROME1"))
    np.testing.assert_array_equal(image.frames[0], 255 - arr)


def test_monochrome_16bit_window_maps_to_8bit() -> None:
    arr = np.array([[0, 1000, 1500, 2000, 4095]], dtype=np.uint16)
    ds = _dataset(arr, "MONOCHROME2", bits=12)
    ds.WindowCenter = 1500
    ds.WindowWidth = 1001
    frames = image_input_from_dataset(ds).frames[0, 0]
    assert frames[0] == 0 and frames[1] == 0
    assert abs(int(frames[2]) - 128) <= 1
    assert frames[3] == 255 and frames[4] == 255


def test_monochrome_16bit_without_window_is_stretched() -> None:
    arr = np.array([[100, 300, 500]], dtype=np.uint16)
    ds = _dataset(arr, "MONOCHROME2", bits=16)
    np.testing.assert_array_equal(image_input_from_dataset(ds).frames[0, 0], [0, 128, 255])


def test_monochrome_rescale_and_voi_lut_sequence() -> None:
    arr = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    ds = _dataset(arr, "MONOCHROME2", bits=16)
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.LUTData = [0, 255, 100, 50]
    ds.VOILUTSequence = [item]
    np.testing.assert_array_equal(image_input_from_dataset(ds).frames[0, 0], [0, 255, 100, 50])


def test_rgb_native_both_planar_configurations() -> None:
    _assert_luma(_dataset(RGB, "RGB"), tolerance=0.51)
    planar = _dataset(RGB, "RGB")
    planar.PlanarConfiguration = 1
    planar.PixelData = np.ascontiguousarray(RGB.transpose(0, 3, 1, 2)).tobytes()
    _assert_luma(planar, tolerance=0.51)


def test_rgb_16bit_is_scaled_to_8bit() -> None:
    ds = _dataset(RGB.astype(np.uint16) * 257, "RGB", bits=16)
    _assert_luma(ds, tolerance=1.0)


def test_ybr_full_native_uses_luma() -> None:
    ybr = convert_color_space(RGB, "RGB", "YBR_FULL")
    _assert_luma(_dataset(ybr, "YBR_FULL"), tolerance=1.0)


def test_ybr_full_422_native_is_upsampled() -> None:
    ybr = convert_color_space(RGB, "RGB", "YBR_FULL")
    ds = _dataset(ybr, "YBR_FULL")
    # 4:2:2 byte order: Y1 Y2 Cb Cr per pair of pixels, Cb/Cr of the first pixel.
    pairs = ybr.reshape(3, 64, 40, 2, 3)
    packed = np.stack(
        [pairs[..., 0, 0], pairs[..., 1, 0], pairs[..., 0, 1], pairs[..., 0, 2]], axis=-1
    )
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = packed.tobytes()
    image = image_input_from_dataset(ds)
    np.testing.assert_array_equal(image.frames, ybr[..., 0])


def test_ybr_partial_luma_is_stretched_from_video_range() -> None:
    ybr = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    ybr[..., 0] = 16
    ybr[0, :, 4:, 0] = 235
    ybr[..., 1:] = 128
    ds = _dataset(ybr, "YBR_FULL")
    ds.PhotometricInterpretation = "YBR_PARTIAL_422"
    ds.PixelData = ybr.tobytes()
    frame = image_input_from_dataset(ds).frames[0]
    assert frame[:, :4].max() == 0 and frame[:, 4:].min() == 255


TINTS = {"sepia": (1.0, 0.86, 0.68), "blue": (0.75, 0.88, 1.0)}
"""Scanner tint maps: B-mode grey levels shown as shades of one pale colour."""


@pytest.fixture(scope="module")
def liver_frame() -> np.ndarray:
    return generate("liver", 3, rows=240, cols=320).frames[0]


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _tinted(grey: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    return _to_uint8(grey[..., None].astype(np.float64) * np.array(tint))


def _flow_overlay(grey_rgb: np.ndarray, share: float) -> np.ndarray:
    """Colour Doppler: red and blue flow of varying brightness over ``share`` of
    the visible pixels, a band at the top of the scan area."""
    out = grey_rgb.copy()
    visible = np.argwhere(grey_rgb.max(axis=-1) > 10)
    rows, cols = visible[: int(share * len(visible))].T
    brightness = 0.4 + 0.6 * (rows % 7)[:, None] / 6
    toward = np.where((cols // 16 % 2 == 0)[:, None], [255, 40, 0], [0, 60, 255])
    out[rows, cols] = _to_uint8(toward * brightness)
    return out


def _as_photometric(rgb: np.ndarray, photometric: str) -> Dataset:
    if photometric == "RGB":
        return _dataset(rgb[None], "RGB")
    ybr = convert_color_space(rgb[None], "RGB", "YBR_FULL")
    if photometric == "YBR_FULL":
        return _dataset(ybr, "YBR_FULL")
    video = ybr.astype(np.float64)
    video[..., 0] = video[..., 0] * (219.0 / 255.0) + 16.0
    video[..., 1:] = (video[..., 1:] - 128.0) * (224.0 / 255.0) + 128.0
    ds = _dataset(ybr, "YBR_FULL")
    ds.PhotometricInterpretation = "YBR_PARTIAL_422"
    ds.PixelData = _to_uint8(video).tobytes()
    return ds


@pytest.mark.parametrize("tint", TINTS)
@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL", "YBR_PARTIAL_422"])
def test_a_tinted_b_mode_image_is_not_taken_for_colour_doppler(
        liver_frame: np.ndarray, tint: str, photometric: str) -> None:
    image = image_input_from_dataset(_as_photometric(_tinted(liver_frame, TINTS[tint]),
                                                     photometric))
    assert image.color_fraction < 0.01
    assert check_quality(image) is None


@pytest.mark.parametrize("tint", [None, "sepia"])
@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_flow_counts_on_grey_and_tinted_b_mode(
        liver_frame: np.ndarray, tint: str | None, photometric: str) -> None:
    base = _tinted(liver_frame, TINTS[tint] if tint else (1.0, 1.0, 1.0))
    flow = _flow_overlay(base, 0.1)
    image = image_input_from_dataset(_as_photometric(flow, photometric))
    assert 0.08 <= image.color_fraction <= 0.11
    verdict = check_quality(image)
    assert verdict is not None and verdict.reason is NotAssessedReasonValues.NON_BMODE


@pytest.mark.parametrize("name", ["jpeg2k", "rgb_color"])
def test_real_power_doppler_screens_are_not_assessed(name: str) -> None:
    # pydicom's examples of a GE scanner's power Doppler of a lymph node
    # (JPEG 2000 YBR_RCT, and native RGB): orange flow on 11-12 % of the image.
    image = image_input_from_dataset(getattr(examples, name))
    assert image.color_fraction > 0.08
    verdict = check_quality(image)
    assert verdict is not None and verdict.reason is NotAssessedReasonValues.NON_BMODE


def _b_mode_region(x0: int, y0: int, x1: int, y1: int) -> Dataset:
    """A calibrated 2D tissue item of the Sequence of Ultrasound Regions (0.3 mm pixels)."""
    region = Dataset()
    region.RegionSpatialFormat = region.RegionDataType = 1
    region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1, y1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.03
    return region


def test_colour_is_measured_in_the_b_mode_region(liver_frame: np.ndarray) -> None:
    screen = np.repeat(liver_frame[..., None], 3, axis=-1)
    screen[:40] = (0, 60, 200)  # a vendor's banner over the top of the image
    ds = _dataset(screen[None], "RGB")
    assert image_input_from_dataset(ds).color_fraction > 0.2
    ds.SequenceOfUltrasoundRegions = [_b_mode_region(0, 40, 319, 239)]
    image = image_input_from_dataset(ds)
    assert image.color_fraction < 0.01
    assert image.geometry.regions[0].spatial_format == 1


def test_colour_in_any_view_of_a_dual_display_counts(liver_frame: np.ndarray) -> None:
    # B-mode on the left, and on the right a smaller view under a colour map (as
    # elastography shows): the engines would analyse both views, so both are measured.
    screen = np.zeros((240, 660, 3), np.uint8)
    screen[:, :320] = liver_frame[..., None]
    screen[:, 340:640] = _flow_overlay(np.repeat(liver_frame[:, :300, None], 3, axis=-1), 0.6)
    ds = _dataset(screen[None], "RGB")
    ds.SequenceOfUltrasoundRegions = [_b_mode_region(0, 0, 319, 239),
                                      _b_mode_region(340, 0, 639, 239)]
    image = image_input_from_dataset(ds)
    assert len(scan_areas(image)) == 2
    verdict = check_quality(image)
    assert verdict is not None and verdict.reason is NotAssessedReasonValues.NON_BMODE


def test_a_saturated_overlay_outnumbering_its_grey_levels_still_counts(
        liver_frame: np.ndarray) -> None:
    # One flat colour on 40 % of the image: at its brightness it is the majority,
    # but too saturated to be a tint map.
    grey = np.repeat(liver_frame[..., None], 3, axis=-1)
    visible = np.argwhere(liver_frame > 10)
    overlay = grey.copy()
    share = visible[: int(0.4 * len(visible))]
    overlay[share[:, 0], share[:, 1]] = (200, 0, 0)
    image = image_input_from_dataset(_dataset(overlay[None], "RGB"))
    assert image.color_fraction >= 0.38


@pytest.mark.parametrize("planar", [0, 1])
@pytest.mark.parametrize(
    ("syntax", "options", "relabel", "tolerance"),
    [
        (RLELossless, {}, None, 0.51),
        (JPEGLSLossless, {}, None, 0.51),
        (JPEG2000Lossless, {}, "YBR_RCT", 0.51),
        (JPEG2000, {"j2k_psnr": [90]}, "YBR_ICT", 2.0),
    ],
)
def test_compressed_rgb(
    syntax: UID, options: dict[str, object], relabel: str | None, tolerance: float,
    planar: int,
) -> None:
    ds = _dataset(RGB, "RGB")
    ds.compress(syntax, **options)
    if relabel is not None:
        # openjpeg applied the multi-component transform: label it as a writer must.
        ds.PhotometricInterpretation = relabel
    if syntax != RLELossless:
        # Irrelevant to compressed data (PS3.5 8.2); vendors write 1 all the same.
        ds.PlanarConfiguration = planar
    _assert_luma(ds, tolerance)


def _pillow_jpeg(frames: np.ndarray, mode: str, subsampling: int) -> list[bytes]:
    out = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame, mode=mode).save(
            buffer, format="JPEG", quality=95, subsampling=subsampling
        )
        out.append(buffer.getvalue())
    return out


def _jpeg_dataset(frames: np.ndarray, codestreams: list[bytes], photometric: str) -> Dataset:
    ds = _dataset(frames, "RGB")
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PhotometricInterpretation = photometric
    ds.PixelData = encapsulate(codestreams)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


SMOOTH = np.repeat(np.repeat(RGB[:, ::4, ::4], 4, axis=1), 4, axis=2)
"""Colour frames smooth enough for lossy JPEG to keep their luma within 2 levels."""


@pytest.mark.parametrize("planar", [0, 1])
@pytest.mark.parametrize(("photometric", "subsampling"), [("YBR_FULL_422", 1), ("YBR_FULL", 0)])
def test_jpeg_baseline_ybr(photometric: str, subsampling: int, planar: int) -> None:
    ds = _jpeg_dataset(SMOOTH, _pillow_jpeg(SMOOTH, "RGB", subsampling), photometric)
    ds.PlanarConfiguration = planar  # ignored for JPEG (PS3.5 8.2.1); vendors write 1 too
    image = image_input_from_dataset(ds)
    expected = SMOOTH.astype(np.float64) @ LUMA_WEIGHTS.astype(np.float64)
    assert image.frames.shape == (3, 64, 80)
    assert np.abs(image.frames - expected).mean() < 2.0
    assert image.color_fraction > 0.3


def _without_jfif(codestream: bytes) -> bytes:
    assert codestream[2:4] == b"\xff\xe0"
    (length,) = struct.unpack(">H", codestream[4:6])
    return codestream[:2] + codestream[4 + length:]


def _rgb_coded(frame: np.ndarray) -> bytes:
    """A JPEG of ``frame`` coded as RGB (Adobe transform 0), component ids 1, 2, 3."""
    buffer = io.BytesIO()
    Image.fromarray(frame, mode="RGB").save(buffer, format="JPEG", quality=95, keep_rgb=True)
    data = bytearray(buffer.getvalue())
    for marker in (b"\xff\xc0", b"\xff\xda"):
        at = data.index(marker)
        first = at + (10 if marker == b"\xff\xc0" else 5)
        for i in range(3):
            data[first + (3 if marker == b"\xff\xc0" else 2) * i] = i + 1
    return bytes(data)


@pytest.mark.parametrize(
    ("label", "coding"),
    [("RGB", "YCbCr without JFIF"), ("YBR_FULL_422", "RGB, Adobe transform 0")],
)
def test_jpeg_colour_space_comes_from_the_codestream(
    liver_frame: np.ndarray, label: str, coding: str
) -> None:
    grey = np.repeat(liver_frame[None, :, :, None], 3, axis=3)
    grey[:, 40:60, 50:90] = (200, 40, 40)  # a red patch: a colour the luma must see
    if coding.startswith("RGB"):
        codestreams = [_rgb_coded(frame) for frame in grey]
    else:
        codestreams = [_without_jfif(c) for c in _pillow_jpeg(grey, "RGB", 0)]
    image = image_input_from_dataset(_jpeg_dataset(grey, codestreams, label))
    expected = grey.astype(np.float64) @ LUMA_WEIGHTS.astype(np.float64)
    assert np.abs(image.frames - expected).mean() < 2.0
    assert image.color_fraction < 0.04  # the patch only: B-mode, not colour Doppler


def test_jpeg_baseline_monochrome_cine() -> None:
    gray = np.repeat(np.repeat(LUMA.astype(np.uint8)[:, ::4, ::4], 4, axis=1), 4, axis=2)
    ds = _dataset(gray, "MONOCHROME2")
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate(_pillow_jpeg(gray, "L", 0))
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    image = image_input_from_dataset(ds)
    assert np.abs(image.frames.astype(np.float64) - gray).mean() < 2.0


def test_deflated_roundtrip(tmp_path) -> None:
    arr = RNG.integers(0, 256, size=(2, 32, 40), dtype=np.uint8)
    ds = _dataset(arr, "MONOCHROME2")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    image = image_input_from_dataset(pydicom.dcmread(path))
    np.testing.assert_array_equal(image.frames, arr)


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless, RGB
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG baseline, YBR_FULL_422
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
        "SC_rgb_jpeg.dcm",  # JPEG baseline, RGB (no colour transform)
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_rle_2frame.dcm",
    ],
)
def test_pydicom_colour_files_match_rgb_luma(name: str) -> None:
    ds = _local(name)
    rgb = ds.pixel_array  # pydicom converts YBR to RGB by default
    expected = rgb.reshape((-1, *rgb.shape[-3:])).astype(np.float64) @ LUMA_WEIGHTS
    image = image_input_from_dataset(ds)
    assert image.frames.shape == expected.shape
    # YBR -> RGB clips saturated colours, so the luma differs slightly there.
    assert np.abs(image.frames - expected).mean() < 1.5


def test_pydicom_examples() -> None:
    palette = examples.palette_color
    expected = apply_color_lut(palette.pixel_array, palette).astype(np.float64) / 65535 * 255
    image = image_input_from_dataset(palette)
    assert image.frames.shape == (1, palette.Rows, palette.Columns)
    assert np.abs(image.frames[0] - expected @ LUMA_WEIGHTS).max() <= 1.0
    # A Philips B-mode screen with a blue banner above its B-mode region: the
    # banner is most of the visible pixels, but colour is measured in the region
    # (where a blue logo and the grey bar's blue marks are 2 % of it).
    assert image.color_fraction < 0.03
    assert check_quality(image) is None

    ybr = image_input_from_dataset(examples.ybr_color)
    assert ybr.frames.shape == (30, 240, 320)
    rgb = examples.rgb_color
    assert image_input_from_dataset(rgb).frames.shape == (1, 240, 320)
    j2k = examples.jpeg2k
    assert j2k.PhotometricInterpretation == "YBR_RCT"
    expected = j2k.pixel_array.astype(np.float64) @ LUMA_WEIGHTS
    assert np.abs(image_input_from_dataset(j2k).frames[0] - expected).max() <= 0.5


def test_big_endian_palette_decodes_as_little_endian() -> None:
    little = image_input_from_dataset(_local("OBXXXX1A.dcm")).frames
    big = image_input_from_dataset(_local("OBXXXX1A_expb.dcm")).frames
    assert little.max() > 200
    np.testing.assert_array_equal(big, little)


def test_three_samples_under_a_monochrome_label_are_read_as_rgb() -> None:
    ds = _dataset(RGB, "RGB")
    ds.PhotometricInterpretation = "MONOCHROME2"
    _assert_luma(ds, 0.51)


def test_native_full_size_data_labelled_ybr_full_422() -> None:
    ds = _dataset(convert_color_space(RGB, "RGB", "YBR_FULL"), "YBR_FULL")
    ds.PhotometricInterpretation = "YBR_FULL_422"  # but every chroma sample is there
    frames = image_input_from_dataset(ds).frames
    assert np.abs(frames.astype(np.float64) - LUMA).max() <= 1.0


def test_monochrome_of_fewer_than_8_bits_is_scaled() -> None:
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8)
    ds = _dataset(arr, "MONOCHROME2")
    ds.BitsStored, ds.HighBit = 6, 5
    frame = image_input_from_dataset(ds).frames[0]
    assert frame.min() == 0 and frame.max() == 255


def test_a_cine_without_number_of_frames_is_refused_with_the_reason() -> None:
    ds = _dataset(RGB, "RGB")
    del ds.NumberOfFrames
    with pytest.raises(PixelDataError, match="holds 3 frames, but Number of Frames"):
        image_input_from_dataset(ds)


def test_a_j2k_codestream_under_the_htj2k_syntax_decodes() -> None:
    ds = _dataset(RGB, "RGB")
    ds.compress(JPEG2000Lossless)
    ds.file_meta.TransferSyntaxUID = HTJ2K  # a Part 1 codestream is valid HTJ2K
    ds.PhotometricInterpretation = "YBR_RCT"
    _assert_luma(ds, 0.51)


@pytest.mark.parametrize("delta", [float("inf"), 1e307, 50.0])
def test_an_implausible_physical_delta_gives_no_mm(delta: float) -> None:
    ds = _dataset(RGB, "RGB")
    region = _b_mode_region(0, 0, 79, 63)
    region.PhysicalDeltaX = delta
    ds.SequenceOfUltrasoundRegions = [region]
    (read,) = regions_from_dataset(ds)
    assert read.delta_x_mm is None and read.delta_y_mm == pytest.approx(0.3)
    assert box_size_mm([read], BoundingBox(0, 0, 10, 10)) is None


def test_a_16_bit_cine_is_mapped_without_float_copies_of_all_its_frames() -> None:
    stored = RNG.integers(0, 4096, (20, 120, 160), dtype=np.uint16)
    ds = _dataset(stored, "MONOCHROME2", 12)
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    tracemalloc.start()
    try:
        frames = image_input_from_dataset(ds).frames
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert frames.shape == stored.shape
    assert peak < 3 * stored.nbytes  # a float64 copy of the cine alone is 4x


def test_palette_with_8bit_entries() -> None:
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ds = _dataset(arr, "MONOCHROME2")
    ds.PhotometricInterpretation = "PALETTE COLOR"
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 8])
    ramp = np.arange(256, dtype=np.uint16)
    ds.RedPaletteColorLookupTableData = ramp.tobytes()
    ds.GreenPaletteColorLookupTableData = ramp.tobytes()
    ds.BluePaletteColorLookupTableData = ramp.tobytes()
    frame = image_input_from_dataset(ds).frames[0]
    np.testing.assert_array_equal(frame, arr)


def test_undecodable_and_inconsistent_pixel_data() -> None:
    with pytest.raises(PixelDataError, match="JPEG Extended"):
        image_input_from_dataset(_local("JPEG-lossy.dcm"))
    truncated = _dataset(RNG.integers(0, 256, (2, 32, 40), dtype=np.uint8), "MONOCHROME2")
    truncated.PixelData = truncated.PixelData[:100]
    with pytest.raises(PixelDataError):
        image_input_from_dataset(truncated)
    no_pixels = _dataset(np.zeros((4, 4), np.uint8), "MONOCHROME2")
    del no_pixels.PixelData
    with pytest.raises(PixelDataError, match="no Pixel Data"):
        image_input_from_dataset(no_pixels)
    video = _dataset(np.zeros((4, 4, 3), np.uint8), "RGB")
    video.file_meta.TransferSyntaxUID = MPEG2MPML
    video.PhotometricInterpretation = "YBR_PARTIAL_420"
    video.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    with pytest.raises(PixelDataError, match="video stream"):
        image_input_from_dataset(video)
    assert issubclass(PixelDataError, ValueError)


def _jpeg_claiming(rows: int, columns: int) -> Dataset:
    """A 48x64 JPEG still whose frame header claims ``rows`` x ``columns``."""
    gray = np.zeros((1, 48, 64), np.uint8)
    ds = _dataset(gray, "MONOCHROME2")
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    jpeg = bytearray(_pillow_jpeg(gray, "L", 0)[0])
    struct.pack_into(">HH", jpeg, jpeg.index(b"\xff\xc0") + 5, rows, columns)
    ds.PixelData = encapsulate([bytes(jpeg)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def test_a_frame_header_claiming_another_size_is_refused_before_decoding() -> None:
    # Before, the decoder allocated what the header claimed: 20000 x 20000 took 3.5 GB.
    assert image_input_from_dataset(_jpeg_claiming(48, 64)).frames.shape == (1, 48, 64)
    for rows, columns in ((20000, 20000), (48, 65), (47, 64)):
        with pytest.raises(PixelDataError, match=f"declares {rows}x{columns} pixels"):
            image_input_from_dataset(_jpeg_claiming(rows, columns))


def test_pixel_data_beyond_the_decoded_limit_is_refused(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    ds = _dataset(RGB, "RGB")
    assert image_input_from_dataset(ds).frames.shape == (3, 64, 80)
    monkeypatch.setattr(preprocessing, "MAX_DECODED_BYTES", RGB.nbytes - 1)
    with pytest.raises(PixelDataError, match="beyond the"):
        image_input_from_dataset(ds)


def test_frame_time_and_body_part() -> None:
    ds = _dataset(np.zeros((3, 8, 8), np.uint8), "MONOCHROME2")
    assert frame_time_ms(ds) is None
    ds.FrameTimeVector = [0, 20, 20]
    assert frame_time_ms(ds) == pytest.approx(20.0)
    ds.FrameTime = 33.3
    assert frame_time_ms(ds) == pytest.approx(33.3)
    ds.BodyPartExamined = "LIVER "
    image = image_input_from_dataset(ds)
    assert image.body_part == "LIVER"
    assert image.frame_time_ms == pytest.approx(33.3)
    assert image.tag_anatomy is AnatomyValues.LIVER


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"BodyPartExamined": "ABDOMEN"}, AnatomyValues.LIVER),
        ({"StudyDescription": "US Breast left"}, AnatomyValues.BREAST),
        ({"SeriesDescription": "Echocardiography TTE"}, AnatomyValues.HEART),
        ({"ProtocolName": "ECHO A4C"}, AnatomyValues.HEART),
        ({"ImageType": ["ORIGINAL", "PRIMARY", "ABDOMINAL"]}, AnatomyValues.LIVER),
        ({"ImageType": ["ORIGINAL", "PRIMARY", "TTE"]}, AnatomyValues.HEART),
        ({"BodyPartExamined": "HEART", "StudyDescription": "Breast"}, AnatomyValues.HEART),
        ({"BodyPartExamined": "LIVER", "StudyDescription": "US ABDOMEN + ECHO"},
         AnatomyValues.LIVER),
        ({"BodyPartExamined": "HEART", "ImageType": ["ORIGINAL", "PRIMARY", "ABDOMINAL"]},
         None),
        ({"SeriesDescription": "Breast left", "StudyDescription": "Liver and breast"},
         AnatomyValues.BREAST),
        ({"StudyDescription": "Écho sein droit"}, AnatomyValues.BREAST),
        ({"StudyDescription": "Echo lever"}, AnatomyValues.LIVER),
        ({"StudyDescription": "ECHO BOVENBUIK"}, AnatomyValues.LIVER),
        ({"StudyDescription": "Echo mammae links"}, AnatomyValues.BREAST),
        ({"StudyDescription": "ECHO"}, None),
        ({"StudyDescription": "Echo abdomen"}, AnatomyValues.LIVER),
        ({"StudyDescription": "Echogenic focus"}, None),
        ({"StudyDescription": "US thyroid"}, None),
        ({"StudyDescription": "Sonographie Oberbauch"}, AnatomyValues.LIVER),
        ({"StudyDescription": "Échographie abdominale"}, AnatomyValues.LIVER),
        ({"SeriesDescription": "Ecografía hígado"}, AnatomyValues.LIVER),
        ({"StudyDescription": "Mamma-Sonographie rechts"}, AnatomyValues.BREAST),
        ({"StudyDescription": "Échographie mammaire"}, AnatomyValues.BREAST),
        ({"StudyDescription": "Ecografia mamaria"}, AnatomyValues.BREAST),
        ({"StudyDescription": "Echokardiographie"}, AnatomyValues.HEART),
        ({"StudyDescription": "Ecocardiograma transtorácico"}, AnatomyValues.HEART),
        ({"StudyDescription": "Échographie cardiaque"}, AnatomyValues.HEART),
        ({"StudyDescription": "Ecografía tiroides"}, None),
        ({"SeriesDescription": "FETAL HEART"}, AnatomyValues.OTHER),
        ({"BodyPartExamined": "HEART", "StudyDescription": "US OB 2nd trimester"},
         AnatomyValues.OTHER),
        ({"StudyDescription": "Fötale Echokardiographie"}, AnatomyValues.OTHER),
        ({"StudyDescription": "Ecografía obstétrica"}, AnatomyValues.OTHER),
        ({"StudyDescription": "Echo zwangerschap"}, AnatomyValues.OTHER),
        ({"ProtocolName": "Foetal abdomen"}, AnatomyValues.OTHER),
        ({"StudyDescription": "Obere Bauchorgane"}, None),
        ({}, None),
    ],
)
def test_tag_anatomy(tags: dict[str, object], expected: AnatomyValues | None) -> None:
    ds = Dataset()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    assert tag_anatomy(ds) is expected


def _sector_with_text(rows: int = 300, cols: int = 400) -> np.ndarray:
    frame = np.zeros((rows, cols), dtype=np.uint8)
    yy, xx = np.mgrid[0:rows, 0:cols]
    apex_x, apex_y = cols / 2, 40
    radius = np.hypot(xx - apex_x, yy - apex_y)
    angle = np.degrees(np.arctan2(xx - apex_x, yy - apex_y))
    sector = (radius < 240) & (np.abs(angle) < 35) & (yy >= apex_y)
    speckle = RNG.rayleigh(60, size=(rows, cols)).clip(0, 255).astype(np.uint8)
    frame[sector] = speckle[sector]
    # A dark cavity inside the sector, like a heart chamber.
    frame[(np.hypot(xx - apex_x, yy - 170) < 40)] = 0
    # Burned-in text: thin strokes in the corners.
    for x0 in range(10, 120, 8):
        frame[10:22, x0 : x0 + 2] = 255
        frame[10, x0 : x0 + 6] = 255
    frame[270:290, 320:322] = 200
    frame[280, 300:390] = 200
    return frame


def test_find_scan_area_ignores_text() -> None:
    frame = _sector_with_text()
    box = find_scan_area(frame)
    # Sector spans rows 40..280 and columns 200 +- 240 sin(35 deg) = 62..338.
    assert 35 <= box.y0 <= 60
    assert 270 <= box.y1 <= 285
    assert 55 <= box.x0 <= 75
    assert 325 <= box.x1 <= 345


def _speckle_blocks(blocks: list[tuple[int, int, int, int]]) -> ImageInput:
    """An image of speckle rectangles ``(x0, y0, x1, y1)`` on black, without regions."""
    rng = np.random.default_rng(3)
    frame = np.zeros((480, 640), np.uint8)
    for x0, y0, x1, y1 in blocks:
        frame[y0:y1, x0:x1] = rng.integers(40, 200, size=(y1 - y0, x1 - x0))
    return ImageInput("1.2.3", frame[None], ImageGeometry(None, None))


def _close(box: BoundingBox, expected: tuple[int, int, int, int]) -> bool:
    """Within the 2 px grid of the scan-area mask."""
    return bool(np.allclose((box.x0, box.y0, box.x1, box.y1), expected, atol=2.0))


def test_a_quad_display_has_four_views_in_reading_order() -> None:
    blocks = [(20, 20, 300, 220), (340, 20, 620, 220), (20, 260, 300, 460), (340, 260, 620, 460)]
    views = scan_areas(_speckle_blocks(blocks))
    assert len(views) == 4
    assert all(_close(view, block) for view, block in zip(views, blocks, strict=True))


def test_a_sector_cut_by_a_shadow_is_one_view() -> None:
    # An acoustic shadow from below a thin skin line down to the far edge: the
    # scan-area mask keeps one part, the other is found next to it and joined.
    image = _speckle_blocks([(100, 60, 300, 400), (330, 60, 540, 400), (300, 60, 330, 72)])
    alone = find_scan_area(image.frames[0])
    assert alone.x1 - alone.x0 < 300
    (view,) = scan_areas(image)
    assert _close(view, (100, 60, 540, 400))


def test_views_from_regions_skip_small_and_nested_ones() -> None:
    def region(x0: int, x1: int, y1: int = 399) -> UltrasoundRegion:
        return UltrasoundRegion(x0, 0, x1, y1, data_type=0x0001, delta_x_mm=0.2,
                                delta_y_mm=0.2, spatial_format=1)

    left, right = region(0, 299), region(340, 639)
    zoom, strip = region(50, 150, 100), region(310, 330)
    geometry = ImageGeometry((0.2, 0.2), BoundingBox(0, 0, 300, 400),
                             (left, zoom, right, strip))
    image = ImageInput("1.2.3", np.zeros((1, 400, 640), np.uint8), geometry)
    assert scan_areas(image) == [BoundingBox(0, 0, 300, 400), BoundingBox(340, 0, 640, 400)]


def test_a_region_of_the_whole_screen_is_narrowed_to_the_scan_area_in_the_pixels() -> None:
    # Some devices describe the whole screen, text bars and all, as the tissue region.
    frame = _sector_with_text()
    rows, cols = frame.shape
    screen = BoundingBox(0, 0, cols, rows)
    whole = ImageInput("1.2.3", frame[None], ImageGeometry((0.3, 0.3), screen))
    assert scan_area(whole) == scan_areas(whole)[0] == find_scan_area(frame)
    assert whole.geometry.pixel_size_mm == (0.3, 0.3)
    # A region that is the B-mode area (here: most of the screen but not all) is kept.
    tight = BoundingBox(0, 40, cols, rows)
    assert tight.width * tight.height < preprocessing.FULL_SCREEN_SHARE * rows * cols
    kept = ImageInput("1.2.3", frame[None], ImageGeometry((0.3, 0.3), tight))
    assert scan_area(kept) == tight
    assert scan_areas(kept) == [tight]
    # Nothing in the pixels: the region stays, as before.
    blank = ImageInput("1.2.3", np.zeros((1, rows, cols), np.uint8),
                       ImageGeometry((0.3, 0.3), screen))
    assert scan_area(blank) == screen


def _tissue_region(x0: int, y0: int, x1: int, y1: int) -> UltrasoundRegion:
    """A calibrated 2D tissue region with inclusive bounds, as in the data set."""
    return UltrasoundRegion(x0, y0, x1, y1, data_type=0x0001, delta_x_mm=0.3,
                            delta_y_mm=0.3, spatial_format=1)


def test_views_inside_a_whole_screen_region_are_the_scan_areas() -> None:
    # Some devices list the whole screen as a tissue region and the B-mode area(s)
    # inside it: the inner regions are the views, not the screen or its pixels.
    frame = _sector_with_text()
    rows, cols = frame.shape
    screen = _tissue_region(0, 0, cols - 1, rows - 1)
    bmode = _tissue_region(50, 30, 350, 290)
    zoom_box = _tissue_region(360, 20, 399, 59)
    geometry = ImageGeometry((0.3, 0.3), screen.box, (screen, bmode, zoom_box))
    image = ImageInput("1.2.3", frame[None], geometry)
    assert scan_area(image) == bmode.box
    assert scan_areas(image) == [bmode.box]
    # A dual display inside the screen region: both halves, largest as the scan area.
    left, right = _tissue_region(0, 20, 197, 299), _tissue_region(202, 20, 399, 290)
    dual = ImageInput("1.2.3", frame[None],
                      ImageGeometry((0.3, 0.3), screen.box, (screen, left, right)))
    assert scan_areas(dual) == [left.box, right.box]
    assert scan_area(dual) == left.box
    # Only a small region inside the screen one: the pixels decide, as before.
    alone = ImageInput("1.2.3", frame[None],
                       ImageGeometry((0.3, 0.3), screen.box, (screen, zoom_box)))
    assert scan_area(alone) == scan_areas(alone)[0] == find_scan_area(frame)


def test_an_image_without_regions_has_its_scan_area_found_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    original = preprocessing.scan_area_mask

    def counting(frame: np.ndarray, threshold: float = 8.0) -> np.ndarray:
        calls.append(frame.shape)
        return original(frame, threshold)

    monkeypatch.setattr(preprocessing, "scan_area_mask", counting)
    frame = _sector_with_text()
    image = ImageInput("1.2.3", frame[None], ImageGeometry(None, None))
    assert check_quality(image) is None
    box = scan_area(image)
    assert scan_area(image) == box == find_scan_area(frame)
    assert len(calls) == 2, "the quality gate and the engines share one mask"
    mask = image_scan_mask(image)
    assert not mask.flags.writeable
    assert np.array_equal(mask, original(frame))
    assert len(calls) == 2
    assert dataclasses.replace(image, frames=frame[None] // 2)._scan_mask is None


def test_find_scan_area_rejects_blank() -> None:
    with pytest.raises(ValueError, match="blank"):
        find_scan_area(np.zeros((100, 100), dtype=np.uint8))


@pytest.mark.parametrize(("value", "expected"), [("33,3", 33.3), ("abc", None), ("-5", None)])
def test_frame_time_written_badly_is_read_or_unknown(value: str, expected: float | None) -> None:
    ds = _dataset(np.zeros((3, 8, 8), np.uint8), "MONOCHROME2")
    raw = value.encode("ascii") + b" " * (len(value) % 2)
    ds[0x00181063] = RawDataElement(Tag(0x00181063), "DS", len(raw), raw, 0, True, True)
    assert frame_time_ms(ds) == (pytest.approx(expected) if expected else None)
    image = image_input_from_dataset(ds)
    assert image.frames.shape == (3, 8, 8)


def test_colour_without_planar_configuration_is_read_interleaved() -> None:
    ds = _dataset(RGB, "RGB")
    del ds.PlanarConfiguration
    np.testing.assert_array_equal(image_input_from_dataset(ds).frames,
                                  image_input_from_dataset(_dataset(RGB, "RGB")).frames)


def test_a_region_reaching_past_the_image_is_cut_to_it() -> None:
    from inference.geometry import regions_from_dataset
    from tests.sr_templates.sr_factories import make_us_image

    ds = make_us_image(rows=120, columns=160)
    (region,) = ds.SequenceOfUltrasoundRegions
    region.RegionLocationMaxY1 = 120  # one past the last row
    region.RegionLocationMaxX1 = 400
    outside = copy.deepcopy(region)
    outside.RegionLocationMinX0, outside.RegionLocationMaxX1 = 200, 300
    ds.SequenceOfUltrasoundRegions.append(outside)
    (cut,) = regions_from_dataset(ds)
    assert (cut.x1, cut.y1) == (159, 119)
    box = scan_area(image_input_from_dataset(ds))
    assert box.x1 <= 160 and box.y1 <= 120


def test_a_box_takes_the_calibration_of_the_smallest_region_around_it() -> None:
    from inference.geometry import box_size_mm

    screen = UltrasoundRegion(0, 0, 639, 479, 1, 0.2, 0.2, 1)
    left = UltrasoundRegion(10, 40, 310, 440, 1, 0.2, 0.2, 1)
    zoomed = UltrasoundRegion(330, 40, 630, 440, 1, 0.1, 0.1, 1)
    lesion = BoundingBox(400, 100, 500, 160)
    assert box_size_mm([screen, left, zoomed], lesion) == pytest.approx((10.0, 6.0))
    assert box_size_mm([screen, left], lesion) == pytest.approx((20.0, 12.0))


@pytest.mark.parametrize(("value", "meaning", "expected"), [
    ("76752008", "Seno", AnatomyValues.BREAST),
    ("10200004", "", AnatomyValues.LIVER),
    ("T-32000", "Herz", AnatomyValues.HEART),
    ("12345", "", None),
])
def test_anatomic_region_codes_name_their_anatomy_whatever_their_meaning(
    value: str, meaning: str, expected: AnatomyValues | None
) -> None:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    ds = Dataset()
    ds.AnatomicRegionSequence = [item]
    assert tag_anatomy(ds) is expected
