"""Softcopy presentation states drawing the findings over the source images.

Many PACS viewers show neither SR graphics nor SEG on ultrasound but do
apply a presentation state.  Each state draws, on one graphic layer, every
lesion box (and contour) with a caption giving its class, class probability
and probability of malignancy, and every LV contour with the EF; the source
pixels stay untouched.

Grayscale sources get a Grayscale Softcopy Presentation State; colour
sources (RGB, YBR, PALETTE COLOR) a Color Softcopy Presentation State.
PS3.4 N.2 applies the Color Softcopy pipeline to palette-colour images too
(the palette is the image's own), but highdicom only accepts three samples
per pixel, so palette images are handed to it through an attribute copy that
claims three samples.  Likewise highdicom reads the LUTs of any multi-frame
image from enhanced functional groups, which US Multi-frame images lack, so
cine sources are handed over as single-frame views.  The written state
references the real images (SOP classes restored, frame numbers given).
"""

from __future__ import annotations

import functools
import importlib.resources
from collections import defaultdict
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
import structlog
from pydicom import Dataset

from inference.findings import AlgorithmInfo, CardiacFinding, LesionFinding, StudyResult
from sr_templates import codes
from sr_templates.options import ObjectKindValues, ResultOptions
from sr_templates.shapes import closed_polyline
from sr_templates.sources import (
    SourceSet,
    attribute_copy,
    copy_series_anatomy,
    is_multiframe,
    restore_character_set,
    restore_referenced_classes,
    single_frame_view,
    source_side,
)
from sr_templates.sr import reportable_volumes

LOGGER = structlog.get_logger(__name__)

LAYER = hd.pr.GraphicLayer(
    layer_name="AI_FINDINGS",
    order=1,
    description="AI findings (boxes, contours, class and probabilities)",
    display_color=hd.color.CIELabColor(97.0, -21.0, 94.0),
)
"""The one graphic layer; yellow."""

_TEXT_MARGIN = 2.0

CAPTION_HEIGHT_SHARE = 1 / 30
"""Height of a caption's bounding box as a share of the image's rows (at least
:data:`MIN_CAPTION_HEIGHT` pixels): about a viewer's annotation font on a US image."""

MIN_CAPTION_HEIGHT = 10.0

CHARACTER_WIDTH = 0.6
"""Width of a character as a share of the caption's height (a proportional font's
average is about half its height; 0.6 leaves room)."""


def shown_percent(probability: float) -> str:
    """A probability as a caption shows it: whole percent, but never 0 % or 100 %, which
    would read as certainty no classifier has ("<1%", ">99%")."""
    if probability < 0.005:
        return "<1%"
    if probability >= 0.995:
        return ">99%"
    return f"{probability:.0%}"


def lesion_caption(lesion: LesionFinding) -> str:
    """One-line caption of a lesion: class, its probability, malignancy."""
    probability = lesion.probabilities[lesion.label]
    return (
        f"{lesion.tracking_id}: {codes.class_name(lesion.label)} {shown_percent(probability)}, "
        f"malignancy {shown_percent(lesion.malignancy_probability)} (AI)"
    )


def cardiac_caption(finding: CardiacFinding) -> str:
    """One-line caption of an echo finding: EF, and EDV and ESV if known."""
    volumes = (
        f" (EDV {finding.end_diastolic_volume_ml:.0f} ml, "
        f"ESV {finding.end_systolic_volume_ml:.0f} ml)"
        if reportable_volumes(finding) else ""
    )
    return f"LVEF {finding.ejection_fraction_percent:.0f}%{volumes} (AI)"


Box = tuple[float, float, float, float]
"""``(left, top, right, bottom)`` in pixels."""


@dataclass(frozen=True)
class Caption:
    """A text, the point it relates to and the region it describes (``None``: the
    whole image)."""

    text: str
    anchor: tuple[float, float]
    region: Box | None = None


@dataclass
class FrameDrawing:
    """What to draw on one frame of one source image."""

    outlines: list[tuple[np.ndarray, str, str]] = field(default_factory=list)
    """Closed polylines with the tracking identifier and UID they belong to."""
    captions: list[Caption] = field(default_factory=list)


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def lesion_regions(drawing: FrameDrawing) -> list[Box]:
    """The regions the frame's captions describe: no caption is written over one."""
    return [caption.region for caption in drawing.captions if caption.region is not None]


def caption_size(text: str, rows: int) -> tuple[float, float]:
    """Width and height a viewer's annotation font likely gives ``text`` on an image of
    ``rows`` rows."""
    height = max(MIN_CAPTION_HEIGHT, rows * CAPTION_HEIGHT_SHARE)
    return len(text) * height * CHARACTER_WIDTH, height


