"""More receiver processes on the node's DICOM port (``receivers: N``).

One Python process receives at most about one core's worth of instances:
pynetdicom and the index run under one interpreter lock.  With
``receivers: N`` the node starts N - 1 extra processes that each run only the
Storage SCP, accepting from the socket the main process listens on, writing to
the same spool and index.  A new association goes to the process holding the
fewest (:mod:`dicom_node.balance`).  Completion, jobs, exports and the admin
API stay in the main process.

Each extra receiver answers Success exactly as the main one does (file and
directory synced; its own index writer thread adds the row right after).
Limits such as ``max_associations`` apply per receiver process.  Configuration
changes reach the extra receivers through a queue.  They log as the main
process does (JSON in production), and the main process asks them for their
Prometheus counters whenever it is scraped, so ``/metrics`` counts every
process.  An extra receiver exits when the main process does, even when that
one was killed, so a restarted node never shares its port with a stale one; on
SIGTERM or SIGINT it shuts down as when the main process stops it.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.connection
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from typing import Any

import structlog

from dicom_node.balance import SharedLoad
from dicom_node.clock import SystemClock
from dicom_node.config import NodeConfig
from dicom_node.index import Index
from dicom_node.logs import LogSettings, configure_logging, current_settings
from dicom_node.metrics import SampleKey, counter_values
from dicom_node.network import Receiver, start_receiver
from dicom_node.spool import Spool

LOGGER = structlog.get_logger(__name__)

STOP_SECONDS = 30.0
"""How long a receiver process may take to finish its associations on stop."""

START_SECONDS = 120.0
"""How long a receiver process may take to import the node and listen."""

METRICS_SECONDS = 2.0
"""How long a scrape waits for an extra receiver's counters before leaving them out."""


READY = "ready"
"""What an extra receiver sends on its pipe once it listens."""


def _follow(updates: Queue[NodeConfig | None], state: dict[str, NodeConfig],
            stop: threading.Event) -> None:
    """Apply configuration updates until ``None`` arrives, then set ``stop``."""
    while (config := updates.get()) is not None:
        state["config"] = config
    stop.set()


def _answer_counters(conn: Connection) -> None:
    """Answer each request number from the main process with this process's counters."""
    while True:
        try:
            number = conn.recv()
            conn.send((number, counter_values()))
        except (EOFError, OSError):
            return


def _stop_with_parent(stop: threading.Event) -> None:
    """Set ``stop`` once the main process has ended, however it ended.

    Nothing shared with the main process is touched on the way: a lock it held
    when it was killed stays locked.
    """
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        stop.set()


def serve(config: NodeConfig, listening: socket.socket, load: SharedLoad, number: int,
          updates: Queue[NodeConfig | None], counters: Connection,
          log_settings: LogSettings) -> None:
    """Body of an extra receiver process: receive until told to stop.

    Parameters
    ----------
    config:
        The node's configuration, with the port the main process bound.
    listening:
        The socket the main process listens on.
    load:
        The connections held by each receiving process.
    number:
        This process's place in ``load``.
    updates:
        New configurations, then ``None`` to stop.
    counters:
        Where this process says :data:`READY` once it listens, and where the main
        process then asks for its Prometheus counters.
    log_settings:
        The main process's logging configuration.
    """
    # Stopped by the main process through ``updates``, by its death, or by SIGTERM or
    # Ctrl-C (systemd and terminals signal the whole group; multiprocessing's exit
    # handler terminates daemonic children): each path ends in the same shutdown.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    configure_logging(json=log_settings.json, level=log_settings.level)
    state = {"config": config}
    spool = Spool(config.data_dir / "spool")
    index = Index(config.database)
    receiver = Receiver(lambda: state["config"], spool, index, SystemClock())
    ae, _server = start_receiver(config, receiver, load.slot(number), listening)
    try:
        counters.send(READY)
    except OSError:  # the main process is gone already
        stop.set()
    for target, arguments in ((_follow, (updates, state, stop)), (_answer_counters, (counters,)),
                              (_stop_with_parent, (stop,))):
        threading.Thread(target=target, args=arguments, daemon=True).start()
    stop.wait()
    ae.shutdown()
    receiver.close()
    index.close()
    LOGGER.info("receiver_process_stopped")


