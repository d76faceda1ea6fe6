"""Event-driven association threads for pynetdicom.

pynetdicom runs two threads per association, and both poll: the DUL thread
sleeps 1 ms whenever it finds nothing to do, and the association thread sleeps
1 ms on every turn of its loop (pynetdicom's own ``TODO: try and make this
event based rather than running loops``).  Each C-STORE waits on up to three
such sleeps (the request's last PDU, the handler's turn, the response), which
costs a single association about 2 ms per instance, and with several
associations the thousands of wake-ups a second compete for the interpreter
lock with the threads doing the work.

Here both threads sleep until there is something to do:

* the DUL thread waits in ``select`` on the connection and on a wake-up socket,
  written (while it waits) when a primitive is queued for it to send or it is
  told to stop;
* the association thread waits on an event that the DUL thread sets when an
  action of the state machine left something for it (a complete DIMSE message,
  a release or abort request or indication) and when the DUL thread stops.

Both waits are bounded by :data:`IDLE_CHECK_SECONDS`, so the timers that
pynetdicom checks on each turn (ARTIM, network idle timeout) still fire.

In data transfer the DUL thread also hands each P-DATA-TF PDU's items to the
DIMSE provider itself (:meth:`EventDrivenDUL._read_pdu_data`), without
pynetdicom's PDU objects, event queue and state machine turn, whose only
effect for that PDU in that state is the hand-over.

A C-STORE request completed that way is served in the DUL thread too
(:meth:`EventDrivenAssociation.serve_in_reader`), by pynetdicom's own
``_serve_request``, when the association thread has nothing in hand: the peer
waits for each response before its next request (no asynchronous operations
are negotiated), so the hand-over to the association thread and back only
cost time, about a fifth of the node's CPU per JPEG still.  The response a
request served there produces is sent at once (:meth:`EventDrivenDUL.send_pdu`),
as the state machine's DT-1 action would send it on the thread's next turn.

Every C-STORE request on an accepted context goes to the Storage service class,
whose handler refuses one naming another SOP class than its context's, or no
storage class: pynetdicom picks the service by the request's SOP class, and would
answer a C-STORE naming the Verification UID with a C-ECHO response.

The classes override private methods of pynetdicom 3.0, so ``pyproject.toml``
pins its minor version.  ``EventDrivenAssociation._run_reactor`` is adapted
from pynetdicom's ``Association._run_reactor`` (MIT licence, Copyright (c)
2014 Benjamin Rigaud and the pynetdicom contributors); the pynetdicom log lines
it wrote are left out, as the node does not use pynetdicom's logging.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import StateMachine
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from dicom_node.logs import describe_error

if TYPE_CHECKING:
    from pynetdicom.ae import ApplicationEntity
    from pynetdicom.dimse_primitives import DimseServiceType
    from pynetdicom.dul import _PDUPrimitiveType

LOGGER = structlog.get_logger(__name__)

IDLE_CHECK_SECONDS = 0.05
"""Longest wait of either thread, so pynetdicom's timers are checked this often."""

DUL_END_SECONDS = 10.0
"""Longest wait of an association thread for a DUL thread told to end (it ends at its
next turn; a read of a PDU already begun is bounded by the network timeout)."""

CLOSING_STATE = "Sta13"
"""The state in which pynetdicom's DUL drains and closes the connection itself."""

PDU_HEADER_BYTES = 6
"""PDU type, a reserved byte and the PDU length (PS3.8 9.3.1)."""

IDLE_STATE = "Sta1"

DATA_TRANSFER_STATE = "Sta6"
"""The established association's state, in which a P-DATA-TF PDU leaves it unchanged."""

PDU_TYPES = frozenset(range(0x01, 0x08))
"""The PDU types of PS3.8 9.3."""

P_DATA_TF_TYPE = 0x04

A_ASSOCIATE_RQ_TYPE = 0x01

AE_TITLE_FIELDS = {"called": slice(10, 26), "calling": slice(26, 42)}
"""Where an A-ASSOCIATE-RQ PDU holds its AE titles, header included (PS3.8 9.3.2)."""

UNREADABLE_AE_MARK = b"?"
"""Stands in an AE title for each byte outside the DICOM default character repertoire."""

OBSERVING_EVENTS = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_FSM_TRANSITION)
"""Events whose handlers see received PDUs or state transitions (the node binds none)."""

SENDING_OBSERVERS = (evt.EVT_PDU_SENT, evt.EVT_FSM_TRANSITION)
"""Events whose handlers see the PDU objects sent or state transitions (the node binds none)."""


