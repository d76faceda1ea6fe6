"""TID 1500 SR: content, round trip through highdicom's SR reader, validators."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from inference.findings import (
    AnatomyValues,
    BoundingBox,
    ImageResult,
    LesionFinding,
    NotAssessed,
    NotAssessedReasonValues,
    StudyResult,
)
from sr_templates import ObjectKindValues, ResultOptions, codes
from sr_templates.sources import SourceSet
from sr_templates.sr import build_measurement_report
from tests.sr_templates.sr_factories import (
    BREAST_ALGORITHM,
    CARDIAC_ALGORITHM,
    DELTA_CM,
    JAPANESE_NAME,
    analysed,
    make_cardiac,
    make_lesion,
    make_us_image,
    save,
    study_of,
)

OPTIONS = ResultOptions()
EVALUATIONS = codes.QUALITATIVE_EVALUATIONS.value
"""Code value of the report's Qualitative Evaluations container."""
CONTOUR = np.array([[20.0, 20.0], [60.0, 25.0], [55.0, 60.0], [25.0, 55.0]])


def build(
    sources: Sequence[Dataset], result: StudyResult, options: ResultOptions = OPTIONS
) -> Dataset | None:
    return build_measurement_report(SourceSet.from_datasets(sources, result), result, options)


def read_back(report: Dataset, tmp_path: Path) -> hd.sr.Comprehensive3DSR:
    return hd.sr.srread(save(report, tmp_path / "report.dcm"))


def box_groups(sr: hd.sr.Comprehensive3DSR) -> list:
    return [
        group
        for group in sr.content.get_planar_roi_measurement_groups()
        if group.get_measurements(name=codes.PROBABILITY_OF_CANCER)
    ]


def value_of(group: object, name: object) -> float:
    (measurement,) = group.get_measurements(name=name)  # type: ignore[attr-defined]
    return float(measurement.value)


def frames_of(group: object) -> list[int] | None:
    reference = group.roi.ContentSequence[0].ReferencedSOPSequence[0]  # type: ignore[attr-defined]
    frames = reference.get("ReferencedFrameNumber")
    if frames is None:
        return None
    return [int(f) for f in (frames if isinstance(frames, Sequence) else [frames])]


def assert_lesion_round_trips(group: object, lesion: LesionFinding, source: Dataset) -> None:
    key = lesion.key_observation
    assert group.tracking_uid == lesion.tracking_uid  # type: ignore[attr-defined]
    np.testing.assert_allclose(group.roi.value, key.box.polyline())  # type: ignore[attr-defined]
    reference = group.roi.ContentSequence[0].ReferencedSOPSequence[0]  # type: ignore[attr-defined]
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    evaluations = group.get_qualitative_evaluations(name=codes.LESION_CLASS)  # type: ignore[attr-defined]
    assert [e.value for e in evaluations] == [codes.lesion_class(lesion.label)]
    for label, probability in lesion.probabilities.items():
        assert value_of(group, codes.class_probability(label)) == pytest.approx(
            probability, abs=5e-4
        )
    assert value_of(group, codes.PROBABILITY_OF_CANCER) == pytest.approx(
        lesion.malignancy_probability, abs=5e-4
    )


def test_round_trip_boxes_classes_probabilities_and_sizes(tmp_path: Path) -> None:
    still = make_us_image("MONOCHROME2")
    cine = make_us_image("YBR_FULL_422", frames=6)
    lesions = [
        make_lesion(still, BoundingBox(10, 20, 50, 40), index=1),
        make_lesion(cine, BoundingBox(30, 30, 45, 90), frames=(2, 3, 4), index=2),
    ]
    result = study_of(analysed(still, lesions[:1]), analysed(cine, lesions[1:]), source=still)
    sr = read_back(build([still, cine], result), tmp_path)

    groups = box_groups(sr)
    assert len(groups) == 2
    for group, lesion, source in zip(groups, lesions, [still, cine], strict=True):
        assert_lesion_round_trips(group, lesion, source)
    mm_per_pixel = DELTA_CM * 10
    assert value_of(groups[0], codes.WIDTH) == pytest.approx(40 * mm_per_pixel)
    assert value_of(groups[0], codes.HEIGHT) == pytest.approx(20 * mm_per_pixel)
    # Taller than wide stays visible: width and height, not sorted long and short axes.
    assert value_of(groups[1], codes.WIDTH) == pytest.approx(15 * mm_per_pixel)
    assert value_of(groups[1], codes.HEIGHT) == pytest.approx(60 * mm_per_pixel)
    assert frames_of(groups[0]) is None
    assert frames_of(groups[1]) == [lesions[1].key_observation.frame_number]
    assert value_of(groups[1], codes.NUMBER_OF_FRAMES) == 3
    (spanned,) = groups[1].get_measurements(name=codes.NUMBER_OF_FRAMES)
    assert [int(f) for f in spanned.referenced_images[0].referenced_frame_numbers] == [2, 3, 4]