def caption_box(size: tuple[float, float], region: Box | None, rows: int, columns: int,
                placed: list[Box]) -> Box:
    """Where a caption of ``size`` (width, height) is written: a box inside the image,
    just above the region it describes (below it when there is no room above; the
    top-left corner for the whole image), moved left as far as it must to end inside
    the image, and below whatever of ``placed`` (the captions written before, the
    lesions of the frame) it would cover.

    A viewer writes the text in the box from its left edge (PS3.3 C.10.5), so a
    caption of a lesion near the right edge does not run off the image.
    """
    width = max(min(size[0], columns - 2 * _TEXT_MARGIN), 1.0)
    height = size[1]
    if region is None:
        left, top = _TEXT_MARGIN, _TEXT_MARGIN
    else:
        left = region[0]
        above = region[1] - height - 1.0
        top = above if above >= _TEXT_MARGIN else region[3] + 1.0
    left = min(max(left, _TEXT_MARGIN), max(columns - _TEXT_MARGIN - width, 0.0))
    for other in sorted(placed, key=lambda box: box[1]):
        if _overlap((left, top, left + width, top + height), other):
            top = other[3] + 1.0
    top = min(max(top, 0.0), max(rows - height, 0.0))
    return (left, top, left + width, min(top + height, float(rows)))


def frame_drawings(
    result: StudyResult,
) -> dict[tuple[str, int], FrameDrawing]:
    """Drawings keyed by ``(SOP Instance UID, frame number)``, in finding order."""
    drawings: dict[tuple[str, int], FrameDrawing] = defaultdict(FrameDrawing)
    for lesion in result.lesions:
        key = lesion.key_observation
        drawing = drawings[(lesion.source_sop_instance_uid, key.frame_number)]
        ids = (lesion.tracking_id, lesion.tracking_uid)
        drawing.outlines.append((key.box.polyline(), *ids))
        if key.contour is not None:
            drawing.outlines.append((closed_polyline(key.contour), *ids))
        box = key.box
        drawing.captions.append(
            Caption(lesion_caption(lesion), (box.x0, box.y0), (box.x0, box.y0, box.x1, box.y1))
        )
    for finding in result.cardiac:
        ids = (finding.tracking_id, finding.tracking_uid)
        phases = (
            ("End-diastole", finding.end_diastolic_frame, finding.end_diastolic_contour),
            ("End-systole", finding.end_systolic_frame, finding.end_systolic_contour),
        )
        for phase, frame, contour in phases:
            drawing = drawings[(finding.source_sop_instance_uid, frame)]
            if contour is not None:
                drawing.outlines.append((closed_polyline(contour), *ids))
            text = f"{phase}, frame {frame}: {cardiac_caption(finding)}"
            drawing.captions.append(Caption(text, (_TEXT_MARGIN, _TEXT_MARGIN)))
    return drawings


def _annotation(ds: Dataset, drawing: FrameDrawing) -> hd.pr.GraphicAnnotation:
    graphics = [
        hd.pr.GraphicObject(
            graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
            graphic_data=outline,
            units=hd.pr.AnnotationUnitsValues.PIXEL,
            tracking_id=tracking_id,
            tracking_uid=tracking_uid,
        )
        for outline, tracking_id, tracking_uid in drawing.outlines
    ]
    placed: list[Box] = []
    lesions = lesion_regions(drawing)
    rows, columns = int(ds.Rows), int(ds.Columns)
    for caption in drawing.captions:
        size = caption_size(caption.text, rows)
        placed.append(caption_box(size, caption.region, rows, columns, placed + lesions))
    texts = [
        hd.pr.TextObject(
            text_value=caption.text,
            units=hd.pr.AnnotationUnitsValues.PIXEL,
            bounding_box=box,
            anchor_point=caption.anchor,
            text_justification=hd.pr.TextJustificationValues.LEFT,
            # A leader line to the lesion's corner: a caption moved aside (to stay inside
            # the image and off other lesions) still points at its own box.
            anchor_point_visible=caption.region is not None,
        )
        for caption, box in zip(drawing.captions, placed, strict=True)
    ]
    return hd.pr.GraphicAnnotation(
        referenced_images=[_for_highdicom(ds)],
        graphic_layer=LAYER,
        graphic_objects=graphics or None,
        text_objects=texts or None,
    )


def _set_frame(annotation: Dataset, ds: Dataset, frame: int) -> None:
    """Reference the real image (and its frame, on a cine) from an annotation."""
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    if is_multiframe(ds):
        item.ReferencedFrameNumber = frame
    annotation.ReferencedImageSequence = [item]


