"""The index: sessions and the operations the node's stages perform on it.

SQLite (WAL) by default, PostgreSQL by URL with no code change.  Job and
export claims use ``SELECT ... FOR UPDATE SKIP LOCKED`` followed by a
conditional update, so several workers (threads or processes) can share one
database without taking the same row twice.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.util.exc import CommandError
from pydicom.multival import MultiValue
from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import ConfigError
from dicom_node.index.models import (
    AssociationRecord,
    DestinationStatus,
    Export,
    ExportState,
    Instance,
    Job,
    JobState,
    ResultObject,
    Series,
    Study,
)

LOGGER = structlog.get_logger(__name__)

QUERY_CHUNK = 500
"""Values per ``IN (...)`` list, well below every database's parameter limit."""

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

MAX_JOB_RUNS = 3
"""A job the node was interrupted while running (a crash, an out-of-memory kill) this many
times is failed at the next start instead of being queued again: a study that kills the
process would otherwise take the node down at every restart."""


@dataclass(frozen=True)
class InstanceMeta:
    """What the receiver records of a stored instance (no patient identity)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str | None
    body_part: str | None
    study_description: str | None
    path: str
    size_bytes: int

    def __post_init__(self) -> None:
        for name, width in TEXT_WIDTHS.items():
            object.__setattr__(self, name, index_text(getattr(self, name), width))


TEXT_WIDTHS = {"modality": 16, "body_part": 64, "study_description": 64}
"""Widths of the index's text columns (PostgreSQL refuses a longer value)."""


def index_text(value: object, width: int) -> str | None:
    """A text for an index column: a multi-valued one joined with backslashes, NUL
    removed (PostgreSQL refuses it), cut to ``width``; ``None`` for an empty one or
    anything that is not text (a sequence where a string belongs)."""
    if isinstance(value, MultiValue | list | tuple):
        items = list(value)
        if not all(isinstance(item, str) for item in items):
            return None
        value = "\\".join(items)
    if not isinstance(value, str):
        return None
    return value.replace("\0", "").strip()[:width] or None


@dataclass(frozen=True)
class Peer:
    """The calling side of an association."""

    calling_ae: str
    called_ae: str
    host: str
    port: int


@dataclass(frozen=True)
class StudyState:
    """A study with instances waiting for a job: the input of completion."""

    study_id: int
    study_instance_uid: str
    called_ae: str
    last_received_at: datetime
    series_count: int
    force_complete: bool
    completed_before: bool = False
    """A job was made of the study already (these instances came later)."""


@dataclass(frozen=True)
class PendingInstance:
    """An instance received and not yet handed to a job."""

    instance_id: int
    path: str
    called_ae: str
    calling_ae: str


@dataclass(frozen=True)
class JobInput:
    """A claimed job and everything needed to run it."""

    job_id: int
    sequence: int
    attempts: int
    study_instance_uid: str
    called_ae: str
    calling_ae: str
    calling_host: str
    instance_paths: tuple[str, ...]
    callers: tuple[tuple[str, str], ...] = ()
    """Per instance path, the calling AE title and host of the association it came on
    (a study can come from several devices); the study's last caller for an instance
    indexed at start-up from its file."""
    created_at: datetime | None = None
    """When the job was made: with its id, it names the job for good (SQLite reuses the
    ids of rows the retention removed)."""


@dataclass(frozen=True)
class ExportItem:
    """A pending export with the files to send."""

    export_id: int
    job_id: int
    destination: str
    ae_title: str
    host: str
    port: int
    attempts: int
    paths: tuple[str, ...]


@dataclass(frozen=True)
class ExportTarget:
    """Where one job's results go."""

    destination: str
    ae_title: str
    host: str
    port: int
    include_overlay: bool = False


