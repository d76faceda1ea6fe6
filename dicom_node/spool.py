"""The durable spool: received instances on disk before we say Success.

Each instance is written to a temporary file, flushed and fsync'd, renamed
into ``studies/<study>/<series>/<sop>.dcm`` and its directory fsync'd.  A
repeated SOP Instance UID is not written twice.

A large data set is written while it arrives (a :class:`SpoolPart`,
:mod:`dicom_node.store_request`), so the node does not hold it in memory; the
write-back of what was written is started every :data:`WRITEBACK_BYTES`, so
the fsync before Success waits only for the last piece.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import mmap
import os
import re
import shutil
import socket
import sys
import threading
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

LOGGER = structlog.get_logger(__name__)

UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
"""Characters and form of a UID (PS3.5 9.1), leading zeros tolerated; matched whole
with ``fullmatch`` (``$`` would let a trailing newline through)."""

IDENTITY_FILE = "node-identity"
"""File in the spool's root holding the node's name in its jobs (:meth:`Spool.identity`)."""

LOCK_FILE = "node.lock"
"""File in the spool's root locked by the node that uses the spool (:meth:`Spool.lock`),
holding its process id."""

FILE_MODE = 0o600
"""Mode of the files the spool makes: they hold patient data, for the node's user only."""

FOLDER_MODE = 0o700
"""Mode of the folders the spool makes (studies, series, results)."""


class SpoolError(OSError):
    """An instance could not be made durable."""


class SpoolInUse(RuntimeError):
    """Another process holds the spool's lock: a second node on the same data folder
    would delete the first one's partial files and take over its running jobs."""


