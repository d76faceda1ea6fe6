"""C-STORE requests assembled directly, without pydicom.

pynetdicom assembles every DIMSE message in a ``DIMSEMessage``: it decodes
the command set with pydicom into a data set, then copies its elements one
by one into a request primitive, about 0.13 ms of CPU per instance in the
DUL thread, which every C-STORE waits on.  A C-STORE-RQ's command set is a
few fixed elements in Implicit VR Little Endian (PS3.7 9.3.1.1), so
:class:`StoreRequestDIMSE` reads it with :mod:`struct` and fills the same
``C_STORE`` primitive (pynetdicom's setters validate the Message ID and the
priority as before; the UIDs are checked by the same rules here), in about a
fifth of that.

Only the common case takes this path: a message whose first PDV holds its
whole command set, and that command set a C-STORE-RQ with a data set made of
exactly the elements the standard defines, each with the length its VR
gives.  Everything else (other commands, a command set in several fragments,
an unknown or repeated element, a value pynetdicom's setters refuse) is
handed to pynetdicom from its first PDV, so it behaves as before, down to
the abort an invalid message gets.

Data sets are held in memory until complete, so their size is bounded here
as they arrive: beyond the node's instance size limit a direct request's data
is dropped while the rest is read, and the request is handed on as a
:class:`DiscardedStore` (the handler answers Out of Resources); a message
pynetdicom assembles aborts the association once its data set exceeds it.

A data set that will not be stored is not kept at all: that of a direct
request naming a SOP class refused on its context (another class than the
context's, or no storage class) is counted as it arrives and dropped, and the
handler answers the request (SOP Class not supported).  A message starting on a
presentation context the association did not accept aborts it at once (pynetdicom
aborts too, but only once the message, data set and all, has arrived).

A direct request's data set larger than :data:`SPILL_BYTES` is not held in
memory: once it grows past that size, what was held and every later fragment
go to a :class:`DataSetWriter` opened for it (the node's receiver writes it to
the spool as it arrives), and the request carries the writer to the handler
(:attr:`DirectStore.writer`).  A writer whose data set will not be served
(beyond the limit, an invalid message, the association ending first) is
discarded.  Smaller data sets (a JPEG still) stay in memory: written at
once, they would gain nothing (benchmarks/history.md).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Protocol

import structlog
from pydicom import config
from pydicom.uid import UID
from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from dicom_node.reactor import EventDrivenAssociation
from dicom_node.store_response import StoreResponseDIMSE

LOGGER = structlog.get_logger(__name__)

C_STORE_RQ = 0x0001
"""Command Field of a C-STORE request."""

NO_DATA_SET = 0x0101
"""Command Data Set Type of a message without a data set."""

COMMAND_FRAGMENT = 0x01
LAST_FRAGMENT = 0x02
"""Bits of a PDV's message control header (PS3.8 E.2)."""

INVALID_MESSAGE = "Evt19"
"""The DUL event pynetdicom raises for an invalid DIMSE message (it aborts)."""

UL_ELEMENTS = frozenset({0x0000})
"""Command Group Length."""
US_ELEMENTS = frozenset({0x0100, 0x0110, 0x0700, 0x0800, 0x1031})
"""Command Field, Message ID, Priority, Command Data Set Type, Move Originator Message ID."""
TEXT_ELEMENTS = frozenset({0x0002, 0x1000, 0x1030})
"""Affected SOP Class and Instance UIDs, Move Originator AE Title."""
MAX_UID_LENGTH = 64

REQUIRED_ELEMENTS = frozenset({0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000})
"""The elements a C-STORE-RQ must carry (PS3.7 table 9.3-1)."""


class DiscardedStore(C_STORE):
    """A C-STORE request whose data set exceeded the size limit and was not kept."""

    def __init__(self, request: C_STORE, received_bytes: int) -> None:
        super().__init__()
        for name in ("MessageID", "Priority", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
                     "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"):
            setattr(self, name, getattr(request, name))
        self.received_bytes = received_bytes


