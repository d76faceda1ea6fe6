"""TID 1500 Measurement Report (Comprehensive 3D SR) from plain findings.

Content per job:

* one TID 1410 planar ROI group per lesion: tracking identifier and UID,
  finding type/category/site, the key observation's box as a closed
  POLYLINE on the source image (with its frame number on a cine), the class
  as a CODE evaluation, every class probability and the probability of
  cancer as NUM (UCUM ``1``), the box's width and height in mm from the
  ultrasound region (omitted without spatial calibration), the number of
  frames the lesion spans with those frames referenced, and the TID 4019
  algorithm identification; its geometric purpose is "Bounded by";
* when the engine gave a contour, a second TID 1410 group for the same
  lesion (same tracking identifier and UID) whose region is that contour
  (geometric purpose "Outline"), with the enclosed area in mm2 when the
  ultrasound region is calibrated;
* one TID 1501 group per echo finding: EF (%), EDV and ESV (ml), each
  referencing the frames it was computed from (the volumes only when they
  are numbers: without spatial calibration the engine gives NaN);
* TID 1501 groups saying which analysed images showed nothing (liver and
  breast: "Mass" = "Absent"; other views: "Algorithm outcome" = "No
  finding or measurement") and which images were not analysed and why;
* under "Qualitative Evaluations" (TID 1500 row 12), first a "Comment" that the
  report is unreviewed AI output for a physician to confirm (:data:`AI_NOTICE`), then
  a "Comment" per image whose anatomy the analyzer settled with a note (tags and image
  disagreed, or a doubtful view was followed because the routing named it) and per
  image not assessed (why, in words), inferred from that image.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
import structlog
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom import Dataset
from pydicom.sr.coding import Code

from inference.findings import (
    AlgorithmInfo,
    AnatomyValues,
    CardiacFinding,
    ImageResult,
    LesionFinding,
    NotAssessedReasonValues,
    StudyResult,
)
from inference.geometry import box_size_mm, spatial_region_for
from sr_templates import codes
from sr_templates.options import ObjectKindValues, ResultOptions
from sr_templates.shapes import closed_polyline, polygon_area, polygon_bounds
from sr_templates.sources import (
    SourceSet,
    is_multiframe,
    restore_character_set,
    source_side,
)

LOGGER = structlog.get_logger(__name__)

_LESION_ANATOMIES = frozenset({AnatomyValues.LIVER, AnatomyValues.BREAST})

Group = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


def algorithm_identification(algorithm: AlgorithmInfo) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification of an engine's model."""
    parameters = [f"{key}={value}" for key, value in sorted(algorithm.parameters.items())]
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version, parameters=parameters or None
    )


def reference_frames(ds: Dataset, frames: Sequence[int]) -> list[int] | None:
    """Frame numbers to reference on ``ds``: ``None`` for single-frame images."""
    return sorted(set(frames)) if is_multiframe(ds) else None


def reportable_volumes(finding: CardiacFinding) -> bool:
    """Whether the EDV and ESV are numbers (NaN without spatial calibration)."""
    return math.isfinite(finding.end_diastolic_volume_ml) and math.isfinite(
        finding.end_systolic_volume_ml
    )


DECIMALS = {
    codes.UNIT_ONE.value: 3,
    codes.UNIT_MM.value: 1,
    codes.UNIT_MM2.value: 1,
    codes.UNIT_PERCENT.value: 1,
    codes.UNIT_ML.value: 1,
}
"""Decimals written per unit: what the methods can support (a probability to 0.001, a
length measured on an ultrasound image to 0.1 mm, an EF to 0.1 point), not the float's
digits."""


def _num(
    name: Code, value: float, unit: Code, **kwargs: Any
) -> hd.sr.Measurement:
    if not math.isfinite(value):
        raise ValueError(f"{name.meaning} is not a finite number: {value}.")
    return hd.sr.Measurement(
        name=name, value=round(float(value), DECIMALS[unit.value]), unit=unit, **kwargs
    )


