"""Disk pressure on a real small file system (a tmpfs mounted for the test).

Below the free-space floor the node refuses associations (and answers
C-STORE with 0xA700 when space runs out during one), says so in logs and
metrics, and accepts again when space returns.  When the kernel answers a
write with ENOSPC, nothing acknowledged is lost and nothing unwritten is
acknowledged.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import _config
from structlog.testing import capture_logs

from dicom_node import metrics
from dicom_node.service import Node, Stages
from dicom_node.spool import Spool, SpoolPart
from dicom_node.stages import build, decode
from tests.dicom_node.conftest import make_study, node_config
from tests.dicom_node.fake_engine import FakeAnalyzer
from tests.reliability.harness import associate

MB = 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount tmpfs file systems with the given options; unmounted at teardown."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        target = tmp_path / f"fs{len(mounted)}"
        target.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def start_node() -> Iterator[Callable[..., Node]]:
    """Start an in-process node (receiver only) with data in a given folder."""
    nodes: list[Node] = []

    def start(data_dir: Path, floor_mb: float, database_url: str | None = None) -> Node:
        config = node_config(
            data_dir, data_dir=data_dir / "var", limits={"min_free_disk_mb": floor_mb},
            database_url=database_url,
        )
        node = Node(config, Stages(analyze=FakeAnalyzer(), decode=decode, build=build))
        node.start(workers=False)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or None) or 0.0


def test_floor_refuses_then_accepts_when_space_returns(
    small_fs: Callable[[str], Path], start_node: Callable[..., Node], figures: dict[str, object]
) -> None:
    fs = small_fs("size=16m")
    node = start_node(fs, floor_mb=6)
    assert node.port is not None
    ballast = fs / "ballast"
    ballast.write_bytes(b"\0" * 12 * MB)
    with capture_logs() as logs:
        refused = associate(node.port)
    assert refused.is_rejected
    assert _sample("dicom_node_refusing_for_disk") == 1
    assert any(
        e["event"] == "association_rejected" and "below the floor" in e["reason"] for e in logs
    )
    ballast.unlink()
    assoc = associate(node.port)
    assert assoc.is_established
    assert _sample("dicom_node_refusing_for_disk") == 0
    first, second = make_study(2)
    assert int(assoc.send_c_store(first).Status) == 0
    ballast.write_bytes(b"\0" * 12 * MB)
    with capture_logs() as logs:
        assert int(assoc.send_c_store(second).Status) == 0xA700
    assoc.release()
    assert any(e.get("reason", "").startswith("disk_floor") for e in logs)
    assert len(node.spool.instance_files()) == 1
    figures.update(floor_mb=6, refused_associations=1, refused_instances=1, accepted=1)


def _fill_inodes(folder: Path) -> list[Path]:
    """Create empty files until the file system has no inode left."""
    created = []
    while True:
        path = folder / f"inode-{len(created)}"
        try:
            path.touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            return created
        created.append(path)


def test_enospc_mid_association_acknowledges_only_what_was_written(
    small_fs: Callable[[str], Path], start_node: Callable[..., Node], figures: dict[str, object]
) -> None:
    fs = small_fs("size=64m,nr_inodes=400")
    node = start_node(fs, floor_mb=0)
    assert node.port is not None
    ballast = fs / "inodes"
    ballast.mkdir()
    filler = _fill_inodes(ballast)
    for path in filler[:5]:
        path.unlink()
    study = make_study(8)
    failures_before = _sample("dicom_node_store_failures_total", reason="disk_full")
    with capture_logs() as logs:
        assoc = associate(node.port)
        statuses = [int(assoc.send_c_store(ds).Status) for ds in study]
        assoc.release()
    acked = [ds for ds, status in zip(study, statuses, strict=True) if status == 0]
    refused = [ds for ds, status in zip(study, statuses, strict=True) if status != 0]
    assert acked and refused, statuses
    assert statuses == [0] * len(acked) + [0xA700] * len(refused)
    assert any(e.get("reason") == "disk_full" for e in logs)
    failures = _sample("dicom_node_store_failures_total", reason="disk_full") - failures_before
    assert failures == len(refused)
    on_disk = {str(dcmread(p).SOPInstanceUID) for p in node.spool.instance_files()}
    assert on_disk == {str(ds.SOPInstanceUID) for ds in acked}
    assert os.listdir(node.spool.tmp) == [], "partial files left behind"

    for path in filler[5:]:
        path.unlink()
    assoc = associate(node.port)
    assert [int(assoc.send_c_store(ds).Status) for ds in refused] == [0] * len(refused)
    assoc.release()
    assert len(node.spool.instance_files()) == len(study)
    figures.update(
        instances_sent=len(study), acknowledged_on_full_disk=len(acked), refused=len(refused)
    )


def test_enospc_while_a_large_data_set_arrives(
    small_fs: Callable[[str], Path], start_node: Callable[..., Node],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A data set written to the spool as it arrives meets a full disk half way:
    # Out of Resources, its partial file deleted, and the next instance fits again.
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")  # as dicom-node serve runs
    node = start_node(small_fs("size=16m"), floor_mb=0)
    assert _refused_large_kept_small(node, 24 * MB) == "disk_full"


def _refused_large_kept_small(node: Node, size: int) -> str:
    """Send an instance carrying ``size`` bytes, then a small one, on one association;
    check that the first got 0xA700 and left nothing behind and that the second was
    stored; the first's refusal reason."""
    assert node.port is not None
    big, small = make_study(2)
    big.add_new(0x00090010, "LO", "US-AI TEST")
    big.add_new(0x00091010, "OB", bytes(size))
    with capture_logs() as logs:
        assoc = associate(node.port)
        statuses = [int(assoc.send_c_store(ds).Status) for ds in (big, small)]
        assoc.release()
    assert statuses == [0xA700, 0]
    (reason,) = [e.get("reason") for e in logs if e["event"] == "store_refused"]
    assert os.listdir(node.spool.tmp) == [], "partial files left behind"
    (stored,) = node.spool.instance_files()
    assert dcmread(stored).SOPInstanceUID == small.SOPInstanceUID
    return str(reason)


