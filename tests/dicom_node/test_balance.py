"""New associations go to the receiving process that holds the fewest."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from pynetdicom.association import Association

from dicom_node.balance import NOT_ACCEPTING, SharedLoad
from dicom_node.clock import ManualClock
from dicom_node.index import Index
from dicom_node.network import Receiver, start_receiver
from dicom_node.spool import Spool
from tests.dicom_node.conftest import NodeHarness, associate, node_config
from tests.peers import wait_until

MakeNode = Callable[..., NodeHarness]

ESTABLISHED = "01"
"""State of an established connection in ``/proc/net/tcp``."""


def _established(pid: int, port: int) -> int:
    """Connections to local ``port`` that process ``pid`` holds, read from ``/proc``."""
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile by another thread
            sockets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    held = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if (local_port == port and fields[3] == ESTABLISHED
                        and f"socket:[{fields[9]}]" in sockets):
                    held += 1
    return held


def test_a_busier_process_defers_to_a_less_busy_one() -> None:
    load = SharedLoad(3)
    first, second, third = (load.slot(n) for n in range(3))
    assert not first.busier_than_another()
    first.add(1)
    assert first.busier_than_another() and not second.busier_than_another()
    second.add(1)
    third.add(1)
    assert load.loads() == [1, 1, 1] and not first.busier_than_another()
    third.retire()
    third.add(-1)  # a stopped process stays out, whatever still ends there
    assert load.loads() == [1, 1, NOT_ACCEPTING]
    first.add(1)
    assert first.busier_than_another()
    load.retire(1)  # found dead by the main process
    assert not first.busier_than_another()


def test_associations_are_spread_evenly_over_the_processes(make_node: MakeNode) -> None:
    harness = make_node(receivers=3)
    load, processes = harness.node.load, harness.node.receiver_processes
    assert load is not None and processes is not None
    pids = [os.getpid(), *processes.pids()]
    for _ in range(2):  # SO_REUSEPORT listeners (random spread) pass a round 1 time in 12
        held: list[Association] = []
        for _ in range(9):
            held.append(harness.associate())
            assert held[-1].is_established
        assert [_established(pid, harness.port) for pid in pids] == [3, 3, 3]
        assert load.loads() == [3, 3, 3]
        for assoc in held:
            assoc.release()
        wait_until(lambda: load.loads() == [0, 0, 0], 30, "every process to count 0")


def test_a_connection_is_accepted_when_the_less_busy_process_never_takes_it(
        tmp_path: Path) -> None:
    # Place 1 stands for a process that died with nothing counted: it never accepts.
    load = SharedLoad(2)
    config = node_config(tmp_path)
    config.data_dir.mkdir(parents=True)
    index = Index(config.database)
    receiver = Receiver(lambda: config, Spool(config.data_dir / "spool"), index, ManualClock())
    ae, server = start_receiver(config, receiver, load.slot(0))
    try:
        port = int(server.server_address[1])
        first = associate(port)
        second = associate(port)  # waits out the hand-off, then is accepted here
        assert first.is_established and second.is_established
        assert load.loads() == [2, 0]
        first.release()
        second.release()
        wait_until(lambda: load.loads() == [0, 0], 30, "the associations to end")
    finally:
        ae.shutdown()
        receiver.close()
        index.close()
    assert load.loads() == [NOT_ACCEPTING, 0]