def _lesion_measurements(lesion: LesionFinding, sources: SourceSet) -> list[hd.sr.Measurement]:
    src = sources.image(lesion.source_sop_instance_uid)
    regions = sources.regions(lesion.source_sop_instance_uid)
    key = lesion.key_observation
    measurements = [
        _num(codes.class_probability(label), probability, codes.UNIT_ONE)
        for label, probability in lesion.probabilities.items()
    ]
    measurements.append(
        _num(codes.PROBABILITY_OF_CANCER, lesion.malignancy_probability, codes.UNIT_ONE)
    )
    size = box_size_mm(regions, key.box)
    if size is not None:
        measurements.append(_num(codes.WIDTH, size[0], codes.UNIT_MM))
        measurements.append(_num(codes.HEIGHT, size[1], codes.UNIT_MM))
    frames = reference_frames(src, lesion.frame_numbers)
    if frames is not None:
        spanned = hd.sr.SourceImageForMeasurement.from_source_image(src, frames)
        measurements.append(
            _num(codes.NUMBER_OF_FRAMES, len(frames), codes.UNIT_ONE, referenced_images=[spanned])
        )
    return measurements


def _planar_group(
    lesion: LesionFinding,
    algorithm: AlgorithmInfo,
    sources: SourceSet,
    outline: np.ndarray,
    purpose: Code,
    measurements: Sequence[hd.sr.Measurement],
    qualitative_evaluations: Sequence[hd.sr.QualitativeEvaluation] = (),
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    src = sources.image(lesion.source_sop_instance_uid)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=outline,
        source_image=hd.sr.SourceImageForRegion.from_source_image(
            src, reference_frames(src, [lesion.key_observation.frame_number])
        ),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=lesion.tracking_uid, identifier=lesion.tracking_id
        ),
        referenced_region=region,
        finding_type=codes.MASS,
        finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        algorithm_id=algorithm_identification(algorithm),
        finding_sites=[_finding_site(lesion, src)],
        measurements=list(measurements) or None,
        qualitative_evaluations=list(qualitative_evaluations) or None,
        geometric_purpose=purpose,
    )


def _finding_site(lesion: LesionFinding, source: Dataset) -> hd.sr.FindingSite:
    """The organ of a lesion, with the side of a paired one (a breast) that its image
    shows (Laterality, else Image Laterality), so a bilateral study's report says
    which breast each lesion is in."""
    side = source_side(source) if lesion.anatomy is AnatomyValues.BREAST else None
    return hd.sr.FindingSite(codes.finding_site(lesion.anatomy),
                             laterality=codes.LATERALITY.get(side or ""))


def _lesion_groups(
    lesion: LesionFinding, algorithm: AlgorithmInfo, sources: SourceSet
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """The box group of a lesion, and before it an outline group when it has a contour.

    Viewers that merge the groups of one Tracking UID (OHIF) draw the first group's
    region and label it with every group's measurements: the outline, labelled with
    its area and the box's width and height, describes the lesion; the box labelled
    with the outline's area would not.
    """
    key = lesion.key_observation
    groups = [
        _planar_group(
            lesion,
            algorithm,
            sources,
            key.box.polyline(),
            codes.BOUNDED_BY,
            _lesion_measurements(lesion, sources),
            [hd.sr.QualitativeEvaluation(codes.LESION_CLASS, codes.lesion_class(lesion.label))],
        )
    ]
    if key.contour is not None:
        contour = closed_polyline(key.contour)
        region = spatial_region_for(
            sources.regions(lesion.source_sop_instance_uid), polygon_bounds(contour)
        )
        area = []
        if region is not None and region.delta_x_mm and region.delta_y_mm:
            mm2 = polygon_area(contour) * region.delta_x_mm * region.delta_y_mm
            area.append(_num(codes.AREA, mm2, codes.UNIT_MM2))
        groups.insert(
            0, _planar_group(lesion, algorithm, sources, contour, codes.OUTLINE, area)
        )
    return groups


def _cardiac_group(
    finding: CardiacFinding, algorithm: AlgorithmInfo, sources: SourceSet
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    src = sources.image(finding.source_sop_instance_uid)
    ed, es = finding.end_diastolic_frame, finding.end_systolic_frame

    def frames_used(*frames: int) -> dict[str, object]:
        refs = reference_frames(src, frames)
        image = hd.sr.SourceImageForMeasurement.from_source_image(src, refs)
        return {"referenced_images": [image]}

    method = codes.METHOD_OF_DISKS_SINGLE_PLANE
    measurements = [
        _num(codes.LVEF_BY_US, finding.ejection_fraction_percent, codes.UNIT_PERCENT,
             method=method, **frames_used(ed, es)),
    ]
    if reportable_volumes(finding):
        measurements += [
            _num(codes.LV_END_DIASTOLIC_VOLUME, finding.end_diastolic_volume_ml, codes.UNIT_ML,
                 method=method, **frames_used(ed)),
            _num(codes.LV_END_SYSTOLIC_VOLUME, finding.end_systolic_volume_ml, codes.UNIT_ML,
                 method=method, **frames_used(es)),
        ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=finding.tracking_uid, identifier=finding.tracking_id
        ),
        finding_type=codes.LEFT_VENTRICLE,
        algorithm_id=algorithm_identification(algorithm),
        finding_sites=[hd.sr.FindingSite(codes.HEART)],
        measurements=measurements,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(
                src, reference_frames(src, [ed, es])
            )
        ],
    )