class BelowFloor(OSError):
    """A data set arriving would take the spool's free disk below the floor kept free
    (``limits.min_free_disk_mb``); what was written of it is dropped."""

    def __init__(self) -> None:
        super().__init__(errno.ENOSPC, "free disk below the floor")


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` is a UID we can use as a file name (digits and dots, <= 64)."""
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(UID_PATTERN.fullmatch(value))


WRITEBACK_BYTES = 256 * 1024
"""How much a spool part writes between two starts of its write-back."""

SYNC_FILE_RANGE_WRITE = 2
"""``sync_file_range`` flag: start the write-back of dirty pages, do not wait."""

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _start_writeback(fd: int, offset: int, count: int) -> None:
    """Start writing a range of a file to disk without waiting for it (Linux's
    ``sync_file_range``); elsewhere nothing, and the fsync does it all."""
    if _LIBC is not None:
        _LIBC.sync_file_range(
            fd, ctypes.c_longlong(offset), ctypes.c_longlong(count), SYNC_FILE_RANGE_WRITE
        )


def _free_bytes(fd: int) -> int:
    """Free bytes for unprivileged users on the file system of the open file ``fd``."""
    stat = os.fstatvfs(fd)
    return stat.f_bavail * stat.f_frsize


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SpooledFile:
    """Where an instance lies and whether this call wrote it."""

    path: Path
    created: bool
    size: int


@dataclass(frozen=True)
class RemovedFiles:
    """What :meth:`Spool.remove` deleted."""

    files: int
    bytes: int


class SpoolPart:
    """A file being written in the spool's temporary folder, not yet durable: a
    header, then data.

    A failed write (disk full, I/O error) is kept (:attr:`error`) and raised by
    :meth:`Spool.commit`; nothing more is written after it.  With write-back and a
    ``floor`` above 0, free disk is looked at before each write that reaches the next
    write-back start: one that would leave less than ``floor`` bytes free fails the
    part with :class:`BelowFloor`, so that data sets arriving together do not fill
    the disk before any of them is checked.  It may be
    discarded from another thread than the one appending (an association
    that ends while a data set arrives).
    """

    def __init__(self, path: Path, header: bytes, writeback: bool = False,
                 floor: int = 0) -> None:
        self.path = path
        self.writeback = writeback
        self.floor = floor
        self.header_size = len(header)
        self.size = 0
        self.committed = False
        self.error: OSError | None = None
        self._lock = threading.Lock()
        self._started = 0
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            self.error = exc
        self.append(header)

    @contextlib.contextmanager
    def data(self) -> Iterator[memoryview]:
        """The data written after the header, mapped from the file (not read into
        memory); the view is released when the context ends.

        Raises
        ------
        OSError
            If a write failed, the part was discarded, or the file cannot be mapped.
        """
        with self._lock:
            if self.error is not None:
                raise self.error
            if self._fd is None:
                raise OSError(errno.EBADF, "spool part discarded")
            mapped = mmap.mmap(self._fd, self.size, access=mmap.ACCESS_READ) if self.size else None
        whole = memoryview(mapped if mapped is not None else b"")
        view = whole[self.header_size:]
        try:
            yield view
        finally:
            # A slice of the view still referenced (an exception's traceback, say)
            # keeps the mapping open: it is then unmapped when collected.
            with contextlib.suppress(BufferError):
                view.release()
                whole.release()
                if mapped is not None:
                    mapped.close()

    def append(self, data: bytes | memoryview) -> None:
        """Write ``data`` after what was written; start the write-back of every
        :data:`WRITEBACK_BYTES` written.  With write-back, a write that reaches the next
        start is first checked against the floor: below it, what was written is
        truncated away at once, and the part fails with :class:`BelowFloor`."""
        with self._lock:
            if self._fd is None or self.error is not None:
                return
            try:
                with memoryview(data) as view:
                    if (self.writeback and self.floor > 0
                            and self.size + len(view) - self._started >= WRITEBACK_BYTES
                            and _free_bytes(self._fd) - len(view) < self.floor):
                        os.ftruncate(self._fd, 0)
                        raise BelowFloor()
                    written = 0
                    while written < len(view):
                        written += os.write(self._fd, view[written:])
                self.size += written
                if self.writeback and self.size - self._started >= WRITEBACK_BYTES:
                    _start_writeback(self._fd, self._started, self.size - self._started)
                    self._started = self.size
            except OSError as exc:
                self.error = exc

    def sync(self) -> None:
        """Wait until everything written is on disk; close the file.

        Raises
        ------
        OSError
            The first failed write, the failure of the fsync itself, or EBADF if
            the part was discarded.
        """
        with self._lock:
            fd, self._fd = self._fd, None
        try:
            if self.error is not None:
                raise self.error
            if fd is None:
                raise OSError(errno.EBADF, "spool part discarded")
            os.fsync(fd)
        finally:
            if fd is not None:
                os.close(fd)

    def discard(self) -> None:
        """Close and delete the file, unless it was committed."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        if not self.committed:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as exc:
                # A read-only or failing file system: the part, if it was made at all, is
                # removed with the others at the next start (Spool.clear_temporary).
                LOGGER.warning("spool_part_not_removed", error=exc.strerror)


class Spool:
    """The spool folder under the node's data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.studies = root / "studies"
        self.tmp = root / "tmp"
        self.results = root / "results"
        self.purge = root / "purge"
        self._lock_fd: int | None = None
        root.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        for folder in (self.studies, self.tmp, self.results, self.purge):
            folder.mkdir(mode=FOLDER_MODE, exist_ok=True)

    def lock(self) -> None:
        """Hold the spool for this process until :meth:`unlock` or its exit (an advisory
        ``flock``, which the kernel drops when the process dies, crash included).

        Raises
        ------
        SpoolInUse
            If another process holds it, naming that process.
        """
        path = self.root / LOCK_FILE
        # Held open for reading only: a file open for writing would keep the file system
        # from being remounted read-only (the node must then refuse, not block the remount).
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            # A read-only spool: no node can write to it, and the start reports it.
            LOGGER.warning("spool_lock_unavailable", path=str(path), error=exc.strerror)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise SpoolInUse(
                f"{self.root} is in use by another dicom-node process (pid {holder}); "
                "stop it, or give this one another data_dir"
            ) from None
        self._lock_fd = fd
        with contextlib.suppress(OSError):  # the pid is for the message only
            path.write_text(f"{os.getpid()}\n", encoding="ascii")

    def unlock(self) -> None:
        """Release the lock :meth:`lock` took (nothing when it holds none)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def identity(self) -> str:
        """The node's name in the jobs it runs, kept in the spool's root (made on first use).

        A job is the spool's instances, so the name goes with the spool: a node that
        restarts, or whose container is recreated with another host name on the same
        spool volume, finds the same name and recognises the jobs it left running (see
        :meth:`dicom_node.index.Index.requeue_interrupted_jobs`).
        """
        path = self.root / IDENTITY_FILE
        if not path.exists():
            self.write(path, f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}".encode("ascii"))
        return path.read_text(encoding="ascii").strip()

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """Final path of an instance.

        Raises
        ------
        ValueError
            If a UID is not usable as a file name.
        """
        for uid in (study_uid, series_uid, sop_uid):
            if not is_valid_uid(uid):
                raise ValueError(f"invalid UID {uid!r}")
        return self.studies / study_uid / series_uid / f"{sop_uid}.dcm"

    def _make_dirs(self, folder: Path) -> None:
        """Create ``folder`` and fsync each parent whose entries changed."""
        missing = []
        current = folder
        while not current.exists():
            missing.append(current)
            current = current.parent
        for directory in reversed(missing):
            directory.mkdir(mode=FOLDER_MODE, exist_ok=True)
            _fsync_dir(directory.parent)

    def begin(self, header: bytes, *parts: bytes, writeback: bool = False,
              floor: int = 0) -> SpoolPart:
        """A temporary file holding ``header`` and ``parts``, one after the other, for
        :meth:`commit`; more can be appended.  With ``writeback``, the write-back of
        every :data:`WRITEBACK_BYTES` appended is started at once (for data arriving
        over time; data written at once is left to the fsync), and the part fails
        once free disk is below ``floor`` bytes (:class:`BelowFloor`)."""
        part = SpoolPart(self.tmp / f"{uuid.uuid4().hex}.part", header, writeback, floor)
        for data in parts:
            part.append(data)
        return part

    def write(self, path: Path, *parts: bytes) -> SpooledFile:
        """Durably write ``parts``, one after the other, to ``path`` unless it already exists.

        Raises
        ------
        SpoolError
            As :meth:`commit`.
        """
        return self.commit(self.begin(b"", *parts), path)

    def commit(self, part: SpoolPart, path: Path) -> SpooledFile:
        """Make ``part`` durable at ``path``, unless ``path`` already exists, or the same
        instance in another series of its study (then the part is deleted and the
        existing file reported).

        Raises
        ------
        SpoolError
            If the data could not be written and synced (disk full, I/O error);
            nothing is left at ``path`` in that case.
        """
        existing = self._existing(path)
        if existing is not None:
            return self._duplicate(part, existing)
        try:
            part.sync()
            self._link(part.path, path)
        except FileExistsError:
            return self._duplicate(part, path)
        except OSError as exc:
            part.discard()
            raise SpoolError(exc.errno, f"cannot spool instance: {exc.strerror}") from exc
        part.committed = True
        part.path.unlink(missing_ok=True)
        try:
            _fsync_dir(path.parent)
        except OSError as exc:
            raise SpoolError(exc.errno, f"cannot spool instance: {exc.strerror}") from exc
        return SpooledFile(path=path, created=True, size=part.size)

    def _existing(self, path: Path) -> Path | None:
        """``path`` when it exists, or for an instance the same SOP Instance UID in
        another series of its study: the index keeps one instance per UID in a study
        (the first), so a second copy would never be indexed, analysed or removed."""
        if path.exists():
            return path
        series = path.parent
        if series.parent.parent != self.studies:
            return None
        try:
            folders = list(os.scandir(series.parent))
        except FileNotFoundError:
            return None
        others = (Path(f.path, path.name) for f in folders if f.name != series.name)
        return next((other for other in others if other.exists()), None)

    def _link(self, source: Path, path: Path) -> None:
        """Link ``source`` at ``path``, making its folders.

        A link, not a rename: of two associations committing the same instance at
        once, the second finds the first's file (EEXIST) instead of replacing it.
        A folder the retention removed as it was made (:meth:`remove`) is made again.
        """
        for attempt in range(2):
            self._make_dirs(path.parent)
            try:
                os.link(source, path)
                return
            except FileNotFoundError:
                if attempt or not source.exists():
                    raise

    @staticmethod
    def _duplicate(part: SpoolPart, path: Path) -> SpooledFile:
        """Drop ``part``: an instance with its SOP Instance UID is already at ``path``.

        The file's modification time is set to now: the instance was just acknowledged
        again, and the retention keeps a file touched since its pass began
        (:meth:`remove`), whatever the index said when the pass started.
        """
        part.discard()
        try:
            os.utime(path)
            size = path.stat().st_size
        except OSError:  # the retention removed it since: it was acknowledged all the same
            size = part.size
        return SpooledFile(path=path, created=False, size=size)

    def write_result(self, job_id: int, sop_uid: str, data: bytes) -> Path:
        """Durably write a result object of ``job_id``."""
        if not is_valid_uid(sop_uid):
            raise ValueError(f"invalid UID {sop_uid!r}")
        path = self.results / f"job-{job_id}" / f"{sop_uid}.dcm"
        path.unlink(missing_ok=True)
        return self.write(path, data).path

    def plan_removal(self, name: str, paths: Sequence[str]) -> Path:
        """Durably note that ``paths`` are to be removed, before their index rows are.

        Returns the note, for :meth:`remove`.  A crash between the rows' removal and
        the files' leaves the note, and the start-up finishes it
        (:meth:`pending_removals`); without it the files would be indexed again as
        new arrivals.
        """
        note = self.purge / f"{name}-{uuid.uuid4().hex[:8]}.json"
        self.write(note, json.dumps(list(paths)).encode("utf-8"))
        return note

    def _remove_file(self, path: Path, touched_since: float | None) -> int | None:
        """Delete one file unless touched since ``touched_since``; its size if deleted."""
        aside = self.purge / f"{uuid.uuid4().hex}.gone"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return None
        status = aside.stat()
        if touched_since is not None and status.st_mtime >= touched_since:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
                _fsync_dir(path.parent)
            aside.unlink()
            return None
        aside.unlink()
        return status.st_size

    def pending_removals(self) -> list[Path]:
        """Removal notes left by :meth:`plan_removal`, oldest name first."""
        return sorted(self.purge.glob("*.json"))

    def remove(self, note: Path, keep: Collection[str] = (),
               touched_since: float | None = None) -> RemovedFiles:
        """Delete the files a removal note names, except those in ``keep`` and those
        modified at or after ``touched_since`` (a time of ``time.time()``: an instance
        acknowledged again meanwhile, see :meth:`_duplicate`), and the folders they leave
        empty; then the note.

        Only files inside the spool's ``studies`` and ``results`` folders are
        deleted, whatever the note says.  Each file is first moved aside (atomically),
        then judged: one touched meanwhile is put back, unless a new copy took its place.
        """
        paths = json.loads(note.read_bytes())
        files = size = 0
        folders: set[Path] = set()
        for name in paths:
            path = Path(name)
            owner = next((top for top in (self.studies, self.results)
                          if path.is_relative_to(top) and path != top), None)
            if owner is None or name in keep or ".." in path.parts:
                continue
            removed = self._remove_file(path, touched_since)
            if removed is not None:
                files += 1
                size += removed
            folders.update(parent for parent in path.parents if parent.is_relative_to(owner)
                           and parent != owner)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            # Not empty (a file arrived, a shared folder): kept.
            with contextlib.suppress(OSError):
                folder.rmdir()
        note.unlink(missing_ok=True)
        return RemovedFiles(files=files, bytes=size)

    def write_problem(self) -> str | None:
        """Why a file cannot be made in the spool now (a read-only or failed file
        system), or ``None`` when one can: a file is made and removed to find out."""
        probe = self.tmp / f"probe-{uuid.uuid4().hex}.part"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            probe.unlink()
        except OSError as exc:
            return f"the spool cannot be written: {exc.strerror}"
        return None

    def free_bytes(self) -> int:
        """Free bytes on the spool's file system."""
        return shutil.disk_usage(self.root).free

    def clear_temporary(self) -> int:
        """Delete partial files left by a crash, and files a removal had moved aside;
        returns how many."""
        removed = 0
        for part in [*self.tmp.glob("*.part"), *self.purge.glob("*.gone")]:
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    def instance_files(self) -> list[Path]:
        """Every spooled instance file."""
        return sorted(self.studies.glob("*/*/*.dcm"))
