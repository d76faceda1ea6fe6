"""Study completion as a pure function of state and time (injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dicom_node.completion import CompletionReasonValues, completion_reason
from dicom_node.config import Completion
from dicom_node.index import StudyState

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def state(last: datetime = T0, series: int = 1, forced: bool = False) -> StudyState:
    return StudyState(
        study_id=1,
        study_instance_uid="1.2.3",
        called_ae="NODE",
        last_received_at=last,
        series_count=series,
        force_complete=forced,
    )


def test_not_complete_within_quiet_period() -> None:
    rule = Completion(quiet_seconds=30)
    assert completion_reason(state(), rule, T0 + timedelta(seconds=29.9)) is None


def test_complete_after_quiet_period() -> None:
    rule = Completion(quiet_seconds=30)
    reason = completion_reason(state(), rule, T0 + timedelta(seconds=30))
    assert reason is CompletionReasonValues.QUIET_PERIOD


def test_new_instance_restarts_quiet_period() -> None:
    rule = Completion(quiet_seconds=30)
    later = T0 + timedelta(seconds=25)
    assert completion_reason(state(last=later), rule, T0 + timedelta(seconds=40)) is None
    assert completion_reason(state(last=later), rule, T0 + timedelta(seconds=55)) is not None


def test_expected_series_completes_early_after_settle() -> None:
    rule = Completion(quiet_seconds=300, expected_series=2)
    assert completion_reason(state(series=1), rule, T0 + timedelta(seconds=10)) is None
    assert completion_reason(state(series=2), rule, T0 + timedelta(seconds=1)) is None
    reason = completion_reason(state(series=2), rule, T0 + timedelta(seconds=5))
    assert reason is CompletionReasonValues.EXPECTED_SERIES


def test_forced_completes_at_once() -> None:
    rule = Completion(quiet_seconds=300)
    assert completion_reason(state(forced=True), rule, T0) is CompletionReasonValues.FORCED


def test_instances_after_a_first_job_wait_for_the_quiet_period() -> None:
    rule = Completion(quiet_seconds=60, expected_series=2)
    late = StudyState(study_id=1, study_instance_uid="1.2.3", called_ae="NODE",
                      last_received_at=T0, series_count=2, force_complete=False,
                      completed_before=True)
    assert completion_reason(late, rule, T0 + timedelta(seconds=10)) is None
    reason = completion_reason(late, rule, T0 + timedelta(seconds=60))
    assert reason is CompletionReasonValues.QUIET_PERIOD
