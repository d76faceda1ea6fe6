"""Hostile and malformed input against the node process: clear statuses, node stays up."""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom.dimse_messages import C_STORE_RQ

from dicom_node.index import JobState
from dicom_node.store_request import SPILL_BYTES
from tests.dicom_node.conftest import make_study
from tests.reliability.conftest import base_config, queries
from tests.reliability.harness import (
    NodeProcess,
    associate,
    echo_ok,
    encode,
    requestor,
    send_raw,
    store_request,
    wait_until,
)

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BOMB_LEVELS = 10_000


def recursion_bomb(ds: Dataset, levels: int = BOMB_LEVELS) -> bytes:
    """``ds`` followed by ``levels`` nested undefined-length Content Sequences."""
    sequence = struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return encode(ds) + (sequence + item) * levels + closing * levels


def absurd_length(ds: Dataset) -> bytes:
    """``ds`` with an element announcing nearly 4 GiB of value."""
    return encode(ds) + struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, 0xFFFFFFF0) + b"\0" * 64


Case = tuple[str, Callable[[Dataset], bytes], str, int]


def _without(keyword: str) -> Callable[[Dataset], bytes]:
    def build(ds: Dataset) -> bytes:
        delattr(ds, keyword)
        return encode(ds)

    return build


def _with(keyword: str, value: str) -> Callable[[Dataset], bytes]:
    def build(ds: Dataset) -> bytes:
        setattr(ds, keyword, value)
        return encode(ds)

    return build


GARBAGE = random.Random(8).randbytes(4096)

CASES: list[Case] = [
    ("truncated in pixel data", lambda ds: encode(ds)[: len(encode(ds)) // 2], "", 0xC000),
    ("truncated in the header", lambda ds: encode(ds)[:101], "", 0xC000),
    ("garbage", lambda ds: GARBAGE, "", 0xC000),
    ("explicit VR sent as implicit", encode, ImplicitVRLittleEndian, 0xC000),
    ("missing Study Instance UID", _without("StudyInstanceUID"), "", 0xC000),
    ("missing SOP Instance UID", _without("SOPInstanceUID"), "", 0xC000),
    ("illegal Series UID", _with("SeriesInstanceUID", "1.2.../../etc/passwd"), "", 0xC000),
    ("over-long Study UID", _with("StudyInstanceUID", "1." * 40 + "1"), "", 0xC000),
    ("SOP class differs from the request", _with("SOPClassUID", SECONDARY_CAPTURE), "", 0xA900),
    ("unknown SOP class in the data set", _with("SOPClassUID", "1.2.3.4.5.6"), "", 0xA900),
    ("absurd element length", absurd_length, "", 0xC000),
    (f"{BOMB_LEVELS} nested sequences", recursion_bomb, "", 0xC000),
]


@pytest.fixture
def node(tmp_path: Path, spawn_node: Callable[..., NodeProcess]) -> NodeProcess:
    limits = {
        "min_free_disk_mb": 0,
        "acse_timeout": 3,
        "network_timeout": 3,
        "max_pdu": 65536,
    }
    return spawn_node(base_config(tmp_path / "var", limits=limits))


def test_malformed_instances_get_failure_statuses_and_spare_other_associations(
    node: NodeProcess, figures: dict[str, object]
) -> None:
    bystander = associate(node.port)
    assert bystander.is_established
    answered = {}
    for name, build, syntax, _ in CASES:
        (ds,) = make_study(1)
        payload = build(ds)
        sop_instance = str(ds.get("SOPInstanceUID") or generate_uid())
        assoc = associate(node.port)
        assert assoc.is_established, name
        answered[name] = send_raw(
            assoc, payload, US_IMAGE, sop_instance, syntax or "1.2.840.10008.1.2.1"
        )
        assoc.release()
        (good,) = make_study(1)
        assert int(bystander.send_c_store(good).Status) == 0, f"bystander hurt by {name}"
    bystander.release()
    assert answered == {name: status for name, _, _, status in CASES}
    assert node.alive() and echo_ok(node.port)
    refused = node.events("store_refused")
    assert len(refused) == len(CASES)
    assert all(event["reason"] for event in refused)
    assert any("nested deeper" in event["reason"] for event in refused)
    records = queries(node.data_dir).associations(limit=100)
    assert sum(r["failed_instances"] or 0 for r in records) == len(CASES)
    assert len(list((node.data_dir / "spool" / "studies").glob("*/*/*.dcm"))) == len(CASES)
    # The bystander's study completes after its 1 s quiet period and its job writes
    # result objects through spool/tmp: a part there is left behind only if it stays.
    wait_until(lambda: not _partial_files(node), 30,
               "the refused instances' written data to be gone from spool/tmp")
    figures.update(bad_inputs=len(CASES), bystander_instances=len(CASES))


def _partial_files(node: NodeProcess) -> list[Path]:
    """What is in the spool's folder of instances being written."""
    return list((node.data_dir / "spool" / "tmp").iterdir())


def test_unknown_sop_class_context_is_refused(node: NodeProcess) -> None:
    assoc = requestor(contexts=["1.2.3.4.5.6.7"]).associate("127.0.0.1", node.port, ae_title="NODE")
    assert assoc.is_established, "Verification is still offered"
    accepted = {str(c.abstract_syntax) for c in assoc.accepted_contexts}
    assert "1.2.3.4.5.6.7" not in accepted
    assoc.release()


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the node closes ``sock`` within ``timeout`` seconds (reading what it sends)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            continue
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_huge_pdu_is_refused_without_buffering(node: NodeProcess) -> None:
    with socket.create_connection(("127.0.0.1", node.port)) as sock:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 2**31) + b"\0" * 1024)
        assert _closed_by_peer(sock, 20), "node waited for a 2 GiB PDU"
    assert node.events("pdu_too_large")[0]["announced_bytes"] == 2**31
    assert echo_ok(node.port)


