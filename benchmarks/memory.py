"""Memory: resident set size of ``dicom-node serve``, idle and under load.

The node runs as ``dicom-node serve`` (admin API on) with Orthanc as its
archive and a 1 s quiet period.  Figures are summed over the serve process and
its children (the extra receiver processes of ``receivers: auto``):

1. idle after start (no engine loaded yet: the engines load on the first job);
2. idle with all engines loaded (after a one-image warm-up study was analysed);
3. the largest sampled sum while storescu sends the load over 4 associations
   and the node analyses every study (exports run on meanwhile), then the RSS
   when idle again;
4. the sum of each process's own peak (VmHWM), an upper bound of the joint peak.

Run from the repository root::

    python -m benchmarks.memory                       # load: stills-jpeg + cine-jpeg
    python -m benchmarks.memory --load stills-jpeg,cine-raw
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.data import SETS, Pixels, cached_set, split, write_study
from benchmarks.peers import (
    Receiver,
    run_node,
    send_concurrently,
    tree_peak_rss_mib,
    tree_pids,
    tree_rss_mib,
)
from benchmarks.report import machine_summary, print_table
from dicom_node.index import Index, IndexQueries
from tests.peers import run_orthanc

SETTLE_SECONDS = 3.0
"""Idle time before an idle figure is read."""


def wait_until_idle(database: str, timeout: float) -> dict[str, dict[str, int]]:
    """Wait until no study is receiving and no job is queued or running.

    Exports are not waited for (a failing archive would stall the benchmark);
    the returned counts (``jobs``, ``exports`` by state) show how they went.

    Raises
    ------
    TimeoutError
        If work is still going on after ``timeout`` seconds.
    """
    index = Index(database)
    queries = IndexQueries(index)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            counts = queries.counts()
            jobs = counts["jobs"]
            busy = counts["studies"]["receiving"] + jobs["queued"] + jobs["running"]
            if busy == 0:
                return counts
            time.sleep(0.5)
    finally:
        index.close()
    raise TimeoutError(f"the node is still busy after {timeout} s: {counts}")


class RssSampler:
    """Samples the summed RSS of a process and its descendants every 0.2 s in a thread
    and keeps the maximum."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.maximum = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.maximum = max(self.maximum, tree_rss_mib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def warm_up_study(folder: Path) -> list[Path]:
    """One liver phantom still: its job loads every engine."""
    from inference.phantoms.generator import generate

    sample = generate("liver", 0, rows=480, cols=640)
    pixels = Pixels.encode(sample.frames, jpeg=True, cine=False, pixel_mm=sample.pixel_mm)
    return write_study(folder, [pixels], body_part="LIVER", description="US LIVER")


def run(load: Sequence[str], data_dir: Path, work: Path, timeout: float) -> list[list[str]]:
    """Start Orthanc and the node, warm up, load; return the table rows."""
    load_files = [cached_set(data_dir, name) for name in load]
    warm = warm_up_study(work / "warm")
    rows = []
    with run_orthanc(work / "orthanc") as orthanc:
        archive = {"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port}
        with run_node(
            work / "node", archive=archive, quiet_seconds=1.0, analyse_ahead=True
        ) as node:
            database = f"sqlite:///{work / 'node' / 'var' / 'index.sqlite'}"
            pid = node.pids[0]
            time.sleep(SETTLE_SECONDS)
            rows.append(["idle, engines not loaded", f"{tree_rss_mib(pid):.0f}",
                         f"{len(tree_pids(pid))} processes"])
            send_concurrently(node, [warm])
            counts = wait_until_idle(database, timeout)
            time.sleep(SETTLE_SECONDS)
            rows.append(
                [
                    "idle after a one-image warm-up job (it loads the engines)",
                    f"{tree_rss_mib(pid):.0f}",
                    f"warm-up: {_summary(counts)}",
                ]
            )
            rows.extend(_under_load(node, load, load_files, database, timeout))
            rows.append(["peak since start (VmHWM, summed over the processes: an upper bound)",
                         f"{tree_peak_rss_mib(pid):.0f}", ""])
    return rows


def _summary(counts: dict[str, dict[str, int]]) -> str:
    jobs, exports = counts["jobs"], counts["exports"]
    return (
        f"jobs {jobs['done']} done, {jobs['failed']} failed; "
        f"exports {exports['delivered']} delivered, {exports['pending']} pending"
    )


def _under_load(
    node: Receiver,
    load: Sequence[str],
    load_files: Sequence[list[Path]],
    database: str,
    timeout: float,
) -> list[list[str]]:
    started = time.perf_counter()
    with RssSampler(node.pids[0]) as sampler:
        for files in load_files:
            send_concurrently(node, split(files, 4))
        counts = wait_until_idle(database, timeout)
    seconds = time.perf_counter() - started
    instances = sum(len(files) for files in load_files)
    time.sleep(SETTLE_SECONDS)
    return [
        [
            f"under load: {' + '.join(load)} ({instances} instances, 4 associations)",
            f"{sampler.maximum:.0f}",
            f"{seconds:.0f} s to receive and analyse; so far {_summary(counts)}",
        ],
        ["idle after the load", f"{tree_rss_mib(node.pids[0]):.0f}", ""],
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: print the memory table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", default="stills-jpeg,cine-jpeg", help="instance sets sent")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to finish the load")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench")
    args = parser.parse_args(argv)
    load = [s for s in args.load.split(",") if s]
    unknown = set(load) - set(SETS)
    if unknown:
        parser.error(f"unknown set(s) {sorted(unknown)}; known: {sorted(SETS)}")
    print(machine_summary())
    with tempfile.TemporaryDirectory(prefix="memory-") as folder:
        rows = run(load, args.data_dir / "data", Path(folder), args.timeout)
    print_table(["dicom-node serve", "RSS MiB", "notes"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