LOCAL_USER_EVENTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})
"""State machine events of primitives the local user queued for sending (PS3.8 9.2)."""


def split_pdv_items(body: bytes | bytearray) -> list[tuple[int, bytes]] | None:
    """The (presentation context ID, data) of each PDV item of a P-DATA-TF PDU body.

    Returns ``None`` unless the body is one or more items that fill it
    exactly (PS3.8 9.3.5.1), each at least as long as its context ID:
    pynetdicom then decodes the PDU as before (and aborts for a bad one).
    The items are what pynetdicom's ``P_DATA_TF.to_primitive`` gives.
    """
    items: list[tuple[int, bytes]] = []
    offset, end = 0, len(body)
    with memoryview(body) as view:
        while offset < end:
            if end - offset < 5:
                return None
            (length,) = struct.unpack_from(">I", view, offset)
            if length < 1 or offset + 4 + length > end:
                return None
            items.append((view[offset + 4], bytes(view[offset + 5:offset + 4 + length])))
            offset += 4 + length
    return items or None


class NotifyingStateMachine(StateMachine):
    """The DUL state machine, waking the association thread when an action left it
    something: a complete DIMSE message, or a primitive (release, abort) for it.

    A primitive the node queued for sending once the association was aborted
    (``Sta13``, waiting for the connection to close) is dropped: PS3.8 defines
    no action for it there, and pynetdicom would raise in its DUL thread (a
    C-STORE response racing an abort the peer's broken PDU caused).
    """

    def __init__(self, dul: EventDrivenDUL, activity: threading.Event) -> None:
        super().__init__(dul)
        self._activity = activity

    def do_action(self, event: str) -> None:
        """Run the action for ``event``, then wake the association thread if needed."""
        if event in LOCAL_USER_EVENTS and self.current_state == CLOSING_STATE:
            with contextlib.suppress(queue.Empty):
                self.dul.to_provider_queue.get(block=False)
            return
        try:
            super().do_action(event)
        finally:
            if not (self.dul.to_user_queue.empty() and self.dul.assoc.dimse.msg_queue.empty()):
                self._activity.set()


