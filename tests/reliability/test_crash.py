"""kill -9 while four associations send, a job runs and an export hangs; then restart.

Promises: every instance that got Success is on disk and in the index; every
study is processed by exactly one finished job; every result reaches the
archive exactly once (re-sends after the crash are counted); start-up
reconciliation says what it repaired.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from sqlalchemy import select

from dicom_node.index import ExportState, Index, JobState
from dicom_node.index.models import Export, Instance, Job, ResultObject, Series, Study
from dicom_node.service import Node, Stages
from dicom_node.stages import build, decode
from tests.dicom_node.conftest import make_study, node_config
from tests.dicom_node.fake_engine import FakeAnalyzer
from tests.peers import Orthanc
from tests.reliability.conftest import base_config
from tests.reliability.harness import (
    CountingStorageSCP,
    HungServer,
    NodeProcess,
    associate,
    wait_until,
)

pytestmark = pytest.mark.integration

SENDERS = 4
PER_SENDER = 12
ACKED_BEFORE_KILL = 2


class Sender(threading.Thread):
    """A modality sending one study over one association, remembering what was acknowledged.

    With a ``barrier`` it waits there after its first :data:`ACKED_BEFORE_KILL`
    instances, so that every sender is mid-study when the test kills the node.
    """

    def __init__(
        self, port: int, study: list[Dataset], barrier: threading.Barrier | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.study = study
        self.barrier = barrier
        self.acked: list[str] = []
        self.failed: list[str] = []

    def run(self) -> None:
        assoc = associate(self.port)
        for number, ds in enumerate(self.study):
            if self.barrier is not None and number == ACKED_BEFORE_KILL:
                self.barrier.wait(timeout=120)
            status: Any = None
            if assoc.is_established:
                try:
                    status = assoc.send_c_store(ds).get("Status")
                except (RuntimeError, OSError):
                    status = None
            uid = str(ds.SOPInstanceUID)
            (self.acked if status == 0 else self.failed).append(uid)
        if assoc.is_established:
            assoc.release()

    def resend_unacknowledged(self) -> list[int]:
        """What a modality does after a failure: send again what got no Success."""
        assoc = associate(self.port)
        assert assoc.is_established
        pending = [ds for ds in self.study if str(ds.SOPInstanceUID) not in self.acked]
        statuses = [int(assoc.send_c_store(ds).Status) for ds in pending]
        assoc.release()
        self.acked += [str(ds.SOPInstanceUID) for ds in pending]
        return statuses


def send_all(port: int, study: list[Dataset]) -> list[int]:
    """Send a whole study over one association; the statuses."""
    return Sender(port, study).resend_unacknowledged()


def force_complete(index: Index, study: list[Dataset]) -> None:
    assert index.force_complete(str(study[0].StudyInstanceUID)) == 1


def small_study(count: int) -> list[Dataset]:
    return make_study(count, rows=64, columns=80)


def all_done(index: Index, studies: int) -> bool:
    with index.session() as s:
        jobs = list(s.scalars(select(Job)))
        exports = list(s.scalars(select(Export)))
    return (
        len(jobs) == studies
        and all(j.state == JobState.DONE for j in jobs)
        and len(exports) == 2 * studies
        and all(e.state == ExportState.DELIVERED for e in exports)
    )


def orthanc_sop_uids(orthanc: Orthanc) -> list[str]:
    return [
        orthanc.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"]
        for i in orthanc.get("/instances")
    ]


def test_kill_9_loses_nothing_acknowledged_and_delivers_once(
    tmp_path: Path,
    orthanc: Orthanc,
    spawn_node: Callable[..., NodeProcess],
    figures: dict[str, object],
) -> None:
    data = tmp_path / "var"
    hold = tmp_path / "hold-engine"
    with HungServer() as hung:
        config = base_config(
            data,
            destinations=[
                {
                    "name": "archive",
                    "ae_title": "ORTHANC",
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                },
                {"name": "second", "ae_title": "COUNTER", "host": "127.0.0.1", "port": hung.port},
            ],
            pipelines=[
                {
                    "called_ae": "NODE",
                    "completion": {"quiet_seconds": 600},
                    "destinations": ["archive", "second"],
                }
            ],
            # A job is held inside the engine at the kill: no image may be held
            # there by analysis ahead of completion instead
            # (test_kill_9_while_analysing_ahead covers that).
            analysis_ahead_mb=0,
        )
        node = spawn_node(config, hold_file=hold)
        index = Index(f"sqlite:///{(data / 'index.sqlite').resolve()}")

        # A study whose export to the second destination hangs at the kill.
        exported = small_study(3)
        assert send_all(node.port, exported) == [0, 0, 0]
        force_complete(index, exported)
        wait_until(lambda: hung.accepted > 0, 60, "an export to hang")

        # A study whose job is running (held in the engine) at the kill.
        running = small_study(3)
        assert send_all(node.port, running) == [0, 0, 0]
        hold.touch()
        force_complete(index, running)
        wait_until(lambda: bool(node.events("engine_held")), 60, "the job to start")

        # Four associations sending when the node is killed.
        barrier = threading.Barrier(SENDERS + 1)
        senders = [Sender(node.port, small_study(PER_SENDER), barrier) for _ in range(SENDERS)]
        for sender in senders:
            sender.start()
        barrier.wait(timeout=120)
        node.kill()
        for sender in senders:
            sender.join(timeout=120)
    acked_before = sum(len(s.acked) for s in senders)
    assert all(ACKED_BEFORE_KILL <= len(s.acked) < PER_SENDER for s in senders)

    # What a crash can leave behind, plus a file that lost its row.
    (data / "spool" / "tmp" / "crashed-write.part").write_bytes(b"partial")
    (orphan,) = small_study(1)
    orphan_path = data / "spool" / "studies" / orphan.StudyInstanceUID / orphan.SeriesInstanceUID
    orphan_path.mkdir(parents=True)
    orphan.save_as(orphan_path / f"{orphan.SOPInstanceUID}.dcm", enforce_file_format=True)

    hold.unlink()
    with CountingStorageSCP(port=hung.port) as second:
        node.start()
        reconciled = node.events("spool_reconciled")[-1]
        assert reconciled["partial_files_removed"] >= 1
        assert reconciled["files_indexed"] >= 1
        assert reconciled["jobs_requeued"] == 1
        for sender in senders:
            assert set(sender.resend_unacknowledged()) <= {0}
            force_complete(index, sender.study)
        assert index.force_complete(str(orphan.StudyInstanceUID)) == 1
        studies = 3 + SENDERS
        wait_until(lambda: all_done(index, studies), 180, "every job and export")
        node.stop()

    sent = [ds for s in senders for ds in s.study] + exported + running + [orphan]
    with index.session() as s:
        instances = {i.sop_instance_uid: (i.path, i.job_id) for i in s.scalars(select(Instance))}
        jobs = list(s.scalars(select(Job)))
        per_study = {st.study_instance_uid: len(st.jobs) for st in s.scalars(select(Study))}
        results = set(s.scalars(select(ResultObject.sop_instance_uid)))
    for ds in sent:
        path, job_id = instances[str(ds.SOPInstanceUID)]
        assert dcmread(path).SOPInstanceUID == ds.SOPInstanceUID
        assert job_id is not None
    assert len(instances) == len(sent)
    assert set(per_study.values()) == {1}, "a study processed more than once"
    assert sorted(j.attempts for j in jobs) == [1] * (studies - 1) + [2]
    in_archive = orthanc_sop_uids(orthanc)
    assert sorted(in_archive) == sorted(results), "archive differs from the results"
    assert set(second.received) == results
    archive_sends = sum(
        e["objects"] for e in node.events("export_delivered") if e["destination"] == "archive"
    )
    figures.update(
        instances_sent=len(sent) - 1,
        acknowledged_before_kill=acked_before,
        resent_after_restart=len(sent) - 1 - acked_before - 6,
        found_after_restart=len(instances),
        studies=studies,
        results=len(results),
        results_in_archive=len(in_archive),
        archive_objects_sent=archive_sends,
        second_destination_received=len(second.received),
        second_destination_duplicates=len(second.received) - len(set(second.received)),
        reconciled=reconciled,
    )


def test_kill_9_while_analysing_ahead(
    tmp_path: Path,
    orthanc: Orthanc,
    spawn_node: Callable[..., NodeProcess],
) -> None:
    """A node killed while analysing an image ahead of its study's completion
    loses nothing: after the restart the study's job analyses and reports it."""
    data = tmp_path / "var"
    hold = tmp_path / "hold-engine"
    hold.touch()
    config = base_config(
        data,
        destinations=[
            {"name": "archive", "ae_title": "ORTHANC", "host": "127.0.0.1",
             "port": orthanc.dicom_port}
        ],
        pipelines=[
            {
                "called_ae": "NODE",
                "completion": {"quiet_seconds": 600},
                "destinations": ["archive"],
            }
        ],
    )
    node = spawn_node(config, hold_file=hold)
    index = Index(f"sqlite:///{(data / 'index.sqlite').resolve()}")
    study = small_study(2)
    assert send_all(node.port, study) == [0, 0]
    wait_until(lambda: bool(node.events("engine_held")), 60, "analysis ahead to start")
    with index.session() as s:
        assert list(s.scalars(select(Job))) == [], "no study is complete yet"
    node.kill()
    hold.unlink()
    node.start()
    force_complete(index, study)

    def delivered() -> bool:
        with index.session() as s:
            jobs = list(s.scalars(select(Job)))
            exports = list(s.scalars(select(Export)))
        return (
            len(jobs) == 1
            and jobs[0].state == JobState.DONE
            and [e.state for e in exports] == [ExportState.DELIVERED]
        )

    wait_until(delivered, 120, "the study's job and export")
    node.stop()
    with index.session() as s:
        (job,) = s.scalars(select(Job))
        results = set(s.scalars(select(ResultObject.sop_instance_uid)))
        paths = [i.path for i in s.scalars(select(Instance))]
    assert job.attempts == 1
    assert "images=2" in str(job.summary) and "engine_errors=0" in str(job.summary)
    assert sorted(str(dcmread(p).SOPInstanceUID) for p in paths) == sorted(
        str(ds.SOPInstanceUID) for ds in study
    )
    assert results and set(orthanc_sop_uids(orthanc)) == results