class DataSetWriter(Protocol):
    """Where a direct request's data set fragments go as they arrive."""

    def append(self, data: memoryview) -> None:
        """Take the next fragment."""

    def discard(self) -> None:
        """Drop what was taken; the data set will not be served."""


OpenWriter = Callable[[C_STORE, int], DataSetWriter | None]
"""Opens the writer of a request's data set, given the request and its presentation
context ID (``None``: the data set is held in memory)."""

MIN_MESSAGE_RATE = 8 * 1024
"""Bytes per second a message must average once it has taken the DIMSE timeout: a
message may take ``dimse_timeout`` plus one second per 8 kB received (a 60 MB cine over
64 kbit/s still arrives), while a peer trickling a byte now and then within the network
timeout is aborted instead of holding its association slot for good."""

MAX_QUEUED_REQUESTS = 16
"""Requests that may wait for their answer on one association before it is aborted (the
node negotiates no asynchronous operations window, so a conforming peer has one)."""

MAX_COMMAND_BYTES = 64 * 1024
"""Most a command set arriving in fragments may take before it is handed to pynetdicom (a
C-STORE request's is some hundred bytes)."""

MAX_OTHER_DATA_SET_BYTES = 64 * 1024
"""Most the data set of a message other than a C-STORE request may take before the
association is aborted: the node offers Verification and Storage only, and a C-ECHO has
no data set (without this bound a peer could make the node hold a message of the
instance size limit, gigabytes, in memory on every association)."""

SPILL_BYTES = 256 * 1024
"""Size beyond which a data set goes to its writer instead of memory (a raw still or any
cine does; a JPEG still does not)."""


class DirectStore(C_STORE):
    """A C-STORE request assembled here, with the writer its data set went to."""

    writer: DataSetWriter | None = None


@dataclass
class _Incoming:
    """A C-STORE request whose data set is still arriving."""

    context_id: int
    primitive: DirectStore
    data: BytesIO = field(default_factory=BytesIO)
    received: int = 0
    spilled: bool = False
    refused: bool = False
    """The request names a SOP class refused on its context: its data is counted only."""

    def drop(self) -> None:
        """Let go of the data held and discard the writer."""
        self.data = BytesIO()
        writer, self.primitive.writer = self.primitive.writer, None
        if writer is not None:
            writer.discard()


def parse_store_command(command: bytes) -> dict[int, bytes] | None:
    """The elements of a C-STORE-RQ command set with a data set, by element number.

    Returns ``None`` unless ``command`` is exactly such a command set: group
    0000 elements in ascending order, each known to a C-STORE-RQ and as long
    as its VR allows, the required ones present, the group length right.
    """
    elements: dict[int, bytes] = {}
    offset, end, previous = 0, len(command), -1
    while offset < end:
        if end - offset < 8:
            return None
        group, element, length = struct.unpack_from("<HHI", command, offset)
        offset += 8
        if group != 0x0000 or element <= previous or offset + length > end:
            return None
        fixed = 4 if element in UL_ELEMENTS else 2 if element in US_ELEMENTS else None
        if fixed is None and (element not in TEXT_ELEMENTS or length > 64):
            return None
        if fixed is not None and length != fixed:
            return None
        elements[element] = command[offset:offset + length]
        offset += length
        previous = element
    if not elements.keys() >= REQUIRED_ELEMENTS:
        return None
    if struct.unpack("<I", elements[0x0000])[0] != end - 12:
        return None
    if _us(elements[0x0100]) != C_STORE_RQ or _us(elements[0x0800]) == NO_DATA_SET:
        return None
    return elements


def _us(value: bytes) -> int:
    return int(struct.unpack("<H", value)[0])


def _text(value: bytes) -> str | None:
    """A UI or AE value without its padding; ``None`` for one pydicom would read as
    several values or not as ASCII (pynetdicom then handles the message, as it
    does an empty one)."""
    if b"\\" in value:
        return None
    try:
        return value.decode("ascii").strip("\0 ")
    except UnicodeDecodeError:
        return None


