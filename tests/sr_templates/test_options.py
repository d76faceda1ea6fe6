"""ResultOptions: series numbering per job, UIDs, validation."""

from __future__ import annotations

import pytest

from sr_templates import ObjectKindValues, ResultOptions
from tests.sr_templates.sr_factories import ALGORITHM, BREAST_ALGORITHM


def test_series_numbers_follow_the_documented_formula() -> None:
    options = ResultOptions(job_sequence=3)
    assert options.series_number(ObjectKindValues.SR) == 9031
    assert options.series_number(ObjectKindValues.SC) == 9034


def test_each_job_gets_new_series_numbers_and_uids() -> None:
    first, second = ResultOptions(job_sequence=0), ResultOptions(job_sequence=1)
    numbers_first = {first.series_number(k) for k in ObjectKindValues}
    numbers_second = {second.series_number(k) for k in ObjectKindValues}
    assert not numbers_first & numbers_second
    study = "1.2.3"
    assert first.series_uid(study, ObjectKindValues.SR) != second.series_uid(
        study, ObjectKindValues.SR
    )


def test_seeded_uids_are_reproducible_and_distinct_per_part() -> None:
    options = ResultOptions(uid_seed="node-a")
    assert options.uid("x", 1) == ResultOptions(uid_seed="node-a").uid("x", 1)
    assert options.uid("x", 1) != options.uid("x", 2)
    assert options.uid("x", 1).startswith("2.25.")


def test_unseeded_uids_are_random() -> None:
    options = ResultOptions()
    assert options.uid("x") != options.uid("x")


def test_device_uid_changes_with_software_version() -> None:
    assert ResultOptions(software_version="1").device_uid != ResultOptions(
        software_version="2"
    ).device_uid


@pytest.mark.parametrize("job", [-1, 2**31])
def test_job_sequence_out_of_range_raises_value_error(job: int) -> None:
    with pytest.raises(ValueError):
        ResultOptions(job_sequence=job)


def test_job_sequence_of_wrong_type_raises_type_error() -> None:
    with pytest.raises(TypeError):
        ResultOptions(job_sequence="1")  # type: ignore[arg-type]


def test_empty_manufacturer_raises_value_error() -> None:
    with pytest.raises(ValueError, match="manufacturer"):
        ResultOptions(manufacturer=" ")


def test_contributing_equipment_carries_device_uids() -> None:
    options = ResultOptions()
    items = options.contributing_equipment([ALGORITHM, BREAST_ALGORITHM])
    assert [i.DeviceUID for i in items] == [
        options.device_uid, ALGORITHM.device_uid, BREAST_ALGORITHM.device_uid
    ]
    assert items[1].ManufacturerModelName == ALGORITHM.name
    assert items[1].SoftwareVersions == ALGORITHM.version
