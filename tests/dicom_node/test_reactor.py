"""The event-driven association threads (``dicom_node/reactor.py``).

With the idle check pushed out to ten minutes, every step of an association
(request, C-STORE, release, abort) must still go through at once: it can only
do so if the threads are woken by events, not by their periodic check.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.fsm import InvalidEventError, StateMachine
from pynetdicom.pdu_primitives import P_DATA

from dicom_node import reactor
from dicom_node.store_request import StoreRequestDIMSE
from tests.dicom_node.conftest import NodeHarness, make_study
from tests.peers import wait_until

MakeNode = Callable[..., NodeHarness]

STEP_TIMEOUT = 20.0
"""How long the test's SCU waits for any one answer; far below the idle check."""


@pytest.fixture
def idle_check_far_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reactor, "IDLE_CHECK_SECONDS", 600.0)


def _node_threads() -> list[threading.Thread]:
    """The node's association and DUL threads still running."""
    kinds = (reactor.EventDrivenAssociation, reactor.EventDrivenDUL)
    return [thread for thread in threading.enumerate() if isinstance(thread, kinds)]


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
    wait_until(lambda: not _node_threads(), STEP_TIMEOUT, "the node's association threads to end")


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
    wait_until(lambda: not _node_threads(), STEP_TIMEOUT, "the node's association threads to end")


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
    wait_until(lambda: not _node_threads(), STEP_TIMEOUT, "the warm-up association to end")
    before = _open_sockets()
    for _ in range(10):
        harness.store(make_study(1))
    wait_until(
        lambda: not _node_threads() and _open_sockets() <= before,
        STEP_TIMEOUT,
        f"the open sockets to fall back to {before}",
    )