def test_reconcile_reports_rows_whose_files_are_gone(tmp_path: Path) -> None:
    """An indexed file deleted behind the node's back is reported and forgotten."""
    node = Node(node_config(tmp_path), Stages(FakeAnalyzer(), decode, build))
    node.start(workers=False)
    try:
        assert node.port is not None
        assoc = associate(node.port)
        assert [int(assoc.send_c_store(ds).Status) for ds in small_study(2)] == [0, 0]
        assoc.release()
        assert node.receiver.writer.flush(30)
        node.spool.instance_files()[0].unlink()
        result = node.reconcile()
    finally:
        node.stop()
    assert (result.rows_without_files, result.files_indexed, result.partial_files_removed) == (
        1,
        0,
        0,
    )


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_kill_9_takes_the_extra_receivers_with_it(
    tmp_path: Path, spawn_node: Callable[..., NodeProcess]
) -> None:
    """With ``receivers: 2`` a killed node leaves no receiver holding its port."""
    node = spawn_node(base_config(tmp_path / "var", receivers=2))
    wait_until(lambda: len(node.events("receiver_processes_started")) == 1, 120,
               "the extra receiver to listen")
    # Both processes log JSON lines (events() reads only those).
    assert len(node.events("receiver_started")) == 2
    assert send_all(node.port, small_study(2)) == [0, 0]
    node.kill()
    wait_until(lambda: not _listening(node.port), 30, "the port to be free")
    node.start()
    wait_until(lambda: len(node.events("receiver_processes_started")) == 2, 120,
               "the restarted extra receiver to listen")
    assert send_all(node.port, small_study(2)) == [0, 0]
    assert node.stop() == 0
    assert not _listening(node.port)


