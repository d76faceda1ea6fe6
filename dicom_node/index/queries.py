"""Read-only listings of the index for operators (CLI, admin API, status page)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from dicom_node.index.models import (
    AssociationRecord,
    DestinationStatus,
    Export,
    ExportState,
    Job,
    JobState,
    Study,
)
from dicom_node.index.store import Index


def _row(obj: Any, fields: Sequence[str]) -> dict[str, Any]:
    row = {}
    for name in fields:
        value = getattr(obj, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif hasattr(value, "value") and not isinstance(value, (int, str)):
            value = value.value
        row[name] = value
    return row


_STUDY_FIELDS = (
    "id",
    "study_instance_uid",
    "called_ae",
    "calling_ae",
    "calling_host",
    "study_description",
    "first_received_at",
    "last_received_at",
    "instance_count",
    "pending_count",
    "completed_at",
    "completion_reason",
)
_JOB_FIELDS = (
    "id",
    "study_id",
    "sequence",
    "state",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "worker",
    "error",
    "summary",
)
_EXPORT_FIELDS = (
    "id",
    "job_id",
    "destination",
    "ae_title",
    "host",
    "port",
    "state",
    "attempts",
    "next_attempt_at",
    "created_at",
    "delivered_at",
    "last_error",
)
_DESTINATION_FIELDS = (
    "name",
    "last_success_at",
    "last_failure_at",
    "last_error",
    "last_echo_ms",
)
_ASSOCIATION_FIELDS = (
    "id",
    "calling_ae",
    "called_ae",
    "peer_host",
    "peer_port",
    "started_at",
    "ended_at",
    "accepted",
    "reject_reason",
    "repeats",
    "instances",
    "failed_instances",
    "bytes_received",
    "outcome",
)


class IndexQueries:
    """Read-only listings for operators (CLI, admin API, status page)."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def studies(self, limit: int = 100, pending: bool | None = None) -> list[dict[str, Any]]:
        """Most recent studies first; ``pending`` keeps those still receiving (or not)."""
        query = select(Study).order_by(Study.last_received_at.desc()).limit(limit)
        if pending is not None:
            query = query.where((Study.pending_count > 0) == pending)
        with self.index.session() as s:
            return [_row(r, _STUDY_FIELDS) for r in s.scalars(query)]

    def jobs(
        self, state: JobState | None = None, limit: int = 100, study_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Most recent jobs first, optionally in one state or of one study."""
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if state is not None:
            query = query.where(Job.state == state)
        if study_id is not None:
            query = query.where(Job.study_id == study_id)
        with self.index.session() as s:
            return [
                {**_row(j, _JOB_FIELDS), "study_instance_uid": j.study.study_instance_uid}
                for j in s.scalars(query)
            ]

    def exports(
        self,
        state: ExportState | None = None,
        limit: int = 100,
        job_ids: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Most recent exports first, optionally in one state or of some jobs."""
        query = select(Export).order_by(Export.id.desc()).limit(limit)
        if state is not None:
            query = query.where(Export.state == state)
        if job_ids is not None:
            query = query.where(Export.job_id.in_(list(job_ids)))
        with self.index.session() as s:
            return [_row(e, _EXPORT_FIELDS) for e in s.scalars(query)]

    def associations(
        self,
        limit: int = 100,
        calling_ae: str | None = None,
        accepted: bool | None = None,
        called_ae: str | None = None,
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Most recent associations first, with optional filters."""
        query = select(AssociationRecord).order_by(AssociationRecord.id.desc()).limit(limit)
        if calling_ae is not None:
            query = query.where(AssociationRecord.calling_ae == calling_ae)
        if called_ae is not None:
            query = query.where(AssociationRecord.called_ae == called_ae)
        if accepted is not None:
            query = query.where(AssociationRecord.accepted == accepted)
        if since is not None:
            query = query.where(AssociationRecord.started_at >= since)
        with self.index.session() as s:
            return [
                {
                    **_row(a, _ASSOCIATION_FIELDS),
                    "duration_seconds": (
                        (a.ended_at - a.started_at).total_seconds() if a.ended_at else None
                    ),
                }
                for a in s.scalars(query)
            ]

    def destination_health(self) -> dict[str, dict[str, Any]]:
        """Last success, failure and echo time of each destination, by name."""
        with self.index.session() as s:
            return {
                d.name: _row(d, _DESTINATION_FIELDS) for d in s.scalars(select(DestinationStatus))
            }

    def counts(self) -> dict[str, dict[str, int]]:
        """Jobs and exports by state, and studies still receiving."""
        with self.index.session() as s:
            jobs = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            exports = dict(
                s.execute(select(Export.state, func.count()).group_by(Export.state)).all()
            )
            receiving = s.scalar(select(func.count()).where(Study.pending_count > 0)) or 0
        return {
            "jobs": {state.value: int(jobs.get(state, 0)) for state in JobState},
            "exports": {state.value: int(exports.get(state, 0)) for state in ExportState},
            "studies": {"receiving": int(receiving)},
        }
