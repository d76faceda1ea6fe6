"""Secondary-capture "AI overlay" images: findings burned into a copy.

For PACS that show neither SR, SEG nor presentation states.  Each annotated
source frame becomes one RGB Secondary Capture image with the boxes,
contours, captions and the Grad-CAM heat map burned in, and a banner saying
that it is an AI overlay not for diagnosis on its own.  The image is marked
as derived (Image Type ``DERIVED\\SECONDARY``, Burned In Annotation ``YES``,
Derivation Description, Image Comments) and references its source frame.

highdicom's SCImage insists on a patient orientation for the PATIENT
coordinate system; the placeholder it is given is replaced by the source's
own Patient Orientation (usually empty), so no orientation is invented.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import structlog
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.pixels import apply_color_lut, apply_voi_lut, pixel_array

from inference.findings import LesionFinding, StudyResult
from inference.preprocessing import decode_options
from inference.video import VIDEO_TRANSFER_SYNTAXES, decode_video
from sr_templates.options import ObjectKindValues, ResultOptions
from sr_templates.presentation import (
    Box,
    FrameDrawing,
    caption_box,
    frame_drawings,
    lesion_regions,
)
from sr_templates.sources import (
    SourceSet,
    copy_series_anatomy,
    is_multiframe,
    restore_character_set,
)

LOGGER = structlog.get_logger(__name__)

BANNER = "AI OVERLAY - NOT FOR DIAGNOSIS ON ITS OWN"
SHORT_BANNER = "AI OVERLAY - NOT FOR DIAGNOSIS"
"""Used when :data:`BANNER` does not fit the image width."""
DERIVATION = (
    "AI findings (boxes, contours, class, probabilities, Grad-CAM heat map) burned into "
    "a copy of the source frame; see the AI measurement report"
)
_OUTLINE_RGB = (255, 230, 0)
_TEXT_RGB = (255, 255, 255)
_HEAT_OPACITY = 0.45
_ORIENTATION_PLACEHOLDER = ("A", "F")
_LOSSY_DETAILS = ("LossyImageCompressionRatio", "LossyImageCompressionMethod")


def frame_rgb(ds: Dataset, frame: int) -> np.ndarray:
    """One frame of ``ds`` as ``uint8`` RGB ``(rows, columns, 3)``.

    YBR data is converted to RGB (with the decoder options of
    :func:`inference.preprocessing.decode_options`: JPEG's colour space from its
    codestream, Planar Configuration ignored for compressed data), palette colour
    through the image's own palette, grayscale through its VOI window (else min-max) and inverted
    for MONOCHROME1.

    Raises
    ------
    ValueError
        If the pixel data cannot be decoded.
    """
    try:
        if getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID") in VIDEO_TRANSFER_SYNTAXES:
            return decode_video(ds)[frame - 1]
        array = pixel_array(ds, index=frame - 1 if is_multiframe(ds) else None,
                            **decode_options(ds))
    except Exception as exc:
        raise ValueError(f"Cannot decode frame {frame} of {ds.SOPInstanceUID}: {exc}") from exc
    photometric = ds.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        array = apply_color_lut(array, ds)
        if array.dtype != np.uint8:
            array = (array.astype(np.float64) / np.iinfo(array.dtype).max * 255.0)
        return np.asarray(array).round().astype(np.uint8)
    if array.ndim == 3:
        return array.astype(np.uint8)
    if "WindowCenter" in ds:
        array = apply_voi_lut(array, ds)
    low, high = float(array.min()), float(array.max())
    gray = (array - low) / (high - low) * 255.0 if high > low else np.zeros(array.shape)
    if photometric == "MONOCHROME1":
        gray = 255.0 - gray
    gray8 = gray.round().astype(np.uint8)
    return np.stack([gray8] * 3, axis=-1)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """A blue-to-red ("jet"-like) colour ``(rows, columns, 3)`` in ``[0, 1]``."""
    h = np.clip(heat, 0.0, 1.0)[..., np.newaxis]
    centres = np.array([0.75, 0.5, 0.25])
    return np.clip(1.5 - np.abs(4.0 * h - 4.0 * centres), 0.0, 1.0)


def blend_heatmap(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Blend a ``[0, 1]`` heat map over ``rgb``; cold pixels stay untouched.

    Raises
    ------
    ValueError
        If the heat map does not have the image's size.
    """
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"Heat map shape {heat.shape} differs from image {rgb.shape[:2]}.")
    alpha = (_HEAT_OPACITY * np.clip(heat, 0.0, 1.0))[..., np.newaxis]
    blended = (1.0 - alpha) * rgb + alpha * heat_colours(heat) * 255.0
    return blended.round().astype(np.uint8)