def test_kill_9_while_the_extra_receiver_starts(
    tmp_path: Path, spawn_node: Callable[..., NodeProcess]
) -> None:
    """Killed while it waits for its extra receiver, the node leaves no receiver behind."""
    node = spawn_node(base_config(tmp_path / "var", receivers=2))
    wait_until(lambda: bool(node.events("receiver_process_spawned")), 60, "the spawn")
    node.kill()
    wait_until(lambda: bool(node.events("receiver_process_stopped")), 60,
               "the extra receiver to stop on its own")
    assert not _listening(node.port)


def test_reconcile_indexes_orphans_of_every_shape_and_never_fails_the_start(
    tmp_path: Path,
) -> None:
    """Files the receiver accepted but did not index before a crash, with a multi-valued
    description, a sequence where a string belongs, an over-long modality or a NUL,
    are indexed (texts cut, NUL removed); one pydicom cannot read is skipped."""
    node = Node(node_config(tmp_path), Stages(FakeAnalyzer(), decode, build))
    shapes = small_study(4)
    shapes[0].StudyDescription = ["Echo", "Doppler"]
    shapes[1].Modality = Sequence([Dataset()])
    shapes[2].Modality = "ULTRASOUND_PORTABLE_DEVICE"
    shapes[3].BodyPartExamined = "LIVER\0"
    study = tmp_path / "var" / "spool" / "studies" / shapes[0].StudyInstanceUID
    for ds in shapes:
        folder = study / ds.SeriesInstanceUID
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    (folder / "1.2.3.4.5.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    node.start(workers=False)  # reconciles: it raised on the first two shapes
    try:
        with node.index.session() as session:
            instances = session.scalars(select(Instance.id)).all()
            series = session.execute(select(Series.modality, Series.body_part)).all()
    finally:
        node.stop()
    assert len(instances) == 4
    for modality, body_part in series:
        assert modality is None or len(modality) <= 16
        assert body_part is None or "\0" not in body_part
