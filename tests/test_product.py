"""The product as a hospital meets it: the real CLI, the real engines, real peers.

``dicom-node serve`` (a subprocess, shipped weights) receives phantom studies
from DCMTK's storescu and sends its results to Orthanc; the reports are read
back from Orthanc's REST API and checked against the phantoms' ground truth.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread

from dicom_node.demo import demo_dataset
from inference.engines.registry import ENGINE_NAMES
from inference.findings import BoundingBox
from inference.phantoms.echo import random_echo_spec, render_echo
from inference.phantoms.generator import generate
from tests.peers import Orthanc, dciodvfy_errors, free_port, run_orthanc, start_logged, storescu

pytestmark = pytest.mark.integration

EF_LOINC = "18043-0"
LABEL_MEANINGS = {"cyst": "cyst", "carcinoma": "carcinoma"}
"""Words the report's class evaluation uses for the expected classes."""

CASES = {"liver": 21, "breast": 21, "echo": 13}
"""Phantom seeds of the studies sent.

A regression check of the whole chain, not an accuracy figure (that is
docs/evaluation.md): one clear lesion each (liver cyst 18 mm, breast carcinoma
16 mm) that the shipped models find and classify, and an echo cine whose EF
is known."""

STUDY_UIDS = {kind: f"1.2.826.0.1.3680043.8.498.7{i}" for i, kind in enumerate(CASES)}


def shipped_weights() -> bool:
    """Whether every engine's weights are in the repository."""
    from inference.engines.registry import load_engine

    try:
        for name in ENGINE_NAMES:
            load_engine(name)
    except (FileNotFoundError, ImportError, RuntimeError):
        return False
    return True


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with run_orthanc(tmp_path / "orthanc") as archive:
        yield archive


@pytest.fixture
def node(tmp_path: Path, orthanc: Orthanc) -> Iterator[int]:
    """``dicom-node serve`` with the shipped engines, sending to Orthanc."""
    if not shipped_weights():
        pytest.skip("engine weights are not shipped yet")
    port = free_port()
    log = tmp_path / "node.log"
    command = [
        sys.executable,
        "-m",
        "dicom_node.cli",
        "--log-json",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "var"),
        "--archive",
        f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}",
        "--quiet-seconds",
        "2",
        "--api-port",
        "0",
    ]
    process = start_logged(command, log, b"receiver_started", timeout=120)
    yield port
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def reports(orthanc: Orthanc, count: int, folder: Path) -> list[Path]:
    ids = orthanc.wait_for("SR", count, timeout=600)
    folder.mkdir()
    paths = []
    for number, instance in enumerate(ids):
        path = folder / f"sr{number}.dcm"
        path.write_bytes(orthanc.get_bytes(f"/instances/{instance}/file"))
        paths.append(path)
    return paths


def lesion_boxes(sr: hd.sr.ComprehensiveSR) -> list[tuple[float, float, float, float]]:
    """Bounding boxes (x0, y0, x1, y1) of the report's lesion groups."""
    boxes = []
    for group in sr.content.get_planar_roi_measurement_groups():
        region = group.roi
        if region is None:
            continue
        points = np.asarray(region.value)
        boxes.append(
            (points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max())
        )
    return boxes


def iou(a: tuple[float, ...], b: BoundingBox) -> float:
    return BoundingBox(*a).iou(b)


def test_phantom_studies_get_reports_in_orthanc(
    tmp_path: Path, orthanc: Orthanc, node: int
) -> None:
    studies = tmp_path / "studies"
    studies.mkdir()
    files = []
    for kind, seed in CASES.items():
        ds = demo_dataset(kind, seed, study_uid=STUDY_UIDS[kind])
        path = studies / f"{kind}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    sent = storescu(node, files)
    assert sent.returncode == 0, sent.stderr

    kinds = {uid: kind for kind, uid in STUDY_UIDS.items()}
    by_kind = {}
    for path in reports(orthanc, len(CASES), tmp_path / "reports"):
        assert dciodvfy_errors(path) == [], path
        by_kind[kinds[dcmread(path).StudyInstanceUID]] = hd.sr.srread(path)

    echo = by_kind["echo"]
    values = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in hd.sr.utils.find_content_items(echo, recursive=True)
        if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == EF_LOINC
    ]
    spec = random_echo_spec(np.random.default_rng(CASES["echo"]), size=(480, 640), n_frames=30)
    truth = render_echo(spec).ejection_fraction
    assert values, "the echo report carries an ejection fraction"
    assert abs(values[0] - truth) <= 10.0

    for kind in ("liver", "breast"):
        sample = generate(kind, CASES[kind])
        report = by_kind[kind]
        found = lesion_boxes(report)
        for lesion in sample.truths[0]:
            assert any(iou(box, lesion.box) >= 0.25 for box in found), (kind, lesion, found)
            assert LABEL_MEANINGS[lesion.label] in str(report.ContentSequence).lower()
