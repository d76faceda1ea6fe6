"""Retention: the spool keeps a study for ``retention.keep_days`` after it is finished
with, then removes its files and its index rows.

The node is not an archive: the archive holds the images and the results it was
sent.  A study is finished with when nothing of it waits for a job, every job of
it is done, and every export of it was delivered or discarded; one with a failed
job, or with results in the error queue, is kept until an operator re-runs the
job, or retries or discards the results.  The clock starts again with anything that happens to
the study (an instance received, a job finished, an export delivered), so an
operator re-running a job has the whole period to look at its results.

Each removal is noted in the spool before the rows go (:meth:`Spool.plan_removal`),
so a crash part-way leaves nothing to be indexed again as a new arrival; the
start-up finishes what was noted (:meth:`Retention.finish_interrupted`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from dicom_node import metrics
from dicom_node.clock import Clock
from dicom_node.config import NodeConfig
from dicom_node.index import Index
from dicom_node.index.purge import delete_study, expired_studies, prune_associations, study_files
from dicom_node.spool import Spool

LOGGER = structlog.get_logger(__name__)

CHECK_SECONDS = 600.0
"""How often the node looks for studies past their retention."""

RECENT_SECONDS = 60.0
"""A spooled file modified this long before a pass began, or later, is kept: an instance
acknowledged again (its file touched, :meth:`Spool._duplicate`) whose index row may not
be written yet."""

BATCH = 50
"""Studies looked at per query."""


@dataclass(frozen=True)
class PurgeReport:
    """What one pass of :meth:`Retention.run` removed."""

    studies: int
    files: int
    bytes: int
    associations: int


class Retention:
    """Removes the studies past their retention period.

    Parameters
    ----------
    config:
        Returns the current configuration (``retention.keep_days``).
    index, spool:
        Where the studies' rows and files are.
    clock:
        Time source; a pass is due every :data:`CHECK_SECONDS`.
    """

    def __init__(self, config: Callable[[], NodeConfig], index: Index, spool: Spool,
                 clock: Clock) -> None:
        self._config = config
        self._index = index
        self._spool = spool
        self._clock = clock
        self._next_check: datetime | None = None

    def due(self) -> bool:
        """Whether a pass is due (the first one at once)."""
        return self._next_check is None or self._clock.now() >= self._next_check

    def run(self) -> PurgeReport:
        """Remove every study past its retention, and the association records older than
        the retention period; nothing when ``keep_days`` is not set."""
        now = self._clock.now()
        touched_since = time.time() - RECENT_SECONDS
        self._next_check = now + timedelta(seconds=CHECK_SECONDS)
        keep_days = self._config().retention.keep_days
        if keep_days is None:
            return PurgeReport(0, 0, 0, 0)
        cutoff = now - timedelta(days=keep_days)
        studies = files = size = 0
        skipped: set[int] = set()
        while True:
            candidates = [study_id for study_id in
                          expired_studies(self._index, cutoff, BATCH + len(skipped))
                          if study_id not in skipped]
            if not candidates:
                break
            for study_id in candidates:
                removed = self._purge(study_id, cutoff, touched_since)
                if removed is None:
                    skipped.add(study_id)
                    continue
                studies += 1
                files += removed[0]
                size += removed[1]
        associations = prune_associations(self._index, cutoff)
        report = PurgeReport(studies, files, size, associations)
        if studies or associations:
            metrics.STUDIES_PURGED.inc(studies)
            LOGGER.info("retention_purged", keep_days=keep_days, **report.__dict__)
        return report

    def _purge(self, study_id: int, cutoff: datetime, touched_since: float
               ) -> tuple[int, int] | None:
        """Remove one study; ``None`` if it changed since it was found expired.  A file
        touched since ``touched_since`` (wall time: file times are) is kept; the index
        row of its new acknowledgement makes it a study again."""
        files = study_files(self._index, study_id)
        note = self._spool.plan_removal(
            f"study-{study_id}", files.instance_paths + files.result_paths
        )
        if not delete_study(self._index, files, cutoff):
            note.unlink(missing_ok=True)
            return None
        removed = self._spool.remove(note, touched_since=touched_since)
        return removed.files, removed.bytes

    def finish_interrupted(self, indexed: Collection[str]) -> int:
        """Finish the removals a stop or a crash interrupted; returns how many.

        A note whose rows were not removed (the crash came first) names files
        still ``indexed``: those are kept.
        """
        finished = 0
        for note in self._spool.pending_removals():
            try:
                self._spool.remove(note, keep=indexed)
            except OSError as exc:  # a read-only spool: said at start, tried next time
                LOGGER.error("retention_resume_failed", note=note.name, error=exc.strerror)
                continue
            finished += 1
        if finished:
            LOGGER.info("retention_resumed", removals=finished)
        return finished
