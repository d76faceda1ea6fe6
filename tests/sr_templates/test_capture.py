"""Secondary-capture AI overlay: burned-in, derived, marked, valid."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pydicom.examples
import pytest
from pydicom.uid import JPEG2000Lossless

from inference.findings import BoundingBox
from sr_templates import ResultOptions
from sr_templates.capture import (
    BANNER,
    blend_heatmap,
    build_overlay_captures,
    burn_in,
    frame_rgb,
)
from sr_templates.presentation import Caption, FrameDrawing
from sr_templates.sources import SourceSet
from tests.sr_templates.sr_factories import analysed, make_lesion, make_us_image, study_of


@pytest.mark.parametrize(
    ("photometric", "frames"),
    [("MONOCHROME2", None), ("RGB", None), ("PALETTE COLOR", None), ("YBR_FULL_422", 4)],
)
def test_overlay_is_derived_marked_and_valid(
    photometric: str, frames: int | None, dciodvfy: Callable
) -> None:
    source = make_us_image(photometric, frames=frames, rows=160, columns=320)
    heat = np.zeros((source.Rows, source.Columns))
    heat[20:60, 20:80] = 1.0
    lesion = make_lesion(source, BoundingBox(20, 20, 80, 60), frames=(2,) if frames else (1,),
                         heatmap=heat)
    result = study_of(analysed(source, [lesion]), source=source)
    (image,) = build_overlay_captures(SourceSet.from_datasets([source], result), result,
                                      ResultOptions())
    dciodvfy(image)
    assert list(image.ImageType) == ["DERIVED", "SECONDARY"]
    assert image.BurnedInAnnotation == "YES"
    assert image.ImageComments == BANNER
    assert "burned into a copy" in image.DerivationDescription
    reference = image.SourceImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ("ReferencedFrameNumber" in reference) == (frames is not None)
    original = frame_rgb(source, lesion.key_observation.frame_number)
    burned = image.pixel_array
    assert burned.shape == original.shape
    assert not np.array_equal(burned[20:60, 20:80], original[20:60, 20:80])
    assert np.array_equal(burned[80:140, 200:300], original[80:140, 200:300])
    assert tuple(burned[-2, 1]) == (160, 0, 0)


def test_heatmap_only_tints_hot_pixels() -> None:
    rgb = np.full((4, 4, 3), 100, dtype=np.uint8)
    heat = np.zeros((4, 4))
    heat[0, 0] = 1.0
    blended = blend_heatmap(rgb, heat)
    assert np.array_equal(blended[1:, 1:], rgb[1:, 1:])
    assert blended[0, 0, 0] > 100 and blended[0, 0, 2] < 100


def test_heatmap_of_the_wrong_size_raises_value_error() -> None:
    with pytest.raises(ValueError, match="Heat map shape"):
        blend_heatmap(np.zeros((4, 4, 3), dtype=np.uint8), np.zeros((3, 4)))


def test_frame_rgb_converts_ybr_and_palette_examples() -> None:
    ybr = frame_rgb(pydicom.examples.ybr_color, 3)
    palette = frame_rgb(pydicom.examples.palette_color, 1)
    assert ybr.shape == (240, 320, 3) and ybr.dtype == np.uint8
    assert palette.shape == (350, 800, 3) and palette.dtype == np.uint8
    assert np.ptp(palette) > 0


def test_undecodable_pixels_raise_value_error() -> None:
    source = make_us_image()
    source.PixelData = b"\x00" * 10
    with pytest.raises(ValueError, match="Cannot decode"):
        frame_rgb(source, 1)


def test_burned_in_caption_of_a_lesion_at_the_right_edge_is_written_inside() -> None:
    drawing = FrameDrawing(captions=[
        Caption("Lesion 1: Hepatocellular carcinoma 80%, malignancy 90% (AI)", (290.0, 60.0),
                (290.0, 60.0, 318.0, 90.0)),
    ])
    burned = burn_in(np.zeros((160, 320, 3), dtype=np.uint8), drawing)
    rows, columns = np.nonzero(np.all(burned[:140] > 128, axis=-1))
    assert rows.size and rows.max() <= 60, "above the lesion (its leader line ends on the corner)"
    assert columns.min() < 100 and columns.max() < 318, "moved left to end inside the image"
    assert burned[60, 290].min() > 128, "a leader line reaches the lesion's corner"


def test_a_compressed_frame_is_read_whatever_its_planar_configuration_says() -> None:
    source = pydicom.examples.rgb_color
    expected = frame_rgb(source, 1)
    source.compress(JPEG2000Lossless)
    source.PhotometricInterpretation = "YBR_RCT"
    source.PlanarConfiguration = 1  # ignored for JPEG 2000 (PS3.5 8.2.4)
    np.testing.assert_array_equal(frame_rgb(source, 1), expected)
