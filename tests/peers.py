"""Real peers started by the tests: Orthanc as the archive, DCMTK as the modality.

Each helper binds to 127.0.0.1 where the program allows it (Orthanc 1.10 has
no bind-address setting: its DICOM port listens on every interface, its HTTP
server refuses remote clients) on free ports, and stops what it started.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` seconds.

    The one place the tests wait for another process or thread: a condition
    with a deadline, never a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def start_logged(
    command: Sequence[str],
    log: Path,
    ready: bytes,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output in ``log``; return once ``ready`` is logged.

    Fails with the log if the process exits or ``ready`` does not appear in time.
    """
    with open(log, "wb") as out:
        process = subprocess.Popen(list(command), stdout=out, stderr=out, env=env)

    def started() -> bool:
        assert process.poll() is None, log.read_text()
        return ready in log.read_bytes()

    wait_until(started, timeout, f"{ready.decode()} from {command[0]}", interval=0.1)
    return process


def require(*programs: str) -> None:
    """Skip the test when a program is missing (CI installs them all)."""
    for program in programs:
        if shutil.which(program) is None and not Path(program).exists():
            pytest.skip(f"{program} is not installed")


@dataclass
class Orthanc:
    """A running Orthanc and its REST API."""

    ae_title: str
    dicom_port: int
    http_port: int
    process: subprocess.Popen[bytes]

    def get(self, path: str) -> Any:
        """GET a REST resource as JSON."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def get_bytes(self, path: str) -> bytes:
        """GET a REST resource as bytes."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return bytes(response.read())

    def instances_of_modality(self, modality: str) -> list[str]:
        """Orthanc ids of the stored instances whose series has ``modality``."""
        found = []
        for series_id in self.get("/series"):
            series = self.get(f"/series/{series_id}")
            if series["MainDicomTags"].get("Modality") == modality:
                found.extend(series["Instances"])
        return found

    def wait_for(self, modality: str, count: int, timeout: float = 120) -> list[str]:
        """Wait until ``count`` instances of ``modality`` are stored; return their ids."""
        found: list[str] = []

        def stored() -> bool:
            found[:] = self.instances_of_modality(modality)
            return len(found) >= count

        wait_until(stored, timeout, f"{count} {modality} instance(s) in Orthanc", interval=0.25)
        return found


@contextmanager
def run_orthanc(
    workdir: Path, ae_title: str = "ORTHANC", dicom_port: int | None = None
) -> Iterator[Orthanc]:
    """Start Orthanc with its storage in ``workdir`` (DICOM on ``dicom_port`` if given)."""
    require(ORTHANC)
    workdir.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = dicom_port or free_port(), free_port()
    config = {
        "Name": "test-archive",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "DicomCheckCalledAet": False,
        "SyncStorageArea": True,
        "Plugins": [],
        "HttpServerEnabled": True,
        "DicomServerEnabled": True,
        "StableAge": 1,
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    env = {**os.environ, "TCP_NODELAY": "1"}
    with open(workdir / "orthanc.log", "wb") as log:
        process = subprocess.Popen([ORTHANC, str(config_path)], stdout=log, stderr=log, env=env)
    orthanc = Orthanc(ae_title, dicom_port, http_port, process)
    try:

        def answering() -> bool:
            assert process.poll() is None, (workdir / "orthanc.log").read_text()[-2000:]
            try:
                orthanc.get("/system")
            except OSError:
                return False
            return True

        wait_until(answering, 30, "Orthanc's REST API", interval=0.1)
        yield orthanc
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


STORESCU_PROPOSAL = {
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.4.100": "-xm",
    "1.2.840.10008.1.2.4.101": "-xh",
    "1.2.840.10008.1.2.4.102": "-xn",
    "1.2.840.10008.1.2.4.103": "-xl",
    "1.2.840.10008.1.2.4.104": "-x2",
    "1.2.840.10008.1.2.4.105": "-x3",
    "1.2.840.10008.1.2.4.106": "-xo",
    "1.2.840.10008.1.2.4.107": "-x4",
    "1.2.840.10008.1.2.4.108": "-x5",
}
"""storescu's option proposing a file's transfer syntax (it cannot transcode
compressed data, so it must propose what the file holds)."""


def proposal_option(files: Sequence[Path]) -> str:
    """The storescu option proposing the files' compressed transfer syntax.

    Raises
    ------
    ValueError
        If the files need two different compressed syntaxes (storescu cannot
        transcode; send them in two runs).
    """
    from pydicom import dcmread

    options = {
        STORESCU_PROPOSAL.get(str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID))
        for f in files
    } - {None}
    if len(options) > 1:
        raise ValueError(f"files need different storescu proposals: {sorted(options)}")
    return options.pop() if options else "-x="


def storescu(
    port: int,
    files: Sequence[Path],
    called: str = "DICOM_NODE",
    calling: str = "STORESCU",
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Send ``files`` with DCMTK's storescu over one association.

    Without a ``-x...`` option in ``extra``, the one matching the files'
    transfer syntax is chosen (see :func:`proposal_option`).
    """
    require("storescu")
    if not any(option.startswith("-x") for option in extra):
        extra = [*extra, proposal_option(files)]
    command = [
        "storescu",
        "-aec",
        called,
        "-aet",
        calling,
        "--required",
        *extra,
        "127.0.0.1",
        str(port),
        *map(str, files),
    ]
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, check=False
    )


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines ``dciodvfy -new`` prints for ``path``."""
    require("dciodvfy")
    completed = subprocess.run(
        ["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    output = completed.stdout + completed.stderr
    return [line for line in output.splitlines() if line.startswith("Error")]


def _postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@contextmanager
def run_postgres() -> Iterator[str]:
    """Start a throw-away PostgreSQL server on a free loopback port; yield its URL.

    As root the server runs as the ``postgres`` system user (PostgreSQL refuses
    to run as root); otherwise as the current user.
    """
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    import pwd
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="node-pg-", dir="/tmp"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*command: str) -> None:
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "node", "--auth=trust", "-E", "UTF8")
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "log"),
        "-w",
        "-o",
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}",
        "start",
    )
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "node", "node")
        yield f"postgresql+psycopg2://node@127.0.0.1:{port}/node"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
