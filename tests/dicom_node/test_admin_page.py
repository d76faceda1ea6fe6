"""The status page rendered by headless Chromium after its JavaScript ran."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dicom_node.conftest import NodeHarness, free_port, make_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _render(url: str, profile: Path) -> str:
    """The DOM of ``url`` once its scripts ran (5 s of virtual time)."""
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_status_page_shows_queues_destinations_studies_and_errors(
    make_node: Callable[..., NodeHarness], tmp_path: Path
) -> None:
    dead = {"name": "dead-archive", "ae_title": "DEAD", "host": "127.0.0.1", "port": free_port()}
    harness = make_node(
        destinations=[dead],
        pipeline={"called_ae": "NODE", "destinations": ["dead-archive"]},
        export={"max_attempts": 1},
    )
    study = make_study(2)
    harness.store(study, calling="US_ROOM_1")
    harness.settle()
    harness.node.exporter.run_destination("dead-archive")
    port = harness.node.start_api("127.0.0.1", 0)

    dom = _render(f"http://127.0.0.1:{port}/", tmp_path / "chromium")

    assert 'data-loaded="true"' in dom, "the page's script did not finish loading the API"
    assert "Cannot load the status" not in dom
    assert '<p id="readiness" class="ok">READY</p>' in dom
    assert "<td>jobs</td><td>done</td><td>1</td>" in dom
    assert "<td>exports</td><td>failed</td><td>1</td>" in dom
    assert "dead-archive" in dom and "DEAD@127.0.0.1" in dom
    assert '<td class="bad">FAILING</td>' in dom
    assert str(study[0].StudyInstanceUID) in dom
    assert "US_ROOM_1" in dom
    assert "dead-archive: failed" in dom, "the study's results show the export state"
    assert "export to dead-archive" in dom, "the error list shows the failed export"
    assert "Doe^Jane" not in dom and "PID-1" not in dom
