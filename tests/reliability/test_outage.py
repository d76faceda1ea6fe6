"""Archive outage: results queue and retry with backoff; other destinations are never held up.

A destination refusing our objects with a failure status goes to the error
queue with the reason after one attempt, instead of being retried forever.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dicom_node.index import ExportState
from tests.dicom_node.conftest import make_study
from tests.peers import free_port, run_orthanc
from tests.reliability.conftest import base_config, queries
from tests.reliability.harness import CountingStorageSCP, NodeProcess, associate, wait_until

pytestmark = pytest.mark.integration

STUDIES = 2
RETRIES_WHILE_DOWN = 3


def destination(name: str, port: int) -> dict[str, object]:
    return {"name": name, "ae_title": name.upper(), "host": "127.0.0.1", "port": port}


def test_archive_outage_then_recovery(
    tmp_path: Path, spawn_node: Callable[..., NodeProcess], figures: dict[str, object]
) -> None:
    archive_port = free_port()
    with (
        CountingStorageSCP() as viewer,
        CountingStorageSCP(status=0xC000) as refuser,
    ):
        config = base_config(
            tmp_path / "var",
            destinations=[
                destination("archive", archive_port),
                destination("viewer", viewer.port),
                destination("refuser", refuser.port),
            ],
            pipelines=[
                {
                    "called_ae": "NODE",
                    "completion": {"quiet_seconds": 1},
                    "destinations": ["archive", "viewer", "refuser"],
                }
            ],
        )
        node = spawn_node(config)
        for _ in range(STUDIES):
            assoc = associate(node.port)
            assert [int(assoc.send_c_store(ds).Status) for ds in make_study(3)] == [0, 0, 0]
            assoc.release()
        index = queries(node.data_dir)

        def exports(name: str) -> list[dict[str, object]]:
            return [e for e in index.exports() if e["destination"] == name]

        def archive_failures() -> int:
            return sum(
                1 for e in node.events("export_attempt_failed") if e["destination"] == "archive"
            )

        wait_until(
            lambda: (
                len(exports("viewer")) == STUDIES
                and all(e["state"] == ExportState.DELIVERED.value for e in exports("viewer"))
                and archive_failures() >= RETRIES_WHILE_DOWN * STUDIES
            ),
            120,
            "the viewer to get everything while the archive is down",
        )
        assert all(e["attempts"] == 1 for e in exports("viewer")), "the viewer was held up"
        delivered_to_viewer = len(viewer.received)
        with run_orthanc(tmp_path / "orthanc", ae_title="ARCHIVE", dicom_port=archive_port) as pacs:
            wait_until(
                lambda: all(e["state"] == ExportState.DELIVERED.value for e in exports("archive")),
                120,
                "the archive exports after the outage",
            )
            in_archive = len(pacs.get("/instances"))
        failed = exports("refuser")
        node.stop()
    assert all((e["attempts"] or 0) > RETRIES_WHILE_DOWN for e in exports("archive"))
    assert in_archive == delivered_to_viewer == len(set(viewer.received))
    assert [e["state"] for e in failed] == [ExportState.FAILED.value] * STUDIES
    assert all(e["attempts"] == 1 and "0xC000" in str(e["last_error"]) for e in failed)
    assert len(refuser.received) == delivered_to_viewer, "the refusing destination was retried"
    figures.update(
        studies=STUDIES,
        archive_failed_attempts=archive_failures(),
        results_delivered_to_archive=in_archive,
        results_delivered_to_viewer=delivered_to_viewer,
        refused_exports_in_error_queue=len(failed),
    )
