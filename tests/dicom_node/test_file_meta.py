"""The spooled file's header equals what pydicom writes, and reads back."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import JPEGBaseline8Bit, UltrasoundImageStorage, UltrasoundMultiFrameImageStorage
from pynetdicom.dsutils import create_file_meta

from dicom_node.file_meta import PREAMBLE, file_header
from dicom_node.index import Peer

CASES = [
    (UltrasoundImageStorage, "1.2.3.4", JPEGBaseline8Bit,
     Peer("STORESCU", "US-AI", "127.0.0.1", 40123)),
    (UltrasoundMultiFrameImageStorage, "1.2.840.99.12345", "1.2.840.10008.1.2.1",
     Peer("MODALITY_01", "NODE", "::1", 104)),
    (UltrasoundImageStorage, "2.25.1", "1.2.840.10008.1.2",
     Peer("A", "ABCDEFGHIJKLMNOP", "10.0.0.17", 65535)),
]


def _pydicom_header(sop_class: str, sop_instance: str, syntax: str, peer: Peer) -> bytes:
    meta = create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_instance,
                            transfer_syntax=syntax)
    meta.SendingApplicationEntityTitle = peer.calling_ae
    meta.ReceivingApplicationEntityTitle = peer.called_ae
    host = f"[{peer.host}]" if ":" in peer.host else peer.host
    meta.SendingPresentationAddress = f"dicom://{host}:{peer.port}"
    out = BytesIO()
    write_file_meta_info(out, meta, enforce_standard=True)
    return PREAMBLE + out.getvalue()


@pytest.mark.parametrize(("sop_class", "sop_instance", "syntax", "peer"), CASES)
def test_header_matches_pydicom(sop_class: str, sop_instance: str, syntax: str,
                                peer: Peer) -> None:
    assert file_header(sop_class, sop_instance, syntax, peer) == _pydicom_header(
        sop_class, sop_instance, syntax, peer)


def test_header_and_data_set_read_back() -> None:
    ds = Dataset()
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = "1.2.840.99.7"
    ds.Modality = "US"
    body = BytesIO()
    ds.save_as(body, implicit_vr=False, little_endian=True)
    peer = Peer("ECHO_ROOM", "US-AI", "::1", 2762)
    data = file_header(UltrasoundImageStorage, "1.2.840.99.7", "1.2.840.10008.1.2.1",
                       peer) + body.getvalue()
    read = dcmread(BytesIO(data))
    assert read.file_meta.MediaStorageSOPInstanceUID == "1.2.840.99.7"
    assert read.file_meta.SendingApplicationEntityTitle == "ECHO_ROOM"
    assert read.file_meta.ReceivingApplicationEntityTitle == "US-AI"
    assert read.file_meta.SendingPresentationAddress == "dicom://[::1]:2762"
    assert read.Modality == "US"


def test_non_ascii_title_is_replaced_not_raised() -> None:
    header = file_header(UltrasoundImageStorage, "1.2.3", JPEGBaseline8Bit,
                         Peer("SCANNER\u00e9", "NODE", "127.0.0.1", 1))
    meta = dcmread(BytesIO(header), force=True).file_meta
    assert meta.SendingApplicationEntityTitle == "SCANNER?"
