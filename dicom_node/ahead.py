"""Results of images analysed ahead of their study's completion.

A study is complete only after its quiet period (30 s by default), and its
job then analyses every image before the results can be built.  The dispatch
worker uses its idle time instead: it analyses instances that are received
but not yet handed to a job (:meth:`dicom_node.dispatch.Dispatcher.analyse_ahead`)
and keeps their results here.  The job takes them instead of analysing the
same files again, so that from completion to results only the images that
arrived last and the result objects remain.

A result is taken only for the same spool file, unchanged (same size and
modification time), routed to the same engines.  Results live in memory only:
after a restart jobs analyse their images as before.  The memory they hold is
bounded by the caller (``analysis_ahead_mb``), counted from their arrays.
Several nodes sharing one index each analyse ahead on their own, so an image
may be analysed by one node and its job run by another; the first node's
result is then dropped unused when its memory fills.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from inference.findings import ImageResult

RESULT_OVERHEAD_BYTES = 4096
"""Bytes counted for a result besides its arrays (objects, strings, numbers)."""


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a spool file."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> FileStamp:
        """The stamp of the file at ``path`` now; raises ``OSError`` if it is gone."""
        info = os.stat(path)
        return cls(info.st_size, info.st_mtime_ns)


def result_bytes(result: ImageResult) -> int:
    """Memory held by ``result``: its findings' arrays plus a fixed overhead each.

    Parameters
    ----------
    result:
        One image's result.

    Returns
    -------
    int
        Approximate bytes.
    """
    findings = [*result.lesions, *result.cardiac]
    arrays = sum(
        value.nbytes
        for finding in findings
        for value in vars(finding).values()
        if isinstance(value, np.ndarray)
    )
    return arrays + RESULT_OVERHEAD_BYTES * (1 + len(findings))


@dataclass(frozen=True)
class _Entry:
    engines: tuple[str, ...]
    stamp: FileStamp
    result: ImageResult
    size: int


class AheadResults:
    """Image results waiting for their job, keyed by spool path.

    Used by the dispatch worker's thread only.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._bytes = 0

    @property
    def bytes(self) -> int:
        """Memory counted for the results held (:func:`result_bytes`)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def paths(self) -> list[str]:
        """Spool paths that have a result."""
        return list(self._entries)

    def put(
        self, path: str, engines: Sequence[str], stamp: FileStamp, result: ImageResult
    ) -> None:
        """Keep ``result`` of the file at ``path`` (as ``stamp`` describes it)."""
        self.discard([path])
        entry = _Entry(tuple(engines), stamp, result, result_bytes(result))
        self._entries[path] = entry
        self._bytes += entry.size

    def take(self, path: str, engines: Sequence[str]) -> ImageResult | None:
        """Remove and return the result of ``path`` if it still applies.

        It applies when it was made for the same ``engines`` and the file has
        not changed since; otherwise (or when there is none) ``None``.
        """
        entry = self._entries.pop(path, None)
        if entry is None:
            return None
        self._bytes -= entry.size
        if entry.engines != tuple(engines):
            return None
        try:
            unchanged = FileStamp.of(path) == entry.stamp
        except OSError:
            return None
        return entry.result if unchanged else None

    def discard(self, paths: Collection[str]) -> None:
        """Drop the results of ``paths`` (those that have one)."""
        for path in paths:
            entry = self._entries.pop(path, None)
            if entry is not None:
                self._bytes -= entry.size

    def keep_only(self, paths: Collection[str]) -> int:
        """Drop every result whose path is not in ``paths``; returns how many went."""
        keep = set(paths)
        gone = [path for path in self._entries if path not in keep]
        self.discard(gone)
        return len(gone)
