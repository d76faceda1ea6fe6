"""C-STORE requests the node does not store: refused with a status, their data not kept."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from dicom_node.index import IndexQueries, InstanceMeta
from dicom_node.network import Receiver, _screen
from dicom_node.screening import MalformedDataset
from dicom_node.spool import is_valid_uid
from dicom_node.store_request import StoreRequestDIMSE
from tests.dicom_node.conftest import NodeHarness, make_study
from tests.peers import wait_until
from tests.reliability.harness import send_raw, store_request

MakeNode = Callable[..., NodeHarness]

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
SOP_CLASS_NOT_SUPPORTED = 0x0122
LARGE = 24 * 2**20
"""A data set size far beyond what the node holds in memory (the spill size, 256 kB)."""


@pytest.fixture(autouse=True)
def _as_the_node_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom's logging handlers off, as the node runs them (they would take every
    request away from the node's direct assembly)."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")


def _kept_by_direct_assembly(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(bytes received, bytes kept in memory or written) of the data set the node's
    direct assembly is receiving, after each fragment."""
    kept: list[tuple[int, int]] = []
    original = StoreRequestDIMSE._take

    def spy(self: StoreRequestDIMSE, incoming: Any, data: bytes) -> None:
        original(self, incoming, data)
        writer = incoming.primitive.writer
        kept.append((incoming.received,
                     incoming.data.tell() + (0 if writer is None else writer.size)))

    monkeypatch.setattr(StoreRequestDIMSE, "_take", spy)
    return kept