def test_values_are_written_to_the_precision_of_the_method(tmp_path: Path) -> None:
    """Probabilities to 0.001 and lengths to 0.1 mm, not the float's 16 digits."""
    source = make_us_image()
    lesion = make_lesion(source, BoundingBox(10.37, 20.11, 50.93, 40.71))
    lesion.probabilities = {c: p / 3.0 for c, p in zip(lesion.probabilities, (1.3, 0.8, 0.6, 0.3),
                                                      strict=True)}
    lesion.malignancy_probability = 2.0 / 3.0
    sr = read_back(build([source], study_of(analysed(source, [lesion]), source=source)), tmp_path)
    (group,) = box_groups(sr)
    written = {m.name.meaning: str(m.value) for m in group.get_measurements()}
    probabilities = [v for k, v in written.items() if k not in ("Width", "Height")]
    assert probabilities and all(len(v.partition(".")[2]) <= 3 for v in probabilities)
    assert written["Probability of cancer"] == "0.667"
    assert all(len(written[k].partition(".")[2]) <= 1 for k in ("Width", "Height"))


def test_report_carries_image_library_procedure_observer_and_equipment(tmp_path: Path) -> None:
    source = make_us_image()
    result = study_of(analysed(source, [make_lesion(source, BoundingBox(5, 5, 25, 25))]),
                      source=source)
    dataset = pydicom.dcmread(save(build([source], result), tmp_path / "report.dcm"))  # type: ignore[arg-type]
    by_concept = {i.ConceptNameCodeSequence[0].CodeValue: i for i in dataset.ContentSequence}
    library = by_concept["111028"].ContentSequence
    assert [g.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for g in library] == [source.SOPInstanceUID]
    procedure_item = by_concept["121058"]
    assert procedure_item.ConceptCodeSequence[0].CodeValue == codes.IMAGING_PROCEDURE.value
    device_uids = [i.UID for i in dataset.ContentSequence if i.ValueType == "UIDREF"]
    assert OPTIONS.device_uid in device_uids
    equipment_uids = [i.get("DeviceUID") for i in dataset.ContributingEquipmentSequence]
    assert OPTIONS.device_uid in equipment_uids
    assert result.images[0].algorithm.device_uid in equipment_uids  # type: ignore[union-attr]
    assert dataset.SeriesNumber == OPTIONS.series_number(ObjectKindValues.SR)
    assert dataset.Modality == "SR" and dataset.CompletionFlag == "COMPLETE"


def test_finding_without_us_region_has_no_sizes(tmp_path: Path) -> None:
    source = make_us_image("RGB", regions=False)
    lesion = make_lesion(source, BoundingBox(10, 10, 40, 40))
    sr = read_back(build([source], study_of(analysed(source, [lesion]), source=source)), tmp_path)
    (group,) = box_groups(sr)
    assert group.get_measurements(name=codes.WIDTH) == []
    assert group.get_measurements(name=codes.HEIGHT) == []
    assert_lesion_round_trips(group, lesion, source)


def test_box_touching_the_image_border(tmp_path: Path) -> None:
    source = make_us_image(rows=100, columns=120)
    lesion = make_lesion(source, BoundingBox(0, 60, 120, 100))
    sr = read_back(build([source], study_of(analysed(source, [lesion]), source=source)), tmp_path)
    (group,) = box_groups(sr)
    assert_lesion_round_trips(group, lesion, source)
    assert value_of(group, codes.WIDTH) == pytest.approx(12.0)
    assert value_of(group, codes.HEIGHT) == pytest.approx(4.0)


def test_box_leaving_the_image_raises_value_error() -> None:
    source = make_us_image(rows=100, columns=120)
    lesion = make_lesion(source, BoundingBox(100, 10, 121, 30))
    with pytest.raises(ValueError, match="leaves the"):
        build([source], study_of(analysed(source, [lesion]), source=source))