def _ready(conn: Connection, deadline: float) -> bool:
    """Whether the process at the other end of ``conn`` said it listens by ``deadline``
    (``False`` at once if it exited)."""
    try:
        return conn.poll(max(0.0, deadline - time.monotonic())) and conn.recv() == READY
    except (EOFError, OSError):
        return False


class ReceiverProcesses:
    """The extra receiver processes of a node.

    Parameters
    ----------
    config:
        The configuration, with the port the main receiver is bound to.
    listening:
        The main receiver's listening socket, which the processes accept from.
    load:
        The connections held by each receiving process; the main process is
        number 0, the extra ones 1 to ``len(load.loads()) - 1``.
    """

    def __init__(self, config: NodeConfig, listening: socket.socket, load: SharedLoad) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._config = config
        self._listening = listening
        self._load = load
        self._count = len(load.loads()) - 1
        self._processes: list[tuple[SpawnProcess, Queue[Any], Connection]] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._requests = itertools.count()

    def start(self) -> None:
        """Start the processes and wait until each one listens.

        Raises
        ------
        RuntimeError
            If a process exits or does not listen in time (it is then stopped).
        """
        for number in range(1, self._count + 1):
            updates: Queue[Any] = self._context.Queue()
            ours, theirs = self._context.Pipe()
            process = self._context.Process(
                target=serve,
                args=(self._config, self._listening, self._load, number, updates, theirs,
                      current_settings()),
                name=f"dicom-receiver-{number + 1}",
                daemon=True,
            )
            process.start()
            LOGGER.info("receiver_process_spawned", pid=process.pid)
            theirs.close()
            self._processes.append((process, updates, ours))
        deadline = time.monotonic() + START_SECONDS
        if not all(_ready(conn, deadline) for _, _, conn in self._processes):
            self.stop()
            raise RuntimeError("an extra receiver process did not start listening")
        LOGGER.info("receiver_processes_started", count=self._count, port=self._config.port)

    def pids(self) -> list[int]:
        """Process IDs of the started processes."""
        return [process.pid for process, _, _ in self._processes if process.pid is not None]

    def alive(self) -> int:
        """How many of the processes are running (the others no longer get associations)."""
        running = 0
        for number, (process, _, _) in enumerate(self._processes, start=1):
            if process.is_alive():
                running += 1
            else:
                self._load.retire(number)
        return running

    def counter_values(self) -> dict[SampleKey, float]:
        """The Prometheus counters of the running processes, summed.

        A process that does not answer within :data:`METRICS_SECONDS` is left
        out of this scrape (and logged).
        """
        total: dict[SampleKey, float] = {}
        with self._lock:
            if self._stopped:
                return total
            for process, _, conn in self._processes:
                for key, value in self._ask(process, conn).items():
                    total[key] = total.get(key, 0.0) + value
        return total

    def _ask(self, process: SpawnProcess, conn: Connection) -> dict[SampleKey, float]:
        number = next(self._requests)
        try:
            conn.send(number)
            while conn.poll(METRICS_SECONDS):
                answered, values = conn.recv()
                if answered == number:
                    return values
        except (EOFError, OSError):
            pass
        LOGGER.warning("receiver_counters_unavailable", pid=process.pid)
        return {}

    def reconfigure(self, config: NodeConfig) -> None:
        """Send a new configuration (the port stays the one bound at start)."""
        with self._lock:
            if self._stopped:
                return
            self._config = config.model_copy(update={"port": self._config.port})
            for _, updates, _ in self._processes:
                updates.put(self._config)

    def stop(self) -> None:
        """Ask every process to finish its associations and exit; kill stragglers."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        for _, updates, _ in self._processes:
            updates.put(None)
        for process, updates, conn in self._processes:
            process.join(STOP_SECONDS)
            if process.is_alive():
                LOGGER.warning("receiver_process_killed", pid=process.pid)
                process.kill()
                process.join()
            updates.close()
            conn.close()