def _on_context_of(assoc: Association, sop_class: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Have ``assoc`` send every C-STORE on its Explicit VR Little Endian context for
    ``sop_class``, whatever the SOP class of the data set (a misbehaving modality)."""
    context = assoc._get_valid_context(sop_class, ExplicitVRLittleEndian, "scu")
    monkeypatch.setattr(assoc, "_get_valid_context", lambda *args, **kwargs: context)


def _stored_and_failed(harness: NodeHarness) -> tuple[int, int]:
    """Instances stored and refused on the node's last association, once it has ended."""
    harness.wait_for_associations_closed()
    record = IndexQueries(harness.node.index).associations()[0]
    return record["instances"], record["failed_instances"]


@pytest.mark.parametrize("context", [VERIFICATION, US_IMAGE])
def test_a_data_set_of_a_class_not_stored_is_refused_and_not_kept(
        context: str, make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    # A C-STORE naming the Verification class, on its own context or a US image's:
    # pynetdicom answered the first with a C-ECHO response (Success), and the node
    # held either's data set in memory up to the instance size limit (2 GB).
    harness = make_node()
    kept = _kept_by_direct_assembly(monkeypatch)
    assoc = harness.associate()
    if context != VERIFICATION:
        _on_context_of(assoc, context, monkeypatch)
    not_stored, good = make_study(2)
    not_stored.SOPClassUID = VERIFICATION
    not_stored.add_new(0x00090010, "LO", "US-AI TEST")
    not_stored.add_new(0x00091010, "OB", bytes(LARGE))
    response = assoc.send_c_store(not_stored)
    assert kept[-1][0] > LARGE and max(held for _, held in kept) == 0
    assert int(response.Status) == SOP_CLASS_NOT_SUPPORTED
    assert str(response.ErrorComment).startswith("sop_class_not_supported")
    assert int(assoc.send_c_store(good).Status) == 0, "the association goes on"
    assoc.release()
    assert _stored_and_failed(harness) == (1, 1)
    assert len(harness.node.spool.instance_files()) == 1


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "pynetdicom"])
def test_a_sop_class_other_than_its_contexts_is_refused(
        direct: bool, make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    # A CT image sent on the accepted US image context was stored with Success,
    # whichever of the node's assembly and pynetdicom's took the request.
    harness = make_node()
    if not direct:
        monkeypatch.setattr(StoreRequestDIMSE, "_starts", lambda *args: False)
    assoc = harness.associate()
    _on_context_of(assoc, US_IMAGE, monkeypatch)
    ct, us = make_study(2)
    ct.SOPClassUID, ct.Modality = CT_IMAGE, "CT"
    assert int(assoc.send_c_store(ct).Status) == SOP_CLASS_NOT_SUPPORTED
    assert int(assoc.send_c_store(us).Status) == 0
    assoc.release()
    assert _stored_and_failed(harness) == (1, 1)
    (stored,) = harness.node.spool.instance_files()
    assert dcmread(stored).SOPClassUID == US_IMAGE


def test_a_message_on_a_context_not_accepted_aborts_before_its_data_set_is_kept(
        make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    # pynetdicom aborts too, but the node held the whole data set in memory first.
    harness = make_node()
    kept = _kept_by_direct_assembly(monkeypatch)
    assoc = harness.associate()
    assert 201 not in {int(c.context_id) for c in assoc.accepted_contexts}
    (ds,) = make_study(1)
    assoc.dimse.send_msg(store_request(bytes(LARGE), US_IMAGE, str(ds.SOPInstanceUID)), 201)
    wait_until(lambda: assoc.is_aborted, 30, "the node to abort the association")
    assert kept == []
    assert _stored_and_failed(harness) == (0, 0)
    assert harness.node.spool.instance_files() == []
    assert harness.store([ds]) == [0], "the node goes on serving"


def _deflate(raw: bytes, finish: bool = True) -> bytes:
    """``raw`` deflated; without its final block (a stream that never ends) unless
    ``finish``."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    end = zlib.Z_FINISH if finish else zlib.Z_SYNC_FLUSH
    return compressor.compress(raw) + compressor.flush(end)


def _explicit(ds: Dataset) -> bytes:
    data = encode(ds, False, True)
    assert data is not None
    return data


def test_a_deflated_data_set_is_one_whole_stream_and_its_padding() -> None:
    raw = _explicit(make_study(1)[0])
    syntax = DeflatedExplicitVRLittleEndian
    expected = _screen(raw, ExplicitVRLittleEndian, 10**8)
    assert _screen(_deflate(raw), syntax, 10**8) == expected
    assert _screen(_deflate(raw) + b"\0", syntax, 10**8) == expected  # even length
    with pytest.raises(MalformedDataset, match="ends before its deflate stream"):
        _screen(_deflate(raw, finish=False), syntax, 10**8)
    with pytest.raises(MalformedDataset, match="2 bytes after"):
        _screen(_deflate(raw) + b"\0\0", syntax, 10**8)


def test_a_decompression_bomb_is_not_inflated_beyond_its_ratio() -> None:
    ds = make_study(1)[0]
    ds.add_new(0x00091010, "OB", b"\0" * (80 * 2**20))  # 80 MiB of zeros: 1000x
    bomb = _deflate(_explicit(ds))
    assert len(bomb) < 2**20
    with pytest.raises(MalformedDataset, match="200 times"):
        _screen(bomb, DeflatedExplicitVRLittleEndian, 2**31)


def test_identifying_values_beyond_any_real_length_are_refused() -> None:
    ds = make_study(1)[0]
    ds.StudyDescription = "\\" * 4096
    with pytest.raises(MalformedDataset, match="beyond the 1024"):
        _screen(_explicit(ds), ExplicitVRLittleEndian, 10**8)
    ds = make_study(1)[0]
    ds.SpecificCharacterSet = ["ISO_IR 100"] * 9
    request = C_STORE()
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    with pytest.raises(ValueError, match="9 values"):
        Receiver._meta(_screen(_explicit(ds), ExplicitVRLittleEndian, 10**8), request,
                       str(ExplicitVRLittleEndian), 1000)


def test_a_uid_ending_in_a_newline_is_illegal() -> None:
    assert is_valid_uid("1.2.3") and not is_valid_uid("1.2.3\n")
    meta = InstanceMeta("1.2", "1.2.3", "1.2.3.4", "1.2.840.10008.5.1.4.1.1.6.1",
                        str(ExplicitVRLittleEndian), "ULTRASOUND_PORTABLE_X",
                        ["ABDOMEN", "LIVER"], "Liver\0 study", "p", 1)
    assert (meta.modality, meta.body_part, meta.study_description) == (
        "ULTRASOUND_PORTA", "ABDOMEN\\LIVER", "Liver study")


def test_a_deflated_data_set_unended_or_followed_by_bytes_is_not_understood(
        make_node: MakeNode) -> None:
    # Both were answered Success; the unended one was spooled unreadable.
    harness = make_node()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(US_IMAGE, DeflatedExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", harness.port, ae_title="NODE")
    assert assoc.is_established
    whole, unended, followed = make_study(3)
    payloads = [
        (whole, encode(whole, False, True, deflated=True)),
        (unended, _deflate(_explicit(unended), finish=False)),
        (followed, _deflate(_explicit(followed)) + bytes(range(256)) * 16),
    ]
    statuses = [
        send_raw(assoc, payload, US_IMAGE, str(ds.SOPInstanceUID), DeflatedExplicitVRLittleEndian)
        for ds, payload in payloads
    ]
    assoc.release()
    assert statuses == [0, 0xC000, 0xC000]
    assert _stored_and_failed(harness) == (1, 2)
    (stored,) = harness.node.spool.instance_files()
    read = dcmread(stored)
    assert read.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert (read.SOPInstanceUID, read.PixelData) == (whole.SOPInstanceUID, whole.PixelData)
