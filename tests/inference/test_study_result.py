"""A study's findings are named uniquely across its images."""

from __future__ import annotations

from pydicom import Dataset

from inference.findings import AnatomyValues, BoundingBox, ImageResult
from tests.sr_templates.sr_factories import (
    analysed,
    make_cardiac,
    make_lesion,
    make_us_image,
    study_of,
)


def _echo(ds: Dataset) -> ImageResult:
    return ImageResult(ds.SOPInstanceUID, AnatomyValues.HEART, cardiac=[make_cardiac(ds)])


def test_lesions_and_ventricles_are_numbered_across_the_study() -> None:
    first, second, echo, other_echo = (make_us_image() for _ in range(4))
    box = BoundingBox(10, 10, 30, 30)
    study = study_of(
        analysed(first, [make_lesion(first, box, index=1), make_lesion(first, box, index=2)]),
        analysed(second, [make_lesion(second, box, index=1)]),
        _echo(echo),
        _echo(other_echo),
        source=first,
    )
    study.number_findings()
    assert [lesion.tracking_id for lesion in study.lesions] == ["Lesion 1", "Lesion 2", "Lesion 3"]
    assert [lesion.source_sop_instance_uid for lesion in study.lesions] == [
        first.SOPInstanceUID, first.SOPInstanceUID, second.SOPInstanceUID]
    assert [f.tracking_id for f in study.cardiac] == ["Left ventricle 1", "Left ventricle 2"]


def test_a_single_left_ventricle_keeps_its_name() -> None:
    echo = make_us_image()
    study = study_of(_echo(echo), source=echo)
    study.number_findings()
    assert [f.tracking_id for f in study.cardiac] == ["Left ventricle"]