def test_lesion_in_one_frame_only_of_a_cine(tmp_path: Path) -> None:
    source = make_us_image("MONOCHROME2", frames=8)
    lesion = make_lesion(source, BoundingBox(10, 10, 30, 30), frames=(5,))
    sr = read_back(build([source], study_of(analysed(source, [lesion]), source=source)), tmp_path)
    (group,) = box_groups(sr)
    assert frames_of(group) == [5]
    assert value_of(group, codes.NUMBER_OF_FRAMES) == 1


def test_frame_outside_the_cine_raises_value_error() -> None:
    source = make_us_image(frames=4)
    lesion = make_lesion(source, BoundingBox(10, 10, 30, 30), frames=(5,))
    with pytest.raises(ValueError, match=r"outside 1\.\.4"):
        build([source], study_of(analysed(source, [lesion]), source=source))


def test_contour_gives_an_outline_group_with_area(tmp_path: Path) -> None:
    source = make_us_image()
    lesion = make_lesion(source, BoundingBox(15, 15, 65, 65), contour=CONTOUR)
    sr = read_back(build([source], study_of(analysed(source, [lesion]), source=source)), tmp_path)
    groups = sr.content.get_planar_roi_measurement_groups(tracking_uid=lesion.tracking_uid)
    assert len(groups) == 2
    (outline,) = [g for g in groups if g.get_measurements(name=codes.AREA)]
    np.testing.assert_allclose(outline.roi.value[:-1], CONTOUR)
    area_pixels = 1225.0
    assert value_of(outline, codes.AREA) == pytest.approx(
        area_pixels * (DELTA_CM * 10) ** 2, abs=0.051
    )


def test_no_findings_gives_an_explicit_negative_report(tmp_path: Path) -> None:
    first, second = make_us_image(), make_us_image()
    result = study_of(analysed(first), analysed(second), source=first)
    sr = read_back(build([first, second], result), tmp_path)
    assert box_groups(sr) == []
    (group,) = sr.content.get_image_measurement_groups()
    (evaluation,) = group.get_qualitative_evaluations(name=codes.MASS)
    assert evaluation.value == codes.ABSENT
    assert group.finding_sites[0].value == codes.LIVER
    assert sr.content.get_image_measurement_groups(finding_type=codes.MASS) == [], (
        "a negative group is not counted as a mass")
    referenced = {image.referenced_sop_instance_uid for image in group.source_images}
    assert referenced == {first.SOPInstanceUID, second.SOPInstanceUID}


def test_echo_without_result_says_so(tmp_path: Path) -> None:
    source = make_us_image(frames=4, body_part="HEART")
    image = ImageResult(source.SOPInstanceUID, AnatomyValues.HEART, CARDIAC_ALGORITHM)
    sr = read_back(build([source], study_of(image, source=source)), tmp_path)
    (group,) = sr.content.get_image_measurement_groups()
    (evaluation,) = group.get_qualitative_evaluations(name=codes.ALGORITHM_OUTCOME)
    assert evaluation.value == codes.NO_RESULT
    assert group.finding_sites[0].value == codes.HEART
    assert sr.content.get_image_measurement_groups(finding_type=codes.LEFT_VENTRICLE) == [], (
        "a group without a result is not counted as a ventricle measured")


def test_fifty_findings(tmp_path: Path) -> None:
    source = make_us_image(rows=200, columns=300)
    lesions = [
        make_lesion(source, BoundingBox(5 * i, 3 * i, 5 * i + 20, 3 * i + 15), index=i + 1)
        for i in range(50)
    ]
    sr = read_back(build([source], study_of(analysed(source, lesions), source=source)), tmp_path)
    groups = box_groups(sr)
    assert [g.tracking_uid for g in groups] == [lesion.tracking_uid for lesion in lesions]