def _source_images(
    images: Sequence[ImageResult], sources: SourceSet
) -> list[hd.sr.SourceImageForMeasurementGroup]:
    return [
        hd.sr.SourceImageForMeasurementGroup.from_source_image(
            sources.image(image.source_sop_instance_uid)
        )
        for image in images
    ]


def _negative_statement(
    anatomy: AnatomyValues, side: str | None
) -> tuple[list[hd.sr.FindingSite], hd.sr.QualitativeEvaluation]:
    """Sites and evaluation saying an analysed image gave nothing.

    No finding type: "Finding = Mass" (or "Left ventricle") would make readers that
    select groups by finding type (highdicom, viewers, SR indexes) count it as a mass or
    a ventricle measured; a liver or breast image's evaluation says "Mass = Absent", a
    breast's site names the side its images show.
    """
    if anatomy in _LESION_ANATOMIES:
        site = [hd.sr.FindingSite(codes.finding_site(anatomy),
                                  laterality=codes.LATERALITY.get(side or ""))]
        return site, hd.sr.QualitativeEvaluation(codes.MASS, codes.ABSENT)
    no_result = hd.sr.QualitativeEvaluation(codes.ALGORITHM_OUTCOME, codes.NO_RESULT)
    if anatomy is AnatomyValues.HEART:
        return [hd.sr.FindingSite(codes.HEART)], no_result
    return [], no_result


def _nothing_found_groups(
    result: StudyResult, sources: SourceSet, options: ResultOptions
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    negatives: dict[tuple[str, AnatomyValues, str | None], list[ImageResult]] = \
        defaultdict(list)
    algorithms: dict[str, AlgorithmInfo] = {}
    for image in result.images:
        algorithm = image.algorithm
        if algorithm is None or image.not_assessed is not None:
            continue
        if not image.lesions and not image.cardiac:
            algorithms[algorithm.device_uid] = algorithm
            side = (source_side(sources.image(image.source_sop_instance_uid))
                    if image.anatomy is AnatomyValues.BREAST else None)
            negatives[(algorithm.device_uid, image.anatomy, side)].append(image)
    groups = []
    for (device_uid, anatomy, side), images in negatives.items():
        algorithm = algorithms[device_uid]
        sites, evaluation = _negative_statement(anatomy, side)
        place = anatomy.value if side is None else f"{anatomy.value} {side}"
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=options.uid(result.study_instance_uid, "negative", device_uid, anatomy,
                                    *([side] if side else [])),
                    identifier=f"Nothing found ({place}, {algorithm.name})",
                ),
                algorithm_id=algorithm_identification(algorithm),
                finding_sites=sites or None,
                qualitative_evaluations=[evaluation],
                source_images=_source_images(images, sources),
            )
        )
    return groups


def _not_assessed_groups(
    result: StudyResult, sources: SourceSet, options: ResultOptions
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    by_reason: dict[NotAssessedReasonValues, list[ImageResult]] = defaultdict(list)
    for image in result.images:
        if image.not_assessed is not None:
            by_reason[image.not_assessed.reason].append(image)
    groups = []
    for reason, images in by_reason.items():
        code = codes.not_assessed_reason(reason)
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=options.uid(result.study_instance_uid, "not-assessed", code.value),
                    identifier=f"Not assessed: {code.meaning}",
                ),
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(codes.REASON_NOT_ASSESSED, code)
                ],
                source_images=_source_images(images, sources),
            )
        )
    return groups


