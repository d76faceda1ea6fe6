"""The event-driven association threads (``dicom_node/reactor.py``).

With the idle check pushed out to ten minutes, every step of an association
(request, C-STORE, release, abort) must still go through at once: it can only
do so if the threads are woken by events, not by their periodic check.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE, _config, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.fsm import InvalidEventError, StateMachine
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass

from dicom_node import reactor
from dicom_node.network import Receiver
from dicom_node.store_request import StoreRequestDIMSE
from tests.dicom_node.conftest import NodeHarness, make_study, node_threads
from tests.peers import wait_until

MakeNode = Callable[..., NodeHarness]

STEP_TIMEOUT = 20.0
"""How long the test's SCU waits for any one answer; far below the idle check."""


@pytest.fixture
def idle_check_far_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reactor, "IDLE_CHECK_SECONDS", 600.0)


def _associate(harness: NodeHarness) -> Association:
    assoc = harness.associate()
    assert assoc.is_established
    assoc.dimse_timeout = STEP_TIMEOUT
    assoc.acse_timeout = STEP_TIMEOUT
    return assoc


@pytest.mark.usefixtures("idle_check_far_away")
def test_stores_and_release_are_answered_without_waiting_for_the_idle_check(
    make_node: MakeNode,
) -> None:
    harness = make_node()
    assoc = _associate(harness)
    statuses = [int(assoc.send_c_store(ds).Status) for ds in make_study(3)]
    assoc.release()
    assert statuses == [0, 0, 0]
    assert assoc.is_released
    harness.wait_for_associations_closed(STEP_TIMEOUT)
    assert len(harness.node.spool.instance_files()) == 3