class EventDrivenDUL(DULServiceProvider):
    """A DUL service provider whose thread sleeps until the peer or the user acts."""

    def __init__(self, assoc: Association, activity: threading.Event) -> None:
        super().__init__(assoc)
        self._activity = activity
        self.state_machine = NotifyingStateMachine(self, activity)
        self._run_loop_delay = 0.0
        self._wake_receiver, self._wake_sender = socket.socketpair()
        self._wake_receiver.setblocking(False)
        self._wake_sender.setblocking(False)
        self._waiting = False

    def run_reactor(self) -> None:
        """Run pynetdicom's DUL loop; wake the association thread when it ends."""
        try:
            super().run_reactor()
        finally:
            self._activity.set()
            self._wake_receiver.close()
            self._wake_sender.close()

    def wake(self) -> None:
        """Interrupt the thread's wait, if it waits (it then checks its queues and flags).

        The caller changed a queue or flag first, and :meth:`_wait` marks itself
        waiting before it looks at them: either it sees the change, or this sees
        it waiting.
        """
        if self._waiting:
            with contextlib.suppress(OSError):  # already signalled (buffer full), or ended
                self._wake_sender.send(b"\0")

    def send_pdu(self, primitive: _PDUPrimitiveType) -> None:
        """Queue ``primitive`` for sending and wake the thread to send it; in this
        thread, send a P-DATA in data transfer at once when nothing waits before it."""
        if self._sends_at_once(primitive):
            assert isinstance(primitive, P_DATA)
            self._send(P_DATA_TF(primitive))  # what the DT-1 action does
            return
        super().send_pdu(primitive)
        self.wake()

    def _sends_at_once(self, primitive: _PDUPrimitiveType) -> bool:
        """Whether ``primitive`` can be sent now as the state machine's DT-1 action sends
        it: a P-DATA, in this thread, in data transfer, with no primitive or event
        queued before it and no handler observing sent PDUs or transitions."""
        return (
            isinstance(primitive, P_DATA)
            and threading.current_thread() is self
            and self.socket is not None
            and self.state_machine.current_state == DATA_TRANSFER_STATE
            and self.to_provider_queue.empty()
            and self.event_queue.empty()
            and not any(self.assoc.get_handlers(event) for event in SENDING_OBSERVERS)
        )

    def kill_dul(self) -> None:
        """Stop the thread."""
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        """Stop the thread if the connection is idle (``Sta1``); wait until it has."""
        if self.state_machine.current_state != IDLE_STATE:
            return False
        self.kill_dul()
        if threading.current_thread() is not self:
            self.join()
        return True

    def _is_transport_event(self) -> bool:
        """Wait until the peer sent data, a wake-up or the idle check is due; then read.

        Never waits while the state machine has events left to process (the
        loop takes one per turn) or TLS holds decrypted bytes.  A connection
        the wait found readable is read at once; otherwise pynetdicom's own
        check, which reports a broken connection, runs as before.
        """
        if self.event_queue.empty() and self.state_machine.current_state != CLOSING_STATE:
            connection = self.socket.socket if self.socket is not None else None
            if connection is None:
                self._wait([])
            elif not (
                isinstance(connection, ssl.SSLSocket) and connection.pending()
            ) and self._wait([connection]):
                self._read_pdu_data()
                return True
        return super()._is_transport_event()

    def _read_pdu_data(self) -> None:
        """Read a PDU; in data transfer, hand a P-DATA-TF PDU's items to the DIMSE
        provider directly.

        pynetdicom copies each PDU twice, decodes it into PDU objects, queues
        its event, and takes it out again in the state machine's DT-2 action,
        whose only effect in ``Sta6`` is that hand-over.  That path is kept for
        every other PDU, every other state, a PDU whose items do not parse, and
        while events are queued or handlers observe PDUs or transitions.
        Unreadable input gives the events pynetdicom's reader gives (Evt17,
        Evt19).
        """
        if (
            self.state_machine.current_state != DATA_TRANSFER_STATE
            or not self.event_queue.empty()
            or any(self.assoc.get_handlers(event) for event in OBSERVING_EVENTS)
        ):
            super()._read_pdu_data()
            return
        assert self.socket is not None
        try:
            header = self.socket.recv(PDU_HEADER_BYTES)
            if len(header) < PDU_HEADER_BYTES:
                self.event_queue.put("Evt17")
                return
            pdu_type, _, length = struct.unpack(">BBL", header)
            if pdu_type not in PDU_TYPES:
                self.event_queue.put("Evt19")
                return
            body = self.socket.recv(length)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")
            return
        if len(body) != length:
            self.event_queue.put("Evt17")
            return
        items = split_pdv_items(body) if pdu_type == P_DATA_TF_TYPE else None
        if items is None:
            self._queue_decoded(header + body)
            return
        primitive = P_DATA()
        primitive.presentation_data_value_list = []  # filled as pynetdicom fills it: tuples
        primitive.presentation_data_value_list.extend(items)
        self.assoc.dimse.receive_primitive(primitive)
        if not self.assoc.dimse.msg_queue.empty():
            self._activity.set()

    def _decode_pdu(self, bytestream: bytearray) -> tuple[Any, str]:
        """pynetdicom's decoding; an A-ASSOCIATE-RQ it cannot decode for its AE titles
        alone is decoded with them made readable (:func:`readable_ae_titles`): padded
        with NULs, it goes on as any other; with bytes outside the repertoire, it is
        marked for rejection (:attr:`EventDrivenAssociation.unreadable_ae_titles`).
        Any other failure gets a warning of the node's own: pynetdicom then aborts,
        before any handler of the node sees the PDU."""
        try:
            return super()._decode_pdu(bytestream)
        except Exception as exc:
            fixed, unreadable = readable_ae_titles(bytes(bytestream))
            if fixed != bytestream and isinstance(self.assoc, EventDrivenAssociation):
                try:
                    decoded = super()._decode_pdu(bytearray(fixed))
                except Exception:
                    pass
                else:
                    self.assoc.unreadable_ae_titles = unreadable
                    return decoded
            LOGGER.warning("pdu_undecodable", peer=str(self.assoc.requestor.address),
                           pdu_type=f"0x{bytestream[0]:02X}" if bytestream else None,
                           reason=describe_error(exc))
            raise

    def _queue_decoded(self, pdu_bytes: bytes | bytearray) -> None:
        """Decode a PDU and queue its event for the state machine, as pynetdicom does."""
        try:
            pdu, event = self._decode_pdu(bytearray(pdu_bytes))
        except Exception:
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _wait(self, connections: list[socket.socket]) -> bool:
        """Block until one of ``connections`` is readable or the thread is woken;
        whether one of them is readable."""
        readable: list[socket.socket] = []
        self._waiting = True
        try:
            if self._kill_thread or not (
                self.to_provider_queue.empty() and self.event_queue.empty()
            ):
                return False
            try:
                readable, _, _ = select.select(
                    [*connections, self._wake_receiver], [], [], IDLE_CHECK_SECONDS
                )
            except (OSError, ValueError):  # a closed connection: wait for a wake-up only
                readable, _, _ = select.select([self._wake_receiver], [], [], IDLE_CHECK_SECONDS)
        finally:
            self._waiting = False
        if self._wake_receiver in readable:
            with contextlib.suppress(OSError):  # raised once drained
                while self._wake_receiver.recv(256):
                    pass
        return any(connection in readable for connection in connections)