_STUDY_ID = select(Study.id).where(
    Study.study_instance_uid == bindparam("study_uid"), Study.called_ae == bindparam("called_ae")
)
_SERIES_ID = select(Series.id).where(
    Series.study_id == bindparam("study_id"),
    Series.series_instance_uid == bindparam("series_uid"),
)
_ALREADY_INDEXED = (
    select(Instance.sop_instance_uid)
    .join(Series)
    .where(
        Series.study_id == bindparam("study_id"),
        Instance.sop_instance_uid.in_(bindparam("sop_uids", expanding=True)),
    )
)
_COUNT_INSTANCES = (
    update(Study)
    .where(Study.id == bindparam("study_id"))
    .values(
        instance_count=Study.instance_count + bindparam("count"),
        pending_count=Study.pending_count + bindparam("count"),
        last_received_at=bindparam("now", type_=Study.last_received_at.type),
        calling_ae=bindparam("caller"),
        calling_host=bindparam("host"),
    )
)
"""Statements of :meth:`Index.record_instances`, built once (it runs for every batch)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


SQLITE_FILE_MODE = 0o600
"""Mode of an SQLite index the node creates (SQLite gives its WAL and shared-memory
files the same): owner only, like the spool's files, whatever the umask."""


def make_engine(url: str) -> Engine:
    """Create the SQLAlchemy engine for ``url`` (SQLite tuned for concurrency; a new
    SQLite file is created with :data:`SQLITE_FILE_MODE`)."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:" and not Path(database).exists():
            os.close(os.open(database, os.O_CREAT | os.O_WRONLY, SQLITE_FILE_MODE))
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=10
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest alembic revision."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


class IndexUnavailable(ConfigError):
    """The index database cannot be opened: its driver is missing, it does not answer,
    or its schema is newer than this version's (the message names ``database_url``)."""