def burn_in(rgb: np.ndarray, drawing: FrameDrawing) -> np.ndarray:
    """Draw outlines, captions and the banner into a copy of ``rgb``."""
    image = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for outline, _, _ in drawing.outlines:
        draw.line([tuple(map(float, point)) for point in outline], fill=_OUTLINE_RGB, width=2)
    line_height = 12
    placed: list[Box] = []
    lesions = lesion_regions(drawing)
    for caption in drawing.captions:
        size = (draw.textlength(caption.text, font=font) + 4.0, float(line_height))
        box = caption_box(size, caption.region, image.height, image.width, placed + lesions)
        placed.append(box)
        if caption.region is not None:
            # A leader line from the caption to its lesion's corner, as a viewer draws
            # the presentation state's visible anchor point.
            edge = box[3] if box[3] <= caption.anchor[1] else box[1]
            draw.line([(box[0] + 2, edge), caption.anchor], fill=_TEXT_RGB, width=1)
        draw.text((box[0] + 2, box[1]), caption.text, fill=_TEXT_RGB, font=font,
                  stroke_width=1, stroke_fill=(0, 0, 0))
    banner_top = image.height - line_height - 2
    draw.rectangle([0, banner_top, image.width, image.height], fill=(160, 0, 0))
    fits = draw.textlength(BANNER, font=font) <= image.width - 4
    draw.text((2, banner_top + 1), BANNER if fits else SHORT_BANNER, fill=_TEXT_RGB, font=font)
    return np.asarray(image)


def _heatmaps(lesions: list[LesionFinding], uid: str, frame: int) -> list[np.ndarray]:
    return [
        np.asarray(lesion.heatmap, dtype=np.float64)
        for lesion in lesions
        if lesion.source_sop_instance_uid == uid
        and lesion.key_observation.frame_number == frame
        and lesion.heatmap is not None
    ]


def _source_reference(ds: Dataset, frame: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    if is_multiframe(ds):
        item.ReferencedFrameNumber = frame
    return item


def copy_lossy_compression(target: Dataset, source: Dataset) -> None:
    """Say that ``target`` was lossy compressed when its ``source`` was.

    Lossy Image Compression 01, with the source's ratio and method, is
    permanent for images derived from a lossy image; from any other source it
    stays absent (Type 3 in the Secondary Capture IOD).
    """
    if str(source.get("LossyImageCompression", "")).strip() != "01":
        return
    target.LossyImageCompression = "01"
    for keyword in _LOSSY_DETAILS:
        if source.get(keyword):
            setattr(target, keyword, source[keyword].value)


def _build_one(
    ds: Dataset, frame: int, pixels: np.ndarray, result: StudyResult,
    options: ResultOptions, instance_number: int,
) -> hd.sc.SCImage:
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ds,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=_ORIENTATION_PLACEHOLDER,
        transfer_syntax_uid=hd.UID("1.2.840.10008.1.2.1"),
        **options.object_arguments(
            ObjectKindValues.SC, ds, instance_number, result.algorithms, ds.SOPInstanceUID, frame
        ),
    )
    restore_character_set(image, ds)
    copy_series_anatomy(image, ds, image_laterality=True)
    copy_lossy_compression(image, ds)
    image.PatientOrientation = ds.get("PatientOrientation", "")
    image.ConversionType = "WSD"  # drawn by software on a workstation (PS3.3 C.8.6.1)
    if "PixelAspectRatio" in ds:
        image.PixelAspectRatio = ds.PixelAspectRatio
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.BurnedInAnnotation = "YES"
    image.ImageComments = BANNER
    image.DerivationDescription = DERIVATION
    image.SourceImageSequence = [_source_reference(ds, frame)]
    return image


def build_overlay_captures(
    sources: SourceSet, result: StudyResult, options: ResultOptions
) -> list[hd.sc.SCImage]:
    """One burned-in overlay image per annotated source frame.

    Raises
    ------
    ValueError
        If an annotated source frame cannot be decoded or a heat map has
        the wrong size.
    """
    lesions = result.lesions
    images = []
    for number, ((uid, frame), drawing) in enumerate(frame_drawings(result).items(), start=1):
        ds = sources.image(uid)
        rgb = frame_rgb(ds, frame)
        for heat in _heatmaps(lesions, uid, frame):
            rgb = blend_heatmap(rgb, heat)
        images.append(_build_one(ds, frame, burn_in(rgb, drawing), result, options, number))
    LOGGER.info("overlay_captures_built", images=len(images))
    return images
