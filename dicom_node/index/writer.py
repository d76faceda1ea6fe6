"""Index rows of received instances, written by one thread, many per transaction.

The receiver answers a C-STORE once the instance's file and its directory are
synced to disk: the spool is the record of what was received.  The index row
follows at most some 50 ms later, written by an :class:`IndexWriter` together
with every other instance that arrived meanwhile, in one transaction: the
writer waits up to :data:`GATHER_SECONDS` after a batch's first instance while
instances keep arriving, because a transaction costs about as much for one row
as for a few, and commits once none came for :data:`GATHER_IDLE_SECONDS`.  Each association
thread then spends no time on the database, and one commit serves several
instances even from a single association.

Nothing is lost if the process dies between the answer and the commit: the
start-up reconciliation indexes every spooled file that has no row, reading
the calling and called AE titles that the receiver wrote into the file's meta
information (see :func:`dicom_node.file_meta.file_header`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from dicom_node.index.store import Index, InstanceMeta, Peer

LOGGER = structlog.get_logger(__name__)

MAX_BATCH = 500
"""Instances written in one transaction at most."""

RETRY_SECONDS = 2.0
"""Wait after a failed transaction before the batch is tried again."""

GATHER_SECONDS = 0.05
"""After a batch's first instance arrives, wait this long for more (a transaction
costs about as much for one row as for a few), unless a flush or close waits.

20 ms until 2026-11-26; at 50 ms, JPEG stills over 4 associations into two
receiving processes took 1.42 instead of 1.56 ms of CPU each (``benchmarks.receive_cpu``,
medians of 4 rounds)."""

GATHER_ROWS = 32
"""Stop gathering once this many instances wait."""

GATHER_IDLE_SECONDS = 0.01
"""Stop gathering once no instance arrived for this long: the senders paused or
finished, and the rows need not wait out :data:`GATHER_SECONDS` for nothing."""


@dataclass(frozen=True)
class Received:
    """One spooled instance waiting for its index row."""

    meta: InstanceMeta
    peer: Peer
    association_id: int | None
    received_at: datetime


class IndexWriter:
    """A thread that writes :class:`Received` instances to the index in batches.

    Parameters
    ----------
    index:
        Where the rows go.
    on_indexed:
        Called with each instance and whether it was new (``False``: a
        duplicate SOP Instance UID), after its batch committed.
    retry_seconds:
        Wait after a failed transaction before trying the batch again.
    gather_seconds:
        Wait after a batch's first instance for more to join it.
    idle_seconds:
        End that wait once no instance arrived for this long.
    """

    def __init__(
        self,
        index: Index,
        on_indexed: Callable[[Received, bool], None] | None = None,
        retry_seconds: float = RETRY_SECONDS,
        gather_seconds: float = GATHER_SECONDS,
        idle_seconds: float = GATHER_IDLE_SECONDS,
    ) -> None:
        self._index = index
        self._on_indexed = on_indexed
        self._retry_seconds = retry_seconds
        self._gather_seconds = gather_seconds
        self._idle_seconds = idle_seconds
        self._pending: list[Received] = []
        self._submitted = 0
        self._written = 0
        self._flushing = 0
        self._stopping = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="index-writer", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        """Instances submitted and not yet committed."""
        with self._changed:
            return len(self._pending)

    def submit(self, item: Received) -> None:
        """Queue ``item`` for the next batch.

        The writer is woken only when it may be waiting for a first instance or
        the batch is full: otherwise its gathering ends by itself, and waking it
        for every instance cost each one a switch of threads.
        """
        with self._changed:
            self._pending.append(item)
            self._submitted += 1
            if len(self._pending) == 1 or len(self._pending) >= GATHER_ROWS:
                self._changed.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is committed.

        Returns ``False`` if that did not happen within ``timeout`` seconds
        or the writer was closed first.
        """
        with self._changed:
            target = self._submitted
            self._flushing += 1
            self._changed.notify_all()
            try:
                self._changed.wait_for(lambda: self._written >= target or self._stopping, timeout)
            finally:
                self._flushing -= 1
            return self._written >= target

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (for up to ``timeout`` seconds), then stop the thread.

        Rows still unwritten then (the index is down) are made at the next
        start, from the spool.  Closing again does nothing.
        """
        self.flush(timeout)
        with self._changed:
            if self._stopping:
                return
            self._stopping = True
            left = len(self._pending)
            self._changed.notify_all()
        self._thread.join(timeout)
        if left:
            LOGGER.warning("index_rows_left_to_reconciliation", instances=left)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._stopping)
                self._gather()
                if self._stopping:
                    return
                batch = self._pending[:MAX_BATCH]
            try:
                created = self._index.record_instances(
                    [(r.meta, r.peer, r.association_id, r.received_at) for r in batch]
                )
            except Exception:
                LOGGER.exception("index_failed", instances=len(batch))
                with self._changed:
                    self._changed.wait_for(lambda: self._stopping, self._retry_seconds)
                continue
            with self._changed:
                del self._pending[: len(batch)]
                self._written += len(batch)
                self._changed.notify_all()
            self._report(batch, created)

    def _gather(self) -> None:
        """Wait (lock held) until the batch is ready, the gathering time is up, or no
        instance arrived for ``idle_seconds``."""
        deadline = time.monotonic() + self._gather_seconds
        seen = len(self._pending)
        while not self._batch_ready():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._changed.wait(min(left, self._idle_seconds))
            if len(self._pending) == seen:
                return
            seen = len(self._pending)

    def _batch_ready(self) -> bool:
        """Whether to stop gathering (called with the lock held)."""
        return len(self._pending) >= GATHER_ROWS or self._flushing > 0 or self._stopping

    def _report(self, batch: list[Received], created: list[bool]) -> None:
        """Call ``on_indexed`` per instance; its errors are logged, never fatal here."""
        if self._on_indexed is None:
            return
        for item, new in zip(batch, created, strict=True):
            try:
                self._on_indexed(item, new)
            except Exception:
                LOGGER.exception("index_callback_failed")