def shown_url(url: str) -> str:
    """``url`` with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def _index_problem(url: str, exc: Exception) -> str:
    """Why the index at ``url`` could not be opened, for an administrator."""
    where = f"database_url {shown_url(url)}"
    if isinstance(exc, ImportError):
        return (f"{where}: its database driver is not installed ({exc}); for PostgreSQL "
                "install the node with its postgres extra: pip install -e '.[postgres]'")
    if isinstance(exc, CommandError):
        return (f"{where}: the index was made by a newer version of the node ({exc}); "
                "run that version, or restore the index and spool from a backup")
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{where}: cannot open the index: {detail[0] if detail else type(exc).__name__}"


def worker_name(node: str, role: str) -> str:
    """A name for a worker of ``node`` (see :meth:`dicom_node.spool.Spool.identity`),
    unique per process."""
    return f"{node}:{os.getpid()}:{role}"


class Index:
    """Operations on the index database."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
            migrate(self.engine)
        except (SQLAlchemyError, ImportError, CommandError, OSError) as exc:
            raise IndexUnavailable(_index_problem(url, exc)) from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def existing(cls, url: str) -> Index:
        """The index at ``url``, for administration commands: an SQLite file that does
        not exist is an error, not made anew (a command run from the wrong folder would
        report an empty node, or leave an empty index behind).

        Raises
        ------
        ConfigError
            If ``url`` names an SQLite file that does not exist.
        """
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            raise ConfigError(f"no index at {url.removeprefix('sqlite:///')}: give the node's "
                              "--data-dir or --config")
        return cls(url)

    def close(self) -> None:
        """Dispose of the connection pool."""
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    # -- associations -------------------------------------------------------------

    def open_association(
        self, peer: Peer, now: datetime, accepted: bool, reason: str | None = None
    ) -> int:
        """Record an association request and return its id."""
        with self.session() as s:
            record = AssociationRecord(
                calling_ae=peer.calling_ae,
                called_ae=peer.called_ae,
                peer_host=peer.host,
                peer_port=peer.port,
                started_at=now,
                ended_at=None if accepted else now,
                accepted=accepted,
                reject_reason=reason,
                outcome=None if accepted else "rejected",
            )
            s.add(record)
            s.flush()
            return record.id

    def repeat_rejection(self, association_id: int, now: datetime) -> bool:
        """Count one more request rejected like the rejected association
        ``association_id``, at ``now``; whether its record still exists."""
        with self.session() as s:
            done = s.execute(
                update(AssociationRecord)
                .where(AssociationRecord.id == association_id,
                       AssociationRecord.accepted.is_(False))
                .values(repeats=AssociationRecord.repeats + 1, ended_at=now)
            )
            return bool(done.rowcount)

    def close_association(
        self,
        association_id: int,
        now: datetime,
        outcome: str,
        instances: int,
        failed: int,
        bytes_received: int,
    ) -> None:
        """Record the end of an association and its counts."""
        with self.session() as s:
            s.execute(
                update(AssociationRecord)
                .where(AssociationRecord.id == association_id)
                .values(
                    ended_at=now,
                    outcome=outcome,
                    instances=instances,
                    failed_instances=failed,
                    bytes_received=bytes_received,
                )
            )

    # -- receiving ----------------------------------------------------------------

    def record_instance(
        self, meta: InstanceMeta, peer: Peer, association_id: int | None, now: datetime
    ) -> bool:
        """Index a spooled instance; ``False`` if it was already indexed."""
        return self.record_instances([(meta, peer, association_id, now)])[0]

    def record_instances(
        self, items: Sequence[tuple[InstanceMeta, Peer, int | None, datetime]]
    ) -> list[bool]:
        """Index spooled instances in one transaction; per item, ``False`` for a duplicate.

        Each item is ``(meta, peer, association_id, received_at)``.  A
        duplicate SOP Instance UID (in the same study and called AE, already
        indexed or earlier in ``items``) is counted once.  Safe under
        concurrent writers: a lost race on a new study or series is retried
        (the whole batch, whose transaction was rolled back), and the study's
        counters are incremented in the database, not read and written back.
        This runs for every received instance, so it uses plain SQL statements
        (no ORM unit of work), a few per study and series of the batch rather
        than per instance.
        """
        for _attempt in range(5):
            try:
                with self.engine.begin() as connection:
                    return _record_batch(connection, items)
            except IntegrityError:
                continue
        raise RuntimeError("could not index instances after repeated conflicts")

    def indexed_paths(self) -> set[str]:
        """Paths of every indexed instance (for spool reconciliation)."""
        with self.session() as s:
            return set(s.scalars(select(Instance.path)))

    def forget_instances(self, paths: Sequence[str]) -> int:
        """Remove index rows of instances whose files are gone (pending only).

        Returns the number of rows removed.
        """
        removed = 0
        with self.session() as s:
            for path in paths:
                instance = s.scalar(select(Instance).where(Instance.path == path))
                if instance is None or instance.job_id is not None:
                    continue
                study = instance.series.study
                study.instance_count -= 1
                study.pending_count -= 1
                s.delete(instance)
                removed += 1
        return removed

    # -- completion -----------------------------------------------------------------

    def pending_studies(self) -> list[StudyState]:
        """Studies with instances not yet handed to a job."""
        with self.session() as s:
            rows = s.execute(
                select(Study, func.count(func.distinct(Series.id)))
                .join(Series, Series.study_id == Study.id)
                .where(Study.pending_count > 0)
                .group_by(Study.id)
            ).all()
            return [
                StudyState(
                    study_id=study.id,
                    study_instance_uid=study.study_instance_uid,
                    called_ae=study.called_ae,
                    last_received_at=study.last_received_at,
                    series_count=count,
                    force_complete=study.force_complete,
                    completed_before=study.completed_at is not None,
                )
                for study, count in rows
            ]

    def pending_instances(
        self, after_id: int, sop_classes: Collection[str], limit: int
    ) -> list[PendingInstance]:
        """Instances not yet handed to a job, oldest first.

        Parameters
        ----------
        after_id:
            Only instances whose row id is larger (ids grow with arrival).
        sop_classes:
            Only instances of these SOP classes.
        limit:
            At most this many.
        """
        with self.session() as s:
            rows = s.execute(
                select(Instance.id, Instance.path, Study.called_ae,
                       func.coalesce(AssociationRecord.calling_ae, Study.calling_ae))
                .join(Series, Instance.series_id == Series.id)
                .join(Study, Series.study_id == Study.id)
                .outerjoin(AssociationRecord, Instance.association_id == AssociationRecord.id)
                .where(
                    Instance.job_id.is_(None),
                    Instance.id > after_id,
                    Instance.sop_class_uid.in_(sorted(sop_classes)),
                )
                .order_by(Instance.id)
                .limit(limit)
            ).all()
            return [PendingInstance(*row) for row in rows]

    def pending_paths(self, paths: Collection[str]) -> set[str]:
        """Which of ``paths`` are instances still waiting for a job."""
        wanted = sorted(set(paths))
        found: set[str] = set()
        with self.session() as s:
            for start in range(0, len(wanted), QUERY_CHUNK):
                chunk = wanted[start : start + QUERY_CHUNK]
                found.update(
                    s.scalars(
                        select(Instance.path).where(
                            Instance.job_id.is_(None), Instance.path.in_(chunk)
                        )
                    )
                )
        return found

    def force_complete(self, study_instance_uid: str) -> int:
        """Flag a study (on every called AE) for completion; returns how many."""
        with self.session() as s:
            result = s.execute(
                update(Study)
                .where(Study.study_instance_uid == study_instance_uid)
                .values(force_complete=True)
            )
            return int(result.rowcount or 0)

    def create_job(self, study_id: int, reason: str, now: datetime) -> int | None:
        """Hand a study's pending instances to a new queued job.

        Returns the job id, or ``None`` if another worker took them first.
        """
        with self.session() as s:
            study = s.scalar(select(Study).where(Study.id == study_id).with_for_update())
            if study is None or study.pending_count == 0:
                return None
            pending = list(
                s.scalars(
                    select(Instance.id)
                    .join(Series)
                    .where(Series.study_id == study_id, Instance.job_id.is_(None))
                )
            )
            taken = study.pending_count
            if not pending:
                study.pending_count = Study.pending_count - taken
                return None
            # Counted over every called AE title that received the study: each job's
            # result series get their own numbers (series_number_base + 10 x sequence),
            # so two pipelines' results on one study are not both "9011".
            same_study = select(Study.id).where(
                Study.study_instance_uid == study.study_instance_uid)
            sequence = (
                s.scalar(select(func.max(Job.sequence)).where(Job.study_id.in_(same_study)))
                or 0
            ) + 1
            job = Job(
                study_id=study_id,
                sequence=sequence,
                state=JobState.QUEUED,
                attempts=0,
                created_at=now,
            )
            s.add(job)
            s.flush()
            s.execute(update(Instance).where(Instance.id.in_(pending)).values(job_id=job.id))
            # Relative: an instance indexed since ``pending`` was read (SQLite takes no
            # row lock) keeps its count and waits for the next job.
            study.pending_count = Study.pending_count - len(pending)
            study.force_complete = False
            study.completed_at = now
            study.completion_reason = reason
            return job.id

    # -- jobs -----------------------------------------------------------------------

    def claim_job(self, worker: str, now: datetime) -> JobInput | None:
        """Take the oldest queued job, or ``None`` when there is none."""
        with self.session() as s:
            job = s.scalar(
                select(Job)
                .where(Job.state == JobState.QUEUED)
                .order_by(Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if job is None:
                return None
            attempts = job.attempts + 1
            taken = s.execute(
                update(Job)
                .where(Job.id == job.id, Job.state == JobState.QUEUED)
                .values(
                    state=JobState.RUNNING,
                    attempts=Job.attempts + 1,
                    started_at=now,
                    worker=worker,
                )
            )
            if taken.rowcount != 1:
                return None
            study = job.study
            rows = s.execute(
                select(Instance.path, AssociationRecord.calling_ae, AssociationRecord.peer_host)
                .outerjoin(AssociationRecord, Instance.association_id == AssociationRecord.id)
                .where(Instance.job_id == job.id)
                .order_by(Instance.id)
            ).all()
            paths = tuple(path for path, _, _ in rows)
            callers = tuple((ae or study.calling_ae, host or study.calling_host)
                            for _, ae, host in rows)
            return JobInput(
                job_id=job.id,
                sequence=job.sequence,
                attempts=attempts,
                study_instance_uid=study.study_instance_uid,
                called_ae=study.called_ae,
                calling_ae=study.calling_ae,
                calling_host=study.calling_host,
                instance_paths=paths,
                callers=callers,
                created_at=job.created_at,
            )

    def finish_job(
        self,
        job_id: int,
        results: Sequence[tuple[str, str, str, bool]],
        targets: Sequence[ExportTarget],
        summary: str,
        now: datetime,
    ) -> None:
        """Mark a job done, record its result objects and queue their exports.

        ``results`` items are ``(sop_instance_uid, sop_class_uid, path,
        overlay_capture)``.
        """
        with self.session() as s:
            for uid, sop_class, path, overlay in results:
                s.add(
                    ResultObject(
                        job_id=job_id,
                        sop_instance_uid=uid,
                        sop_class_uid=sop_class,
                        path=path,
                        overlay_capture=overlay,
                    )
                )
            if results:
                for target in targets:
                    s.add(
                        Export(
                            job_id=job_id,
                            destination=target.destination,
                            ae_title=target.ae_title,
                            host=target.host,
                            port=target.port,
                            include_overlay=target.include_overlay,
                            state=ExportState.PENDING,
                            attempts=0,
                            next_attempt_at=now,
                            created_at=now,
                        )
                    )
            s.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(state=JobState.DONE, finished_at=now, error=None, summary=summary)
            )

    def fail_job(self, job_id: int, error: str, now: datetime) -> None:
        """Mark a job failed with its reason."""
        with self.session() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(state=JobState.FAILED, finished_at=now, error=error[:4000])
            )

    def wait_for_disk(self, job_id: int, error: str) -> None:
        """Park a job whose results could not be written for lack of disk space."""
        with self.session() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(state=JobState.WAITING_FOR_DISK, error=error[:4000])
            )

    def requeue_jobs_waiting_for_disk(self) -> int:
        """Queue again every job parked by :meth:`wait_for_disk`; returns how many."""
        with self.session() as s:
            result = s.execute(
                update(Job)
                .where(Job.state == JobState.WAITING_FOR_DISK)
                .values(state=JobState.QUEUED)
            )
            return int(result.rowcount or 0)

    def requeue_job(self, job_id: int) -> bool:
        """Queue a failed or done job again (an operator's re-run)."""
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.state == JobState.RUNNING:
                return False
            for result in list(job.results):
                s.delete(result)
            for export in list(job.exports):
                s.delete(export)
            job.state = JobState.QUEUED
            job.attempts = 0
            job.error = None
            job.finished_at = None
            return True

    def requeue_interrupted_jobs(self, node: str, now: datetime) -> tuple[int, int]:
        """Queue again the jobs a dead process of ``node`` left running, or fail those it
        had run :data:`MAX_JOB_RUNS` times; returns ``(queued, failed)``."""
        queued = failed = 0
        with self.session() as s:
            jobs = list(
                s.scalars(
                    select(Job).where(
                        Job.state == JobState.RUNNING, Job.worker.startswith(f"{node}:")
                    )
                )
            )
            for job in jobs:
                for result in list(job.results):
                    s.delete(result)
                if job.attempts >= MAX_JOB_RUNS:
                    job.state = JobState.FAILED
                    job.finished_at = now
                    job.error = (
                        f"Interrupted {job.attempts} times: the node stopped while analysing "
                        "this study (a crash, an out-of-memory kill or a restart). Queue it "
                        "again by hand once the cause is found."
                    )
                    failed += 1
                else:
                    job.state = JobState.QUEUED
                    queued += 1
            return queued, failed

    # -- exports --------------------------------------------------------------------

    def destinations_with_work(self) -> list[str]:
        """Names of destinations that have pending exports."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(Export.destination).where(Export.state == ExportState.PENDING).distinct()
                )
            )

    def due_exports(self, destination: str, now: datetime, limit: int) -> list[ExportItem]:
        """Pending exports of ``destination`` whose next attempt is due."""
        with self.session() as s:
            exports = list(
                s.scalars(
                    select(Export)
                    .where(
                        Export.destination == destination,
                        Export.state == ExportState.PENDING,
                        Export.next_attempt_at <= now,
                    )
                    .order_by(Export.next_attempt_at, Export.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            items = []
            for export in exports:
                paths = tuple(
                    r.path
                    for r in export.job.results
                    if not r.overlay_capture or export.include_overlay
                )
                items.append(
                    ExportItem(
                        export_id=export.id,
                        job_id=export.job_id,
                        destination=export.destination,
                        ae_title=export.ae_title,
                        host=export.host,
                        port=export.port,
                        attempts=export.attempts,
                        paths=paths,
                    )
                )
            return items

    def next_export_due(self, destination: str) -> datetime | None:
        """When the earliest pending export of ``destination`` is due."""
        with self.session() as s:
            return s.scalar(
                select(func.min(Export.next_attempt_at)).where(
                    Export.destination == destination, Export.state == ExportState.PENDING
                )
            )

    def mark_delivered(self, export_id: int, now: datetime) -> None:
        """Record that every object of an export was accepted."""
        with self.session() as s:
            s.execute(
                update(Export)
                .where(Export.id == export_id)
                .values(
                    state=ExportState.DELIVERED,
                    delivered_at=now,
                    attempts=Export.attempts + 1,
                    last_error=None,
                )
            )

    def mark_attempt_failed(
        self, export_id: int, error: str, next_attempt_at: datetime | None
    ) -> None:
        """Record a failed attempt; ``None`` moves it to the error queue."""
        values: dict[str, Any] = {"attempts": Export.attempts + 1, "last_error": error[:4000]}
        if next_attempt_at is None:
            values["state"] = ExportState.FAILED
        else:
            values["next_attempt_at"] = next_attempt_at
        with self.session() as s:
            s.execute(update(Export).where(Export.id == export_id).values(**values))

    def retry_export(self, export_id: int, now: datetime) -> bool:
        """Send an export again now: a failed or discarded one goes back to the queue,
        a pending one waiting out its backoff is due at once; attempts count from 0."""
        return self._retry(Export.id == export_id, now) == 1

    def retry_exports(self, destination: str, now: datetime) -> int:
        """:meth:`retry_export` for every failed or pending export of ``destination``
        (after an outage, say); returns how many."""
        return self._retry(
            and_(Export.destination == destination, Export.state != ExportState.DISCARDED), now
        )

    def _retry(self, which: ColumnElement[bool], now: datetime) -> int:
        with self.session() as s:
            result = s.execute(
                update(Export)
                .where(which, Export.state != ExportState.DELIVERED)
                .values(state=ExportState.PENDING, attempts=0, next_attempt_at=now)
            )
            return int(result.rowcount or 0)

    def discard_export(self, export_id: int) -> bool:
        """Give up on a failed export."""
        with self.session() as s:
            result = s.execute(
                update(Export)
                .where(Export.id == export_id, Export.state == ExportState.FAILED)
                .values(state=ExportState.DISCARDED)
            )
            return result.rowcount == 1

    def record_destination_health(
        self, name: str, now: datetime, error: str | None, echo_ms: float | None = None
    ) -> None:
        """Remember a destination's last success or failure."""
        with self.session() as s:
            status = s.get(DestinationStatus, name)
            if status is None:
                status = DestinationStatus(name=name)
                s.add(status)
            if error is None:
                status.last_success_at = now
                if echo_ms is not None:
                    status.last_echo_ms = echo_ms
            else:
                status.last_failure_at = now
                status.last_error = error[:4000]


