"""The receiver: admission, durable storage, statuses."""

from __future__ import annotations

import copy
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import (
    HTJ2K,
    MPEG2MPMLF,
    MPEG4HP41F,
    MPEG4HP42STEREOF,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)
from pynetdicom import AE
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.transport import AddressInformation
from structlog.testing import capture_logs

from dicom_node import metrics, network
from dicom_node.config import Caller, Completion, NodeConfig, Pipeline
from dicom_node.index import IndexQueries
from dicom_node.network import PduLimitedSocket, Receiver, _screen, build_ae, copy_contexts
from tests.dicom_node.conftest import NodeHarness, make_study, node_threads
from tests.peers import storescu, wait_until

MakeNode = Callable[..., NodeHarness]


def test_echo(make_node: MakeNode) -> None:
    harness = make_node()
    assoc = harness.associate()
    assert assoc.is_established
    assert int(assoc.send_c_echo().Status) == 0x0000
    assoc.release()


def test_refused_presentation_contexts_are_logged_with_the_association(
    make_node: MakeNode,
) -> None:
    harness = make_node()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(UltrasoundImageStorage, "1.2.3.4.5.6")  # no such syntax
    ae.add_requested_context("1.2.840.10008.1.1")
    with capture_logs() as logs:
        assoc = ae.associate("127.0.0.1", harness.port, ae_title="NODE")
        assert assoc.is_established
        assoc.release()
        wait_until(lambda: any(e["event"] == "association_closed" for e in logs), 30,
                   "the association's close to be logged")
    (closed,) = [e for e in logs if e["event"] == "association_closed"]
    assert closed["refused_contexts"] == [
        "CT Image Storage: SOP class not supported",
        "Ultrasound Image Storage: transfer syntaxes not supported",
    ]


def test_store_is_on_disk_and_indexed_before_success(make_node: MakeNode) -> None:
    harness = make_node()
    study = make_study(2)
    assert harness.store(study) == [0, 0]
    files = harness.node.spool.instance_files()
    assert len(files) == 2
    stored = dcmread(files[0])
    assert stored.StudyInstanceUID == study[0].StudyInstanceUID
    studies = IndexQueries(harness.node.index).studies()
    assert studies[0]["instance_count"] == 2
    assert studies[0]["pending_count"] == 2


def _duplicates_counted() -> float:
    return metrics.REGISTRY.get_sample_value("dicom_node_duplicate_instances_total") or 0.0


def test_duplicate_is_kept_once_and_counted_once(make_node: MakeNode) -> None:
    harness = make_node()
    study = make_study(1)
    duplicates = _duplicates_counted()
    assert harness.store(study) == [0]
    assert harness.store(study) == [0]
    assert len(harness.node.spool.instance_files()) == 1
    assert IndexQueries(harness.node.index).studies()[0]["instance_count"] == 1
    assert _duplicates_counted() == duplicates + 1
    # Each association stored one instance (the second one again).
    associations = IndexQueries(harness.node.index).associations()
    assert [a["instances"] for a in associations] == [1, 1]


def test_unknown_called_ae_is_rejected_and_logged(make_node: MakeNode) -> None:
    harness = make_node()
    before = _rejected_on("unknown")
    assoc = harness.associate(called="ELSEWHERE")
    assert assoc.is_rejected
    record = IndexQueries(harness.node.index).associations()[0]
    assert record["accepted"] is False
    assert "no pipeline for called AE 'ELSEWHERE'" in record["reject_reason"]
    # The metrics count it under one label: peers cannot mint time series.
    assert _rejected_on("unknown") == before + 1
    assert _rejected_on("ELSEWHERE") == 0


def _rejected_on(called_ae: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "dicom_node_associations_total", {"called_ae": called_ae, "outcome": "rejected"})
    return value or 0.0