def store_primitive(elements: dict[int, bytes]) -> DirectStore | None:
    """The request primitive of a parsed command set, as pynetdicom's setters make it;
    ``None`` if a value is one they refuse or would convert differently.

    The UIDs are checked here by the setters' rules and stored as the setters
    store them: the setters check each UID with four regular expressions (a
    fifth of the CPU of a JPEG still's whole direct path).
    """
    texts = {element: _text(elements[element]) for element in TEXT_ELEMENTS & elements.keys()}
    if not all(texts.values()):
        return None
    sop_class, sop_instance = _uid(texts[0x0002]), _uid(texts[0x1000])
    if sop_class is None or sop_instance is None:
        return None
    primitive = DirectStore()
    primitive._affected_sop_class_uid = sop_class
    primitive._affected_sop_instance_uid = sop_instance
    try:
        primitive.MessageID = _us(elements[0x0110])
        primitive.Priority = _us(elements[0x0700])
        if 0x1030 in texts:
            primitive.MoveOriginatorApplicationEntityTitle = texts[0x1030]
        if 0x1031 in elements:
            primitive.MoveOriginatorMessageID = _us(elements[0x1031])
    except (ValueError, TypeError):
        return None
    return primitive


def _uid(text: str | None) -> UID | None:
    """A UID value as pynetdicom's ``set_uid`` accepts it (1 to 64 characters, no
    control characters, conformant if pynetdicom enforces conformance), else ``None``."""
    if text is None or not 0 < len(text) <= MAX_UID_LENGTH or not text.isprintable():
        return None
    uid = UID(text, validation_mode=config.IGNORE)
    if _config.ENFORCE_UID_CONFORMANCE and not uid.is_valid:
        return None
    return uid