def test_a_data_set_arriving_stops_at_the_floor_not_at_a_full_disk(
    small_fs: Callable[[str], Path], start_node: Callable[..., Node],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Free disk is watched while a large data set is written as it arrives: the
    # floor holds (the disk never fills, so the index and the other writers on it
    # keep working), and the partial file is dropped.
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    node = start_node(small_fs("size=32m"), floor_mb=12)
    start = node.spool.free_bytes()
    free = {"lowest": start, "after_failure": 0}
    append = SpoolPart.append

    def watched(part: SpoolPart, data: bytes | memoryview) -> None:
        append(part, data)
        free["lowest"] = min(free["lowest"], node.spool.free_bytes())
        if part.error is not None:  # the rest of the data set is still arriving
            free["after_failure"] = node.spool.free_bytes()

    monkeypatch.setattr(SpoolPart, "append", watched)
    assert _refused_large_kept_small(node, 40 * MB) == "disk_floor: free disk below the floor"
    assert free["lowest"] >= 12 * MB, free
    assert free["after_failure"] >= start - MB, "the partial file kept its space"


def test_a_read_only_spool_answers_out_of_resources_and_is_not_ready(
    small_fs: Callable[[str], Path], start_node: Callable[..., Node], figures: dict[str, object]
) -> None:
    from fastapi.testclient import TestClient

    from dicom_node.admin.api import create_app

    fs = small_fs("size=32m")
    # The index elsewhere, as on a separate volume: an open database keeps the file
    # system from being remounted read-only.
    node = start_node(fs, floor_mb=0, database_url=f"sqlite:///{fs.parent / 'index.sqlite'}")
    assert node.port is not None
    first, second = make_study(2)
    assoc = associate(node.port)
    assert int(assoc.send_c_store(first).Status) == 0
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    try:
        failures_before = _sample("dicom_node_store_failures_total", reason="spool_error")
        with capture_logs() as logs:
            statuses = [int(assoc.send_c_store(ds).Status) for ds in (second, first)]
        assoc.release()
        assert statuses == [0xA700, 0], "refused as a resource problem; the held one is held"
        assert any(e["event"] == "store_refused" and "Read-only" in e["reason"] for e in logs), logs
        failures = _sample("dicom_node_store_failures_total", reason="spool_error")
        assert failures - failures_before == 1
        problem = node.spool.write_problem()
        assert problem == "the spool cannot be written: Read-only file system"
        api = TestClient(create_app(node), client=("127.0.0.1", 50000),
                         base_url="http://127.0.0.1:8080")
        ready = api.get("/readyz")
        assert ready.status_code == 503 and problem in ready.json()["problems"]
        assert api.get("/api/status").json()["ready"] is False
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)
    figures.update(read_only_statuses=[hex(s) for s in statuses])


def test_a_node_starts_on_a_spool_already_read_only_and_says_so(
    small_fs: Callable[[str], Path], start_node: Callable[..., Node]
) -> None:
    # The lock file cannot be made there; the node starts and reports the spool instead of
    # failing to start (a read-only spool gets 0xA700 answers and is not ready).
    fs = small_fs("size=8m")
    Spool(fs / "var" / "spool").identity()
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    try:
        with capture_logs() as logs:
            node = start_node(fs, floor_mb=0, database_url=f"sqlite:///{fs.parent / 'ro.sqlite'}")
        assert node.port is not None
        events = {e["event"] for e in logs}
        assert {"spool_lock_unavailable", "spool_not_writable"} <= events
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)