def readable_ae_titles(pdu: bytes) -> tuple[bytes, dict[str, str]]:
    """An A-ASSOCIATE-RQ PDU with its AE titles made valid, and why each one changed was
    not, by field (``called``, ``calling``); no change unless ``pdu`` is long enough to be one.

    Trailing NUL bytes are taken for padding (spaces).  A byte outside the default
    character repertoire, a control character or a backslash becomes
    :data:`UNREADABLE_AE_MARK`; an empty title (all spaces) becomes the mark alone, so
    that the request can be decoded, recorded and rejected.
    """
    fixed = bytearray(pdu)
    unreadable: dict[str, str] = {}
    if len(pdu) < AE_TITLE_FIELDS["calling"].stop or pdu[0] != A_ASSOCIATE_RQ_TYPE:
        return pdu, unreadable
    for field, where in AE_TITLE_FIELDS.items():
        padded = pdu[where].rstrip(b"\0").ljust(16)
        fixed[where] = padded
        title = bytes(b if 0x20 <= b < 0x7F and b != 0x5C else UNREADABLE_AE_MARK[0]
                      for b in padded)
        if not title.strip():
            fixed[where] = UNREADABLE_AE_MARK.ljust(16)
            unreadable[field] = f"{field} AE title is empty"
        elif title != padded:
            fixed[where] = title
            unreadable[field] = (f"{field} AE title {title.decode().strip()!r} is not in the DICOM "
                                 f"default character repertoire ('?': a byte outside it)")
    return bytes(fixed), unreadable


