"""Completion, jobs, late arrivals, failures: the dispatcher driven by a manual clock."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from dicom_node.config import Completion, Destination
from dicom_node.index import ExportState, IndexQueries, JobState
from dicom_node.spool import SpoolError
from tests.dicom_node.conftest import ARCHIVE, NodeHarness, make_study, pipeline
from tests.dicom_node.fake_engine import FakeAnalyzer

MakeNode = Callable[..., NodeHarness]


def test_study_completes_after_quiet_period_and_runs(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    study = make_study(2)
    harness.store(study)
    assert harness.settle(29) == []
    jobs = harness.settle(1)
    assert len(jobs) == 1
    queries = IndexQueries(harness.node.index)
    job = queries.jobs()[0]
    assert job["state"] == JobState.DONE.value, job["error"]
    assert len(harness.analyzer.calls) == 2
    exports = queries.exports()
    assert [e["state"] for e in exports] == [ExportState.PENDING.value]
    results = sorted(harness.node.spool.results.glob("job-*/*.dcm"))
    assert results
    modalities = {dcmread(p).Modality for p in results}
    assert "SR" in modalities
    for path in results:
        assert dcmread(path).StudyInstanceUID == study[0].StudyInstanceUID
    # The engine numbers the lesions of each image from 1; the study's report, one each.
    (report,) = [dcmread(p) for p in results if dcmread(p).Modality == "SR"]
    assert sorted(_texts(report, TRACKING_IDENTIFIER)) == ["Lesion 1", "Lesion 2"]


TRACKING_IDENTIFIER = "112039"
"""DCM code of the Tracking Identifier content item."""


def _texts(ds: Dataset, code_value: str) -> list[str]:
    """Text values of the content items named ``code_value``, anywhere in the SR tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        name = item.get("ConceptNameCodeSequence")
        if name and name[0].CodeValue == code_value and "TextValue" in item:
            found.append(str(item.TextValue))
        found.extend(_texts(item, code_value))
    return found


