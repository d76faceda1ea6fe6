"""The index: migrations, job claims under concurrency, SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, event, func, select, text

from dicom_node.index import Index, IndexUnavailable, InstanceMeta, JobState, Peer
from dicom_node.index.models import Base, Instance, Job, Series, Study
from dicom_node.index.store import MAX_JOB_RUNS
from tests.peers import run_postgres

NOW = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
PEER = Peer(calling_ae="US1", called_ae="NODE", host="127.0.0.1", port=104)


def meta(study: str, sop: str, series: str = "1.2.3.1") -> InstanceMeta:
    return InstanceMeta(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="US",
        body_part=None,
        study_description=None,
        path=f"/spool/{study}/{sop}.dcm",
        size_bytes=10,
    )


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    with run_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Index]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"t{uuid.uuid4().hex[:12]}"
        engine = create_engine(server, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        engine.dispose()
        url = server.rsplit("/", 1)[0] + f"/{name}"
    idx = Index(url)
    yield idx
    idx.close()


def test_migrations_match_models(index: Index) -> None:
    with index.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], "models changed without an alembic revision"


def test_migrate_is_idempotent(index: Index) -> None:
    Index(index.url).close()


def test_an_index_that_cannot_be_opened_is_named_without_its_password(tmp_path: Path) -> None:
    newer = f"sqlite:///{tmp_path / 'index.sqlite'}"
    Index(newer).close()
    engine = create_engine(newer)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    engine.dispose()
    with pytest.raises(IndexUnavailable, match="made by a newer version of the node"):
        Index(newer)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(IndexUnavailable) as refused:
        Index(f"postgresql+psycopg2://node:s3cret@127.0.0.1:{port}/node")
    assert str(refused.value).startswith(f"database_url postgresql+psycopg2://node:***@127.0.0.1:{port}")
    assert "cannot open the index" in str(refused.value) and "s3cret" not in str(refused.value)
    with pytest.raises(IndexUnavailable, match=r"driver is not installed .*postgres extra"):
        Index("postgresql+pg8000://node:s3cret@127.0.0.1/node")


def test_a_new_sqlite_index_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    # Study UIDs and descriptions live in it: the umask (often 022) must not open it.
    path = tmp_path / "index.sqlite"
    index = Index(f"sqlite:///{path}")
    index.record_instance(meta("1.2.3", "1.2.3.1.1"), PEER, None, NOW)
    files = [f for f in tmp_path.iterdir() if f.name.startswith("index.sqlite")]
    assert len(files) >= 2  # the index and its write-ahead log
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}
    index.close()
    with pytest.raises(IndexUnavailable, match="cannot open the index"):
        Index(f"sqlite:///{tmp_path / 'missing' / 'index.sqlite'}")


def test_duplicate_counts_once(index: Index) -> None:
    assert index.record_instance(meta("1.2.3", "1.2.3.1.1"), PEER, None, NOW)
    assert not index.record_instance(meta("1.2.3", "1.2.3.1.1"), PEER, None, NOW)
    (state,) = index.pending_studies()
    assert state.series_count == 1


def test_a_batch_counts_each_instance_once_per_study_and_called_ae(index: Index) -> None:
    assert index.record_instance(meta("1.2.3", "1.2.3.1.1"), PEER, None, NOW)
    other_called = Peer(calling_ae="US2", called_ae="OTHER", host="127.0.0.2", port=104)
    later = NOW + timedelta(seconds=5)
    batch = [
        (meta("1.2.3", "1.2.3.1.1"), PEER, None, NOW),  # indexed before
        (meta("1.2.3", "1.2.3.1.2"), PEER, None, NOW),
        (meta("1.2.3", "1.2.3.1.2"), PEER, None, NOW),  # twice in the batch
        (meta("1.2.3", "1.2.3.2.1", series="1.2.3.2"), PEER, None, later),
        (meta("1.2.4", "1.2.4.1.1"), PEER, None, NOW),
        (meta("1.2.4", "1.2.4.1.1"), other_called, None, later),  # same UIDs, another AE
    ]
    assert index.record_instances(batch) == [False, True, False, True, True, True]
    with index.session() as session:
        studies = {
            (row.study_instance_uid, row.called_ae): (
                row.instance_count,
                row.pending_count,
                row.calling_ae,
                row.last_received_at.replace(tzinfo=UTC),
            )
            for row in session.scalars(select(Study))
        }
        series = sorted(session.scalars(select(Series.series_instance_uid)))
        instances = session.scalar(select(func.count(Instance.id)))
    assert studies == {
        ("1.2.3", "NODE"): (3, 3, "US1", later),
        ("1.2.4", "NODE"): (1, 1, "US1", NOW),
        ("1.2.4", "OTHER"): (1, 1, "US2", later),
    }
    assert series == ["1.2.3.1", "1.2.3.1", "1.2.3.1", "1.2.3.2"]  # one per study and series
    assert instances == 5


def test_each_job_is_claimed_by_one_worker(index: Index) -> None:
    for n in range(6):
        study = f"1.2.9.{n}"
        index.record_instance(meta(study, f"{study}.1"), PEER, None, NOW)
    for state in index.pending_studies():
        assert index.create_job(state.study_id, "forced", NOW) is not None
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := index.claim_job(name, NOW)) is not None:
            with lock:
                claimed.append(job.job_id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(set(claimed))
    assert len(claimed) == 6


def test_jobs_of_one_study_are_numbered_across_called_ae_titles(index: Index) -> None:
    breast = Peer(calling_ae="US1", called_ae="BREAST_AI", host="127.0.0.1", port=104)
    index.record_instance(meta("1.2.6", "1.2.6.1"), PEER, None, NOW)
    index.record_instance(meta("1.2.6", "1.2.6.2"), breast, None, NOW)
    index.record_instance(meta("1.2.7", "1.2.7.1"), breast, None, NOW)
    for state in index.pending_studies():
        assert index.create_job(state.study_id, "quiet_period", NOW) is not None
    sequences = {}
    while (job := index.claim_job("w", NOW)) is not None:
        sequences[(job.study_instance_uid, job.called_ae)] = job.sequence
    assert sequences == {("1.2.6", "NODE"): 1, ("1.2.6", "BREAST_AI"): 2,
                         ("1.2.7", "BREAST_AI"): 1}


def test_pending_instances_go_to_one_job(index: Index) -> None:
    index.record_instance(meta("1.2.4", "1.2.4.1"), PEER, None, NOW)
    (state,) = index.pending_studies()
    first = index.create_job(state.study_id, "quiet_period", NOW)
    assert first is not None
    assert index.create_job(state.study_id, "quiet_period", NOW) is None
    index.record_instance(meta("1.2.4", "1.2.4.2"), PEER, None, NOW)
    second = index.create_job(state.study_id, "quiet_period", NOW)
    job = index.claim_job("w", NOW)
    assert job is not None and job.job_id == first and len(job.instance_paths) == 1
    job = index.claim_job("w", NOW)
    assert job is not None and job.job_id == second and job.sequence == 2


def test_an_instance_indexed_while_its_study_becomes_a_job_waits_for_the_next(
    tmp_path: Path,
) -> None:
    # SQLite takes no row lock on the study: an instance the receiver commits between
    # the job's reading of the pending instances and its writing keeps its count.
    index = Index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    index.record_instance(meta("1.2.5", "1.2.5.1"), PEER, None, NOW)
    (state,) = index.pending_studies()
    late: list[bool] = []

    def arrive_late(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("INSERT INTO jobs") and not late:
            late.append(index.record_instance(meta("1.2.5", "1.2.5.2"), PEER, None, NOW))

    event.listen(index.engine, "before_cursor_execute", arrive_late)
    try:
        first = index.create_job(state.study_id, "quiet_period", NOW)
    finally:
        event.remove(index.engine, "before_cursor_execute", arrive_late)
    assert late and first is not None
    (waiting,) = index.pending_studies()
    second = index.create_job(waiting.study_id, "quiet_period", NOW)
    assert second is not None and index.pending_studies() == []
    claimed = [index.claim_job("w", NOW) for _ in range(2)]
    assert [(job.job_id, job.instance_paths) for job in claimed if job is not None] == [
        (first, ("/spool/1.2.5/1.2.5.1.dcm",)),
        (second, ("/spool/1.2.5/1.2.5.2.dcm",)),
    ]
    index.close()


def test_interrupted_jobs_are_queued_again_until_they_have_run_too_often(index: Index) -> None:
    index.record_instance(meta("1.2.6", "1.2.6.1"), PEER, None, NOW)
    (state,) = index.pending_studies()
    job_id = index.create_job(state.study_id, "quiet_period", NOW)
    index.record_instance(meta("1.2.7", "1.2.7.1"), PEER, None, NOW)
    (other,) = index.pending_studies()
    assert index.create_job(other.study_id, "quiet_period", NOW) is not None
    later = NOW + timedelta(minutes=5)
    for run in range(1, MAX_JOB_RUNS + 1):
        job = index.claim_job("node-a:101:dispatch", NOW)
        assert job is not None and job.job_id == job_id and job.attempts == run
        # Another node's running job is not this node's to queue again.
        assert index.requeue_interrupted_jobs("node-b", later) == (0, 0)
        expected = (1, 0) if run < MAX_JOB_RUNS else (0, 1)
        assert index.requeue_interrupted_jobs("node-a", later) == expected
    with index.session() as s:
        failed = s.get(Job, job_id)
        assert failed is not None and failed.state == JobState.FAILED
        assert failed.error is not None and f"Interrupted {MAX_JOB_RUNS} times" in failed.error
        assert failed.finished_at is not None
    # An operator's re-run starts the count again.
    assert index.requeue_job(job_id)
    job = index.claim_job("node-a:102:dispatch", NOW)
    assert job is not None and job.job_id == job_id and job.attempts == 1