def _is_colour(ds: Dataset) -> bool:
    return int(ds.SamplesPerPixel) == 3 or ds.PhotometricInterpretation == "PALETTE COLOR"


@functools.cache
def _srgb_profile() -> bytes:
    """The sRGB ICC profile highdicom ships, for sources without a profile."""
    package = importlib.resources.files("highdicom") / "_icc_profiles"
    return (package / "sRGB_v4_ICC_preference.icc").read_bytes()


def _for_highdicom(ds: Dataset) -> Dataset:
    """What highdicom accepts in place of ``ds`` (see the module notes)."""
    view = single_frame_view(ds) if is_multiframe(ds) else ds
    if _is_colour(ds) and int(ds.SamplesPerPixel) != 3:
        view = attribute_copy(view)
        view.SamplesPerPixel = 3
    return view


def _build_one(
    images: list[Dataset],
    annotations: list[tuple[Dataset, int, hd.pr.GraphicAnnotation]],
    options: ResultOptions,
    instance_number: int,
    algorithms: list[AlgorithmInfo],
) -> Dataset:
    first = images[0]
    arguments = {
        "content_label": "AI_FINDINGS",
        "content_description": "AI findings - review against the image",
        "graphic_annotations": [annotation for _, _, annotation in annotations],
        "graphic_layers": [LAYER],
        **options.object_arguments(
            ObjectKindValues.PR, first, instance_number, algorithms, first.SOPInstanceUID
        ),
    }
    if _is_colour(first):
        state: Dataset = hd.pr.ColorSoftcopyPresentationState(
            referenced_images=[_for_highdicom(ds) for ds in images],
            icc_profile=first.get("ICCProfile") or _srgb_profile(),
            **arguments,
        )
    else:
        state = hd.pr.GrayscaleSoftcopyPresentationState(
            referenced_images=[_for_highdicom(ds) for ds in images], **arguments
        )
    restore_referenced_classes(state, images)
    for item, (ds, frame, _) in zip(state.GraphicAnnotationSequence, annotations, strict=True):
        _set_frame(item, ds, frame)
    ratio = _pixel_aspect_ratio(first)
    if ratio is not None:
        # highdicom writes 1:1, which would stretch an image of non-square pixels.
        state.DisplayedAreaSelectionSequence[0].PresentationPixelAspectRatio = list(ratio)
    if str(first.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        # The state's IDENTITY would show a MONOCHROME1 image inverted (PS3.4 N.2.1.4).
        state.PresentationLUTShape = "INVERSE"
    restore_character_set(state, first)
    copy_series_anatomy(state, first)
    return state


GroupKey = tuple[bool, int, int, str, tuple[int, int] | None, bool]


def _pixel_aspect_ratio(ds: Dataset) -> tuple[int, int] | None:
    """The Pixel Aspect Ratio (vertical, horizontal) of ``ds`` when it has a valid one."""
    try:
        vertical, horizontal = (int(v) for v in ds.get("PixelAspectRatio") or ())
    except (TypeError, ValueError):
        return None
    return (vertical, horizontal) if vertical > 0 and horizontal > 0 else None


def _group_key(ds: Dataset) -> GroupKey:
    """Images that may share a state: same colour model and size, the same side (a
    state is a series, whose Laterality is one side), the same pixel aspect ratio and
    polarity (a state displays all its images with one of each)."""
    return (_is_colour(ds), int(ds.Rows), int(ds.Columns), source_side(ds) or "",
            _pixel_aspect_ratio(ds), str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1")


def build_presentation_states(
    sources: SourceSet, result: StudyResult, options: ResultOptions
) -> list[Dataset]:
    """Presentation states for every annotated image of the job.

    Images that share a colour model, a size and a side share one state; a job
    without findings gets none.
    """
    drawings = frame_drawings(result)
    groups: dict[GroupKey, dict[str, Dataset]] = defaultdict(dict)
    annotations: dict[GroupKey, list[tuple[Dataset, int, hd.pr.GraphicAnnotation]]] = (
        defaultdict(list))
    for (uid, frame), drawing in drawings.items():
        ds = sources.image(uid)
        key = _group_key(ds)
        groups[key][uid] = ds
        annotations[key].append((ds, frame, _annotation(ds, drawing)))
    states = [
        _build_one(list(images.values()), annotations[key], options, number, result.algorithms)
        for number, (key, images) in enumerate(groups.items(), start=1)
    ]
    LOGGER.info("presentation_states_built", states=len(states), frames=len(drawings))
    return states