def _finding_groups(result: StudyResult, sources: SourceSet) -> list[Group]:
    groups: list[Group] = []
    for image in result.images:
        if (image.lesions or image.cardiac) and image.algorithm is None:
            raise ValueError(
                f"Image {image.source_sop_instance_uid} has findings but no algorithm."
            )
        algorithm = image.algorithm
        if algorithm is None:
            continue
        for lesion in image.lesions:
            groups.extend(_lesion_groups(lesion, algorithm, sources))
        groups.extend(_cardiac_group(finding, algorithm, sources) for finding in image.cardiac)
    return groups


AI_NOTICE = (
    "Generated automatically by {device} {version}, an AI system; not reviewed by a "
    "physician. Decision support only: every finding and measurement is to be confirmed "
    "on the images. Lesion width and height are the extent of the AI's box. Lesion "
    "numbers count detections: a lesion seen on several images or clips has a number on "
    "each."
)
"""The first Comment of every report (many SR viewers do not show the Preliminary and
Verification flags)."""


def _comment(text: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=codes.COMMENT, value=text,
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _image_notes(result: StudyResult, options: ResultOptions) -> list[tuple[str, str]]:
    """``(text, source SOP Instance UID)`` of each image's anatomy note and, when the
    report says which images were not assessed, of why each one was not (the detail
    the coded reason cannot carry: "Colour overlay on 7 % of the visible pixels")."""
    notes = []
    for image in result.images:
        uid = image.source_sop_instance_uid
        if image.anatomy_note is not None:
            notes.append((image.anatomy_note, uid))
        if options.report_not_assessed and image.not_assessed is not None:
            notes.append((f"Not assessed: {image.not_assessed.detail}", uid))
    return notes


def _qualitative_evaluations(result: StudyResult, sources: SourceSet,
                             options: ResultOptions) -> hd.sr.ContainerContentItem:
    """The Qualitative Evaluations container: the AI notice, then the images' notes,
    each inferred from its image."""
    comments = [_comment(AI_NOTICE.format(device=options.device_name,
                                          version=options.software_version))]
    for text, uid in _image_notes(result, options):
        comment = _comment(text)
        source = sources.image(uid)
        comment.ContentSequence = hd.sr.ContentSequence([
            hd.sr.ImageContentItem(
                name=codes.SOURCE,
                referenced_sop_class_uid=source.SOPClassUID,
                referenced_sop_instance_uid=source.SOPInstanceUID,
                relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
            )
        ])
        comments.append(comment)
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(comments)
    return container


def build_measurement_report(
    sources: SourceSet, result: StudyResult, options: ResultOptions, instance_number: int = 1
) -> hd.sr.Comprehensive3DSR | None:
    """Build the job's TID 1500 Measurement Report.

    Parameters
    ----------
    sources:
        The validated source images of the job.
    result:
        Findings of the job.
    options:
        Job options (series, equipment, which statements to include).
    instance_number:
        Instance Number of the report.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR | None
        The report, or ``None`` when it would say nothing because the
        options turn off the statements it would consist of.

    Raises
    ------
    ValueError
        If an image has findings but no algorithm, or a finding has an
        unknown class or anatomy.
    """
    groups: list[Group] = _finding_groups(result, sources)
    if options.report_when_nothing_found:
        groups.extend(_nothing_found_groups(result, sources, options))
    if options.report_not_assessed:
        groups.extend(_not_assessed_groups(result, sources, options))
    if not groups:
        LOGGER.info("measurement_report_skipped", reason="nothing to report")
        return None
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=options.device_uid,
        name=options.device_name,
        manufacturer_name=options.manufacturer,
        model_name=options.device_name,
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=hd.sr.CodedConcept.from_code(codes.OBSERVER_TYPE_DEVICE),
                observer_identifying_attributes=device,
            )
        ),
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=groups,
        referenced_images=list(sources),
    )
    report[0].ContentSequence.append(_qualitative_evaluations(result, sources, options))
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(sources),
        content=report,
        is_complete=True,
        **options.object_arguments(
            ObjectKindValues.SR, sources.images[0], instance_number, result.algorithms
        ),
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=codes.PRIVATE_SCHEME, name=codes.PRIVATE_SCHEME_NAME
            )
        ],
    )
    restore_character_set(sr, sources.images[0])
    LOGGER.info("measurement_report_built", groups=len(groups), images=len(sources.images))
    return sr
