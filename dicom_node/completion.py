"""When is a study complete?  Pure functions of the study's state and ``now``.

A study is complete when an operator forces it, when the pipeline's expected
number of series has arrived and a short settle time has passed, or after the
quiet period with no new instance.  Instances arriving after completion make
the study pending again, and the next completion starts a new job for them: that
one waits for the quiet period (the series were counted already, and a study
sent image by image would otherwise make a job every few seconds).
"""

from __future__ import annotations

import enum
from datetime import datetime

from dicom_node.config import Completion
from dicom_node.index import StudyState

SETTLE_SECONDS = 5.0
"""With an expected series count, how long the last series may still grow."""


class CompletionReasonValues(enum.Enum):
    """Why a study was declared complete."""

    FORCED = "forced"
    EXPECTED_SERIES = "expected_series"
    QUIET_PERIOD = "quiet_period"


def completion_reason(
    state: StudyState, rule: Completion, now: datetime
) -> CompletionReasonValues | None:
    """Why ``state`` is complete at ``now``, or ``None`` if it is not (yet).

    Parameters
    ----------
    state:
        The study's pending state, from the index.
    rule:
        The completion rule of the study's pipeline.
    now:
        The current time, from the node's clock.
    """
    if state.force_complete:
        return CompletionReasonValues.FORCED
    quiet = (now - state.last_received_at).total_seconds()
    if (
        rule.expected_series is not None
        and not state.completed_before
        and state.series_count >= rule.expected_series
        and quiet >= min(SETTLE_SECONDS, rule.quiet_seconds)
    ):
        return CompletionReasonValues.EXPECTED_SERIES
    if quiet >= rule.quiet_seconds:
        return CompletionReasonValues.QUIET_PERIOD
    return None