def test_late_arrival_starts_a_new_job_with_only_new_instances(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    first, late = make_study(2)
    harness.store([first])
    harness.settle()
    harness.store([late])
    harness.store([first])  # a duplicate after completion is not re-processed
    jobs = harness.settle()
    assert len(jobs) == 1
    queries = IndexQueries(harness.node.index)
    assert [j["sequence"] for j in queries.jobs()] == [2, 1]
    assert [c[0] for c in harness.analyzer.calls] == [first.SOPInstanceUID, late.SOPInstanceUID]
    assert queries.studies()[0]["instance_count"] == 2
    srs = [dcmread(p) for p in harness.node.spool.results.glob("job-*/*.dcm")]
    series = {ds.SeriesInstanceUID for ds in srs if ds.Modality == "SR"}
    assert len(series) == 2, "each job's results go in a new series"


def test_expected_series_completes_before_quiet_period(make_node: MakeNode) -> None:
    rule = Completion(quiet_seconds=600, expected_series=2)
    harness = make_node(pipeline=pipeline(completion=rule), destinations=[ARCHIVE])
    harness.store(make_study(4, series=2))
    assert len(harness.settle(6)) == 1


def test_forced_completion(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    study = make_study(1)
    harness.store(study)
    assert harness.node.index.force_complete(study[0].StudyInstanceUID) == 1
    assert len(harness.settle(0)) == 1


def test_engine_failure_fails_only_its_job(make_node: MakeNode) -> None:
    bad_study = make_study(1)
    good_study = make_study(1)
    analyzer = FakeAnalyzer(fail_on={bad_study[0].SOPInstanceUID})
    harness = make_node(analyzer=analyzer, pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store(bad_study + good_study)
    harness.settle()
    jobs = {j["study_instance_uid"]: j for j in IndexQueries(harness.node.index).jobs()}
    bad = jobs[bad_study[0].StudyInstanceUID]
    good = jobs[good_study[0].StudyInstanceUID]
    assert bad["state"] == JobState.FAILED.value
    assert "fake engine crashed" in bad["error"]
    assert good["state"] == JobState.DONE.value


def test_unrouted_images_are_reported_not_assessed(make_node: MakeNode) -> None:
    rules = [{"name": "breast-only", "match": {"body_part": ["BREAST"]}, "engines": ["breast"]}]
    harness = make_node(pipeline=pipeline(rules=rules), destinations=[ARCHIVE])
    harness.store(make_study(1, body_part="ABDOMEN"))
    harness.settle()
    assert harness.analyzer.calls == []
    job = IndexQueries(harness.node.index).jobs()[0]
    assert job["state"] == JobState.DONE.value
    assert "not_assessed=1" in job["summary"]


def test_rerun_of_a_job(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store(make_study(1))
    harness.settle()
    job_id = IndexQueries(harness.node.index).jobs()[0]["id"]
    assert harness.node.index.requeue_job(job_id)
    assert harness.node.dispatcher.run_next_job()
    assert len(harness.analyzer.calls) == 2


def test_engine_failure_on_one_image_does_not_poison_the_others(make_node: MakeNode) -> None:
    broken, fine = make_study(2)
    analyzer = FakeAnalyzer(fail_on={broken.SOPInstanceUID})
    harness = make_node(analyzer=analyzer, pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store([broken, fine])
    harness.settle()
    job = IndexQueries(harness.node.index).jobs()[0]
    assert job["state"] == JobState.DONE.value
    assert "engine_errors=1" in job["summary"]
    assert "lesions=1" in job["summary"]
    (sr,) = [
        dcmread(p)
        for p in harness.node.spool.results.glob("job-*/*.dcm")
        if dcmread(p).Modality == "SR"
    ]
    assert broken.SOPInstanceUID in str(sr.ContentSequence)


def test_undecodable_image_is_not_assessed(make_node: MakeNode) -> None:
    broken, fine = make_study(2)
    broken.PixelData = broken.PixelData[:100]
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store([broken, fine])
    harness.settle()
    job = IndexQueries(harness.node.index).jobs()[0]
    assert job["state"] == JobState.DONE.value, job["error"]
    assert "not_assessed=1" in job["summary"]
    assert [c[0] for c in harness.analyzer.calls] == [fine.SOPInstanceUID]


def test_node_runs_on_postgresql(make_node: MakeNode) -> None:
    from tests.peers import run_postgres

    with run_postgres() as url:
        harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE], database_url=url)
        harness.store(make_study(2))
        assert len(harness.settle()) == 1
        job = IndexQueries(harness.node.index).jobs()[0]
        assert job["state"] == JobState.DONE.value
        harness.node.stop()


def test_unreadable_spool_file_is_skipped_not_fatal(make_node: MakeNode) -> None:
    broken, fine = make_study(2)
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store([broken, fine])
    (path,) = [p for p in harness.node.spool.instance_files() if broken.SOPInstanceUID in p.name]
    path.write_bytes(b"not DICOM any more")
    harness.settle()
    job = IndexQueries(harness.node.index).jobs()[0]
    assert job["state"] == JobState.DONE.value, job["error"]
    assert "unreadable=1" in job["summary"]
    assert [c[0] for c in harness.analyzer.calls] == [fine.SOPInstanceUID]


def test_a_spooled_file_that_reads_back_as_another_instance_is_unreadable(
    make_node: MakeNode,
) -> None:
    # Found by fuzzing: a lower-case VR ("ob", now refused at receipt) makes pydicom stop
    # reading the file short of the study and series UIDs; the study's job failed.
    broken, fine = make_study(2)
    broken.BodyPartExamined = "LIVER"
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store([broken, fine])
    (path,) = [p for p in harness.node.spool.instance_files() if broken.SOPInstanceUID in p.name]
    data = bytearray(path.read_bytes())
    at = data.index(bytes.fromhex("18001500"))  # (0018,0015) Body Part Examined
    data[at + 4 : at + 6] = b"ob"
    path.write_bytes(bytes(data))
    harness.settle()
    job = IndexQueries(harness.node.index).jobs()[0]
    assert job["state"] == JobState.DONE.value, job["error"]
    assert "unreadable=1" in job["summary"]
    assert [c[0] for c in harness.analyzer.calls] == [fine.SOPInstanceUID]


def test_overlay_capture_for_destinations_that_want_it(make_node: MakeNode) -> None:
    from tests.peers import dciodvfy_errors

    viewer = Destination(
        name="viewer", ae_title="VIEWER", host="127.0.0.1", port=2, overlay_capture=True
    )
    harness = make_node(
        pipeline=pipeline(destinations=["archive", "viewer"]), destinations=[ARCHIVE, viewer]
    )
    harness.store(make_study(1, frames=4, photometric="RGB"))
    harness.settle()
    results = sorted(harness.node.spool.results.glob("job-*/*.dcm"))
    captures = [
        p for p in results if dcmread(p).Modality == "OT" or dcmread(p).SOPClassUID.endswith(".7")
    ]
    assert captures, "the overlay image is built from the spooled (deferred) pixel data"
    for path in captures:
        assert dciodvfy_errors(path) == []
    items = {
        i.destination: i.paths
        for i in harness.node.index.due_exports("viewer", harness.clock.now(), 10)
    }
    archive_items = harness.node.index.due_exports("archive", harness.clock.now(), 10)
    assert any(str(c) in items["viewer"] for c in captures)
    assert not any(str(c) in archive_items[0].paths for c in captures)


def test_a_job_whose_results_do_not_fit_waits_for_disk_then_runs(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store(make_study(2))
    spool, dispatcher = harness.node.spool, harness.node.dispatcher
    free = {"bytes": 0}
    monkeypatch.setattr(spool, "free_bytes", lambda: free["bytes"])
    real_write = spool.write_result
    written: list[str] = []

    def fills_up(job_id: int, sop_uid: str, data: bytes) -> Path:
        if written:
            raise SpoolError(errno.ENOSPC, "cannot spool instance: No space left on device")
        written.append(sop_uid)
        return real_write(job_id, sop_uid, data)

    monkeypatch.setattr(spool, "write_result", fills_up)
    harness.settle()
    queries = IndexQueries(harness.node.index)
    (job,) = queries.jobs()
    assert job["state"] == JobState.WAITING_FOR_DISK.value
    assert "disk full" in job["error"] and "No space left" in job["error"]
    assert written and not list(spool.results.glob("job-*/*.dcm")), "partial results removed"
    assert dispatcher.resume_jobs_waiting_for_disk() == 0, "still below the floor"
    monkeypatch.setattr(spool, "write_result", real_write)
    free["bytes"] = 100 * 2**30
    assert dispatcher.resume_jobs_waiting_for_disk() == 1
    assert dispatcher.run_next_job()
    (job,) = queries.jobs()
    assert job["state"] == JobState.DONE.value, job["error"]
    assert list(spool.results.glob("job-*/*.dcm"))
    assert [e["state"] for e in queries.exports()] == [ExportState.PENDING.value]


def test_no_study_completes_while_received_instances_are_not_indexed(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store(make_study(2))
    harness.node.receiver.writer.flush(30.0)
    harness.clock.advance(31)
    writer = harness.node.receiver.writer
    monkeypatch.setattr(writer, "flush", lambda timeout=None: False)
    harness.node.dispatch_step()
    assert IndexQueries(harness.node.index).jobs() == [], "judged without its last rows"
    monkeypatch.undo()
    harness.node.dispatch_step()
    (job,) = IndexQueries(harness.node.index).jobs()
    assert job["state"] == JobState.DONE.value


def test_a_job_failing_on_a_patient_value_keeps_the_value_out_of_its_error(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The node maps Patient Sex values outside M/F/O; without that, highdicom refuses
    # this one, quoting it: a stand-in for any value it refuses.
    monkeypatch.setattr("sr_templates.sources._conformant_sex", lambda ds: None)
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    study = make_study(1)
    study[0].PatientSex = "DOE^JOHN"
    harness.store(study)
    harness.settle()
    (job,) = IndexQueries(harness.node.index).jobs()
    assert job["state"] == JobState.FAILED.value
    assert "PatientSex" in job["error"] and "DOE" not in job["error"]


def test_an_image_of_another_patient_is_left_out_not_fatal(make_node: MakeNode) -> None:
    first, same, other = make_study(3)
    same.PatientName = "DOE^JANE^^"  # written differently by a second device
    same.PatientBirthDate = ""
    other.PatientName = "Roe^Max"  # merged into the study by mistake
    del first.Modality  # Type 1, missing on some devices: US is implied
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store([first, same, other])
    harness.settle()
    (job,) = IndexQueries(harness.node.index).jobs()
    assert job["state"] == JobState.DONE.value, job["error"]
    assert "images=2" in job["summary"] and "other_patient=1" in job["summary"]
    assert sorted(c[0] for c in harness.analyzer.calls) == sorted(
        [first.SOPInstanceUID, same.SOPInstanceUID]
    )
    for path in harness.node.spool.results.glob("job-*/*.dcm"):
        assert str(dcmread(path).PatientName).upper().rstrip("^") == "DOE^JANE"


def test_each_image_is_routed_by_the_device_that_sent_it(make_node: MakeNode) -> None:
    from dicom_node.config import Caller, Match, Rule

    rules = [
        Rule(name="echo", match=Match(calling_ae=["ECHO_ROOM"]), engines=["cardiac"]),
        Rule(name="abdomen", match=Match(calling_ae=["ABD_ROOM"]), engines=["liver"]),
    ]
    callers = [Caller(ae_title="ECHO_ROOM", port=4100), Caller(ae_title="ABD_ROOM", port=4101)]
    harness = make_node(
        pipeline=pipeline(rules=rules, allowed_callers=callers,
                          destinations=["archive", "return-to-sender"]),
        destinations=[ARCHIVE],
    )
    cine, still = make_study(2)
    harness.store([cine], calling="ECHO_ROOM")
    harness.store([still], calling="ABD_ROOM")
    harness.settle()
    (job,) = IndexQueries(harness.node.index).jobs()
    assert job["state"] == JobState.DONE.value, job["error"]
    engines = {uid: routed for uid, routed, _ in harness.analyzer.calls}
    assert engines == {cine.SOPInstanceUID: ("cardiac",), still.SOPInstanceUID: ("liver",)}
    exports = IndexQueries(harness.node.index).exports()
    assert sorted(e["destination"] for e in exports) == [
        "archive", "return-to-sender:ABD_ROOM", "return-to-sender:ECHO_ROOM"
    ]


def test_a_sender_without_a_port_does_not_stop_the_other_destinations(
    make_node: MakeNode,
) -> None:
    from dicom_node.config import Caller

    harness = make_node(
        pipeline=pipeline(allowed_callers=[Caller(ae_title="PACS")],
                          destinations=["archive", "return-to-sender"]),
        destinations=[ARCHIVE],
    )
    harness.store(make_study(1), calling="PACS")
    harness.settle()
    (job,) = IndexQueries(harness.node.index).jobs()
    assert job["state"] == JobState.DONE.value, job["error"]
    assert [e["destination"] for e in IndexQueries(harness.node.index).exports()] == ["archive"]


def test_a_study_sent_image_by_image_with_expected_series_makes_two_jobs_not_one_each(
    make_node: MakeNode,
) -> None:
    rule = Completion(quiet_seconds=60, expected_series=2)
    harness = make_node(pipeline=pipeline(completion=rule), destinations=[ARCHIVE])
    jobs = []
    for image in make_study(5, series=2):  # a scanner sending each image as it is stored
        harness.store([image])
        jobs += harness.settle(10)
    jobs += harness.settle(60)
    assert len(jobs) == 2, "the two series, then the rest after the quiet period"


def test_results_carry_the_fullest_identity_and_go_back_only_to_its_senders(
    make_node: MakeNode,
) -> None:
    from dicom_node.config import Caller

    callers = [Caller(ae_title="ROOM_A", port=4100), Caller(ae_title="ROOM_B", port=4101)]
    harness = make_node(
        pipeline=pipeline(allowed_callers=callers, destinations=["return-to-sender"]),
        destinations=[ARCHIVE],
    )
    blank, full, stranger = make_study(3)
    blank.PatientID = ""  # a device that leaves the ID empty
    blank.PatientBirthDate = ""
    stranger.PatientName, stranger.PatientID = "Roe^Max", "PID-9"
    harness.store([blank, full], calling="ROOM_A")
    harness.store([stranger], calling="ROOM_B")
    harness.settle()
    (job,) = IndexQueries(harness.node.index).jobs()
    assert job["state"] == JobState.DONE.value, job["error"]
    exports = IndexQueries(harness.node.index).exports()
    assert [e["destination"] for e in exports] == ["return-to-sender:ROOM_A"]
    (report,) = [dcmread(p) for p in harness.node.spool.results.glob("job-*/*.dcm")
                 if dcmread(p).Modality == "SR"]
    assert report.PatientID == full.PatientID
