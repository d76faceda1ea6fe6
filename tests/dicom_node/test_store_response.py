"""C-STORE responses encoded directly are the bytes pynetdicom writes."""

from __future__ import annotations

import pytest
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from dicom_node.reactor import EventDrivenAssociation
from dicom_node.store_response import StoreResponseDIMSE, encode_store_response

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
ODD = "1.2.826.0.1.3680043.8.498.1234567"  # 33 characters: padded with a NUL
EVEN = "1.2.826.0.1.3680043.8.498.12345678"


def _response(message_id: int, instance: str, status: int, comment: str | None = None
              ) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = UID(US_IMAGE)
    rsp.AffectedSOPInstanceUID = UID(instance)
    rsp.Status = status
    if comment is not None:
        rsp.ErrorComment = comment
    return rsp


def _pynetdicom(rsp: C_STORE, context_id: int, max_pdu: int) -> list[list[tuple[int, bytes]]]:
    """The PDVs pynetdicom itself sends for ``rsp``."""
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    return [list(p.presentation_data_value_list)
            for p in message.encode_msg(context_id, max_pdu)]


def _sent(rsp: C_STORE, context_id: int, max_pdu: int, monkeypatch: pytest.MonkeyPatch
          ) -> tuple[list[list[tuple[int, bytes]]], bool]:
    """The PDVs the node's DIMSE provider hands to the DUL for ``rsp``, and whether
    pynetdicom's own encoding made them."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")  # as the node runs
    assoc = EventDrivenAssociation(AE(), MODE_ACCEPTOR)
    assoc.requestor.maximum_length = max_pdu
    assoc.dimse = StoreResponseDIMSE(assoc)
    sent: list[P_DATA] = []
    monkeypatch.setattr(assoc.dul, "send_pdu", sent.append)
    through_pynetdicom = []
    original = DIMSEServiceProvider.send_msg

    def spy(provider: DIMSEServiceProvider, primitive: C_STORE, cx: int) -> None:
        through_pynetdicom.append(primitive)
        original(provider, primitive, cx)

    monkeypatch.setattr(DIMSEServiceProvider, "send_msg", spy)
    assoc.dimse.send_msg(rsp, context_id)
    pdvs = [[tuple(pdv) for pdv in p.presentation_data_value_list] for p in sent]
    return pdvs, bool(through_pynetdicom)


@pytest.mark.parametrize("instance", [ODD, EVEN])
@pytest.mark.parametrize("message_id", [1, 65535])
@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xA700])
def test_the_encoding_is_pynetdicoms(instance: str, message_id: int, status: int) -> None:
    rsp = _response(message_id, instance, status)
    expected = _pynetdicom(rsp, 3, 0)
    assert expected == [[(3, b"\x03" + encode_store_response(message_id, US_IMAGE, instance,
                                                              status))]]


@pytest.mark.parametrize(
    ("comment", "max_pdu", "direct"),
    [(None, 16384, True), (None, 0, True), ("disk full", 16384, False), (None, 64, False)],
)
def test_the_provider_sends_what_pynetdicom_sends(
        comment: str | None, max_pdu: int, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plain responses are encoded directly; one with an error comment, or too long
    # for the peer's maximum PDU (64: split in fragments), goes through pynetdicom.
    rsp = _response(7, ODD, 0xA700 if comment else 0x0000, comment)
    pdvs, through_pynetdicom = _sent(rsp, 5, max_pdu, monkeypatch)
    assert pdvs == _pynetdicom(rsp, 5, max_pdu)
    assert through_pynetdicom is not direct


def test_a_bound_sent_handler_still_sees_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    assoc = EventDrivenAssociation(AE(), MODE_ACCEPTOR)
    assoc.dimse = StoreResponseDIMSE(assoc)
    seen: list[object] = []
    assoc.bind(evt.EVT_DIMSE_SENT, lambda event: seen.append(event.message))
    monkeypatch.setattr(assoc.dul, "send_pdu", lambda pdata: None)
    assoc.dimse.send_msg(_response(7, ODD, 0x0000), 1)
    assert len(seen) == 1 and isinstance(seen[0], C_STORE_RSP)

