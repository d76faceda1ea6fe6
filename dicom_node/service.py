"""The node in one process: receiver, dispatch worker, export workers and housekeeping
(retention).

Start-up reconciles the spool with the index (partial files, files without
rows, rows without files, jobs left running by a crash) and says what it did.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from dicom_node import __version__
from dicom_node.admin.configstore import ConfigStore
from dicom_node.balance import SharedLoad
from dicom_node.clock import Clock, SystemClock
from dicom_node.config import ConfigError, NodeConfig
from dicom_node.dispatch import Analyze, Build, Decode, Dispatcher
from dicom_node.export import Exporter, Sender, c_store_batch
from dicom_node.index import Index, InstanceMeta, Peer, shown_url, worker_name
from dicom_node.index.purge import result_paths
from dicom_node.metrics import SampleKey
from dicom_node.network import Receiver, start_receiver
from dicom_node.receivers import ReceiverProcesses
from dicom_node.retention import Retention
from dicom_node.spool import FOLDER_MODE, Spool

if TYPE_CHECKING:
    from dicom_node.admin.server import ApiServer

LOGGER = structlog.get_logger(__name__)

POLL_SECONDS = 0.5
"""How often idle workers look for work (wall time; correctness never depends on it)."""


FLUSH_SECONDS = 10.0
"""How long a dispatch step waits for the receiver's queued index rows."""


@dataclass(frozen=True)
class Reconciliation:
    """What start-up reconciliation did."""

    partial_files_removed: int
    files_indexed: int
    rows_without_files: int
    jobs_requeued: int
    jobs_failed: int
    removals_finished: int


@dataclass
class Stages:
    """The analysis stages the dispatcher runs (real ones, or test doubles)."""

    analyze: Analyze
    decode: Decode
    build: Build


def real_stages(config: NodeConfig) -> Stages:
    """The engines, decoder and result builders of the product."""
    from dicom_node import stages

    analyzer = stages.LazyAnalyzer(threads=config.inference_threads)
    return Stages(analyze=analyzer, decode=stages.decode, build=stages.build)