def _study_id(connection: Connection, meta: InstanceMeta, peer: Peer, now: datetime) -> int:
    """The index id of the instance's study under its called AE, created if new."""
    study_id = connection.scalar(
        _STUDY_ID, {"study_uid": meta.study_instance_uid, "called_ae": peer.called_ae}
    )
    if study_id is not None:
        return int(study_id)
    return int(
        connection.execute(
            insert(Study),
            {
                "study_instance_uid": meta.study_instance_uid,
                "called_ae": peer.called_ae,
                "calling_ae": peer.calling_ae,
                "calling_host": peer.host,
                "study_description": meta.study_description,
                "first_received_at": now,
                "last_received_at": now,
                "instance_count": 0,
                "pending_count": 0,
                "force_complete": False,
            },
        ).inserted_primary_key[0]
    )


def _series_id(connection: Connection, study_id: int, meta: InstanceMeta) -> int:
    """The index id of the instance's series in ``study_id``, created if new."""
    series_id = connection.scalar(
        _SERIES_ID, {"study_id": study_id, "series_uid": meta.series_instance_uid}
    )
    if series_id is not None:
        return int(series_id)
    return int(
        connection.execute(
            insert(Series),
            {
                "study_id": study_id,
                "series_instance_uid": meta.series_instance_uid,
                "modality": meta.modality,
                "body_part": meta.body_part,
            },
        ).inserted_primary_key[0]
    )


