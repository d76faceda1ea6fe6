"""Spreading new associations over the node's receiving processes by their load.

With ``receivers: N`` every receiving process accepts from one listening
socket, which the main process opens and hands to the others.  Each process
publishes how many connections it holds (accepted and not yet ended) in a
small array of shared memory, and a process that holds more than another one
leaves a waiting connection to the other for up to
:data:`HAND_OFF_SECONDS`.  So 4 associations over 2 processes are held 2 and
2, where the kernel's hash of ``SO_REUSEPORT`` listeners put 3 and 1 (or 4 and
0) together in 5 cases of 8, and one interpreter then did most of the work.

The wait is bounded so that a process that died without clearing its count,
or one too busy to reach its ``accept``, delays a connection by at most
:data:`HAND_OFF_SECONDS`; it never loses one.  A process that stops accepting
marks its place :data:`NOT_ACCEPTING`, so the others stop leaving it work.
"""

from __future__ import annotations

import threading
from multiprocessing.sharedctypes import RawArray
from typing import Any

HAND_OFF_SECONDS = 0.02
"""Longest time a busier process leaves a waiting connection to a less busy one."""

HAND_OFF_POLL_SECONDS = 0.001
"""How often a busier process looks whether the waiting connection was taken."""

NOT_ACCEPTING = 2**30
"""Load published by a process that no longer accepts connections."""


class SharedLoad:
    """Connections held by each receiving process, in memory shared by the processes.

    Created by the main process before it starts the others, and passed to
    each of them as a start argument (as :mod:`multiprocessing` allows for
    shared arrays).

    Parameters
    ----------
    processes:
        How many processes receive (the main process is number 0).
    """

    def __init__(self, processes: int) -> None:
        self.counts: Any = RawArray("i", processes)

    def slot(self, number: int) -> LoadSlot:
        """The view of process ``number`` (0 for the main process)."""
        return LoadSlot(self.counts, number)

    def retire(self, number: int) -> None:
        """Publish that process ``number`` accepts no more connections (it died)."""
        self.counts[number] = NOT_ACCEPTING

    def loads(self) -> list[int]:
        """Connections held by each process (:data:`NOT_ACCEPTING` for a stopped one)."""
        return list(self.counts)


class LoadSlot:
    """One process's place in a :class:`SharedLoad`: it writes its own count, reads all.

    Parameters
    ----------
    counts:
        The shared array of counts.
    number:
        This process's index into ``counts``.
    """

    def __init__(self, counts: Any, number: int) -> None:
        self._counts = counts
        self._number = number
        self._lock = threading.Lock()

    def add(self, delta: int) -> None:
        """Count ``delta`` more connections held by this process."""
        with self._lock:
            if self._counts[self._number] != NOT_ACCEPTING:
                self._counts[self._number] += delta

    def retire(self) -> None:
        """Publish that this process accepts no more connections."""
        with self._lock:
            self._counts[self._number] = NOT_ACCEPTING

    def busier_than_another(self) -> bool:
        """Whether another accepting process holds fewer connections than this one."""
        counts = list(self._counts)
        own = counts.pop(self._number)
        return any(other < own for other in counts)