def test_abrupt_close_mid_pdu_and_abort(node: NodeProcess) -> None:
    cut = associate(node.port)
    assert cut.is_established
    raw = cut.dul.socket.socket
    raw.sendall(struct.pack(">BBL", 0x04, 0, 60000) + b"\0" * 100)
    raw.shutdown(socket.SHUT_RDWR)
    aborted = associate(node.port)
    (ds,) = make_study(1)
    assert int(aborted.send_c_store(ds).Status) == 0
    aborted.abort()
    wait_until(lambda: len(node.events("association_closed")) >= 2, 30, "both associations")
    # An A-ABORT and the close of its socket race; either ends the record.
    outcomes = [e["outcome"] for e in node.events("association_closed")]
    assert len(outcomes) == 2 and set(outcomes) <= {"aborted", "connection_closed"}
    assert echo_ok(node.port)


def test_a_data_set_cut_off_by_an_abort_leaves_nothing_behind(node: NodeProcess) -> None:
    # A large data set is written to the spool as it arrives; the abort deletes it.
    assoc = associate(node.port)
    (ds,) = make_study(1)
    context = assoc._get_valid_context(US_IMAGE, ExplicitVRLittleEndian, "scu")
    message = C_STORE_RQ()
    payload = encode(ds) + bytes(2 * SPILL_BYTES)
    message.primitive_to_message(store_request(payload, US_IMAGE, str(ds.SOPInstanceUID)))
    pdatas = list(message.encode_msg(int(context.context_id), 16384))
    for primitive in pdatas[: len(pdatas) // 2]:
        assoc.dul.send_pdu(primitive)
    wait_until(lambda: _partial_files(node), 10, "the data set to be written as it arrives")
    assoc.abort()
    wait_until(lambda: node.events("association_closed"), 30, "the association to end")
    assert not _partial_files(node)
    assert not list((node.data_dir / "spool" / "studies").glob("*/*/*.dcm"))
    assert echo_ok(node.port)


def test_idle_connections_and_associations_are_closed(node: NodeProcess) -> None:
    silent = socket.create_connection(("127.0.0.1", node.port))
    half_pdu = socket.create_connection(("127.0.0.1", node.port))
    half_pdu.sendall(struct.pack(">BBL", 0x01, 0, 500) + b"\0" * 10)
    idle = associate(node.port)
    assert idle.is_established
    assert _closed_by_peer(silent, 20), "a connection that never asks was kept"
    assert _closed_by_peer(half_pdu, 20), "a connection stuck mid-PDU was kept"
    wait_until(lambda: not idle.is_established, 20, "the idle association to end")
    assert idle.is_aborted
    silent.close()
    half_pdu.close()
    record = queries(node.data_dir).associations(limit=1)[0]
    assert record["outcome"] == "aborted"
    assert echo_ok(node.port)


def test_store_request_whose_data_set_never_comes_is_ended(node: NodeProcess) -> None:
    assoc = associate(node.port)
    assoc.dimse_timeout = 60
    started = time.monotonic()
    assert send_raw(assoc, b"", US_IMAGE, generate_uid()) is None
    assert time.monotonic() - started < 30, "the node waited longer than its timeouts"
    assoc.abort()
    assert echo_ok(node.port)


def test_undecodable_images_are_not_assessed_and_spare_the_study(node: NodeProcess) -> None:
    good, short, no_rows, absurd, padded = make_study(5)
    short.PixelData = short.PixelData[:100]
    no_rows.Rows = 0
    absurd.Rows, absurd.Columns, absurd.NumberOfFrames = 65535, 65535, 2**31 - 1
    padded.PixelData = padded.PixelData + b"\0" * 1000
    assoc = associate(node.port)
    statuses = [int(assoc.send_c_store(ds).Status) for ds in (good, short, no_rows, absurd, padded)]
    assoc.release()
    assert statuses == [0] * 5
    index = queries(node.data_dir)
    wait_until(lambda: [j["state"] for j in index.jobs()] == [JobState.DONE.value], 60, "the job")
    summary = index.jobs()[0]["summary"]
    assert "images=5" in summary and "not_assessed=3" in summary, summary


def _peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of process ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc")
def test_an_oversized_data_set_is_refused_without_being_held(
    tmp_path: Path, spawn_node: Callable[..., NodeProcess]
) -> None:
    # 256 MB sent against a 4 MB limit: Out of Resources, and the node never held it
    # (pynetdicom alone buffers the whole data set, then the handler copies it).
    limits = {"min_free_disk_mb": 0, "max_instance_mb": 4, "network_timeout": 30}
    node = spawn_node(base_config(tmp_path / "var", limits=limits))
    assert node.process is not None
    (ds,) = make_study(1)
    payload = encode(ds) + bytes(256 * 2**20)
    before = _peak_rss_mib(node.process.pid)
    assoc = associate(node.port)
    assert assoc.is_established
    assert send_raw(assoc, payload, US_IMAGE, str(ds.SOPInstanceUID)) == 0xA700
    (good,) = make_study(1)
    assert int(assoc.send_c_store(good).Status) == 0, "the association goes on"
    assoc.release()
    assert _peak_rss_mib(node.process.pid) - before < 64
    assert not _partial_files(node)
    assert [e["reason"] for e in node.events("store_refused")] == ["instance_too_large"]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc")
def test_a_large_data_set_is_kept_without_being_held(
    tmp_path: Path, spawn_node: Callable[..., NodeProcess]
) -> None:
    # 96 MB within the limit (a long raw cine, a 3D volume): written to the spool as
    # it arrives, stored intact, and never held in the node's memory.
    limits = {"min_free_disk_mb": 0, "network_timeout": 30}
    node = spawn_node(base_config(tmp_path / "var", limits=limits))
    assert node.process is not None
    (ds,) = make_study(1)
    ds.add_new(0x00090010, "LO", "US-AI TEST")
    ds.add_new(0x00091010, "OB", random.Random(3).randbytes(96 * 2**20))
    before = _peak_rss_mib(node.process.pid)
    assoc = associate(node.port)
    assert int(assoc.send_c_store(ds).Status) == 0
    assoc.release()
    assert _peak_rss_mib(node.process.pid) - before < 48
    (stored,) = (node.data_dir / "spool" / "studies").glob("*/*/*.dcm")
    kept = dcmread(stored)
    assert kept.SOPInstanceUID == ds.SOPInstanceUID
    assert kept[0x00091010].value == ds[0x00091010].value
    assert not _partial_files(node)