def _record_batch(
    connection: Connection, items: Sequence[tuple[InstanceMeta, Peer, int | None, datetime]]
) -> list[bool]:
    """Body of :meth:`Index.record_instances` within its transaction."""
    study_ids: dict[tuple[str, str], int] = {}
    series_ids: dict[tuple[int, str], int] = {}
    placed: list[tuple[int, int]] = []
    uids: dict[int, list[str]] = {}
    for meta, peer, _association, now in items:
        study_key = (meta.study_instance_uid, peer.called_ae)
        if study_key not in study_ids:
            study_ids[study_key] = _study_id(connection, meta, peer, now)
        study_id = study_ids[study_key]
        series_key = (study_id, meta.series_instance_uid)
        if series_key not in series_ids:
            series_ids[series_key] = _series_id(connection, study_id, meta)
        placed.append((study_id, series_ids[series_key]))
        uids.setdefault(study_id, []).append(meta.sop_instance_uid)
    taken: set[tuple[int, str]] = set()
    for study_id, study_uids in uids.items():
        found = connection.scalars(_ALREADY_INDEXED, {"study_id": study_id, "sop_uids": study_uids})
        taken.update((study_id, uid) for uid in found)
    created: list[bool] = []
    rows: list[dict[str, Any]] = []
    added: Counter[int] = Counter()
    latest: dict[int, tuple[datetime, Peer]] = {}
    for (meta, peer, association_id, now), (study_id, series_id) in zip(items, placed, strict=True):
        new = (study_id, meta.sop_instance_uid) not in taken
        created.append(new)
        latest[study_id] = (now, peer)  # a study sent again is active again (retention)
        if not new:
            continue
        taken.add((study_id, meta.sop_instance_uid))
        rows.append(
            {
                "series_id": series_id,
                "sop_instance_uid": meta.sop_instance_uid,
                "sop_class_uid": meta.sop_class_uid,
                "transfer_syntax_uid": meta.transfer_syntax_uid,
                "path": meta.path,
                "size_bytes": meta.size_bytes,
                "received_at": now,
                "association_id": association_id,
                "job_id": None,
            }
        )
        added[study_id] += 1
    if rows:
        connection.execute(insert(Instance), rows)
    for study_id, (now, peer) in latest.items():
        connection.execute(
            _COUNT_INSTANCES,
            {
                "study_id": study_id,
                "count": added[study_id],
                "now": now,
                "caller": peer.calling_ae,
                "host": peer.host,
            },
        )
    return created
