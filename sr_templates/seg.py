"""BINARY Segmentations of lesions (and LV cavities) on ultrasound images.

Ultrasound images have no Frame of Reference, and highdicom then accepts a
single source frame per SEG.  So there is one SEG instance per annotated
source frame, all in the job's SEG series; every segment carries the
tracking UID of its SR measurement group and the algorithm identification.

For US Multi-frame sources highdicom refuses outright (issue 284).  The SEG
is then built from a single-frame view of the source (multi-frame
attributes removed, SOP class set to US Image Storage), and every reference
back to the source is fixed afterwards: ReferencedSOPClassUID is set to the
real multi-frame class and ReferencedFrameNumber to the annotated frame in
the Source Image Sequence of the derivation.  No Frame of Reference or plane
position is invented.

A finding without a mask gets one derived from its contour, else from its
box; the segment description says which.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import structlog
from pydicom import Dataset
from pydicom.sr.coding import Code

from inference.findings import (
    AlgorithmInfo,
    BoundingBox,
    CardiacFinding,
    LesionFinding,
    StudyResult,
)
from sr_templates import codes
from sr_templates.options import ObjectKindValues, ResultOptions
from sr_templates.shapes import rasterize_box, rasterize_polygon
from sr_templates.sources import (
    SourceSet,
    copy_body_part,
    is_multiframe,
    restore_character_set,
    restore_referenced_classes,
    single_frame_view,
    source_side,
    walk_items,
)

LOGGER = structlog.get_logger(__name__)

MASK_FROM_ENGINE = "Mask from the AI engine"
MASK_FROM_CONTOUR = "Mask derived from the AI contour (no mask given)"
MASK_FROM_BOX = "Mask derived from the AI bounding box (no mask or contour given)"


@dataclass(frozen=True)
class SegmentCoding:
    """Segmented property category and type, and the anatomic region."""

    category: Code
    property_type: Code
    anatomy: Code


@dataclass(frozen=True)
class MaskItem:
    """One segment to write: a mask on one frame of one source image."""

    source_sop_instance_uid: str
    frame_number: int
    mask: np.ndarray
    label: str
    tracking_id: str
    tracking_uid: str
    coding: SegmentCoding
    algorithm: AlgorithmInfo
    description: str


@dataclass(frozen=True)
class _Outline:
    """What an engine gave for one segment, before a mask is derived."""

    source_sop_instance_uid: str
    frame_number: int
    label: str
    tracking_id: str
    tracking_uid: str
    coding: SegmentCoding
    mask: np.ndarray | None
    contour: np.ndarray | None
    box: BoundingBox | None
    note: str = ""


def _checked(mask: np.ndarray, ds: Dataset, what: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.shape != (ds.Rows, ds.Columns):
        raise ValueError(
            f"The {what} mask has shape {array.shape}, the image {(ds.Rows, ds.Columns)}."
        )
    return array.astype(bool)


def derive_mask(outline: _Outline, ds: Dataset) -> tuple[np.ndarray, str] | None:
    """The mask of an outline and where it came from: mask, else contour, else box.

    Raises
    ------
    ValueError
        If the engine's mask does not have the image's shape.
    """
    if outline.mask is not None:
        return _checked(outline.mask, ds, outline.label), MASK_FROM_ENGINE
    if outline.contour is not None:
        return rasterize_polygon(outline.contour, ds.Rows, ds.Columns), MASK_FROM_CONTOUR
    if outline.box is not None:
        return rasterize_box(outline.box, ds.Rows, ds.Columns), MASK_FROM_BOX
    return None


def _lesion_outline(lesion: LesionFinding) -> _Outline:
    key = lesion.key_observation
    return _Outline(
        source_sop_instance_uid=lesion.source_sop_instance_uid,
        frame_number=key.frame_number,
        label=f"{lesion.tracking_id} ({codes.class_name(lesion.label)})",
        tracking_id=lesion.tracking_id,
        tracking_uid=lesion.tracking_uid,
        coding=SegmentCoding(
            codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.MASS, codes.finding_site(lesion.anatomy)
        ),
        mask=lesion.mask,
        contour=key.contour,
        box=key.box,
    )


def _cardiac_outlines(finding: CardiacFinding) -> list[_Outline]:
    coding = SegmentCoding(codes.ANATOMICAL_STRUCTURE, codes.LEFT_VENTRICLE, codes.HEART)
    phases = (
        ("end-diastole", finding.end_diastolic_frame, finding.end_diastolic_mask,
         finding.end_diastolic_contour),
        ("end-systole", finding.end_systolic_frame, finding.end_systolic_mask,
         finding.end_systolic_contour),
    )
    return [
        _Outline(
            source_sop_instance_uid=finding.source_sop_instance_uid,
            frame_number=frame,
            label=f"{finding.tracking_id} ({phase})",
            tracking_id=finding.tracking_id,
            tracking_uid=finding.tracking_uid,
            coding=coding,
            mask=mask,
            contour=contour,
            box=None,
            note=f", {phase}",
        )
        for phase, frame, mask, contour in phases
    ]


def mask_items(result: StudyResult, sources: SourceSet) -> Iterator[MaskItem]:
    """Every segment of the job, in the order of the findings.

    LV cavities without mask or contour have no segment.
    """
    for image in result.images:
        if image.algorithm is None:
            continue
        outlines = [_lesion_outline(lesion) for lesion in image.lesions]
        for finding in image.cardiac:
            outlines.extend(_cardiac_outlines(finding))
        for outline in outlines:
            derived = derive_mask(outline, sources.image(outline.source_sop_instance_uid))
            if derived is None:
                continue
            yield MaskItem(
                source_sop_instance_uid=outline.source_sop_instance_uid,
                frame_number=outline.frame_number,
                mask=derived[0],
                label=outline.label[:64],
                tracking_id=outline.tracking_id,
                tracking_uid=outline.tracking_uid,
                coding=outline.coding,
                algorithm=image.algorithm,
                description=derived[1] + outline.note,
            )


def _restore_multiframe_references(seg: Dataset, source: Dataset, frame: int) -> None:
    """Point every reference to the view back at the multi-frame source.

    highdicom may share one item between sequences, so the Referenced
    Instance Sequence items are replaced by their own copies before the
    frame number goes into the Source Image Sequences.
    """
    for series in seg.get("ReferencedSeriesSequence", []):
        instances = []
        for old in series.ReferencedInstanceSequence:
            instance = Dataset()
            instance.ReferencedSOPClassUID = old.ReferencedSOPClassUID
            instance.ReferencedSOPInstanceUID = old.ReferencedSOPInstanceUID
            instances.append(instance)
        series.ReferencedInstanceSequence = instances
    restore_referenced_classes(seg, [source])
    for keyword, item in walk_items(seg):
        if (
            keyword == "SourceImageSequence"
            and item.get("ReferencedSOPInstanceUID") == source.SOPInstanceUID
        ):
            item.ReferencedFrameNumber = frame


def _segment(number: int, item: MaskItem, source: Dataset) -> hd.seg.SegmentDescription:
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=item.label,
        segmented_property_category=item.coding.category,
        segmented_property_type=item.coding.property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=item.algorithm.name,
            family=codes.ARTIFICIAL_INTELLIGENCE,
            version=item.algorithm.version,
            parameters=dict(item.algorithm.parameters) or None,
        ),
        tracking_uid=item.tracking_uid,
        tracking_id=item.tracking_id,
        anatomic_regions=[item.coding.anatomy],
    )
    description.SegmentDescription = item.description
    side = source_side(source) if item.coding.anatomy == codes.BREAST else None
    if side is not None:
        # The SEG has no Laterality of its own: the segment's region names the side.
        region = description.AnatomicRegionSequence[0]
        region.AnatomicRegionModifierSequence = [hd.sr.CodedConcept(*codes.LATERALITY[side])]
    return description


def _build_one(
    source: Dataset,
    frame: int,
    items: list[MaskItem],
    options: ResultOptions,
    instance_number: int,
) -> hd.seg.Segmentation:
    multiframe = is_multiframe(source)
    reference = single_frame_view(source) if multiframe else source
    pixels = np.stack([item.mask for item in items], axis=-1)[np.newaxis]
    seg = hd.seg.Segmentation(
        source_images=[reference],
        pixel_array=pixels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment(i, item, source)
                              for i, item in enumerate(items, start=1)],
        content_description=f"AI segmentation of frame {frame}"[:64],
        omit_empty_frames=False,
        **options.object_arguments(
            ObjectKindValues.SEG,
            source,
            instance_number,
            list({item.algorithm.device_uid: item.algorithm for item in items}.values()),
            source.SOPInstanceUID,
            frame,
        ),
    )
    restore_character_set(seg, source)
    seg.PatientOrientation = source.get("PatientOrientation", "")
    copy_body_part(seg, source)
    if multiframe:
        _restore_multiframe_references(seg, source, frame)
    return seg


def build_segmentations(
    sources: SourceSet, result: StudyResult, options: ResultOptions
) -> list[hd.seg.Segmentation]:
    """One BINARY SEG per annotated source frame, each segment a finding.

    A SEG carries no Laterality: dciodvfy allows it in no SEG, and the SEG
    IOD has no Image Laterality either.

    Raises
    ------
    ValueError
        If a mask does not have the shape of its image.
    """
    by_frame: dict[tuple[str, int], list[MaskItem]] = defaultdict(list)
    for item in mask_items(result, sources):
        by_frame[(item.source_sop_instance_uid, item.frame_number)].append(item)
    segs = [
        _build_one(sources.image(uid), frame, items, options, number)
        for number, ((uid, frame), items) in enumerate(by_frame.items(), start=1)
    ]
    segments = sum(len(items) for items in by_frame.values())
    LOGGER.info("segmentations_built", instances=len(segs), segments=segments)
    return segs
