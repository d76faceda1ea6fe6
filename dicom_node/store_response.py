"""C-STORE responses encoded directly, without pydicom.

pynetdicom turns each response primitive into a pydicom command data set and
writes it with pydicom's writer: about 0.4 ms of CPU per instance, the largest
single item of the node's receive path after pynetdicom's threads.  A
C-STORE-RSP that carries only its required elements (every Success, and a
status without an error comment or offending element) is seven fixed
elements in Implicit VR Little Endian (PS3.7 9.3.1.2), encoded here in a few
microseconds; the bytes are the ones pynetdicom writes (the tests compare
them).  Any other response goes through pynetdicom as before.
"""

from __future__ import annotations

import struct

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

C_STORE_RSP = 0x8001
"""Command Field of a C-STORE response."""

NO_DATA_SET = 0x0101
"""Command Data Set Type of a message without a data set."""

LAST_COMMAND_FRAGMENT = 0x03
"""Message control header of a PDV holding a whole command set (PS3.8 E.2)."""

PDV_HEADER = 6
"""Bytes of a PDV item besides its data (length 4, context ID 1, control header 1); the
peer's maximum PDU length counts whole PDV items (PS3.8 9.3.5), as pynetdicom splits them."""


def _uid(element: int, value: str) -> bytes:
    data = value.encode("ascii")
    if len(data) % 2:
        data += b"\x00"
    return struct.pack("<HHI", 0x0000, element, len(data)) + data


def _us(element: int, value: int) -> bytes:
    return struct.pack("<HHIH", 0x0000, element, 2, value)


def encode_store_response(message_id: int, sop_class_uid: str, sop_instance_uid: str,
                          status: int) -> bytes:
    """The command set of a C-STORE-RSP with only its required elements.

    Parameters
    ----------
    message_id:
        The request's Message ID (the response's Message ID Being Responded To).
    sop_class_uid, sop_instance_uid:
        The request's Affected SOP Class and Instance UIDs.
    status:
        The response status.
    """
    body = b"".join((
        _uid(0x0002, sop_class_uid),
        _us(0x0100, C_STORE_RSP),
        _us(0x0120, message_id),
        _us(0x0800, NO_DATA_SET),
        _us(0x0900, status),
        _uid(0x1000, sop_instance_uid),
    ))
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def is_plain_store_response(primitive: object) -> bool:
    """Whether ``primitive`` is a C-STORE response with its required elements only."""
    return (
        isinstance(primitive, C_STORE)
        and primitive.MessageIDBeingRespondedTo is not None
        and primitive.AffectedSOPClassUID is not None
        and primitive.AffectedSOPInstanceUID is not None
        and primitive.Status is not None
        and primitive.ErrorComment is None
        and primitive.OffendingElement is None
    )


class StoreResponseDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, sending plain C-STORE responses encoded directly.

    Only while no handler is bound to ``EVT_DIMSE_SENT`` (the node binds none
    and turns pynetdicom's logging handlers off), since that event's message
    object is what the direct encoding does not build.
    """

    def send_msg(self, primitive: object, context_id: int) -> None:  # type: ignore[override]
        """Send a DIMSE message; a plain C-STORE response in one P-DATA-TF PDU."""
        if not is_plain_store_response(primitive) or self.assoc.get_handlers(
                evt.EVT_DIMSE_SENT):
            super().send_msg(primitive, context_id)  # type: ignore[arg-type]
            return
        assert isinstance(primitive, C_STORE)
        command = encode_store_response(
            int(primitive.MessageIDBeingRespondedTo),  # type: ignore[arg-type]
            str(primitive.AffectedSOPClassUID),
            str(primitive.AffectedSOPInstanceUID),
            int(primitive.Status),  # type: ignore[arg-type]
        )
        limit = self.maximum_pdu_size
        if limit and len(command) + PDV_HEADER > limit:
            super().send_msg(primitive, context_id)  # type: ignore[arg-type]
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list = [
            [context_id, bytes([LAST_COMMAND_FRAGMENT]) + command]
        ]
        self.dul.send_pdu(pdata)
