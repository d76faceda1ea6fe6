"""Helpers of the reliability tests: the node as a process, raw DIMSE, PHI-laden studies."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml
from pydicom import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE

from dicom_node.network import ULTRASOUND_SOP_CLASSES
from tests.peers import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]

PHI = {
    "PatientName": "Quixotez^Wilhelmina",
    "PatientID": "PHI-ID-739184",
    "PatientBirthDate": "19380417",
    "AccessionNumber": "ACCPHI55213",
}
"""Patient identity no log line or metric may ever contain."""


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write a node configuration file."""
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class NodeProcess:
    """The node (with the test engine) as a child process, restartable after a kill.

    All runs append their JSON log lines to ``log``.
    """

    data_dir: Path
    config: Path
    log: Path
    archive: str | None = None
    port: int = field(default_factory=free_port)
    quiet_seconds: float = 1.0
    hold_file: Path | None = None
    metrics_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    def command(self) -> list[str]:
        """The command line of one run."""
        command = [sys.executable, "-m", "tests.reliability.launcher"]
        if self.hold_file is not None:
            command += ["--hold-file", str(self.hold_file)]
        if self.metrics_file is not None:
            command += ["--metrics-file", str(self.metrics_file)]
        command += ["--log-json", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--config", str(self.config)]
        command += ["--quiet-seconds", str(self.quiet_seconds)]
        if self.archive is not None:
            command += ["--archive", self.archive]
        return command

    def start(self, timeout: float = 60) -> None:
        """Start a run and wait until the receiver listens."""
        started = len(self.events("receiver_started"))
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.command(), stdout=out, stderr=out, cwd=REPO, env={**os.environ}
            )
        self.runs += 1

        def listening() -> bool:
            assert self.process is not None and self.process.poll() is None, self.tail()
            return len(self.events("receiver_started")) > started

        wait_until(listening, timeout, "the node to listen")

    def kill(self) -> None:
        """kill -9, and reap."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def alive(self) -> bool:
        """Whether the current run is still running."""
        return self.process is not None and self.process.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """The end of the log, for failure messages."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """JSON log events of every run so far (of one ``name`` if given)."""
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                found.append(event)
        return found


def requestor(calling: str = "MODALITY", contexts: Sequence[str] = ()) -> AE:
    """An SCU proposing the US storage classes (or ``contexts``) and Verification.

    Explicit and implicit VR little endian are proposed in separate contexts,
    so that a test chooses the encoding the node must read.
    """
    ae = AE(ae_title=calling)
    for uid in contexts or sorted(ULTRASOUND_SOP_CLASSES):
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
        ae.add_requested_context(uid, ImplicitVRLittleEndian)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def associate(port: int, called: str = "NODE", calling: str = "MODALITY") -> Association:
    """An association with a node on 127.0.0.1."""
    return requestor(calling).associate("127.0.0.1", port, ae_title=called)


def echo_ok(port: int, called: str = "NODE") -> bool:
    """Whether a fresh association gets C-ECHO Success: the node is up and serving."""
    assoc = associate(port, called)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return "Status" in status and int(status.Status) == 0
    finally:
        assoc.release()


def encode(ds: Dataset) -> bytes:
    """``ds`` encoded as Explicit VR Little Endian, without file meta."""
    buffer = BytesIO()
    bare = copy.copy(ds)
    del bare.file_meta
    dcmwrite(buffer, bare, implicit_vr=False, little_endian=True, enforce_file_format=False)
    return buffer.getvalue()


def store_request(payload: bytes, sop_class: str, sop_instance: str) -> C_STORE:
    """A C-STORE-RQ primitive (Message ID 1, low priority) with ``payload`` as its data set."""
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop_instance
    request.Priority = 2
    request.DataSet = BytesIO(payload)
    return request


def send_raw(
    assoc: Association,
    payload: bytes,
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> int | None:
    """C-STORE arbitrary bytes as the data set; the status, or ``None`` without an answer."""
    context = assoc._get_valid_context(sop_class, transfer_syntax, "scu")
    request = store_request(payload, sop_class, sop_instance)
    assoc._reactor_checkpoint.clear()
    wait_until(lambda: assoc._is_paused, 10, "the association reactor to pause", interval=0.0001)
    try:
        assoc.dimse.send_msg(request, int(context.context_id))
        _, response = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if response is None or response.Status is None:
        return None
    return int(response.Status)


def with_phi(ds: Dataset) -> Dataset:
    """``ds`` carrying the known patient identity of :data:`PHI`."""
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    return ds


class CountingStorageSCP:
    """A pynetdicom Storage SCP that answers every C-STORE with ``status`` and counts them.

    Parameters
    ----------
    port:
        Port on 127.0.0.1 (a free one when 0).
    status:
        The status to answer with (Success by default).
    ssl_context:
        Serve DICOM TLS with this context.
    """

    def __init__(self, port: int = 0, status: int = 0x0000, ssl_context: Any = None) -> None:
        self.port = port or free_port()
        self.status = status
        self.received: list[str] = []
        self._ae = AE(ae_title="COUNTER")
        self._ae.supported_contexts = AllStoragePresentationContexts
        self._ssl_context = ssl_context

    def _on_store(self, event: Any) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return self.status

    def __enter__(self) -> CountingStorageSCP:
        self._ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
            ssl_context=self._ssl_context,
        )
        return self

    def __exit__(self, *_: object) -> None:
        self._ae.shutdown()


class HungServer:
    """Accepts TCP connections on a port and never answers: a hung archive."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.accepted = 0
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                self._clients.append(self._server.accept()[0])
                self.accepted += 1
            except TimeoutError:
                continue

    def __enter__(self) -> HungServer:
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(8)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        for client in self._clients:
            client.close()
        self._server.close()
