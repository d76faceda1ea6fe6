"""Receivers under test (DCMTK storescp, Orthanc, the node) and the storescu sender.

Every peer runs with ``TCP_NODELAY=1`` so that DCMTK and Orthanc do not wait
on delayed ACKs (Debian builds leave Nagle's algorithm on otherwise); the
node sets TCP_NODELAY on its accepted sockets itself.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.peers import free_port, run_orthanc

NODELAY_ENV: Mapping[str, str] = {**os.environ, "TCP_NODELAY": "1"}
"""Environment of every DCMTK and Orthanc process."""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Receiver:
    """A running receiver: where to send, and how to read its cost."""

    name: str
    ae_title: str
    port: int
    pids: list[int]
    storage: Path
    count_stored: Any = field(repr=False)
    """Callable returning how many instances the receiver holds."""

    def cpu_seconds(self) -> float:
        """CPU time used so far by the receiver's processes and their children."""
        total = 0
        for pid in {*self.pids, *(c for p in self.pids for c in _children(p))}:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        return total / CLOCK_TICKS

    def peak_rss_mib(self) -> float:
        """Peak resident set size (VmHWM) of the receiver's main process, in MiB."""
        return peak_rss_mib(self.pids[0])


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (e.g. the node's extra receivers)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return children


def peak_rss_mib(pid: int) -> float:
    """VmHWM of ``pid`` in MiB (0 if the process is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mib(pid: int) -> float:
    """Current resident set size (VmRSS) of ``pid`` in MiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (the node's extra receivers and helpers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(_children(current))
    return found


def tree_rss_mib(pid: int) -> float:
    """Summed VmRSS of ``pid`` and its descendants, in MiB."""
    return sum(rss_mib(p) for p in tree_pids(pid))


def tree_peak_rss_mib(pid: int) -> float:
    """Summed VmHWM of ``pid`` and its descendants, in MiB: an upper bound of their
    joint peak, since each process peaks at its own time."""
    return sum(peak_rss_mib(p) for p in tree_pids(pid))


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``.

    Raises
    ------
    RuntimeError
        If the process exits first or the timeout passes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _count_files(folder: Path, pattern: str) -> int:
    return sum(1 for _ in folder.rglob(pattern))


@contextmanager
def run_storescp(workdir: Path, fork: bool) -> Iterator[Receiver]:
    """DCMTK storescp with its default writes (no fsync), ``--fork`` for concurrency."""
    storage = workdir / "storescp"
    storage.mkdir(parents=True)
    port = free_port()
    command = ["storescp", "+xa", "-aet", "STORESCP", "-od", str(storage)]
    if fork:
        command.append("--fork")
    command.append(str(port))
    with open(workdir / "storescp.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=dict(NODELAY_ENV))
    try:
        wait_for_port(port, process)
        yield Receiver(
            "storescp",
            "STORESCP",
            port,
            [process.pid],
            storage,
            lambda: _count_files(storage, "*"),
        )
    finally:
        _stop(process)


@contextmanager
def run_minimal_scp(workdir: Path) -> Iterator[Receiver]:
    """The minimal pynetdicom SCP of :mod:`benchmarks.minimal_scp` (file fsync only)."""
    storage = workdir / "minimal"
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.minimal_scp", str(port), str(storage)]
    with open(workdir / "minimal.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        wait_for_port(port, process)
        yield Receiver(
            "pynetdicom",
            "MINIMAL",
            port,
            [process.pid],
            storage,
            lambda: _count_files(storage, "*.dcm"),
        )
    finally:
        _stop(process)


@contextmanager
def run_orthanc_receiver(workdir: Path) -> Iterator[Receiver]:
    """Orthanc configured like the tests' archive (SyncStorageArea: it fsyncs)."""
    with run_orthanc(workdir / "orthanc") as orthanc:
        yield Receiver(
            "orthanc",
            orthanc.ae_title,
            orthanc.dicom_port,
            [orthanc.process.pid],
            workdir / "orthanc" / "storage",
            lambda: int(orthanc.get("/statistics")["CountInstances"]),
        )


def node_config(
    workdir: Path,
    port: int,
    overrides: Mapping[str, Any],
    archive: Mapping[str, Any] | None,
    quiet_seconds: float = 3600,
    analyse_ahead: bool = False,
) -> dict[str, Any]:
    """A node configuration for the benchmarks (dotted ``overrides`` keys allowed).

    The default quiet period, and no analysis ahead of completion unless
    ``analyse_ahead``, keep the engines out of ingest measurements.
    """
    config: dict[str, Any] = {
        "ae_title": "NODE",
        "host": "127.0.0.1",
        "port": port,
        "api_port": free_port(),
        "data_dir": str(workdir / "var"),
        "limits": {"min_free_disk_mb": 256},
        "destinations": [],
        "pipelines": [{"called_ae": "NODE", "completion": {"quiet_seconds": quiet_seconds}}],
    }
    if not analyse_ahead:
        config["analysis_ahead_mb"] = 0
    if archive is not None:
        config["destinations"] = [{"name": "archive", **archive}]
        config["pipelines"][0]["destinations"] = ["archive"]
    for dotted, value in overrides.items():
        target = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return config


@contextmanager
def run_node(
    workdir: Path,
    name: str = "node",
    overrides: Mapping[str, Any] | None = None,
    source: Path | None = None,
    archive: Mapping[str, Any] | None = None,
    quiet_seconds: float = 3600,
    analyse_ahead: bool = False,
) -> Iterator[Receiver]:
    """``dicom-node serve`` in its own process, with full durability (fsync + index).

    Parameters
    ----------
    workdir:
        Folder for the configuration, spool, index and log.
    name:
        Label of this node variant in tables.
    overrides:
        Configuration values, dotted keys (``limits.max_pdu``).
    source:
        A source tree (with ``dicom_node/``) to run instead of the installed
        package, e.g. an earlier revision extracted with ``git archive``.
    archive:
        ``ae_title``/``host``/``port`` of the destination of results.
    quiet_seconds:
        Quiet period that completes a study.
    analyse_ahead:
        Whether images are analysed while their study is still arriving.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = node_config(workdir, port, overrides or {}, archive, quiet_seconds, analyse_ahead)
    config_path = workdir / "node.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    command = [sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(config_path)]
    with open(workdir / "node.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=workdir)
    spool = workdir / "var" / "spool" / "studies"

    def durable_and_indexed() -> int:
        with closing(sqlite3.connect(workdir / "var" / "index.sqlite")) as db:
            rows = int(db.execute("SELECT count(*) FROM instances").fetchone()[0])
        return min(rows, _count_files(spool, "*.dcm"))

    try:
        wait_for_port(port, process)
        # The admin API starts after the DICOM port: wait until start-up is over.
        wait_for_port(config["api_port"], process)
        yield Receiver(name, "NODE", port, [process.pid], spool, durable_and_indexed)
    finally:
        _stop(process)


def storescu_command(
    port: int, files: Sequence[Path], called: str, calling: str = "STORESCU"
) -> list[str]:
    """The storescu command line sending ``files`` over one association."""
    return [
        "storescu",
        "-aec",
        called,
        "-aet",
        calling,
        "--propose-jpeg8",
        "--required",
        "127.0.0.1",
        str(port),
        *map(str, files),
    ]


def send_concurrently(receiver: Receiver, batches: Sequence[Sequence[Path]]) -> float:
    """Send each batch over its own association, all at once; return the wall seconds.

    Raises
    ------
    RuntimeError
        If a storescu exits with an error.
    """
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            storescu_command(receiver.port, batch, receiver.ae_title),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(NODELAY_ENV),
        )
        for batch in batches
    ]
    errors = []
    for process in processes:
        _, stderr = process.communicate(timeout=900)
        if process.returncode != 0:
            errors.append(stderr.decode(errors="replace")[-500:])
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"storescu failed on {receiver.name}: {errors[0]}")
    return elapsed
