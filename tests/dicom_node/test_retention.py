"""Retention: studies leave the spool and the index once finished with and past
``retention.keep_days``; undelivered results hold them; a removal cut short by a
crash is finished at the next start, never indexed again."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydicom import Dataset

from dicom_node.config import NodeConfig, Pipeline
from dicom_node.index import ExportState, IndexQueries
from dicom_node.index.purge import delete_study, study_files
from dicom_node.retention import CHECK_SECONDS, PurgeReport
from dicom_node.service import Node
from dicom_node.spool import Spool
from tests.dicom_node.conftest import ARCHIVE, NodeHarness, make_study, pipeline

MakeNode = Callable[..., NodeHarness]

DAY = 86400.0


def _age_files(harness: NodeHarness) -> None:
    """Date the spool's files as old as the test clock says: they were written days
    before by the test's clock, seconds before by the wall's."""
    age = (datetime.now(UTC) - harness.clock.now()).total_seconds()
    for path in harness.node.spool.root.rglob("*.dcm"):
        stamp = path.stat().st_mtime - age
        os.utime(path, (stamp, stamp))


def _pass(harness: NodeHarness) -> PurgeReport:
    """A retention pass over files dated by the test clock (:func:`_age_files`)."""
    _age_files(harness)
    return harness.node.retention.run()


def _harness(make_node: MakeNode, keep_days: float | None) -> NodeHarness:
    """A node of the ``NODE`` pipeline sending to :data:`ARCHIVE`, keeping ``keep_days``."""
    return make_node(pipeline=pipeline(), destinations=[ARCHIVE],
                     retention={"keep_days": keep_days})


def _delivered(harness: NodeHarness, images: list[Dataset]) -> None:
    """Store ``images``, run their job and mark its export delivered."""
    harness.store(images)
    harness.settle()
    _deliver_all(harness)


def _processed(harness: NodeHarness, count: int = 2, called: str = "NODE") -> str:
    """Store a study of ``count`` images on ``called``, run its job; its study UID."""
    study = make_study(count)
    assert harness.store(study, called=called) == [0] * count
    harness.settle()
    return str(study[0].StudyInstanceUID)


def _deliver_all(harness: NodeHarness) -> None:
    index = harness.node.index
    for export in IndexQueries(index).exports(state=ExportState.PENDING):
        index.mark_delivered(export["id"], harness.clock.now())


def _spooled(harness: NodeHarness) -> list[Path]:
    spool = harness.node.spool
    return sorted(p for p in spool.root.rglob("*.dcm"))


def test_a_delivered_study_is_removed_after_its_retention(make_node: MakeNode) -> None:
    harness = _harness(make_node, 3)
    _processed(harness)
    _deliver_all(harness)
    files = _spooled(harness)
    assert len(files) > 2, "the images and the job's results"
    size = sum(p.stat().st_size for p in files)
    harness.clock.advance(3 * DAY - 60)
    assert _pass(harness).studies == 0
    assert _spooled(harness) == files
    harness.clock.advance(120)
    report = _pass(harness)
    assert (report.studies, report.files, report.bytes) == (1, len(files), size)
    assert _spooled(harness) == []
    spool = harness.node.spool
    assert list(spool.studies.iterdir()) == [] and list(spool.results.iterdir()) == []
    queries = IndexQueries(harness.node.index)
    assert queries.studies() == [] and queries.jobs() == [] and queries.exports() == []
    assert list(spool.purge.iterdir()) == []


def test_undelivered_results_hold_the_study(make_node: MakeNode) -> None:
    harness = _harness(make_node, 1)
    _processed(harness)
    harness.clock.advance(30 * DAY)
    assert _pass(harness).studies == 0, "export still pending"
    index = harness.node.index
    (export,) = IndexQueries(index).exports()
    index.mark_attempt_failed(export["id"], "archive down", None)
    harness.clock.advance(30 * DAY)
    assert _pass(harness).studies == 0, "in the error queue"
    assert index.discard_export(export["id"])
    assert _pass(harness).studies == 1
    assert _spooled(harness) == []


def test_any_activity_starts_the_period_again(make_node: MakeNode) -> None:
    harness = _harness(make_node, 7)
    first, late = make_study(2)
    _delivered(harness, [first])
    harness.clock.advance(5 * DAY)
    harness.store([late])
    harness.settle()
    harness.clock.advance(5 * DAY)
    _deliver_all(harness)
    harness.clock.advance(6 * DAY)
    assert _pass(harness).studies == 0, "the late job's results delivered 6 days ago"
    harness.clock.advance(DAY + 60)
    assert _pass(harness).studies == 1


def test_a_study_also_sent_to_another_called_ae_keeps_its_files(make_node: MakeNode) -> None:
    second = Pipeline.model_validate({"called_ae": "OTHER", "destinations": ["archive"]})
    harness = make_node(pipelines=[pipeline(), second], destinations=[ARCHIVE],
                        retention={"keep_days": 1})
    study = make_study(2)
    assert harness.store(study) == [0, 0]
    assert harness.store(study, called="OTHER") == [0, 0]
    harness.settle()
    queries = IndexQueries(harness.node.index)
    (node_job,) = [j for j in queries.jobs() if j["study_id"] == _study_id(queries, "NODE")]
    (export,) = queries.exports(job_ids=[node_job["id"]])
    harness.node.index.mark_delivered(export["id"], harness.clock.now())
    harness.clock.advance(2 * DAY)
    assert _pass(harness).studies == 1
    images = sorted(harness.node.spool.studies.rglob("*.dcm"))
    assert len(images) == 2, "OTHER's study still names them"
    assert [s["called_ae"] for s in queries.studies()] == ["OTHER"]


def _study_id(queries: IndexQueries, called_ae: str) -> int:
    (study,) = [s for s in queries.studies() if s["called_ae"] == called_ae]
    return int(study["id"])


def test_a_removal_cut_short_after_the_rows_is_finished_at_start(
    make_node: MakeNode, tmp_path: Path
) -> None:
    harness = _harness(make_node, 1)
    _processed(harness)
    _deliver_all(harness)
    harness.clock.advance(2 * DAY)
    node = harness.node
    (study,) = IndexQueries(node.index).studies()
    files = study_files(node.index, study["id"])
    node.spool.plan_removal("study", files.instance_paths + files.result_paths)
    cutoff = harness.clock.now() - timedelta(days=1)
    assert delete_study(node.index, files, cutoff)
    node.stop()  # a crash here: rows gone, files and note left
    assert _spooled(harness)

    restarted = Node(node.config(), node.stages, harness.clock)
    restarted.start(workers=False)
    try:
        assert restarted.reconcile().files_indexed == 0
        assert list(restarted.spool.purge.iterdir()) == []
        assert sorted(restarted.spool.root.rglob("*.dcm")) == []
        assert IndexQueries(restarted.index).studies() == [], "not indexed again"
    finally:
        restarted.stop()


def test_a_removal_cut_short_before_the_rows_keeps_the_study(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    _processed(harness)
    node = harness.node
    (study,) = IndexQueries(node.index).studies()
    files = study_files(node.index, study["id"])
    node.spool.plan_removal("study", files.instance_paths + files.result_paths)
    before = _spooled(harness)
    node.stop()  # a crash before the rows' transaction committed

    restarted = Node(node.config(), node.stages, harness.clock)
    restarted.start(workers=False)
    try:
        assert sorted(restarted.spool.root.rglob("*.dcm")) == before
        assert list(restarted.spool.purge.iterdir()) == []
        assert len(IndexQueries(restarted.index).studies()) == 1
    finally:
        restarted.stop()


def test_an_instance_arriving_during_a_removal_calls_it_off(make_node: MakeNode) -> None:
    harness = _harness(make_node, 1)
    first, late = make_study(2)
    _delivered(harness, [first])
    harness.clock.advance(2 * DAY)
    node = harness.node
    (study,) = IndexQueries(node.index).studies()
    files = study_files(node.index, study["id"])
    harness.store([late])
    cutoff = harness.clock.now() - timedelta(days=1)
    assert not delete_study(node.index, files, cutoff)
    assert len(IndexQueries(node.index).studies()) == 1


def test_no_keep_days_keeps_everything(make_node: MakeNode) -> None:
    harness = _harness(make_node, None)
    _processed(harness)
    _deliver_all(harness)
    files = _spooled(harness)
    harness.clock.advance(3650 * DAY)
    assert _pass(harness).studies == 0
    assert _spooled(harness) == files


def test_old_association_records_go_unless_an_instance_names_them(
    make_node: MakeNode,
) -> None:
    harness = _harness(make_node, 1)
    harness.store(make_study(1))  # pending: its association record stays
    assoc = harness.associate()
    assoc.release()
    harness.wait_for_associations_closed()
    queries = IndexQueries(harness.node.index)
    assert len(queries.associations()) == 2
    harness.clock.advance(2 * DAY)
    assert _pass(harness).associations == 1
    (kept,) = queries.associations()
    assert kept["instances"] == 1


def test_a_pass_is_due_every_check_period(make_node: MakeNode) -> None:
    harness = make_node(retention={"keep_days": 1})
    retention = harness.node.retention
    assert retention.due()
    harness.node.housekeeping_step()
    assert not retention.due()
    harness.clock.advance(CHECK_SECONDS - 1)
    assert not retention.due()
    harness.clock.advance(1)
    assert retention.due()


def test_keep_days_must_be_positive() -> None:
    assert NodeConfig.model_validate({}).retention.keep_days == 14
    with pytest.raises(ValidationError):
        NodeConfig.model_validate({"retention": {"keep_days": 0}})


def test_a_folder_removed_while_an_instance_is_linked_into_it_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "spool")
    make_dirs = spool._make_dirs
    calls: list[Path] = []

    def racing(folder: Path) -> None:
        make_dirs(folder)
        if not calls:  # the retention removes the empty folders right after
            folder.rmdir()
            folder.parent.rmdir()
        calls.append(folder)

    monkeypatch.setattr(spool, "_make_dirs", racing)
    path = spool.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    written = spool.write(path, b"data")
    assert written.created and path.read_bytes() == b"data"
    assert len(calls) == 2


def test_a_removal_note_never_deletes_outside_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    outside = tmp_path / "precious.dcm"
    outside.write_bytes(b"x")
    inside = spool.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    spool.write(inside, b"y")
    note = spool.plan_removal("t", [str(outside), str(spool.studies / ".." / "tmp"),
                                    str(spool.studies), str(inside)])
    removed = spool.remove(note)
    assert removed.files == 1 and outside.exists() and not inside.exists()
    assert spool.studies.is_dir() and spool.tmp.is_dir() and not note.exists()


def test_retention_on_postgresql(make_node: MakeNode) -> None:
    from tests.peers import run_postgres

    second = Pipeline.model_validate({"called_ae": "OTHER", "destinations": ["archive"]})
    with run_postgres() as url:
        harness = make_node(pipelines=[pipeline(), second], destinations=[ARCHIVE],
                            retention={"keep_days": 1}, database_url=url)
        study = make_study(2)
        harness.store(study)
        harness.settle()
        _deliver_all(harness)
        harness.store(study, called="OTHER")
        harness.settle()
        harness.clock.advance(2 * DAY)
        first = _pass(harness)
        assert (first.studies, first.associations) == (1, 1), "OTHER's export still pending"
        assert len(sorted(harness.node.spool.studies.rglob("*.dcm"))) == 2
        _deliver_all(harness)
        harness.clock.advance(2 * DAY)
        report = _pass(harness)
        assert (report.studies, report.associations) == (1, 1)
        assert _spooled(harness) == []
        harness.node.stop()


def test_a_failed_job_holds_its_study_until_it_is_run_again(make_node: MakeNode) -> None:
    harness = _harness(make_node, 1)
    _processed(harness)
    index = harness.node.index
    (job,) = IndexQueries(index).jobs()
    index.fail_job(job["id"], "engine crashed", harness.clock.now())
    harness.clock.advance(30 * DAY)
    assert _pass(harness).studies == 0, "never analysed: kept for a re-run"
    assert index.requeue_job(job["id"])
    while harness.node.dispatcher.run_next_job():
        pass
    _deliver_all(harness)
    harness.clock.advance(2 * DAY)
    assert _pass(harness).studies == 1


def test_an_instance_sent_again_during_a_removal_is_kept_and_indexed(
    make_node: MakeNode,
) -> None:
    harness = _harness(make_node, 1)
    study = make_study(2)
    _delivered(harness, study)
    harness.clock.advance(2 * DAY)
    _age_files(harness)
    pass_started = time.time()  # file times are wall time
    node = harness.node
    (row,) = IndexQueries(node.index).studies()
    files = study_files(node.index, row["id"])
    note = node.spool.plan_removal("study", files.instance_paths + files.result_paths)
    assert delete_study(node.index, files, harness.clock.now() - timedelta(days=1))
    assert harness.store([study[0]]) == [0]  # acknowledged again: a duplicate on disk
    removed = node.spool.remove(note, touched_since=pass_started - 60)
    kept = sorted(node.spool.studies.rglob("*.dcm"))
    assert [p.name for p in kept] == [f"{study[0].SOPInstanceUID}.dcm"]
    assert removed.files == len(files.instance_paths) + len(files.result_paths) - 1
    (again,) = IndexQueries(node.index).studies()
    assert again["instance_count"] == 1, "indexed anew: it will be analysed"


def test_an_instance_sent_again_keeps_its_study(make_node: MakeNode) -> None:
    harness = _harness(make_node, 1)
    study = make_study(1)
    _delivered(harness, study)
    harness.clock.advance(2 * DAY)
    assert harness.store(study) == [0]  # after the period, before the pass
    assert _pass(harness).studies == 0
    assert len(sorted(harness.node.spool.studies.rglob("*.dcm"))) == 1


def test_the_record_of_an_association_still_open_is_kept(make_node: MakeNode) -> None:
    harness = _harness(make_node, 0.001)
    assoc = harness.associate()
    assert assoc.is_established
    try:
        harness.clock.advance(3600)
        assert _pass(harness).associations == 0
        assert int(assoc.send_c_store(make_study(1)[0]).Status) == 0
    finally:
        assoc.release()
    harness.wait_for_associations_closed()
    harness.node.receiver.writer.flush(30.0)
    (record,) = IndexQueries(harness.node.index).associations()
    assert record["instances"] == 1


def test_a_study_sent_again_after_its_removal_gets_new_result_uids(
    make_node: MakeNode,
) -> None:
    from pydicom import dcmread

    harness = _harness(make_node, 1)
    study = make_study(3)
    _delivered(harness, study[:2])
    before = {str(dcmread(p).SOPInstanceUID) for p in harness.node.spool.results.rglob("*.dcm")}
    (job,) = IndexQueries(harness.node.index).jobs()
    harness.clock.advance(2 * DAY)
    assert _pass(harness).studies == 1
    harness.store(study)
    harness.settle()
    (again,) = IndexQueries(harness.node.index).jobs()
    assert again["id"] == job["id"], "SQLite gave the new job the removed one's id"
    after = {str(dcmread(p).SOPInstanceUID) for p in harness.node.spool.results.rglob("*.dcm")}
    assert before and after and not before & after


def test_a_removal_note_that_cannot_be_finished_does_not_stop_the_start(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    harness = _harness(make_node, 1)
    spool = harness.node.spool
    spool.plan_removal("study", [str(spool.studies / "1.2" / "1.2.3" / "1.2.3.4.dcm")])

    def read_only(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(spool, "remove", read_only)
    assert harness.node.reconcile().removals_finished == 0
    assert len(spool.pending_removals()) == 1, "tried again at the next start"
