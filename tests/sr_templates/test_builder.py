"""build_result_objects: every object for every kind of US source, input checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom.examples
import pytest
from pydicom import Dataset
from pydicom.uid import (
    ColorSoftcopyPresentationStateStorage,
    Comprehensive3DSRStorage,
    EncapsulatedPDFStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    generate_uid,
)

from inference.findings import BoundingBox, StudyResult
from sr_templates import ObjectKindValues, ResultOptions, build_result_objects
from sr_templates.sources import one_patient, patient_difference
from tests.sr_templates.sr_factories import analysed, make_lesion, make_us_image, study_of

EVERYTHING = ResultOptions(include_overlay_capture=True, job_sequence=2)
CONTOUR = np.array([[22.0, 22.0], [58.0, 25.0], [55.0, 58.0], [25.0, 55.0]])


def _example(name: str) -> Callable[[], Dataset]:
    return lambda: getattr(pydicom.examples, name)


def _without(keyword: str, ds: Dataset) -> Dataset:
    delattr(ds, keyword)
    return ds


SOURCES: dict[str, Callable[[], Dataset]] = {
    "synthetic-monochrome2": lambda: make_us_image("MONOCHROME2", japanese=True),
    "synthetic-rgb-no-region": lambda: make_us_image("RGB", regions=False),
    "synthetic-palette": lambda: make_us_image("PALETTE COLOR"),
    "synthetic-ybr-jpeg-cine": lambda: make_us_image("YBR_FULL_422", frames=4, japanese=True),
    "synthetic-no-body-part": lambda: make_us_image(body_part=None),
    "synthetic-lower-case-body-part": lambda: make_us_image(body_part="Abdomen"),
    "synthetic-no-modality": lambda: _without("Modality", make_us_image("RGB")),
    "synthetic-no-planar-configuration": lambda: _without("PlanarConfiguration",
                                                          make_us_image("RGB")),
    "pydicom-palette_color": _example("palette_color"),
    "pydicom-rgb_color": _example("rgb_color"),
    "pydicom-ybr_color": _example("ybr_color"),
    "pydicom-jpeg2k": _example("jpeg2k"),
}


def findings_for(source: Dataset) -> StudyResult:
    """A lesion with contour and heat map on a source (frame 2 of a cine)."""
    frames = (1, 2, 3) if int(source.get("NumberOfFrames", 1)) > 1 else (1,)
    heat = np.zeros((source.Rows, source.Columns))
    heat[20:60, 20:60] = 0.9
    lesion = make_lesion(source, BoundingBox(20, 20, 60, 60), frames=frames, contour=CONTOUR,
                         heatmap=heat)
    return study_of(analysed(source, [lesion]), source=source)


@pytest.mark.parametrize("kind", list(SOURCES))
def test_every_object_is_valid_for_every_source_kind(
    kind: str, dciodvfy: Callable, dcmtk_reads: Callable
) -> None:
    source = SOURCES[kind]()
    objects = build_result_objects([source], findings_for(source), EVERYTHING)
    classes = [o.SOPClassUID for o in objects]
    colour = source.PhotometricInterpretation != "MONOCHROME2"
    presentation = (
        ColorSoftcopyPresentationStateStorage if colour
        else GrayscaleSoftcopyPresentationStateStorage
    )
    assert classes == [
        Comprehensive3DSRStorage, SegmentationStorage, presentation, SecondaryCaptureImageStorage
    ]
    for obj in objects:
        dciodvfy(obj)
        dcmtk_reads(obj)
        assert obj.StudyInstanceUID == source.StudyInstanceUID
        assert obj.PatientName == source.PatientName
        assert obj.PatientID == source.PatientID
        assert obj.get("SpecificCharacterSet") == source.get("SpecificCharacterSet")
    numbers = [o.SeriesNumber for o in objects]
    assert numbers == [EVERYTHING.series_number(k) for k in ObjectKindValues]


def test_example_reports_pass_pixelmed(sr_validator: Callable[[Sequence[Dataset]], list]) -> None:
    reports = []
    for name in ("palette_color", "rgb_color", "ybr_color", "jpeg2k"):
        source = getattr(pydicom.examples, name)
        options = ResultOptions(include_segmentation=False, include_presentation_state=False)
        (report,) = build_result_objects([source], findings_for(source), options)
        reports.append(report)
    sr_validator(reports)


def _pdf(like: Dataset) -> Dataset:
    pdf = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID"):
        setattr(pdf, keyword, like.get(keyword))
    pdf.SOPClassUID = EncapsulatedPDFStorage
    pdf.SOPInstanceUID = generate_uid()
    pdf.EncapsulatedDocument = b"%PDF-1.4"
    return pdf


def test_single_frame_class_with_number_of_frames_is_referenced_without_frames(
    dciodvfy: Callable,
) -> None:
    source = make_us_image()
    source.NumberOfFrames = 1
    objects = build_result_objects([source], findings_for(source), EVERYTHING)
    for obj in objects:
        dciodvfy(obj)


def test_non_image_instances_are_ignored(tmp_path: Path) -> None:
    source = make_us_image()
    result = findings_for(source)
    earlier_report = build_result_objects([source], result, ResultOptions())[0]
    objects = build_result_objects([source, _pdf(source), earlier_report], result, ResultOptions())
    report = objects[0]
    library = next(i for i in report.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue
               == "111028").ContentSequence
    referenced = [i.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                  for i in library]
    assert referenced == [source.SOPInstanceUID]


def test_each_job_writes_new_series() -> None:
    source = make_us_image()
    result = findings_for(source)
    first = build_result_objects([source], result, ResultOptions(job_sequence=0))
    second = build_result_objects([source], result, ResultOptions(job_sequence=1))
    assert not {o.SeriesInstanceUID for o in first} & {o.SeriesInstanceUID for o in second}
    assert not {o.SeriesNumber for o in first} & {o.SeriesNumber for o in second}


def test_instances_of_one_kind_share_one_series() -> None:
    first, second = make_us_image(), make_us_image("RGB")
    result = study_of(
        analysed(first, [make_lesion(first, BoundingBox(1, 1, 20, 20))]),
        analysed(second, [make_lesion(second, BoundingBox(1, 1, 20, 20), index=2)]),
        source=first,
    )
    objects = build_result_objects([first, second], result, EVERYTHING)
    series: dict[str, set[str]] = {}
    for obj in objects:
        series.setdefault(obj.SOPClassUID, set()).add(obj.SeriesInstanceUID)
    assert len(objects) == 7
    assert all(len(uids) == 1 for uids in series.values())
    assert len(set.union(*series.values())) == len(ObjectKindValues)
    instance_uids = {o.SOPInstanceUID for o in objects}
    assert len(instance_uids) == 7
    assert not instance_uids & set.union(*series.values())


def test_same_seed_gives_the_same_objects() -> None:
    source = make_us_image()
    result = findings_for(source)
    options = ResultOptions(uid_seed="site-1")
    first = build_result_objects([source], result, options)
    second = build_result_objects([source], result, options)
    assert [o.SOPInstanceUID for o in first] == [o.SOPInstanceUID for o in second]
    assert first[0].ContentSequence == second[0].ContentSequence
    assert first[1].PixelData == second[1].PixelData


def test_options_select_the_objects() -> None:
    source = make_us_image()
    only_report = ResultOptions(include_segmentation=False, include_presentation_state=False)
    objects = build_result_objects([source], findings_for(source), only_report)
    assert [o.SOPClassUID for o in objects] == [Comprehensive3DSRStorage]


def test_sources_of_two_patients_raise_value_error() -> None:
    first, second = make_us_image(), make_us_image(patient_id="PID-2")
    with pytest.raises(ValueError, match="different patients"):
        build_result_objects([first, second], findings_for(first), ResultOptions())


def test_sources_of_two_studies_raise_value_error() -> None:
    first, second = make_us_image(), make_us_image(study_uid="1.2.3.4")
    with pytest.raises(ValueError, match="different studies"):
        build_result_objects([first, second], findings_for(first), ResultOptions())


def test_result_of_another_study_raises_value_error() -> None:
    source = make_us_image()
    result = findings_for(source)
    result.study_instance_uid = "1.2.3.4"
    with pytest.raises(ValueError, match="another study"):
        build_result_objects([source], result, ResultOptions())


def test_result_for_a_missing_image_raises_value_error() -> None:
    source, other = make_us_image(), make_us_image()
    with pytest.raises(ValueError, match="not among the sources"):
        build_result_objects([source], findings_for(other), ResultOptions())


def test_no_image_among_the_sources_raises_value_error() -> None:
    source = make_us_image()
    with pytest.raises(ValueError, match="No image"):
        build_result_objects([_pdf(source)], findings_for(source), ResultOptions())


def test_wrong_argument_types_raise_type_error() -> None:
    source = make_us_image()
    with pytest.raises(TypeError, match="options"):
        build_result_objects([source], findings_for(source), {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pydicom Dataset"):
        build_result_objects(["file.dcm"], findings_for(source), ResultOptions())  # type: ignore[list-item]
    with pytest.raises(TypeError, match="StudyResult"):
        build_result_objects([source], None, ResultOptions())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keyword", "first", "second"),
    [
        ("PatientName", "Doe^Jane", "DOE^JANE^^^"),
        ("PatientName", "Doe^Jane", " Doe ^ Jane"),
        ("IssuerOfPatientID", None, "HOSP"),
        ("PatientBirthDate", "19700101", ""),
    ],
)
def test_patient_values_written_differently_or_left_out_agree(
    keyword: str, first: str | None, second: str, dciodvfy: Callable
) -> None:
    a, b = make_us_image(), make_us_image()
    for ds, value in ((a, first), (b, second)):
        if value is None:
            ds.pop(keyword, None)
        else:
            setattr(ds, keyword, value)
    result = study_of(analysed(a, []), analysed(b, []), source=a)
    for obj in build_result_objects([a, b], result, ResultOptions()):
        dciodvfy(obj)


def test_one_patient_keeps_the_images_most_agree_with() -> None:
    images = [make_us_image(patient_name=name) for name in ("Roe^Max", "Doe^Jane", "DOE^JANE^")]
    images[2].PatientBirthDate = ""
    assert one_patient(images) == ([1, 2], {0: "PatientName"})
    assert one_patient([]) == ([], {})


def test_patient_ids_differing_in_case_are_two_patients() -> None:
    a, b = make_us_image(patient_id="AB123"), make_us_image(patient_id="ab123")
    assert patient_difference(a, b) == "PatientID"
    c = make_us_image(patient_name="DOE^JANE^^")
    assert patient_difference(make_us_image(), c) is None


def _with(ds: Dataset, **values: object) -> Dataset:
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("values", "written"),
    [
        ({"SpecificCharacterSet": "ISO_IR 6"}, None),
        ({"SpecificCharacterSet": "ISO 2022 IR 6"}, None),
        ({"SpecificCharacterSet": "ISO 2022 IR 100"}, "ISO_IR 100"),
        ({"SpecificCharacterSet": ["ISO_IR 100", "ISO_IR 100"]}, "ISO_IR 100"),
        ({"PatientSex": "U"}, "ISO_IR 100"),
        ({"PatientSex": "female"}, "ISO_IR 100"),
        ({"PatientSex": "W"}, "ISO_IR 100"),
    ],
)
def test_character_sets_and_patient_sex_devices_write(
    values: dict[str, object], written: str | None, dciodvfy: Callable
) -> None:
    source = _with(make_us_image("RGB"), **values)
    objects = build_result_objects([source], findings_for(source), EVERYTHING)
    assert len(objects) == 4
    for obj in objects:
        dciodvfy(obj)
        assert obj.get("SpecificCharacterSet") == written
        assert obj.PatientSex in ("", "F")


@pytest.mark.parametrize(
    ("japanese", "charset", "institution", "written"),
    [
        (False, None, "Hôpital Genève", "ISO_IR 192"),
        (False, "ISO_IR 100", "Hôpital Genève", "ISO_IR 100"),
        (False, "ISO_IR 100", "東京大学病院", "ISO_IR 192"),
        (True, None, "Hôpital Genève", "ISO_IR 192"),
        (True, None, "Clinic", ["", "ISO 2022 IR 87"]),
    ],
)
def test_text_the_node_writes_gets_a_character_set_that_holds_it(
    tmp_path: Path, japanese: bool, charset: str | None, institution: str,
    written: str | list[str], dciodvfy: Callable,
) -> None:
    source = make_us_image("RGB", japanese=japanese)
    if not japanese:
        _with(source, SpecificCharacterSet=charset)
    options = ResultOptions(include_overlay_capture=True, institution_name=institution)
    objects = build_result_objects([source], findings_for(source), options)
    for number, obj in enumerate(objects):
        dciodvfy(obj)
        path = tmp_path / f"{number}.dcm"
        obj.save_as(path, enforce_file_format=True)
        read = pydicom.dcmread(path)
        assert read.get("SpecificCharacterSet") == written
        assert read.InstitutionName == institution
        assert str(read.PatientName) == str(source.PatientName)
