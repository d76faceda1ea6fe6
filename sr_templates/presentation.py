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


def lesion_caption(lesion: LesionFinding) -> str:
    """One-line caption of a lesion: class, its probability, malignancy."""
    meaning = codes.lesion_class(lesion.label).meaning
    probability = lesion.probabilities[lesion.label]
    return (
        f"{lesion.tracking_id}: {meaning} {probability:.0%}, "
        f"malignancy {lesion.malignancy_probability:.0%} (AI)"
    )


def cardiac_caption(finding: CardiacFinding) -> str:
    """One-line caption of an echo finding: EF, and EDV and ESV if known."""
    volumes = (
        f" (EDV {finding.end_diastolic_volume_ml:.0f} ml, "
        f"ESV {finding.end_systolic_volume_ml:.0f} ml)"
        if reportable_volumes(finding) else ""
    )
    return f"LVEF {finding.ejection_fraction_percent:.0f}%{volumes} (AI)"


@dataclass
class FrameDrawing:
    """What to draw on one frame of one source image."""

    outlines: list[tuple[np.ndarray, str, str]] = field(default_factory=list)
    """Closed polylines with the tracking identifier and UID they belong to."""
    captions: list[tuple[str, tuple[float, float]]] = field(default_factory=list)
    """Texts with their anchor point ``(x, y)``."""


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
        drawing.captions.append((lesion_caption(lesion), (key.box.x0, key.box.y0)))
    for finding in result.cardiac:
        ids = (finding.tracking_id, finding.tracking_uid)
        phases = (
            (finding.end_diastolic_frame, finding.end_diastolic_contour),
            (finding.end_systolic_frame, finding.end_systolic_contour),
        )
        for frame, contour in phases:
            drawing = drawings[(finding.source_sop_instance_uid, frame)]
            if contour is not None:
                drawing.outlines.append((closed_polyline(contour), *ids))
            drawing.captions.append((cardiac_caption(finding), (_TEXT_MARGIN, _TEXT_MARGIN)))
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
    texts = [
        hd.pr.TextObject(
            text_value=text,
            units=hd.pr.AnnotationUnitsValues.PIXEL,
            anchor_point=anchor,
            anchor_point_visible=False,
        )
        for text, anchor in drawing.captions
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
    restore_character_set(state, first)
    copy_series_anatomy(state, first)
    return state


def _group_key(ds: Dataset) -> tuple[bool, int, int]:
    return (_is_colour(ds), int(ds.Rows), int(ds.Columns))


def build_presentation_states(
    sources: SourceSet, result: StudyResult, options: ResultOptions
) -> list[Dataset]:
    """Presentation states for every annotated image of the job.

    Images that share a colour model and a size share one state; a job
    without findings gets none.
    """
    drawings = frame_drawings(result)
    groups: dict[tuple[bool, int, int], dict[str, Dataset]] = defaultdict(dict)
    annotations: dict[
        tuple[bool, int, int], list[tuple[Dataset, int, hd.pr.GraphicAnnotation]]
    ] = defaultdict(list)
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

