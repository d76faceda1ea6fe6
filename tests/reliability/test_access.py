"""Access and privacy: the whitelist of the example configuration, the admin token, no PHI.

The privacy test sends instances with a known patient identity through every
path (stored, duplicate, refused, malformed, processed, exported, rejected
caller) and then greps everything the node wrote besides the DICOM objects
themselves: its log, its metrics and its index database.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from dicom_node.index import ExportState
from tests.dicom_node.conftest import make_study
from tests.peers import free_port, storescu
from tests.reliability.conftest import base_config, queries
from tests.reliability.harness import (
    PHI,
    CountingStorageSCP,
    NodeProcess,
    associate,
    encode,
    send_raw,
    wait_until,
    with_phi,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOKEN = "reliability-test-token"


def test_example_config_whitelist_refuses_unknown_callers(
    tmp_path: Path, spawn_node: Callable[..., NodeProcess], figures: dict[str, object]
) -> None:
    config = yaml.safe_load((REPO / "config" / "example.yaml").read_text())
    config.update(host="127.0.0.1", data_dir=str(tmp_path / "var"), api_port=0)
    config["limits"]["min_free_disk_mb"] = 0
    node = spawn_node(config)
    files = []
    for i, ds in enumerate(make_study(1)):
        files.append(tmp_path / f"{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    attempts = {"STRANGER": 1, "US_ROOM_1": 1, "PACS": 0}
    for calling, expected in attempts.items():
        done = storescu(node.port, files, called="US_AI", calling=calling)
        assert (done.returncode != 0) == bool(expected), (calling, done.stderr)
    refused = queries(node.data_dir).associations(accepted=False)
    reasons = {r["calling_ae"]: r["reject_reason"] for r in refused}
    assert set(reasons) == {"STRANGER", "US_ROOM_1"}
    assert "'STRANGER' from 127.0.0.1 is not allowed on 'US_AI'" in reasons["STRANGER"]
    assert len(node.events("association_rejected")) == 2
    figures.update(callers_tried=len(attempts), refused=len(refused))


def _http(port: int, method: str, path: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _api_up(port: int) -> bool:
    try:
        return _http(port, "GET", "/healthz")[0] == 200
    except urllib.error.URLError:
        return False


def _written_by_node(data_dir: Path, extra: list[Path]) -> dict[str, bytes]:
    """Every file the node wrote except the DICOM objects it stores and sends."""
    files = [p for p in data_dir.rglob("*") if p.is_file() and p.suffix != ".dcm"]
    return {str(p): p.read_bytes() for p in [*files, *extra]}


def test_no_phi_in_logs_metrics_or_index_and_changes_need_the_token(
    tmp_path: Path, spawn_node: Callable[..., NodeProcess], figures: dict[str, object]
) -> None:
    api_port = free_port()
    with CountingStorageSCP() as viewer:
        config = base_config(
            tmp_path / "var",
            api_port=api_port,
            admin_token=TOKEN,
            destinations=[
                {"name": "viewer", "ae_title": "COUNTER", "host": "127.0.0.1", "port": viewer.port}
            ],
            pipelines=[
                {
                    "called_ae": "NODE",
                    "allowed_callers": [{"ae_title": "MODALITY"}],
                    "completion": {"quiet_seconds": 600},
                    "destinations": ["viewer"],
                }
            ],
        )
        metrics_file = tmp_path / "metrics.txt"
        node = spawn_node(config, metrics_file=metrics_file)
        study = [with_phi(ds) for ds in make_study(3)]
        missing_uid, truncated = (with_phi(ds) for ds in make_study(2))
        del missing_uid.StudyInstanceUID
        assoc = associate(node.port)
        statuses = [int(assoc.send_c_store(ds).Status) for ds in [*study, study[0], missing_uid]]
        statuses.append(
            send_raw(
                assoc,
                encode(truncated)[:-500],
                str(truncated.SOPClassUID),
                str(truncated.SOPInstanceUID),
            )
        )
        assoc.release()
        assert statuses == [0, 0, 0, 0, 0xC000, 0xC000]
        assert associate(node.port, calling="STRANGER").is_rejected

        wait_until(lambda: _api_up(api_port), 60, "the admin API")
        complete = f"/api/studies/{study[0].StudyInstanceUID}/complete"
        assert _http(api_port, "POST", complete)[0] == 401
        assert _http(api_port, "POST", complete, token="wrong")[0] == 401
        assert _http(api_port, "POST", complete, token=TOKEN)[0] == 200
        index = queries(node.data_dir)
        wait_until(
            lambda: [e["state"] for e in index.exports()] == [ExportState.DELIVERED.value],
            120,
            "the results to be exported",
        )
        status, live_metrics = _http(api_port, "GET", "/metrics")
        assert status == 200
        assert node.stop() == 0
    live = tmp_path / "live-metrics.txt"
    live.write_bytes(live_metrics)
    written = _written_by_node(node.data_dir, [node.log, metrics_file, live])
    stored = b"".join(p.read_bytes() for p in node.data_dir.rglob("*.dcm"))
    assert all(value.encode() in stored for value in PHI.values()), "the test data lost its PHI"
    leaks = {
        (path, keyword)
        for path, content in written.items()
        for keyword, value in PHI.items()
        for variant in {value, value.replace("^", " "), value.split("^")[0]}
        if variant.encode() in content
    }
    assert leaks == set()
    assert b"dicom_node_instances_received" in written[str(metrics_file)]
    events = [json.loads(line) for line in node.log.read_text().splitlines() if line[:1] == "{"]
    figures.update(
        files_checked=len(written),
        bytes_checked=sum(len(c) for c in written.values()),
        log_lines=len(events),
        phi_values=len(PHI),
        leaks=len(leaks),
        results_exported=len(viewer.received),
    )


MALFORMED_PHI = {
    "PatientName": "Quixotez^Wilhelmina^Anna^Dr^Jr^Sixth",  # six components
    "PatientID": "PHI-ID-" + "7" * 70,  # beyond LO's 64 characters
    "PatientBirthDate": "19381317",  # no month 13
    "AccessionNumber": "ACCPHI55213-" + "9" * 10,  # beyond SH's 16 characters
}
"""A patient identity that breaks its VRs' rules: pydicom's warnings quote such values."""


def test_no_phi_in_logs_when_the_identity_breaks_its_vrs(
    tmp_path: Path, spawn_node: Callable[..., NodeProcess]
) -> None:
    node = spawn_node(base_config(tmp_path / "var"))
    study = make_study(2)
    for ds in study:
        for keyword, value in MALFORMED_PHI.items():
            setattr(ds, keyword, value)
    assoc = associate(node.port)
    assert [int(assoc.send_c_store(ds).Status) for ds in study] == [0, 0]
    assoc.release()
    index = queries(node.data_dir)
    wait_until(lambda: [j["state"] for j in index.jobs()] == ["done"], 120, "the job to end")
    assert node.stop() == 0
    written = _written_by_node(node.data_dir, [node.log])
    leaks = {
        (path, keyword)
        for path, content in written.items()
        for keyword, value in MALFORMED_PHI.items()
        for variant in {value, value.split("^")[0], value[:12]}
        if variant.encode() in content
    }
    assert leaks == set()
    # pydicom's complaints about these values are log events, not bare warning lines.
    lines = node.log.read_text().splitlines()
    assert lines and all(line.startswith("{") and json.loads(line) for line in lines)