class EventDrivenAssociation(Association):
    """An association whose threads wait for events instead of polling every 1 ms."""

    def __init__(self, ae: ApplicationEntity, mode: str,
                 on_end: Callable[[], None] | None = None) -> None:
        super().__init__(ae, mode)
        self._on_end = on_end
        self._activity = threading.Event()
        self._serving_lock = threading.Lock()
        self._serving = False
        self.dul = EventDrivenDUL(self, self._activity)
        self.unreadable_ae_titles: dict[str, str] = {}
        """Why the request's AE titles could not be read, by field (they were replaced
        to decode it: :func:`readable_ae_titles`); the node rejects such a request."""
        self.acse_timeout = ae.acse_timeout
        self.network_timeout = ae.network_timeout

    def run(self) -> None:
        """The association's thread; ``on_end`` is called as it ends, however it ends."""
        try:
            super().run()
        finally:
            self._close_abandoned_connection()
            if self._on_end is not None:
                self._on_end()

    def _close_abandoned_connection(self) -> None:
        """Close the connection if the DUL thread ended without closing it, and report
        ``EVT_CONN_CLOSE``, as the state machine does when it closes one.

        The DUL closes the connection through its state machine.  An exception
        in a state machine action ends the DUL thread without that: the peer
        would wait on an open connection until its own timeout, and the
        handlers, never told, would count the association as live forever.
        pynetdicom's DUL sets this thread's kill flag from inside that exception
        handler, so this thread can get here while the DUL thread is still
        returning: a DUL thread told to end is waited for first (bounded).
        """
        if self.dul._kill_thread and threading.current_thread() is not self.dul:
            self.dul.join(DUL_END_SECONDS)
        connection = self.dul.socket
        if self.dul.is_alive() or connection is None or connection.socket is None:
            return
        address = (self.requestor.address, self.requestor.port)
        connection.close()
        evt.trigger(self, evt.EVT_CONN_CLOSE, {"address": address})

    def kill(self) -> None:
        """Stop the association's threads."""
        self._activity.set()
        super().kill()

    def _run_reactor(self) -> None:
        """pynetdicom 3.0's acceptor loop, waiting on activity instead of sleeping."""
        self._is_paused = False
        while not self._kill:
            self._activity.wait(IDLE_CHECK_SECONDS)
            self._activity.clear()

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            with self._serving_lock:
                context_id, msg = self.dimse.get_msg(block=False)
                self._serving = msg is not None
            if msg:
                try:
                    self._serve_request(msg, int(context_id or 0))
                finally:
                    self._serving = False
                if not self.dimse.msg_queue.empty():
                    self._activity.set()  # it completed while this one was served

            ended = self._end_requested_by_peer()
            if ended is not None:
                self.is_established = False
                evt.trigger(self, ended, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                self.abort()
                self.kill()
                return

    def serve_in_reader(self, request: C_STORE, context_id: int) -> bool:
        """Serve a C-STORE request in the DUL thread that completed it; whether it did.

        Only when the association serves it with the Storage service class
        (:meth:`serves_storage`), and the association's own thread has no message
        in hand or queued (responses then keep the requests' order).
        The handler, or pynetdicom when the response cannot be sent, may abort:
        from this thread the abort does not wait (:meth:`_abort_blocking`).
        """
        if threading.current_thread() is not self.dul or not self.serves_storage(context_id):
            return False
        with self._serving_lock:
            if self._serving or not self.dimse.msg_queue.empty():
                return False
            self._serving = True
        try:
            self._serve_request(request, context_id)
        finally:
            self._serving = False
        return True

    @property
    def abort_sent(self) -> bool:
        """Whether this side sent an A-ABORT (pynetdicom marks it before sending, so it
        holds when the peer closes the connection in answer before the abort's event)."""
        return self._sent_abort

    def _abort_blocking(self, block: bool = True) -> None:
        """pynetdicom's abort, which waits for the DUL thread to end, except in the DUL
        thread itself (a request served in it): there it only queues the A-ABORT, as
        that wait would never end.  pynetdicom calls this when a response cannot be
        sent, after putting back the waiting abort that handlers do not get."""
        super()._abort_blocking(block and threading.current_thread() is not self.dul)

    def serves_storage(self, context_id: int) -> bool:
        """Whether the association serves a C-STORE request on ``context_id`` with the
        Storage service class: on an accepted context of the established association, it
        serves every one, those whose SOP class it refuses too (:meth:`_serve_request`)."""
        return (
            self.is_established and not self._sent_release and context_id in self._accepted_cx
        )

    def refuses_sop_class(self, request: C_STORE, context_id: int) -> bool:
        """Whether a C-STORE ``request`` on an accepted context names a SOP class that is
        not stored there: one other than the abstract syntax the context was accepted
        for, or no storage class (a Verification UID).  Its handler refuses it; ``False``
        for a context that was not accepted."""
        context = self._accepted_cx.get(context_id)
        if context is None:
            return False
        class_uid = str(request.AffectedSOPClassUID)
        return class_uid != context.abstract_syntax or not self._is_storage_class(class_uid)

    def _is_storage_class(self, class_uid: str) -> bool:
        """Whether pynetdicom serves requests of ``class_uid`` with the Storage service class."""
        if _config.UNRESTRICTED_STORAGE_SERVICE:
            return True
        extended = self.acceptor.accepted_common_extended.get(class_uid)
        return uid_to_service_class(extended[0] if extended else class_uid) is StorageServiceClass

    def _serve_request(self, msg: DimseServiceType, context_id: int) -> None:
        """pynetdicom's, except that a C-STORE request whose SOP class is refused on its
        context (:meth:`refuses_sop_class`) goes to the Storage service class, whose
        handler answers the refusal: pynetdicom picks the service by the request's SOP
        class, and would answer a C-STORE naming the Verification UID with a C-ECHO
        response (Success), and abort for an unknown UID.

        A request lacking a required element (a Message ID, a SOP class or instance UID,
        a C-STORE's data set) cannot be answered; pynetdicom ignores it and the peer
        would wait for a response until a timeout, so the association is aborted at once
        (during a release pynetdicom's ignoring stands)."""
        if not self._sent_release and not msg.is_valid_request:
            LOGGER.warning("invalid_request_aborted", message=msg.msg_type,
                           reason="a required element is missing")
            self.abort()
            return
        if not (
            isinstance(msg, C_STORE)
            and not self._sent_release
            and self.refuses_sop_class(msg, context_id)
        ):
            super()._serve_request(msg, context_id)
            return
        self.dimse.cancel_req = {}
        self._is_paused = True
        try:
            StorageServiceClass(self).SCP(msg, self._accepted_cx[context_id])
        except Exception:  # as pynetdicom serves a request: the handler failed
            LOGGER.exception("store_service_failed")
            self.abort()
        finally:
            self._is_paused = False
            self.dimse.cancel_req = {}

    def _end_requested_by_peer(self) -> evt.NotificationEvent | None:
        """Answer a release request or take an abort; the event to report, if either came."""
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released = True
            return evt.EVT_RELEASED
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            return evt.EVT_ABORTED
        return None