def test_whitelist_by_ae_and_ip(make_node: MakeNode) -> None:
    pipeline = Pipeline(
        called_ae="NODE",
        allowed_callers=[Caller(ae_title="US_ROOM", host="127.0.0.1")],
        completion=Completion(quiet_seconds=30),
    )
    harness = make_node(pipeline=pipeline)
    assert harness.associate(calling="STRANGER").is_rejected
    allowed = harness.associate(calling="US_ROOM")
    assert allowed.is_established
    allowed.release()
    record = IndexQueries(harness.node.index).associations(accepted=False)[0]
    assert record["calling_ae"] == "STRANGER"
    assert "not allowed" in record["reject_reason"]


def test_whitelist_refuses_wrong_ip(make_node: MakeNode) -> None:
    pipeline = Pipeline(
        called_ae="NODE",
        allowed_callers=[Caller(ae_title="US_ROOM", host="10.1.2.3")],
    )
    harness = make_node(pipeline=pipeline)
    assert harness.associate(calling="US_ROOM").is_rejected


def test_disk_floor_refuses_associations(make_node: MakeNode) -> None:
    harness = make_node(limits={"min_free_disk_mb": 10**12})
    assoc = harness.associate()
    assert assoc.is_rejected
    reason = IndexQueries(harness.node.index).associations()[0]["reject_reason"]
    assert "below the floor" in reason


def test_invalid_dataset_gets_failure_and_others_still_stored(make_node: MakeNode) -> None:
    harness = make_node()
    good, bad = make_study(2)
    del bad.StudyInstanceUID
    statuses = harness.store([bad, good])
    assert statuses[0] == 0xC000
    assert statuses[1] == 0x0000
    assert len(harness.node.spool.instance_files()) == 1
    record = IndexQueries(harness.node.index).associations()[0]
    assert (record["instances"], record["failed_instances"]) == (1, 1)


def test_illegal_uid_is_refused(make_node: MakeNode, tmp_path: Path) -> None:
    harness = make_node()
    (ds,) = make_study(1)
    ds.SeriesInstanceUID = "1.2.../../../etc"
    assert harness.store([ds]) == [0xC000]
    assert harness.node.spool.instance_files() == []


def test_concurrent_associations_all_stored(make_node: MakeNode) -> None:
    import threading

    harness = make_node()
    studies = [make_study(5) for _ in range(4)]
    statuses: list[list[int]] = []
    lock = threading.Lock()

    def send(study: list) -> None:  # type: ignore[type-arg]
        result = harness.store(study)
        with lock:
            statuses.append(result)

    threads = [threading.Thread(target=send, args=(s,)) for s in studies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(tuple, statuses)) == [(0,) * 5] * 4
    assert len(harness.node.spool.instance_files()) == 20
    assert sorted(s["instance_count"] for s in IndexQueries(harness.node.index).studies()) == [
        5,
        5,
        5,
        5,
    ]


@pytest.mark.parametrize(
    "syntax",
    [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
     DeflatedExplicitVRLittleEndian],
)
@pytest.mark.parametrize(
    ("charset", "description"),
    [("ISO_IR 192", "Leber – Sonografie, Läsion"), (["", "ISO 2022 IR 87"], "肝臓超音波検査"),
     (None, "Liver US")],
)
def test_the_index_entry_is_read_from_the_screened_values(
        syntax: UID, charset: str | list[str] | None, description: str) -> None:
    ds = make_study(1)[0]
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.StudyDescription = description
    ds.ReferencedStudySequence = [Dataset()]  # a sequence before the UIDs
    ds.ReferencedStudySequence[0].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "1.2.3.4"
    data = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    assert data is not None
    request = C_STORE()
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    meta = Receiver._meta(_screen(data, syntax, 10**8), request, str(syntax), len(data))
    assert (meta.study_instance_uid, meta.series_instance_uid, meta.sop_instance_uid,
            meta.sop_class_uid) == (ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                    ds.SOPInstanceUID, ds.SOPClassUID)
    assert (meta.modality, meta.body_part, meta.study_description) == (
        ds.Modality, ds.BodyPartExamined, description)


def _pdu_socket(limit: int) -> tuple[PduLimitedSocket, socket.socket]:
    """A node-side association socket on one end of a socket pair, and the peer's end."""
    ours, peer = socket.socketpair()
    assoc = Association(AE(), MODE_ACCEPTOR)
    assoc.acceptor.maximum_length = limit
    assoc.requestor.address_info = AddressInformation.from_tuple(("127.0.0.1", 11112))
    return PduLimitedSocket(assoc, client_socket=ours), peer