def test_not_assessed_images_are_listed_with_their_reason(tmp_path: Path) -> None:
    ok, blurred, broken = make_us_image(), make_us_image(), make_us_image()
    result = study_of(
        analysed(ok),
        *[
            ImageResult(
                source_sop_instance_uid=ds.SOPInstanceUID,
                anatomy=AnatomyValues.LIVER,
                not_assessed=NotAssessed(ds.SOPInstanceUID, reason, detail),
            )
            for ds, reason, detail in [
                (blurred, NotAssessedReasonValues.IMAGE_QUALITY, "Blank image."),
                (broken, NotAssessedReasonValues.UNDECODABLE, "Pixel data could not be decoded."),
            ]
        ],
        source=ok,
    )
    sr = read_back(build([ok, blurred, broken], result), tmp_path)
    groups = sr.content.get_image_measurement_groups()
    reasons = {}
    for group in groups:
        for evaluation in group.get_qualitative_evaluations(name=codes.REASON_NOT_ASSESSED):
            reasons[evaluation.value.value] = {
                image.referenced_sop_instance_uid for image in group.source_images
            }
    assert reasons == {
        codes.not_assessed_reason(NotAssessedReasonValues.IMAGE_QUALITY).value: {
            blurred.SOPInstanceUID
        },
        codes.not_assessed_reason(NotAssessedReasonValues.UNDECODABLE).value: {
            broken.SOPInstanceUID
        },
    }
    # Why, in words, under Qualitative Evaluations, each inferred from its image.
    (container,) = [item for item in sr.ContentSequence
                    if item.ConceptNameCodeSequence[0].CodeValue == EVALUATIONS]
    said = {item.TextValue: item.ContentSequence[0].ReferencedSOPSequence[0]
            .ReferencedSOPInstanceUID for item in container.ContentSequence[1:]}
    assert said == {"Not assessed: Blank image.": blurred.SOPInstanceUID,
                    "Not assessed: Pixel data could not be decoded.": broken.SOPInstanceUID}


def test_options_can_turn_off_negative_and_not_assessed_reports() -> None:
    ok, broken = make_us_image(), make_us_image()
    result = study_of(
        analysed(ok),
        ImageResult(
            source_sop_instance_uid=broken.SOPInstanceUID,
            anatomy=AnatomyValues.BREAST,
            not_assessed=NotAssessed(
                broken.SOPInstanceUID, NotAssessedReasonValues.NO_ENGINE, "no engine"
            ),
        ),
        source=ok,
    )
    quiet = ResultOptions(report_when_nothing_found=False, report_not_assessed=False)
    assert build([ok, broken], result, quiet) is None
    assert build([ok, broken], result, ResultOptions(report_when_nothing_found=False))


def test_echo_ef_with_the_frames_used(tmp_path: Path) -> None:
    source = make_us_image(frames=6, body_part="HEART")
    finding = make_cardiac(source)
    image = ImageResult(
        source_sop_instance_uid=source.SOPInstanceUID,
        anatomy=AnatomyValues.HEART,
        algorithm=CARDIAC_ALGORITHM,
        cardiac=[finding],
    )
    sr = read_back(build([source], study_of(image, source=source)), tmp_path)
    (group,) = sr.content.get_image_measurement_groups()
    assert group.tracking_uid == finding.tracking_uid
    expected = [
        (codes.LVEF_BY_US, 55.5, "%", [2, 4]),
        (codes.LV_END_DIASTOLIC_VOLUME, 120.0, "ml", [2]),
        (codes.LV_END_SYSTOLIC_VOLUME, 53.4, "ml", [4]),
    ]
    for name, value, unit, frames in expected:
        (measurement,) = group.get_measurements(name=name)
        assert float(measurement.value) == pytest.approx(value)
        assert measurement.unit.value == unit
        used = measurement.referenced_images[0].referenced_frame_numbers
        assert [int(f) for f in used] == frames


def test_findings_without_algorithm_raise_value_error() -> None:
    source = make_us_image()
    image = analysed(source, [make_lesion(source, BoundingBox(1, 1, 9, 9))])
    image.algorithm = None
    with pytest.raises(ValueError, match="no algorithm"):
        build([source], study_of(image, source=source))


def test_japanese_patient_name_survives(tmp_path: Path) -> None:
    source = make_us_image(japanese=True)
    result = study_of(analysed(source, [make_lesion(source, BoundingBox(5, 5, 25, 25))]),
                      source=source)
    path = save(build([source], result), tmp_path / "jp.dcm")  # type: ignore[arg-type]
    dataset = pydicom.dcmread(path)
    assert list(dataset.SpecificCharacterSet) == ["", "ISO 2022 IR 87"]
    assert str(dataset.PatientName) == JAPANESE_NAME
    assert b"\x1b$B" in path.read_bytes()