@pytest.mark.usefixtures("idle_check_far_away")
def test_a_peer_abort_ends_the_association_at_once(make_node: MakeNode) -> None:
    harness = make_node()
    assoc = _associate(harness)
    assert int(assoc.send_c_store(make_study(1)[0]).Status) == 0
    assoc.abort()
    harness.wait_for_associations_closed(STEP_TIMEOUT)
    wait_until(lambda: not node_threads(), STEP_TIMEOUT, "the node's association threads to end")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dul_that_dies_closes_the_connection_and_ends_the_association(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exception escaping a state machine action ends pynetdicom's DUL thread without
    # closing the connection: the node closes it and records the association's end.
    harness = make_node()

    def fails(self: object, primitive: object) -> None:
        raise RuntimeError("a fault in a state machine action")

    monkeypatch.setattr(StoreRequestDIMSE, "receive_primitive", fails)
    assoc = _associate(harness)
    response = assoc.send_c_store(make_study(1)[0])
    assert "Status" not in response
    wait_until(lambda: not assoc.is_alive(), STEP_TIMEOUT, "the peer to see the connection end")
    harness.wait_for_associations_closed(STEP_TIMEOUT)
    wait_until(lambda: not node_threads(), STEP_TIMEOUT, "the node's association threads to end")


def test_a_dul_fault_caught_by_pynetdicom_is_waited_for(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault while reading is caught by pynetdicom's DUL loop: it aborts, and tells the
    # association thread to end before its own thread has returned.  That thread can then
    # reach its connection check first; here the DUL thread is held until it has.
    harness = make_node()
    check_begun = threading.Event()
    read_pdu = reactor.EventDrivenDUL._read_pdu_data
    run_dul = reactor.EventDrivenDUL.run
    close_abandoned = reactor.EventDrivenAssociation._close_abandoned_connection

    def fails_in_data_transfer(self: reactor.EventDrivenDUL) -> None:
        if self.state_machine.current_state == reactor.DATA_TRANSFER_STATE:
            raise RuntimeError("a fault while reading")
        read_pdu(self)

    def run_then_linger(self: reactor.EventDrivenDUL) -> None:
        run_dul(self)
        check_begun.wait(STEP_TIMEOUT)

    def signal_then_check(self: reactor.EventDrivenAssociation) -> None:
        check_begun.set()
        close_abandoned(self)

    monkeypatch.setattr(reactor.EventDrivenDUL, "_read_pdu_data", fails_in_data_transfer)
    monkeypatch.setattr(reactor.EventDrivenDUL, "run", run_then_linger)
    monkeypatch.setattr(
        reactor.EventDrivenAssociation, "_close_abandoned_connection", signal_then_check
    )
    assoc = _associate(harness)
    assert "Status" not in assoc.send_c_store(make_study(1)[0])
    harness.wait_for_associations_closed(STEP_TIMEOUT)
    wait_until(lambda: not node_threads(), STEP_TIMEOUT, "the node's association threads to end")


def test_what_is_sent_after_an_abort_is_dropped_not_raised() -> None:
    # A C-STORE response can be queued just as a broken PDU from the peer aborts the
    # association: in Sta13 pynetdicom's state machine raised, ending the DUL thread.
    assoc = reactor.EventDrivenAssociation(AE(), MODE_ACCEPTOR)
    machine = assoc.dul.state_machine
    machine.current_state = reactor.CLOSING_STATE
    assoc.dul.to_provider_queue.put(P_DATA())
    assert assoc.dul._process_recv_primitive()
    machine.do_action(assoc.dul.event_queue.get(block=False))
    assert assoc.dul.to_provider_queue.empty()
    assert machine.current_state == reactor.CLOSING_STATE
    with pytest.raises(InvalidEventError):
        StateMachine.do_action(machine, "Evt9")


def test_an_abort_from_the_reading_thread_does_not_wait_for_that_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A request served in the DUL thread whose response cannot be sent (found by fuzzing:
    # a peer's PDU limit of 5 bytes) made pynetdicom call the waiting abort there: it
    # waited for its own thread to end, for good, and the node could not exit.
    waits: list[bool] = []
    monkeypatch.setattr(Association, "_abort_blocking",
                        lambda self, block=True: waits.append(block))
    assoc = reactor.EventDrivenAssociation(AE(), MODE_ACCEPTOR)
    assoc.dul.run = assoc.abort  # type: ignore[method-assign]
    assoc.dul.start()
    assoc.dul.join(STEP_TIMEOUT)
    assoc.abort()
    assert waits == [False, True]


def _open_sockets() -> int:
    """Sockets this process holds (other descriptors, such as the index's pooled
    SQLite connections, come and go on their own)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            count += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_association_threads_close_their_wake_up_sockets(make_node: MakeNode) -> None:
    harness = make_node()
    harness.store(make_study(1))
    wait_until(lambda: not node_threads(), STEP_TIMEOUT, "the warm-up association to end")
    before = _open_sockets()
    for _ in range(10):
        harness.store(make_study(1))
    wait_until(
        lambda: not node_threads() and _open_sockets() <= before,
        STEP_TIMEOUT,
        f"the open sockets to fall back to {before}",
    )


def _pdv_item(context_id: int, data: bytes) -> bytes:
    return struct.pack(">IB", len(data) + 1, context_id) + data


def _pynetdicom_items(body: bytes) -> list[tuple[int, bytes]]:
    pdu = P_DATA_TF()
    pdu.decode(struct.pack(">BBI", 0x04, 0, len(body)) + body)
    return list(pdu.to_primitive().presentation_data_value_list)


@pytest.mark.parametrize(
    "items",
    [
        [(1, b"\x03" + b"c" * 150)],
        [(1, b"\x02" + bytes(range(256)) * 300)],
        [(1, b"\x03abc"), (3, b"\x00" + b"d" * 4095), (255, b"\x02")],
        [(5, b"")],  # an empty PDV: the DIMSE provider decides what it means
    ],
    ids=["command", "large-data-set", "three-items", "empty-pdv"],
)
def test_pdv_items_are_split_as_pynetdicom_splits_them(items: list[tuple[int, bytes]]) -> None:
    body = b"".join(_pdv_item(*item) for item in items)
    split = reactor.split_pdv_items(bytearray(body))
    assert split == _pynetdicom_items(body) == items
    assert all(type(item) is tuple and type(item[1]) is bytes for item in split or [])


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no item
        _pdv_item(1, b"\x03abc")[:-1],  # the item runs past the end
        _pdv_item(1, b"\x03abc") + b"\x00\x00",  # bytes left that are not an item
        struct.pack(">IB", 0, 1),  # an item without its context ID
    ],
    ids=["no-item", "short-item", "trailing-bytes", "zero-length"],
)
def test_pdv_items_that_do_not_fill_the_body_are_left_to_pynetdicom(body: bytes) -> None:
    assert reactor.split_pdv_items(body) is None


def _store_three_recording_events(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch, observer: evt.NotificationEvent | None
) -> list[str]:
    """Store three instances over one association, with a handler bound to ``observer``
    if given; the state machine events of the node's DUL, in order.

    pynetdicom's logging handlers are off, as the node runs them.
    """
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    events: list[str] = []
    original = StateMachine.do_action

    def spy(machine: StateMachine, event: str) -> None:
        if isinstance(machine.dul, reactor.EventDrivenDUL):  # the node's, not the SCU's
            events.append(event)
        original(machine, event)

    monkeypatch.setattr(StateMachine, "do_action", spy)
    harness = make_node()
    if observer is not None:
        harness.node._server.bind(observer, lambda event: None)  # type: ignore[attr-defined]
    assoc = _associate(harness)
    statuses = [int(assoc.send_c_store(ds).Status) for ds in make_study(3)]
    assoc.release()
    harness.wait_for_associations_closed(STEP_TIMEOUT)
    assert statuses == [0, 0, 0]
    assert len(harness.node.spool.instance_files()) == 3
    return events


@pytest.mark.usefixtures("idle_check_far_away")
@pytest.mark.parametrize("observed", [False, True])
def test_data_pdus_skip_the_state_machine_unless_observed(
    observed: bool, make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In data transfer the P-DATA-TF PDUs go to the DIMSE provider directly;
    # with a handler watching received PDUs they go through pynetdicom's
    # decoder and state machine (event Evt10), as every other PDU does.
    events = _store_three_recording_events(
        make_node, monkeypatch, evt.EVT_PDU_RECV if observed else None
    )
    assert events.count("Evt10") == (6 if observed else 0)
    assert "Evt12" in events  # the release request still goes through the state machine


def _threads_of(monkeypatch: pytest.MonkeyPatch, name: str) -> list[threading.Thread]:
    """Record the thread each call of the node's ``Receiver.<name>`` handler runs in."""
    seen: list[threading.Thread] = []
    original = getattr(Receiver, name)

    def recording(self: Receiver, event: Event) -> object:
        seen.append(threading.current_thread())
        return original(self, event)

    monkeypatch.setattr(Receiver, name, recording)
    return seen


def test_c_stores_are_served_in_the_dul_thread_other_requests_in_the_association_thread(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")  # as the node runs
    stores = _threads_of(monkeypatch, "on_store")
    echoes = _threads_of(monkeypatch, "on_echo")
    harness = make_node()
    assoc = _associate(harness)
    statuses = [int(assoc.send_c_store(ds).Status) for ds in make_study(3)]
    assert int(assoc.send_c_echo().Status) == 0
    assoc.release()
    harness.wait_for_associations_closed(STEP_TIMEOUT)
    assert statuses == [0, 0, 0]
    assert len(harness.node.spool.instance_files()) == 3
    assert len(stores) == 3 and all(isinstance(t, reactor.EventDrivenDUL) for t in stores)
    assert len(echoes) == 1 and isinstance(echoes[0], reactor.EventDrivenAssociation)


@pytest.mark.usefixtures("idle_check_far_away")
@pytest.mark.parametrize("observed", [False, True], ids=["direct", "observed"])
def test_responses_made_in_the_dul_thread_are_sent_without_a_state_machine_turn(
    observed: bool, make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A handler watching sent PDUs sees pynetdicom's PDU objects: the responses then go
    # through the state machine (event Evt9), as every other PDU sent does.
    events = _store_three_recording_events(
        make_node, monkeypatch, evt.EVT_PDU_SENT if observed else None
    )
    assert events.count("Evt9") == (3 if observed else 0)


def test_a_handler_failure_in_the_dul_thread_is_answered_and_the_association_goes_on(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Receiver._store
    calls: list[int] = []

    def fails_once(self: Receiver, event: Event, stats: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a fault in the handler")
        return original(self, event, stats)  # type: ignore[arg-type]

    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    monkeypatch.setattr(Receiver, "_store", fails_once)
    harness = make_node()
    assoc = _associate(harness)
    statuses = [int(assoc.send_c_store(ds).Status) for ds in make_study(2)]
    assoc.release()
    harness.wait_for_associations_closed(STEP_TIMEOUT)
    assert statuses == [0xC211, 0]  # pynetdicom's status for an exception in the handler
    assert len(harness.node.spool.instance_files()) == 1


def test_a_fault_serving_in_the_dul_thread_aborts_without_waiting_on_itself(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pynetdicom aborts when its service class raises, and its abort waits for the
    # DUL thread to end: called in that thread, it would wait forever.
    def fails(self: StorageServiceClass, request: C_STORE, context: object) -> None:
        raise RuntimeError("a fault in the service class")

    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    monkeypatch.setattr(StorageServiceClass, "SCP", fails)
    harness = make_node()
    assoc = _associate(harness)
    assoc.send_c_store(make_study(1)[0])
    wait_until(lambda: assoc.is_aborted, STEP_TIMEOUT, "the peer to see the abort")
    harness.wait_for_associations_closed(STEP_TIMEOUT)
    wait_until(lambda: not node_threads(), STEP_TIMEOUT, "the node's association threads to end")


def test_a_request_is_left_to_the_association_thread_when_it_has_one_in_hand(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assoc = reactor.EventDrivenAssociation(AE(), MODE_ACCEPTOR)
    served: list[C_STORE] = []
    monkeypatch.setattr(assoc, "_serve_request", lambda request, context_id: served.append(request))
    monkeypatch.setattr(assoc, "serves_storage", lambda context_id: True)
    request = C_STORE()
    assert not assoc.serve_in_reader(request, 1)  # not called in the DUL thread
    monkeypatch.setattr(reactor.threading, "current_thread", lambda: assoc.dul)
    assoc._serving = True
    assert not assoc.serve_in_reader(request, 1)
    assoc._serving = False
    assoc.dimse.msg_queue.put((1, C_STORE()))
    assert not assoc.serve_in_reader(request, 1)
    assoc.dimse.msg_queue.get()
    assert assoc.serve_in_reader(request, 1)
    assert served == [request] and not assoc._serving