def test_a_pdu_is_read_whole_however_it_arrives() -> None:
    connection, peer = _pdu_socket(262144)
    data = bytes(range(256)) * 1024
    sender = threading.Thread(
        target=lambda: [peer.sendall(data[i:i + 1000]) for i in range(0, len(data), 1000)])
    sender.start()
    try:
        assert connection.recv(len(data)) == data
    finally:
        sender.join()
        peer.close()


def test_a_pdu_cut_short_by_the_peer_is_returned_as_far_as_it_came() -> None:
    # pynetdicom's own recv does the same; the DUL then reports the connection closed.
    connection, peer = _pdu_socket(262144)
    peer.sendall(b"x" * 5000)
    peer.close()
    received = connection.recv(70000)
    assert received == b"x" * 5000 and isinstance(received, bytearray)


def test_a_pdu_longer_than_the_limit_is_refused_before_it_is_read() -> None:
    connection, peer = _pdu_socket(262144)
    with pytest.raises(OSError, match="exceeds the limit"):
        connection.recv(262144 + 7)
    peer.close()


def test_a_silent_peer_times_the_read_out() -> None:
    connection, peer = _pdu_socket(262144)
    assert connection.socket is not None
    connection.socket.settimeout(0.01)
    with pytest.raises(TimeoutError):
        connection.recv(100)
    peer.close()


def test_a_trickling_peer_times_the_pdu_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each byte comes within the socket's timeout; the PDU as a whole does not.
    connection, peer = _pdu_socket(262144)
    assert connection.socket is not None
    connection.socket.settimeout(30.0)
    peer.sendall(b"x" * 100)
    clock = iter(float(t) for t in range(0, 1000, 10))
    monkeypatch.setattr(network.time, "monotonic", lambda: next(clock))
    real = connection.socket
    monkeypatch.setattr(connection, "socket", _OneByteAtATime(real))
    with pytest.raises(OSError, match=r"^4 of 200 bytes of a PDU arrived in 30\.0 s$"):
        connection.recv(200)
    peer.close()