class StoreRequestDIMSE(StoreResponseDIMSE):
    """pynetdicom's DIMSE provider, assembling plain C-STORE requests directly.

    Only while no handler is bound to ``EVT_DIMSE_RECV`` and pynetdicom is not
    configured to write received data sets to temporary files, since the
    direct assembly builds neither that event's message nor such a file.
    """

    def __init__(self, assoc: Association, max_data_set_bytes: int | None = None,
                 open_writer: OpenWriter | None = None,
                 spill_bytes: int = SPILL_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(assoc)
        self._max_bytes = max_data_set_bytes
        self._open_writer = open_writer
        self._spill_bytes = spill_bytes
        self._incoming: _Incoming | None = None
        self._aborting = False
        self._clock = clock
        self._message_started: float | None = None
        self._command: list[tuple[int, bytes]] = []
        """PDVs of a command set still arriving in fragments."""

    def receive_primitive(self, primitive: P_DATA) -> None:
        """Take one P-DATA primitive of a DIMSE message from the peer (nothing more once
        a data set was interrupted or arrived too slowly: the association is then
        aborted)."""
        if self._aborting:
            return
        if self._incoming is None and self.message is None and not self._command:
            self._message_started = self._clock()
        elif self._too_slow():
            return
        self._receive(primitive)

    def _too_slow(self) -> bool:
        """Abort when the message under way has taken longer than ``dimse_timeout`` plus
        a second per :data:`MIN_MESSAGE_RATE` bytes received (never without a timeout)."""
        timeout = self.dimse_timeout
        if self._message_started is None or timeout is None:
            return False
        elapsed = self._clock() - self._message_started
        received = self._arrived_bytes()
        if elapsed <= float(timeout) + received / MIN_MESSAGE_RATE:
            return False
        self._invalid(f"message still arriving after {elapsed:.0f} s ({received} bytes)")
        return True

    def _arrived_bytes(self) -> int:
        """Data set bytes received of the message under way."""
        if self._incoming is not None:
            return self._incoming.received
        data_set = self.message.data_set if self.message is not None else None
        return data_set.tell() if isinstance(data_set, BytesIO) else 0

    def _receive(self, primitive: P_DATA) -> None:
        """Assemble the PDVs of ``primitive``: directly while they form a plain C-STORE
        request, else through pynetdicom."""
        pdvs = list(primitive.presentation_data_value_list)
        for index, (context_id, data) in enumerate(pdvs):
            if self._incoming is None:
                if self.message is None and self._unaccepted(context_id):
                    self._invalid(f"presentation context {context_id} was not accepted")
                    return
                if self.message is None and self._starts_in_parts(context_id, data):
                    continue
                held, self._command = self._command, []
                rest = P_DATA()
                rest.presentation_data_value_list = [list(pdv) for pdv in [*held, *pdvs[index:]]]
                self._pynetdicom_receive(rest)
                return
            if not data or data[0] & COMMAND_FRAGMENT:
                self._invalid("no data set fragment where one was due")
                return
            self._take(self._incoming, data)
            if data[0] & LAST_FRAGMENT:
                self._complete()

    def _take(self, incoming: _Incoming, data: bytes) -> None:
        """Keep a data set fragment, in memory or, past the spill size, in the data
        set's writer; unless the data set has grown beyond the limit (then what was
        kept is dropped, and only the count goes on), or its request is refused (then
        nothing is kept)."""
        incoming.received += len(data) - 1
        if incoming.refused:
            return
        if self._beyond_limit(incoming.received):
            incoming.drop()
            return
        fragment = memoryview(data)[1:]
        if not incoming.spilled and incoming.received > self._spill_bytes:
            self._spill(incoming)
        writer = incoming.primitive.writer
        if writer is not None:
            writer.append(fragment)
        else:
            incoming.data.write(fragment)

    def _spill(self, incoming: _Incoming) -> None:
        """Open the data set's writer and hand it what was held (once; without a
        writer the data set stays in memory)."""
        incoming.spilled = True
        if self._open_writer is None:
            return
        writer = self._open_writer(incoming.primitive, incoming.context_id)
        if writer is None:
            return
        with incoming.data.getbuffer() as held:
            writer.append(held)
        incoming.data = BytesIO()
        incoming.primitive.writer = writer

    def _beyond_limit(self, data_set_bytes: int) -> bool:
        """Whether a data set of this size exceeds the limit the association was given."""
        return self._max_bytes is not None and data_set_bytes > self._max_bytes

    def _pynetdicom_receive(self, primitive: P_DATA) -> None:
        """pynetdicom's assembly; a message it cannot decode aborts the association.

        pynetdicom aborts when it cannot make a primitive of a message, but an
        exception while decoding the command set itself (an element missing or
        unreadable) escapes its DUL thread and leaves the association hanging.
        """
        queued = self.msg_queue.qsize()
        try:
            super().receive_primitive(primitive)
        except Exception as exc:
            self.message = None
            self._invalid(f"undecodable command set: {type(exc).__name__}")
            return
        if self.msg_queue.qsize() > queued and self._overrun(queued):
            return
        data_set = self.message.data_set if self.message is not None else None
        if not isinstance(data_set, BytesIO):
            return
        command = getattr(self.message, "command_set", None)
        if getattr(command, "CommandField", None) != C_STORE_RQ:
            if data_set.tell() > MAX_OTHER_DATA_SET_BYTES:
                self.message = None
                self._invalid("data set of a message other than C-STORE beyond "
                              f"{MAX_OTHER_DATA_SET_BYTES} bytes")
        elif self._beyond_limit(data_set.tell()):
            self.message = None
            self._invalid("data set beyond the instance size limit")

    def _invalid(self, reason: str) -> None:
        """Abort the association (pynetdicom's event for an invalid DIMSE message)."""
        LOGGER.warning("invalid_dimse_message", reason=reason)
        self._drop_incoming()
        self._aborting = True
        self.dul.event_queue.put(INVALID_MESSAGE)

    def _starts(self, context_id: int, data: bytes) -> bool:
        """Begin a direct C-STORE request from a message's first PDV, if it qualifies."""
        whole_command = COMMAND_FRAGMENT | LAST_FRAGMENT
        if not data or data[0] & whole_command != whole_command:
            return False
        if _config.STORE_RECV_CHUNKED_DATASET or self.assoc.get_handlers(evt.EVT_DIMSE_RECV):
            return False
        elements = parse_store_command(data[1:])
        request = None if elements is None else store_primitive(elements)
        if request is None:
            return False
        refused = isinstance(self.assoc, EventDrivenAssociation) and (
            self.assoc.refuses_sop_class(request, context_id))
        self._incoming = _Incoming(context_id, request, refused=refused)
        return True

    def _starts_in_parts(self, context_id: int, data: bytes) -> bool:
        """Take a PDV where a message begins: hold a command fragment that is not the
        last, and begin a direct C-STORE request once the command set is whole (in one
        PDV or several); ``False`` when pynetdicom is to assemble the message (then the
        held fragments go to it first)."""
        is_command = bool(data) and bool(data[0] & COMMAND_FRAGMENT)
        if not is_command or any(held != context_id for held, _ in self._command):
            return False
        if not data[0] & LAST_FRAGMENT:
            if sum(len(part) for _, part in self._command) + len(data) > MAX_COMMAND_BYTES:
                return False
            self._command.append((context_id, data))
            return True
        if not self._command:
            return self._starts(context_id, data)
        whole = b"".join(part[1:] for _, part in [*self._command, (context_id, data)])
        if not self._starts(context_id, bytes([data[0]]) + whole):
            return False
        self._command = []
        return True

    def _unaccepted(self, context_id: int) -> bool:
        """Whether a message starts on a presentation context that negotiation did not
        accept (``False`` before negotiation: nothing to check against yet)."""
        accepted = self.assoc._accepted_cx
        return bool(accepted) and context_id not in accepted

    def _drop_incoming(self) -> None:
        """Discard a data set still arriving (the message is invalid)."""
        incoming, self._incoming = self._incoming, None
        self._command = []
        if incoming is not None:
            incoming.drop()

    def drop_unserved(self) -> None:
        """Discard the writers of the data sets the association will not serve, as it
        ended: one still arriving, and those of complete requests still queued."""
        self._drop_incoming()
        with self.msg_queue.mutex:
            queued = [request for _, request in self.msg_queue.queue]
        for request in queued:
            if isinstance(request, DirectStore) and request.writer is not None:
                request.writer.discard()

    def _complete(self) -> None:
        """Serve the completed request in this thread if the association can, else queue
        it for the association's thread."""
        incoming = self._incoming
        assert incoming is not None
        self._incoming = None
        request: C_STORE = incoming.primitive
        if not incoming.refused and self._beyond_limit(incoming.received):
            LOGGER.warning("data_set_discarded", received_bytes=incoming.received,
                           limit_bytes=self._max_bytes)
            request = DiscardedStore(request, incoming.received)
        request.DataSet = incoming.data
        request._context_id = incoming.context_id
        if isinstance(self.assoc, EventDrivenAssociation) and self.assoc.serve_in_reader(
                request, incoming.context_id):
            return
        if self._overrun(self.msg_queue.qsize()):
            incoming.drop()
            return
        self.msg_queue.put((incoming.context_id, request))

    def _overrun(self, waiting: int) -> bool:
        """Abort when ``waiting`` requests (at least :data:`MAX_QUEUED_REQUESTS`) already
        wait for their answer: without an asynchronous operations window (the node
        negotiates none) a peer must wait for each response, and one that does not would
        queue data sets and open spool files without bound."""
        if waiting < MAX_QUEUED_REQUESTS:
            return False
        self._invalid(f"{waiting} requests sent without waiting for their responses")
        return True
