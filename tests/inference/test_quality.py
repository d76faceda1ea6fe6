"""Tests of the image quality gate."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from inference.engines.base import ImageInput
from inference.findings import BoundingBox, NotAssessedReasonValues
from inference.geometry import ImageGeometry, UltrasoundRegion
from inference.phantoms.echo import random_echo_spec, render_echo
from inference.quality import check_quality


@pytest.fixture(scope="module")
def echo_frames() -> np.ndarray:
    spec = random_echo_spec(np.random.default_rng(5), size=(240, 320), n_frames=4)
    return render_echo(spec).frames


def _image(frames: np.ndarray, geometry: ImageGeometry | None = None,
           color_fraction: float = 0.0) -> ImageInput:
    return ImageInput("1.2.3", frames, geometry or ImageGeometry(None, None),
                      color_fraction=color_fraction)


def test_good_cine_and_single_frame_pass(echo_frames: np.ndarray) -> None:
    assert check_quality(_image(echo_frames)) is None
    assert check_quality(_image(echo_frames[:1])) is None


def test_blank_image() -> None:
    verdict = check_quality(_image(np.zeros((3, 100, 120), np.uint8)))
    assert verdict is not None and verdict.reason is NotAssessedReasonValues.IMAGE_QUALITY
    assert "Blank" in verdict.detail


def test_frozen_cine(echo_frames: np.ndarray) -> None:
    frozen = np.repeat(echo_frames[:1], 6, axis=0)
    verdict = check_quality(_image(frozen))
    assert verdict is not None and verdict.reason is NotAssessedReasonValues.IMAGE_QUALITY
    assert "Frozen" in verdict.detail


def test_colour_doppler_by_pixels_and_by_regions(echo_frames: np.ndarray) -> None:
    verdict = check_quality(_image(echo_frames, color_fraction=0.2))
    assert verdict is not None and verdict.reason is NotAssessedReasonValues.NON_BMODE
    spectral = UltrasoundRegion(0, 0, 319, 239, data_type=0x0003, delta_x_mm=None,
                                delta_y_mm=None)
    verdict = check_quality(_image(echo_frames, ImageGeometry(None, None, (spectral,))))
    assert verdict is not None and verdict.reason is NotAssessedReasonValues.NON_BMODE
    assert "PW spectral Doppler" in verdict.detail


def test_m_mode_without_a_2d_region(echo_frames: np.ndarray) -> None:
    def region(spatial_format: int, y0: int, y1: int, delta_x_mm: float | None
               ) -> UltrasoundRegion:
        return UltrasoundRegion(0, y0, 319, y1, data_type=0x0001, delta_x_mm=delta_x_mm,
                                delta_y_mm=0.3, spatial_format=spatial_format)

    m_mode = region(0x0002, 0, 239, None)  # time along x: no mm
    verdict = check_quality(_image(echo_frames, ImageGeometry(None, None, (m_mode,))))
    assert verdict is not None and verdict.reason is NotAssessedReasonValues.NON_BMODE
    assert "M-mode" in verdict.detail
    # A 2D image with its M-mode strip below: the 2D region is analysed.
    two_d = region(0x0001, 0, 159, 0.3)
    strip = region(0x0002, 160, 239, None)
    geometry = ImageGeometry((0.3, 0.3), BoundingBox(0, 0, 320, 160), (two_d, strip))
    assert check_quality(_image(echo_frames, geometry)) is None


def test_too_little_scan_area(echo_frames: np.ndarray) -> None:
    frames = np.zeros((2, 300, 400), np.uint8)
    frames[:, 100:130, 100:130] = echo_frames[:2, 100:130, 120:150]
    verdict = check_quality(_image(frames))
    assert verdict is not None and verdict.reason is NotAssessedReasonValues.IMAGE_QUALITY
    assert "scan area" in verdict.detail


def test_scan_area_limited_to_the_region(echo_frames: np.ndarray) -> None:
    tiny = ImageGeometry((0.3, 0.3), BoundingBox(0, 0, 20, 20))
    verdict = check_quality(_image(echo_frames, tiny))
    assert verdict is not None and "scan area" in verdict.detail


def test_measurement_screen_without_speckle() -> None:
    screen = np.zeros((1, 240, 320), np.uint8)
    screen[0, 20:220, 30:290] = 255
    for row in range(40, 220, 20):
        screen[0, row : row + 3, 30:290] = 0
    verdict = check_quality(_image(screen))
    assert verdict is not None and verdict.reason is NotAssessedReasonValues.NON_BMODE


def _worksheet(shading: bool) -> np.ndarray:
    """A report page: a grey panel (flat, or shaded left to right) with lines of text."""
    page = np.zeros((480, 640), np.uint8)
    panel = np.full((400, 560), 90.0)
    if shading:
        panel += np.linspace(0, 50, 560)[None]
    page[40:440, 40:600] = panel.astype(np.uint8)
    picture = Image.fromarray(page)
    draw = ImageDraw.Draw(picture)
    for row in range(60, 420, 30):
        draw.text((60, row), "RT LOBE  12.3 mm  PSV 45 cm/s  EDV 12 cm/s  RI 0.73", fill=255)
    return np.asarray(picture)[None]


@pytest.mark.parametrize(("shading", "sign"), [(False, "at one grey level"),
                                               (True, "vary locally")])
def test_worksheet_on_a_grey_panel(shading: bool, sign: str) -> None:
    verdict = check_quality(_image(_worksheet(shading)))
    assert verdict is not None and verdict.reason is NotAssessedReasonValues.NON_BMODE
    assert sign in verdict.detail


def test_smoothed_and_upsampled_speckle_pass(echo_frames: np.ndarray) -> None:
    frame = echo_frames[0]
    assert check_quality(_image(ndimage.gaussian_filter(frame, 1.5)[None])) is None
    blocky = np.kron(frame[::2, ::2], np.ones((2, 2), np.uint8))
    assert check_quality(_image(blocky[None])) is None
