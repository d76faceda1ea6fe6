"""The index's part of the spool's retention (:mod:`dicom_node.retention`): which
studies may go, and their removal.

A study may go once it is finished with: nothing of it waits for a job, no job of
it is queued, running, waiting for disk or failed, none of its exports is pending
or in the error queue, and nothing happened to it (an instance received, a job
finished, an export delivered) since the cutoff.  Its rows go with its files:
the index keeps what the node still has to act on, not a history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select, update

from dicom_node.index.models import (
    AssociationRecord,
    Export,
    ExportState,
    Instance,
    Job,
    JobState,
    ResultObject,
    Series,
    Study,
)
from dicom_node.index.store import QUERY_CHUNK, Index

HELD_JOB_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.WAITING_FOR_DISK,
                   JobState.FAILED)
"""Job states that hold a study in the spool: still to run, or failed and waiting for an
operator's re-run (its images were never analysed)."""

OPEN_RECORD_GRACE = timedelta(days=1)
"""How much longer than a closed one the record of an association never closed (a crash)
is kept: an association may last hours, never a day."""

HELD_EXPORT_STATES = (ExportState.PENDING, ExportState.FAILED)
"""Export states that hold a study: its results have yet to be delivered (a failed
export waits for an operator's retry or discard)."""


@dataclass(frozen=True)
class StudyFiles:
    """What a study holds on disk, read before its removal.

    Attributes
    ----------
    study_id:
        The study's index id.
    instance_paths:
        Its spooled files that no other study's rows name (the same study sent to
        two called AE titles shares its files).
    result_paths:
        The result objects its jobs wrote.
    """

    study_id: int
    instance_paths: tuple[str, ...]
    result_paths: tuple[str, ...]


def _expired(cutoff: datetime) -> ColumnElement[bool]:
    """Condition on :class:`Study` rows: finished with, and untouched since ``cutoff``."""
    busy_job = exists().where(
        Job.study_id == Study.id,
        or_(Job.state.in_(HELD_JOB_STATES), Job.finished_at >= cutoff),
    )
    held_export = exists().where(
        Export.job_id == Job.id,
        Job.study_id == Study.id,
        or_(Export.state.in_(HELD_EXPORT_STATES), Export.delivered_at >= cutoff),
    )
    return and_(
        Study.pending_count == 0, Study.last_received_at < cutoff, ~busy_job, ~held_export
    )


def expired_studies(index: Index, cutoff: datetime, limit: int) -> list[int]:
    """Ids of up to ``limit`` studies that may be removed, the oldest first."""
    with index.session() as s:
        return list(
            s.scalars(
                select(Study.id)
                .where(_expired(cutoff))
                .order_by(Study.last_received_at)
                .limit(limit)
            )
        )


def study_files(index: Index, study_id: int) -> StudyFiles:
    """The files of a study, for :meth:`dicom_node.spool.Spool.plan_removal`."""
    with index.session() as s:
        paths = sorted(set(
            s.scalars(select(Instance.path).join(Series).where(Series.study_id == study_id))
        ))
        shared: set[str] = set()
        for start in range(0, len(paths), QUERY_CHUNK):
            chunk = paths[start:start + QUERY_CHUNK]
            shared.update(
                s.scalars(
                    select(Instance.path)
                    .join(Series)
                    .where(Instance.path.in_(chunk), Series.study_id != study_id)
                )
            )
        results = s.scalars(
            select(ResultObject.path).join(Job).where(Job.study_id == study_id)
        )
        return StudyFiles(
            study_id=study_id,
            instance_paths=tuple(path for path in paths if path not in shared),
            result_paths=tuple(sorted(results)),
        )


def delete_study(index: Index, files: StudyFiles, cutoff: datetime) -> bool:
    """Remove a study's rows (instances, series, jobs, results, exports and the study).

    Returns ``False``, and removes nothing, if the study is no longer expired: an
    instance received since ``files`` was read is recorded after the cutoff.  The
    first statement takes the study's row (and SQLite's write lock), so an instance
    indexed concurrently either comes before (and calls the removal off) or after
    (and makes the study anew).
    """
    with index.session() as s:
        claimed = s.execute(
            update(Study)
            .where(Study.id == files.study_id, _expired(cutoff))
            .values(pending_count=Study.pending_count)
        )
        if claimed.rowcount != 1:
            return False
        jobs = select(Job.id).where(Job.study_id == files.study_id).scalar_subquery()
        series = select(Series.id).where(Series.study_id == files.study_id).scalar_subquery()
        s.execute(delete(Export).where(Export.job_id.in_(jobs)))
        s.execute(delete(ResultObject).where(ResultObject.job_id.in_(jobs)))
        s.execute(delete(Instance).where(Instance.series_id.in_(series)))
        s.execute(delete(Job).where(Job.study_id == files.study_id))
        s.execute(delete(Series).where(Series.study_id == files.study_id))
        s.execute(delete(Study).where(Study.id == files.study_id))
        return True


def prune_associations(index: Index, cutoff: datetime) -> int:
    """Remove the records of associations ended before ``cutoff`` that no indexed
    instance came on (an association's record outlives it by the retention period);
    one a crash left open goes a day later, never one still sending.  Returns how many."""
    with index.session() as s:
        result = s.execute(
            delete(AssociationRecord).where(
                or_(
                    AssociationRecord.ended_at < cutoff,
                    and_(AssociationRecord.ended_at.is_(None),
                         AssociationRecord.started_at < cutoff - OPEN_RECORD_GRACE),
                ),
                ~exists().where(Instance.association_id == AssociationRecord.id),
            )
        )
        return int(result.rowcount or 0)


def result_paths(index: Index) -> set[str]:
    """Paths of every result object the index knows (kept by an interrupted removal)."""
    with index.session() as s:
        return set(s.scalars(select(ResultObject.path)))