class _OneByteAtATime:
    """A socket whose reads return one byte each, as a trickling peer's would."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def gettimeout(self) -> float | None:
        return self.sock.gettimeout()

    def recv_into(self, view: memoryview, count: int) -> int:
        return self.sock.recv_into(view, 1)


def test_each_association_negotiates_its_own_copy_of_the_contexts() -> None:
    # The copies hold what pynetdicom's deep copies hold, and changing one
    # (negotiation does) leaves the server's contexts as they were.
    contexts = build_ae(NodeConfig()).supported_contexts
    copies, deep = copy_contexts(contexts), copy.deepcopy(contexts)
    assert [vars(c) for c in copies] == [vars(c) for c in deep] == [vars(c) for c in contexts]
    assert all(a is not b for a, b in zip(copies, contexts, strict=True))
    copies[1].transfer_syntax.append("1.2.3")
    copies[1].context_id = 7
    copies[1].result = 0
    assert "1.2.3" not in contexts[1].transfer_syntax
    assert (contexts[1].context_id, contexts[1].result) == (None, None)


PRIVATE_CLASS = "1.2.826.0.1.3680043.8.498.77.1"
"""A made-up vendor-private storage class."""


def _files_of_classes(folder: Path, classes: list[str]) -> list[Path]:
    """One US image saved per SOP class in ``classes``, as scanners' other objects."""
    files = []
    for number, (ds, sop_class) in enumerate(zip(make_study(len(classes)), classes, strict=True)):
        ds.SOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        files.append(folder / f"{number}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files


def _send_private(port: int, ds: Dataset) -> int | None:
    """C-STORE ``ds`` of :data:`PRIVATE_CLASS` as a vendor's device would (DCMTK's
    storescu sends no class it does not know); the status, ``None`` if not proposed."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(PRIVATE_CLASS, ExplicitVRLittleEndian)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="NODE")
    assert assoc.is_established
    try:
        if PRIVATE_CLASS not in {str(c.abstract_syntax) for c in assoc.accepted_contexts}:
            return None
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_other_objects_of_us_studies_are_kept_with_the_study(
    make_node: MakeNode, tmp_path: Path
) -> None:
    # Beside a US image: a 3D volume and a scanner's raw data (sent by DCMTK), and a
    # vendor's private class once configured. All stored with the study; only the
    # US image is analysed.
    us_image = "1.2.840.10008.5.1.4.1.1.6.1"
    classes = [us_image, "1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.66"]
    harness = make_node(extra_storage_classes=[PRIVATE_CLASS])
    files = _files_of_classes(tmp_path, [*classes, PRIVATE_CLASS])
    sent = storescu(harness.port, files[:3], called="NODE")
    assert sent.returncode == 0, sent.stderr
    assert _send_private(harness.port, dcmread(files[3])) == 0
    harness.wait_for_associations_closed()
    assert len(harness.settle()) == 1
    stored = sorted(str(dcmread(f).SOPClassUID) for f in harness.node.spool.instance_files())
    assert stored == sorted([*classes, PRIVATE_CLASS])
    assert IndexQueries(harness.node.index).studies()[0]["instance_count"] == 4
    assert [uid for uid, _, _ in harness.analyzer.calls] == [dcmread(files[0]).SOPInstanceUID]

    unconfigured = make_node(data_dir=tmp_path / "unconfigured")
    assert _send_private(unconfigured.port, dcmread(files[3])) is None
    assert not unconfigured.node.spool.instance_files()


def test_only_storage_classes_can_be_configured() -> None:
    with pytest.raises(ValueError, match="VerificationServiceClass"):
        NodeConfig(extra_storage_classes=["1.2.840.10008.1.1"])
    with pytest.raises(ValueError, match="not a UID"):
        NodeConfig(extra_storage_classes=["1.2.x"])
    contexts = build_ae(NodeConfig(extra_storage_classes=[PRIVATE_CLASS])).supported_contexts
    assert PRIVATE_CLASS in {str(context.abstract_syntax) for context in contexts}


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _associate_rq(max_pdu: int, calling: bytes = b"MODALITY", called: bytes = b"NODE") -> bytes:
    """An A-ASSOCIATE-RQ from ``calling`` to ``called`` for US Image Storage (Explicit VR
    LE), announcing ``max_pdu`` as the largest PDU it takes."""
    context = (struct.pack(">BBBB", 1, 0, 0, 0) + _item(0x30, b"1.2.840.10008.5.1.4.1.1.6.1")
               + _item(0x40, b"1.2.840.10008.1.2.1\0"))
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.9.28")
    body = (struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
            + _item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x20, context) + _item(0x50, user))
    return struct.pack(">BBI", 1, 0, len(body)) + body


def _pdu_type(sock: socket.socket) -> int:
    """The type of the next PDU the node sends (its header and body read)."""
    header = sock.recv(6, socket.MSG_WAITALL)
    assert len(header) == 6, "the node closed the connection without a PDU"
    kind, _, length = struct.unpack(">BBI", header)
    sock.recv(length, socket.MSG_WAITALL)
    return kind


@pytest.mark.parametrize(("max_pdu", "accepted"), [(1, False), (6, False), (7, True), (0, True)])
def test_a_peer_pdu_limit_too_small_for_any_response_is_rejected(
    make_node: MakeNode, max_pdu: int, accepted: bool
) -> None:
    # Found by fuzzing: with a limit of 1-6 bytes no response could be sent (0: no limit).
    harness = make_node()
    with socket.create_connection(("127.0.0.1", harness.port), timeout=10) as sock:
        sock.sendall(_associate_rq(max_pdu))
        assert _pdu_type(sock) == (0x02 if accepted else 0x03)  # A-ASSOCIATE-AC / -RJ
    record = IndexQueries(harness.node.index).associations()[0]
    assert record["accepted"] is accepted
    if not accepted:
        assert f"maximum PDU length {max_pdu}" in record["reject_reason"]


def test_a_store_request_without_its_instance_uid_is_aborted_at_once(
    make_node: MakeNode,
) -> None:
    # Found by fuzzing: pynetdicom ignores such a request, and the peer waited for a
    # response until the network timeout (60 s here).
    harness = make_node()
    (ds,) = make_study(1, photometric="MONOCHROME2", rows=64, columns=64)
    payload = encode(ds, False, True)
    elements = [(0x0002, b"1.2.840.10008.5.1.4.1.1.6.1\0"), (0x0100, struct.pack("<H", 1)),
                (0x0110, struct.pack("<H", 7)), (0x0700, struct.pack("<H", 2)),
                (0x0800, struct.pack("<H", 1))]  # no Affected SOP Instance UID (0000,1000)
    body = b"".join(struct.pack("<HHI", 0, e, len(v)) + v for e, v in elements)
    command = struct.pack("<HHII", 0, 0, 4, len(body)) + body
    pdvs = (struct.pack(">IBB", len(command) + 2, 1, 3) + command
            + struct.pack(">IBB", len(payload) + 2, 1, 2) + payload)
    with socket.create_connection(("127.0.0.1", harness.port), timeout=10) as sock:
        sock.sendall(_associate_rq(16384))
        assert _pdu_type(sock) == 0x02  # A-ASSOCIATE-AC
        sock.sendall(struct.pack(">BBI", 4, 0, len(pdvs)) + pdvs)
        assert _pdu_type(sock) == 0x07  # A-ABORT
    harness.wait_for_associations_closed(10)
    assert not list(harness.node.spool.instance_files())


def test_htj2k_and_fragmentable_video_syntaxes_are_accepted(make_node: MakeNode) -> None:
    harness = make_node()
    ae = AE(ae_title="MODALITY")
    proposed = [HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K, MPEG2MPMLF, MPEG4HP41F, MPEG4HP42STEREOF]
    for syntax in proposed:
        ae.add_requested_context(UltrasoundMultiFrameImageStorage, [syntax])
    assoc = ae.associate("127.0.0.1", harness.port, ae_title="NODE")
    try:
        assert assoc.is_established
        accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
        assert accepted == set(proposed)
    finally:
        assoc.release()


@pytest.mark.parametrize(("called", "calling", "diagnostic", "reason"), [
    (b"NODE", b"MODALIT\xc9", 3,
     "calling AE title 'MODALIT?' is not in the DICOM default character repertoire"),
    (b"NODE", b"MOD\x01ALITY", 3, "calling AE title 'MOD?ALITY' is not in"),
    (b"NODE", b"MOD\\ALITY", 3, "calling AE title 'MOD?ALITY' is not in"),
    (b"NODE", b"", 3, "calling AE title is empty"),
    (b"N\xd6DE", b"MODALITY", 7, "called AE title 'N?DE' is not in"),
])
def test_an_ae_title_outside_the_default_repertoire_is_rejected_and_recorded(
    make_node: MakeNode, called: bytes, calling: bytes, diagnostic: int, reason: str
) -> None:
    # pynetdicom cannot decode such a request (it aborted it before the node's handlers
    # ran, 2026-11-29); the node decodes it with '?' for the bytes it cannot read, then
    # rejects it as for any unknown AE title and records it in the association log.
    harness = make_node(limits={"min_free_disk_mb": 0})
    with capture_logs() as logs, socket.create_connection(
            ("127.0.0.1", harness.port), timeout=10) as sock:
        sock.sendall(_associate_rq(0, calling, called))
        header = sock.recv(10, socket.MSG_WAITALL)
    assert header[0] == 0x03  # A-ASSOCIATE-RJ
    assert tuple(header[7:10]) == (1, 1, diagnostic)  # permanent, service user, AE title
    (rejected,) = [e for e in logs if e["event"] == "association_rejected"]
    assert rejected["reason"].startswith(reason)
    assert not [e for e in logs if e["event"] == "pdu_undecodable"]
    (record,) = IndexQueries(harness.node.index).associations()
    assert not record["accepted"] and record["reject_reason"].startswith(reason)
    assert "?" in record["calling_ae"] + record["called_ae"]
    wait_until(lambda: not node_threads(), 30, "the rejected association's threads to end")


def test_ae_titles_padded_with_nuls_are_read_as_padded_with_spaces(make_node: MakeNode) -> None:
    harness = make_node(limits={"min_free_disk_mb": 0})
    with socket.create_connection(("127.0.0.1", harness.port), timeout=10) as sock:
        sock.sendall(_associate_rq(0, b"MODALITY".ljust(16, b"\0"), b"NODE".ljust(16, b"\0")))
        assert _pdu_type(sock) == 0x02  # A-ASSOCIATE-AC
        sock.sendall(struct.pack(">BBIxxxx", 5, 0, 4))  # A-RELEASE-RQ
        assert _pdu_type(sock) == 0x06  # A-RELEASE-RP
    (record,) = IndexQueries(harness.node.index).associations()
    assert record["accepted"] and record["calling_ae"] == "MODALITY"
    wait_until(lambda: not node_threads(), 30, "the association's threads to end")


def test_a_rejection_repeated_within_a_minute_is_counted_on_its_record(
    make_node: MakeNode
) -> None:
    # A peer retrying a refused request in a loop (or flooding the port with them) grew
    # the association log by a row each (2026-11-29); now one row counts the repeats.
    harness = make_node()

    def request(called: bytes, calling: bytes = b"MODALITY") -> None:
        with socket.create_connection(("127.0.0.1", harness.port), timeout=10) as sock:
            sock.sendall(_associate_rq(0, calling, called))
            assert _pdu_type(sock) == 0x03  # A-ASSOCIATE-RJ

    for _ in range(3):
        request(b"NOBODY")
        harness.clock.advance(59)
    request(b"NOBODY", b"OTHER")
    harness.clock.advance(61)
    for _ in range(12):  # a record counts for 10 minutes, then the next one opens
        request(b"NOBODY")
        harness.clock.advance(59)
    records = IndexQueries(harness.node.index).associations()
    assert [(r["calling_ae"], r["repeats"]) for r in records] == [
        ("MODALITY", 0), ("MODALITY", 10), ("OTHER", 0), ("MODALITY", 2)]
    assert records[-1]["duration_seconds"] == 2 * 59  # to the last repeat
    wait_until(lambda: not node_threads(), 30, "the rejected associations' threads to end")


def test_alike_rejections_differing_in_their_figures_share_a_record(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk-floor reason names the free megabytes, which change from one request to
    # the next while the node refuses them all.
    harness = make_node(limits={"min_free_disk_mb": 64})
    for free_mb in (9, 8, 7):
        monkeypatch.setattr(harness.node.spool, "free_bytes", lambda mb=free_mb: mb * 2**20)
        with socket.create_connection(("127.0.0.1", harness.port), timeout=10) as sock:
            sock.sendall(_associate_rq(0))
            assert _pdu_type(sock) == 0x03  # A-ASSOCIATE-RJ
        harness.clock.advance(1)
    (record,) = IndexQueries(harness.node.index).associations()
    assert record["reject_reason"] == "free disk 9 MB is below the floor of 64 MB"
    assert record["repeats"] == 2
    wait_until(lambda: not node_threads(), 30, "the rejected associations' threads to end")


def test_an_association_request_malformed_beyond_its_ae_titles_is_aborted_with_a_warning(
    make_node: MakeNode
) -> None:
    # A request with an unreadable AE title and items that do not add up: pynetdicom's
    # A-ABORT, and the node says why in its own log.
    harness = make_node(limits={"min_free_disk_mb": 0, "acse_timeout": 1})
    request = bytearray(_associate_rq(0, b"MODALIT\xc9"))
    request[76] = 0xFF  # the application context item's length runs past the PDU
    with capture_logs() as logs, socket.create_connection(
            ("127.0.0.1", harness.port), timeout=10) as sock:
        sock.sendall(bytes(request))
        assert _pdu_type(sock) == 0x07
    (warning,) = [e for e in logs if e["event"] == "pdu_undecodable"]
    assert warning["pdu_type"] == "0x01"
    assert not IndexQueries(harness.node.index).associations()
    wait_until(lambda: not node_threads(), 30, "the aborted association's threads to end")