class Node:
    """Everything ``dicom-node serve`` runs.

    Parameters
    ----------
    config:
        The configuration; replace it with :meth:`reconfigure`.
    stages:
        Analysis stages; the real ones when omitted.
    clock:
        Time source for completion, retries and records.
    sender:
        C-STORE function of the exporter.
    config_path:
        YAML file that administrators' changes are saved to;
        ``<data_dir>/config.yaml`` when omitted.
    """

    def __init__(
        self,
        config: NodeConfig,
        stages: Stages | None = None,
        clock: Clock | None = None,
        sender: Sender = c_store_batch,
        config_path: Path | None = None,
    ) -> None:
        self._config = config
        self._config_lock = threading.Lock()
        self.clock = clock or SystemClock()
        try:
            config.data_dir.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            self.spool = Spool(config.data_dir / "spool")
            self.identity = self.spool.identity()
        except OSError as exc:
            raise ConfigError(f"data_dir {config.data_dir.absolute()}: cannot use it: "
                              f"{exc.strerror or exc}") from exc
        self.index = Index(config.database)
        self.stages = stages or real_stages(config)
        self.receiver = Receiver(self.config, self.spool, self.index, self.clock)
        self.dispatcher = Dispatcher(
            self.config,
            self.index,
            self.spool,
            self.clock,
            analyze=self.stages.analyze,
            decode=self.stages.decode,
            build=self.stages.build,
            worker=worker_name(self.identity, "dispatch"),
        )
        self.exporter = Exporter(self.config, self.index, self.clock, send=sender)
        self.retention = Retention(self.config, self.index, self.spool, self.clock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._export_threads: dict[str, threading.Thread] = {}
        self._server: object | None = None
        self._ae: object | None = None
        self.port: int | None = None
        self.config_store = ConfigStore(
            config_path or config.data_dir / "config.yaml", self.config, self.reconfigure
        )
        self.api: ApiServer | None = None
        self.receiver_processes: ReceiverProcesses | None = None
        self.load: SharedLoad | None = None
        """Connections held by each receiving process (with more than one)."""

    def config(self) -> NodeConfig:
        """The current configuration."""
        with self._config_lock:
            return self._config

    def reconfigure(self, config: NodeConfig) -> None:
        """Use ``config`` for new associations, jobs and exports from now on."""
        with self._config_lock:
            self._config = config
        if self.receiver_processes is not None:
            self.receiver_processes.reconfigure(config)
        LOGGER.info("configuration_changed", pipelines=[p.called_ae for p in config.pipelines])

    # -- start-up -----------------------------------------------------------------

    def reconcile(self) -> Reconciliation:
        """Make the index and the spool agree after a crash or a restart."""
        partial = self.spool.clear_temporary()
        indexed = self.index.indexed_paths()
        removals = self.retention.finish_interrupted(indexed | result_paths(self.index))
        on_disk = {str(p) for p in self.spool.instance_files()}
        added = sum(self._index_orphan(path) for path in sorted(on_disk - indexed))
        missing = self.index.forget_instances(sorted(indexed - on_disk))
        requeued, failed = self.index.requeue_interrupted_jobs(self.identity, self.clock.now())
        result = Reconciliation(partial, added, missing, requeued, failed, removals)
        LOGGER.info("spool_reconciled", **result.__dict__)
        return result

    def _index_orphan(self, path: str) -> int:
        """Index a spooled file that has no row (1, or 0 when it cannot be): never raises,
        since a start that fails on one file would fail at every start."""
        try:
            return self._index_spooled(path)
        except Exception as exc:  # a file the receiver accepted may still surprise pydicom
            LOGGER.warning("unindexable_spool_file", path=path, error=type(exc).__name__)
            return 0

    def _index_spooled(self, path: str) -> int:
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as exc:
            LOGGER.warning("unreadable_spool_file", path=path, error=type(exc).__name__)
            return 0
        meta = InstanceMeta(
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            modality=ds.get("Modality"),
            body_part=ds.get("BodyPartExamined") or None,
            study_description=ds.get("StudyDescription") or None,
            path=path,
            size_bytes=os.path.getsize(path),
        )
        return int(self.index.record_instance(meta, self._sender(ds), None, self.clock.now()))

    def _sender(self, ds: Dataset) -> Peer:
        """The association a spooled file came on, from its file meta information.

        Files spooled before the receiver recorded it there, or for a called
        AE title no longer configured, go to the first pipeline; an unrecorded
        caller is ``UNKNOWN``.
        """
        file_meta = ds.file_meta
        called = str(file_meta.get("ReceivingApplicationEntityTitle", "")).strip()
        config = self.config()
        if config.pipeline_for(called) is None:
            called = config.pipelines[0].called_ae if config.pipelines else config.ae_title
        calling = str(file_meta.get("SendingApplicationEntityTitle", "")).strip() or "UNKNOWN"
        address = urlsplit(str(file_meta.get("SendingPresentationAddress", "")))
        try:
            port = address.port or 0
        except ValueError:
            port = 0
        return Peer(calling_ae=calling, called_ae=called, host=address.hostname or "", port=port)

    # -- loops ------------------------------------------------------------------------

    def _loop(self, name: str, step: Callable[[], bool]) -> None:
        while not self._stop.is_set():
            try:
                busy = step()
            except Exception:
                LOGGER.exception("worker_error", worker=name)
                busy = False
            if not busy:
                self._stop.wait(POLL_SECONDS)

    def dispatch_step(self) -> bool:
        """Complete due studies and run one job, or else analyse one image ahead.

        Returns ``True`` if there was work.  Studies are judged with every
        instance this process has answered indexed (the receiver's writer is
        flushed first; while it cannot be, the index being down or far behind,
        no study is completed, lest one be judged without its last instances).
        Queued jobs come first: an image is analysed ahead of its study's
        completion (:mod:`dicom_node.ahead`) only when none waits.
        """
        if self.receiver.writer.flush(FLUSH_SECONDS):
            self.dispatcher.complete_due_studies()
        else:
            LOGGER.warning("completion_deferred", reason="received instances not yet indexed")
        self.dispatcher.resume_jobs_waiting_for_disk()
        return self.dispatcher.run_next_job() or self.dispatcher.analyse_ahead()

    def housekeeping_step(self) -> bool:
        """Remove the studies past their retention when a pass is due; never busy."""
        if self.retention.due():
            self.retention.run()
        return False

    def _supervise_exports(self) -> bool:
        for destination in self.index.destinations_with_work():
            thread = self._export_threads.get(destination)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(
                    target=self._loop,
                    args=(f"export:{destination}", self._export_step(destination)),
                    name=f"export-{destination}",
                    daemon=True,
                )
                self._export_threads[destination] = thread
                thread.start()
        return False

    def _export_step(self, destination: str) -> Callable[[], bool]:
        return lambda: self.exporter.run_destination(destination) > 0

    def start(self, workers: bool = True, api: bool = False) -> None:
        """Reconcile, then start the receiver, the admin API if asked, and the workers.

        Without workers, callers drive :meth:`dispatch_step` and the exporter
        themselves, which keeps tests deterministic.  The API listens on
        ``api_host:api_port`` of the configuration (port 0 disables it).
        """
        self.spool.lock()
        self.reconcile()
        self._warn_of_disk()
        count = self.config().receiver_count()
        self.load = load = SharedLoad(count) if count > 1 else None
        self._ae, server = start_receiver(self.config(), self.receiver,
                                          None if load is None else load.slot(0))
        self._server = server
        self.port = int(server.server_address[1])
        if load is not None:
            shared = self.config().model_copy(update={"port": self.port})
            assert server.socket is not None
            self.receiver_processes = ReceiverProcesses(shared, server.socket, load)
            self.receiver_processes.start()
        if api and self.config().api_port:
            self.start_api(self.config().api_host, self.config().api_port)
        self._log_start()
        if not workers:
            return
        steps = (("dispatch", self.dispatch_step), ("exports", self._supervise_exports),
                 ("housekeeping", self.housekeeping_step))
        for name, step in steps:
            thread = threading.Thread(target=self._loop, args=(name, step), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _log_start(self) -> None:
        """One line an administrator can check the running set-up against."""
        config = self.config()
        LOGGER.info(
            "node_started",
            version=__version__,
            config=str(self.config_store.path.absolute()),
            data_dir=str(config.data_dir.absolute()),
            index=shown_url(config.database),
            dicom_port=self.port,
            receiving_processes=self.receiving_processes(),
            api_port=self.api.port if self.api is not None else None,
            pipelines={p.called_ae: p.destinations for p in config.pipelines},
        )

    def _warn_of_disk(self) -> None:
        """Say at start when the spool cannot take studies (read-only, below the floor),
        and when other users may read the patient data under the data folder."""
        data_dir = self.config().data_dir
        mode = data_dir.stat().st_mode & 0o777
        if mode & 0o007:  # any user of the machine (a group is the administrator's choice)
            LOGGER.warning("data_dir_open_to_other_users", path=str(data_dir.absolute()),
                           mode=oct(mode), expected="0o700")
        problem = self.spool.write_problem()
        if problem is not None:
            LOGGER.error("spool_not_writable", path=str(self.spool.root), problem=problem)
        floor = self.config().limits.min_free_disk_mb * 1024 * 1024
        if self.spool.free_bytes() < floor:
            LOGGER.warning("below_disk_floor", path=str(self.spool.root),
                           free_mb=self.spool.free_bytes() // 2**20,
                           floor_mb=self.config().limits.min_free_disk_mb)

    def start_api(self, host: str, port: int) -> int:
        """Serve the admin REST API and status page; returns the port it listens on."""
        from dicom_node.admin.api import create_app
        from dicom_node.admin.server import ApiServer

        self.api = ApiServer(create_app(self), host, port)
        return self.api.start()

    def receiver_counters(self) -> dict[SampleKey, float]:
        """Prometheus counters of the extra receiver processes, summed (none without)."""
        if self.receiver_processes is None:
            return {}
        return self.receiver_processes.counter_values()

    def receiving_processes(self) -> int:
        """Processes receiving on the DICOM port, this one included."""
        extra = self.receiver_processes.alive() if self.receiver_processes is not None else 0
        return int(self.port is not None) + extra

    def is_running(self) -> bool:
        """Whether the receiver listens, the workers started live and no stop was requested."""
        workers_alive = all(thread.is_alive() for thread in self._threads)
        return self.port is not None and workers_alive and not self._stop.is_set()

    def stop(self) -> None:
        """Stop accepting, finish the current step of each worker, close the index."""
        self._stop.set()
        if self.api is not None:
            self.api.stop()
        if self._ae is not None:
            self._ae.shutdown()  # type: ignore[attr-defined]
        if self.receiver_processes is not None:
            self.receiver_processes.stop()
        self.receiver.close()
        for thread in self._threads:
            thread.join(timeout=30)
        # An export stuck on a hung peer is abandoned: it was not marked
        # delivered, so it is sent again after the restart.
        for thread in self._export_threads.values():
            thread.join(timeout=2)
        self.index.close()
        self.spool.unlock()
        LOGGER.info("node_stopped")

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return (safe from a signal handler)."""
        self._stop.set()

    def wait(self) -> None:
        """Block until :meth:`stop` is called from another thread or a signal."""
        self._stop.wait()
