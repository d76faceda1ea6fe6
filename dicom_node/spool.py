"""The durable spool: received instances on disk before we say Success.

Each instance is written to a temporary file, flushed and fsync'd, renamed
into ``studies/<study>/<series>/<sop>.dcm`` and its directory fsync'd.  A
repeated SOP Instance UID is not written twice.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog

LOGGER = structlog.get_logger(__name__)

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
"""Characters and form of a UID (PS3.5 9.1), leading zeros tolerated."""


class SpoolError(OSError):
    """An instance could not be made durable."""


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` is a UID we can use as a file name (digits and dots, <= 64)."""
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(UID_PATTERN.match(value))


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


class Spool:
    """The spool folder under the node's data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.studies = root / "studies"
        self.tmp = root / "tmp"
        self.results = root / "results"
        for folder in (self.studies, self.tmp, self.results):
            folder.mkdir(parents=True, exist_ok=True)

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
            directory.mkdir(exist_ok=True)
            _fsync_dir(directory.parent)

    def write(self, path: Path, *parts: bytes) -> SpooledFile:
        """Durably write ``parts``, one after the other, to ``path`` unless it already exists.

        Raises
        ------
        SpoolError
            If the data could not be written and synced (disk full, I/O error);
            nothing is left at ``path`` in that case.
        """
        if path.exists():
            return SpooledFile(path=path, created=False, size=path.stat().st_size)
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as handle:
                for part in parts:
                    handle.write(part)
                handle.flush()
                os.fsync(handle.fileno())
            self._make_dirs(path.parent)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SpoolError(exc.errno, f"cannot spool instance: {exc.strerror}") from exc
        return SpooledFile(path=path, created=True, size=sum(len(part) for part in parts))

    def write_result(self, job_id: int, sop_uid: str, data: bytes) -> Path:
        """Durably write a result object of ``job_id``."""
        if not is_valid_uid(sop_uid):
            raise ValueError(f"invalid UID {sop_uid!r}")
        path = self.results / f"job-{job_id}" / f"{sop_uid}.dcm"
        path.unlink(missing_ok=True)
        return self.write(path, data).path

    def free_bytes(self) -> int:
        """Free bytes on the spool's file system."""
        return shutil.disk_usage(self.root).free

    def clear_temporary(self) -> int:
        """Delete partial files left by a crash; returns how many."""
        removed = 0
        for part in self.tmp.glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    def instance_files(self) -> list[Path]:
        """Every spooled instance file."""
        return sorted(self.studies.glob("*/*/*.dcm"))
