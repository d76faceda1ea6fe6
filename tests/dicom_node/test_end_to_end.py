"""End to end against real peers: storescu sends a US study, Orthanc receives the results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread, examples

from dicom_node.config import Completion, Destination, Pipeline
from dicom_node.index import ExportState, IndexQueries, JobState
from dicom_node.service import Node, Stages
from dicom_node.stages import build, decode
from tests.dicom_node.conftest import make_us_image, node_config
from tests.dicom_node.fake_engine import FakeAnalyzer
from tests.peers import Orthanc, dciodvfy_errors, run_orthanc, storescu, wait_until

pytestmark = pytest.mark.integration

STUDY_UID = "1.2.826.0.1.3680043.8.498.77001"


def write_study(folder: Path) -> list[Path]:
    """A multi-file US study: RGB stills, a JPEG-baseline cine, pydicom's YBR cine."""
    folder.mkdir()
    datasets = [
        make_us_image("RGB", rows=480, columns=640, study_uid=STUDY_UID),
        make_us_image("RGB", rows=480, columns=640, study_uid=STUDY_UID),
        make_us_image("YBR_FULL_422", frames=12, rows=240, columns=320, study_uid=STUDY_UID),
    ]
    bundled = examples.ybr_color.copy()
    bundled.StudyInstanceUID = STUDY_UID
    bundled.PatientName = datasets[0].PatientName
    bundled.PatientID = datasets[0].PatientID
    bundled.PatientBirthDate = datasets[0].PatientBirthDate
    datasets.append(bundled)
    paths = []
    for i, ds in enumerate(datasets):
        ds.InstanceNumber = i + 1
        path = folder / f"img{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with run_orthanc(tmp_path / "orthanc") as archive:
        yield archive


def test_storescu_to_node_to_orthanc(tmp_path: Path, orthanc: Orthanc) -> None:
    files = write_study(tmp_path / "study")
    config = node_config(
        tmp_path,
        ae_title="DICOM_NODE",
        destinations=[
            Destination(
                name="archive", ae_title=orthanc.ae_title, host="127.0.0.1", port=orthanc.dicom_port
            )
        ],
        pipeline=Pipeline(
            called_ae="DICOM_NODE",
            completion=Completion(quiet_seconds=1),
            destinations=["archive"],
        ),
    )
    analyzer = FakeAnalyzer()
    node = Node(config, Stages(analyze=analyzer, decode=decode, build=build))
    node.start()
    try:
        assert node.port is not None
        sent = storescu(node.port, files)
        assert sent.returncode == 0, sent.stderr
        sr_ids = orthanc.wait_for("SR", 1)
        seg_ids = orthanc.wait_for("SEG", 1)
        pr_ids = orthanc.wait_for("PR", 1)
        queries = IndexQueries(node.index)
        jobs = queries.jobs()
        assert [j["state"] for j in jobs] == [JobState.DONE.value]
        # Orthanc lists the last object before the node has its answer and records it.
        wait_until(
            lambda: [e["state"] for e in queries.exports()] == [ExportState.DELIVERED.value],
            30,
            "the export to be recorded as delivered",
        )
    finally:
        node.stop()
    assert sorted(n for _, _, n in analyzer.calls) == [1, 1, 12, 30], "all frames of each cine"
    results = tmp_path / "results"
    results.mkdir()
    for number, instance_id in enumerate(sr_ids + seg_ids + pr_ids):
        path = results / f"{number}.dcm"
        path.write_bytes(orthanc.get_bytes(f"/instances/{instance_id}/file"))
        assert dciodvfy_errors(path) == [], path
        assert dcmread(path).StudyInstanceUID == STUDY_UID
