"""Operator views and actions shared by the CLI, the REST API and the status page.

Everything here reads the configuration and the index; nothing returns
patient names, IDs or birth dates (the index holds none).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from dicom_node import metrics
from dicom_node.clock import Clock
from dicom_node.config import NodeConfig
from dicom_node.export import AssociationFailed, Target, c_echo
from dicom_node.index import Index, IndexQueries

LOGGER = structlog.get_logger(__name__)

STUDY_STATES = ("receiving", "completed")
"""Study states an operator filters by: still receiving instances, or handed to a job."""


def destinations_with_health(config: NodeConfig, queries: IndexQueries) -> list[dict[str, Any]]:
    """Configured destinations with their last success, failure and echo time."""
    health = queries.destination_health()
    rows = []
    for destination in config.destinations:
        status = health.get(destination.name, {})
        rows.append(
            {
                "name": destination.name,
                "ae_title": destination.ae_title,
                "host": destination.host,
                "port": destination.port,
                "tls": destination.tls is not None,
                "overlay_capture": destination.overlay_capture,
                "used_by": [
                    p.called_ae for p in config.pipelines if destination.name in p.destinations
                ],
                "last_success_at": status.get("last_success_at"),
                "last_failure_at": status.get("last_failure_at"),
                "last_error": status.get("last_error"),
                "last_echo_ms": status.get("last_echo_ms"),
                "healthy": _healthy(status),
            }
        )
    return rows


def _healthy(status: dict[str, Any]) -> bool | None:
    """``True`` if the last contact succeeded, ``False`` if it failed, ``None`` if none."""
    success, failure = status.get("last_success_at"), status.get("last_failure_at")
    if success is None and failure is None:
        return None
    if failure is None:
        return True
    return success is not None and success >= failure


def echo_destination(config: NodeConfig, index: Index, clock: Clock, name: str) -> dict[str, Any]:
    """C-ECHO a configured destination and record the outcome as its health.

    Raises
    ------
    LookupError
        If no destination has that name.
    """
    destination = config.destination(name)
    if destination is None:
        raise LookupError(f"no destination {name!r}")
    target = Target(
        destination.ae_title,
        destination.host,
        destination.port,
        destination.tls,
        config.limits.acse_timeout,
    )
    try:
        ms = c_echo(config.ae_title, target)
    except (AssociationFailed, OSError) as exc:
        index.record_destination_health(name, clock.now(), f"C-ECHO failed: {exc}")
        LOGGER.warning("destination_echo_failed", destination=name, reason=str(exc))
        return {"destination": name, "ok": False, "error": str(exc), "ms": None}
    index.record_destination_health(name, clock.now(), None, echo_ms=ms)
    LOGGER.info("destination_echo_ok", destination=name, ms=round(ms, 1))
    return {"destination": name, "ok": True, "error": None, "ms": round(ms, 1)}


def study_state(study: dict[str, Any]) -> str:
    """``receiving`` while instances wait for a job, else ``completed``."""
    return "receiving" if study["pending_count"] > 0 else "completed"


def studies_with_results(
    queries: IndexQueries, limit: int = 20, state: str | None = None
) -> list[dict[str, Any]]:
    """Recent studies, each with its jobs and, per job, the state of each export.

    Raises
    ------
    ValueError
        If ``state`` is not one of :data:`STUDY_STATES`.
    """
    if state is not None and state not in STUDY_STATES:
        raise ValueError(f"study state must be one of {', '.join(STUDY_STATES)}")
    pending = None if state is None else state == "receiving"
    studies = queries.studies(limit=limit, pending=pending)
    jobs_of = {s["id"]: queries.jobs(study_id=s["id"], limit=20) for s in studies}
    job_ids = [j["id"] for jobs in jobs_of.values() for j in jobs]
    exports_of: dict[int, list[dict[str, Any]]] = {}
    for export in queries.exports(job_ids=job_ids, limit=max(len(job_ids) * 8, 1)):
        exports_of.setdefault(export["job_id"], []).append(
            {
                "id": export["id"],
                "destination": export["destination"],
                "state": export["state"],
                "attempts": export["attempts"],
                "last_error": export["last_error"],
            }
        )
    return [
        {
            **study,
            "state": study_state(study),
            "jobs": [
                {
                    "id": job["id"],
                    "sequence": job["sequence"],
                    "state": job["state"],
                    "summary": job["summary"],
                    "error": job["error"],
                    "finished_at": job["finished_at"],
                    "exports": exports_of.get(job["id"], []),
                }
                for job in jobs_of[study["id"]]
            ],
        }
        for study in studies
    ]


def refresh_gauges(queries: IndexQueries, spool_free_bytes: int) -> dict[str, dict[str, int]]:
    """Set the state gauges from the index and return the counts."""
    counts = queries.counts()
    for state, count in counts["jobs"].items():
        metrics.JOBS_BY_STATE.labels(state).set(count)
    for state, count in counts["exports"].items():
        metrics.EXPORTS_BY_STATE.labels(state).set(count)
    metrics.STUDIES_RECEIVING.set(counts["studies"]["receiving"])
    metrics.SPOOL_FREE.set(spool_free_bytes)
    return counts


def as_utc(moment: datetime) -> datetime:
    """``moment`` with UTC assumed when it carries no time zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
