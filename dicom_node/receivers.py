"""More receiver processes on the node's DICOM port (``receivers: N``).

One Python process receives at most about one core's worth of instances:
pynetdicom and the index run under one interpreter lock.  With
``receivers: N`` the node starts N - 1 extra processes that each run only the
Storage SCP, on the same port (``SO_REUSEPORT``: the kernel spreads new
associations over the listening processes), writing to the same spool and
index.  Completion, jobs, exports and the admin API stay in the main process.

Each extra receiver answers Success exactly as the main one does (file and
directory synced; its own index writer thread adds the row right after).
Limits such as ``max_associations`` apply per receiver process; configuration
changes reach the extra receivers through a queue; their Prometheus counters
are their own (not served by the admin API).
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from typing import Any

import structlog

from dicom_node.clock import SystemClock
from dicom_node.config import NodeConfig
from dicom_node.index import Index
from dicom_node.logs import configure_logging
from dicom_node.network import Receiver, start_receiver
from dicom_node.spool import Spool

LOGGER = structlog.get_logger(__name__)

STOP_SECONDS = 30.0
"""How long a receiver process may take to finish its associations on stop."""

START_SECONDS = 120.0
"""How long a receiver process may take to import the node and listen."""


def _follow(updates: Queue[NodeConfig | None], state: dict[str, NodeConfig]) -> None:
    """Apply configuration updates until ``None`` (stop) arrives."""
    while (config := updates.get()) is not None:
        state["config"] = config


def serve(config: NodeConfig, updates: Queue[NodeConfig | None], ready: Any) -> None:
    """Body of an extra receiver process: receive until told to stop.

    Parameters
    ----------
    config:
        The node's configuration, with the port the main process bound.
    updates:
        New configurations, then ``None`` to stop.
    ready:
        Event set once the process listens.
    """
    configure_logging()
    state = {"config": config}
    spool = Spool(config.data_dir / "spool")
    index = Index(config.database)
    receiver = Receiver(lambda: state["config"], spool, index, SystemClock())
    ae, _server = start_receiver(config, receiver)
    ready.set()
    _follow(updates, state)
    ae.shutdown()
    receiver.close()
    index.close()
    LOGGER.info("receiver_process_stopped")


class ReceiverProcesses:
    """The extra receiver processes of a node.

    Parameters
    ----------
    config:
        The configuration, with the port the main receiver is bound to.
    count:
        How many processes to start.
    """

    def __init__(self, config: NodeConfig, count: int) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._config = config
        self._count = count
        self._processes: list[tuple[SpawnProcess, Queue[Any]]] = []
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        """Start the processes and wait until each one listens.

        Raises
        ------
        RuntimeError
            If a process exits or does not listen in time (it is then stopped).
        """
        events = []
        for number in range(self._count):
            updates: Queue[Any] = self._context.Queue()
            ready = self._context.Event()
            process = self._context.Process(
                target=serve,
                args=(self._config, updates, ready),
                name=f"dicom-receiver-{number + 2}",
                daemon=True,
            )
            process.start()
            self._processes.append((process, updates))
            events.append(ready)
        if not all(event.wait(START_SECONDS) for event in events):
            self.stop()
            raise RuntimeError("an extra receiver process did not start listening")
        LOGGER.info("receiver_processes_started", count=self._count, port=self._config.port)

    def alive(self) -> int:
        """How many of the processes are running."""
        return sum(process.is_alive() for process, _ in self._processes)

    def reconfigure(self, config: NodeConfig) -> None:
        """Send a new configuration (the port stays the one bound at start)."""
        with self._lock:
            if self._stopped:
                return
            self._config = config.model_copy(update={"port": self._config.port})
            for _, updates in self._processes:
                updates.put(self._config)

    def stop(self) -> None:
        """Ask every process to finish its associations and exit; kill stragglers."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        for _, updates in self._processes:
            updates.put(None)
        for process, updates in self._processes:
            process.join(STOP_SECONDS)
            if process.is_alive():
                LOGGER.warning("receiver_process_killed", pid=process.pid)
                process.kill()
                process.join()
            updates.close()