def test_breast_lesion_and_sr_validators(
    tmp_path: Path,
    dciodvfy: Callable[[Dataset], str],
    sr_validator: Callable[[Sequence[Dataset]], list[str]],
    dcmtk_reads: Callable[[Dataset], None],
) -> None:
    breast = make_us_image("RGB", body_part="BREAST")
    cine = make_us_image("YBR_FULL_422", frames=5, body_part="BREAST")
    lesion = make_lesion(breast, BoundingBox(10, 10, 50, 50), anatomy=AnatomyValues.BREAST,
                         contour=CONTOUR)
    moving = make_lesion(cine, BoundingBox(0, 0, 30, 30), frames=(1, 2),
                         anatomy=AnatomyValues.BREAST)
    findings = study_of(
        analysed(breast, [lesion], AnatomyValues.BREAST, BREAST_ALGORITHM),
        analysed(cine, [moving], AnatomyValues.BREAST, BREAST_ALGORITHM),
        source=breast,
    )
    echo = make_us_image(frames=6, body_part="HEART")
    blurred = make_us_image()
    nothing = study_of(
        analysed(breast, [], AnatomyValues.BREAST, BREAST_ALGORITHM),
        ImageResult(echo.SOPInstanceUID, AnatomyValues.HEART, CARDIAC_ALGORITHM),
        ImageResult(blurred.SOPInstanceUID, AnatomyValues.LIVER, not_assessed=NotAssessed(
            blurred.SOPInstanceUID, NotAssessedReasonValues.IMAGE_QUALITY, "blurred")),
        source=breast,
    )
    cardiac = study_of(
        ImageResult(echo.SOPInstanceUID, AnatomyValues.HEART, CARDIAC_ALGORITHM,
                    cardiac=[make_cardiac(echo)]),
        source=echo,
    )
    reports = [
        build([breast, cine], findings),
        build([breast, echo, blurred], nothing),
        build([echo], cardiac),
    ]
    for report in reports:
        dciodvfy(report)  # type: ignore[arg-type]
        dcmtk_reads(report)  # type: ignore[arg-type]
    sr_validator(reports)  # type: ignore[arg-type]


def test_uncalibrated_echo_reports_ef_without_volumes(tmp_path: Path) -> None:
    source = make_us_image(frames=6, body_part="HEART", regions=False)
    finding = make_cardiac(source)
    finding.end_diastolic_volume_ml = finding.end_systolic_volume_ml = float("nan")
    image = ImageResult(source.SOPInstanceUID, AnatomyValues.HEART, CARDIAC_ALGORITHM,
                        cardiac=[finding])
    sr = read_back(build([source], study_of(image, source=source)), tmp_path)
    (group,) = sr.content.get_image_measurement_groups()
    assert [m.name.value for m in group.get_measurements()] == [codes.LVEF_BY_US.value]


def test_non_finite_probability_raises_value_error() -> None:
    source = make_us_image()
    lesion = make_lesion(source, BoundingBox(1, 1, 9, 9))
    lesion.malignancy_probability = float("nan")
    with pytest.raises(ValueError, match="not a finite number"):
        build([source], study_of(analysed(source, [lesion]), source=source))


def test_anatomy_notes_are_comments_inferred_from_their_images(
    tmp_path: Path,
    dciodvfy: Callable[[Dataset], str],
    sr_validator: Callable[[Sequence[Dataset]], list[str]],
) -> None:
    tagged_liver = make_us_image(body_part="LIVER")
    plain = make_us_image(body_part=None)
    note = "Tags say liver; the image looks like breast (p=0.91). The tags were followed."
    disagreement = analysed(tagged_liver, [])
    disagreement.anatomy_note = note
    result = study_of(disagreement, analysed(plain, []), source=tagged_liver)
    report = build([tagged_liver, plain], result)
    assert report is not None
    dciodvfy(report)
    sr_validator([report])
    root = read_back(report, tmp_path).ContentSequence
    (container,) = [item for item in root
                    if item.ConceptNameCodeSequence[0].CodeValue == EVALUATIONS]
    notice, comment = container.ContentSequence
    assert "not reviewed" in notice.TextValue
    assert comment.ValueType == "TEXT" and comment.TextValue == note
    (image,) = comment.ContentSequence
    assert image.RelationshipType == "INFERRED FROM"
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == tagged_liver.SOPInstanceUID


def test_every_report_says_it_is_unreviewed_ai_output() -> None:
    """Many SR viewers do not show the Preliminary and Verification flags: the content
    says it, first under Qualitative Evaluations, with no anatomy note after it."""
    source = make_us_image()
    report = build([source], study_of(analysed(source, []), source=source))
    assert report is not None
    (container,) = [item for item in report.ContentSequence
                    if item.ConceptNameCodeSequence[0].CodeValue == EVALUATIONS]
    (notice,) = container.ContentSequence
    assert notice.ValueType == "TEXT" and "not reviewed by a physician" in notice.TextValue
    assert "AI" in notice.TextValue and "0.1.0" in notice.TextValue
