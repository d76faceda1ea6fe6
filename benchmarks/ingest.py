"""Ingest: storescu -> storescp / Orthanc / the node, side by side in one run.

For every instance set and association count, each receiver is started fresh,
storescu sends the set (split round-robin over the associations, all at once)
and the wall time from the first storescu start to the last storescu exit is
taken, and for the node until every index row is written too.  The node
answers Success only once an instance is durable (file and directory fsync'd),
so its figure includes fsync and indexing; Orthanc fsyncs too (SyncStorageArea);
storescp does not fsync.  Receivers run in turn within each scenario, so load
from other work on the machine hits them alike; only the ratios carry over.

Run from the repository root::

    python -m benchmarks.ingest                       # every set, 1 and 4 associations
    python -m benchmarks.ingest --sets stills-raw --associations 1 --repeat 3
    python -m benchmarks.ingest --node base=src:/tmp/node-base --node new=
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.data import SETS, cached_set, split
from benchmarks.peers import (
    Receiver,
    run_minimal_scp,
    run_node,
    run_orthanc_receiver,
    run_storescp,
    send_concurrently,
)
from benchmarks.report import machine_summary, print_table

Starter = Callable[[Path, int], AbstractContextManager[Receiver]]


@dataclass(frozen=True)
class Measurement:
    """One receiver on one scenario (medians over the repeats)."""

    instance_set: str
    associations: int
    receiver: str
    instances: int
    seconds: float
    megabytes: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Instances per second."""
        return self.instances / self.seconds

    @property
    def mb_per_s(self) -> float:
        """Megabytes (10^6 bytes of files) per second."""
        return self.megabytes / self.seconds

    @property
    def cpu_ms_per_instance(self) -> float:
        """Receiver CPU time per instance, in ms."""
        return 1000 * self.cpu_seconds / self.instances


def parse_node_variant(text: str) -> tuple[str, dict[str, Any], Path | None]:
    """Parse ``LABEL=key:value,key:value`` (``src:PATH`` runs another source tree).

    Values are YAML scalars: ``receivers:2``, ``limits.max_pdu:16384``.
    """
    label, _, spec = text.partition("=")
    overrides: dict[str, Any] = {}
    source = None
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition(":")
        if key == "src":
            source = Path(value)
        else:
            overrides[key] = yaml.safe_load(value)
    return label, overrides, source


def starters(node_variants: Sequence[str], peers: Sequence[str]) -> dict[str, Starter]:
    """Receiver starters by label: the peers asked for, then each node variant."""
    result: dict[str, Starter] = {}
    if "storescp" in peers:
        result["storescp"] = lambda work, n: run_storescp(work, fork=n > 1)
    if "orthanc" in peers:
        result["orthanc"] = lambda work, n: run_orthanc_receiver(work)
    if "pynetdicom" in peers:
        result["pynetdicom"] = lambda work, n: run_minimal_scp(work)
    for text in node_variants:
        label, overrides, source = parse_node_variant(text)
        result[label] = lambda work, n, label=label, o=overrides, s=source: run_node(
            work, label, o, s
        )
    return result


STORED_WAIT_SECONDS = 30.0
"""How long a receiver may take, after the last storescu exits, to hold every instance."""


def measure_once(start: Starter, files: Sequence[Path], associations: int, work: Path) -> tuple:
    """Start a receiver, send ``files`` over ``associations``; (seconds, cpu seconds).

    Raises
    ------
    RuntimeError
        If the receiver does not hold every instance within :data:`STORED_WAIT_SECONDS`.
    """
    with start(work, associations) as receiver:
        cpu_before = receiver.cpu_seconds()
        seconds = send_concurrently(receiver, split(files, associations))
        # The node writes index rows just after its answers: if they are not all
        # there yet, the time runs on until they are (Orthanc indexes before it
        # answers).  The check's own time then counts against the node.
        waited = time.monotonic()
        late = False
        while (stored := receiver.count_stored()) < len(files):
            if time.monotonic() - waited > STORED_WAIT_SECONDS:
                raise RuntimeError(f"{receiver.name} holds {stored} of {len(files)} instances")
            late = True
            time.sleep(0.002)
        if late:
            seconds += time.monotonic() - waited
        cpu = receiver.cpu_seconds() - cpu_before
    return seconds, cpu


def run(
    sets: Sequence[str],
    associations: Sequence[int],
    receivers: dict[str, Starter],
    repeat: int,
    data_dir: Path,
    work_root: Path,
) -> Iterator[Measurement]:
    """Measure every receiver on every scenario, receivers interleaved per repeat."""
    for name in sets:
        files = cached_set(data_dir, name)
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        for count in associations:
            samples: dict[str, list[tuple[float, float]]] = {label: [] for label in receivers}
            for attempt in range(repeat):
                for label, start in receivers.items():
                    work = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work_root))
                    try:
                        samples[label].append(measure_once(start, files, count, work))
                    finally:
                        shutil.rmtree(work, ignore_errors=True)
                    seconds = samples[label][-1][0]
                    print(
                        f"  {name:12s} x{count} {label:10s} run {attempt + 1}: "
                        f"{len(files) / seconds:7.1f} inst/s",
                        flush=True,
                    )
            for label, values in samples.items():
                yield Measurement(
                    name,
                    count,
                    label,
                    len(files),
                    statistics.median(v[0] for v in values),
                    megabytes,
                    statistics.median(v[1] for v in values),
                )


def table(results: Sequence[Measurement], reference: Sequence[str]) -> list[list[str]]:
    """Rows of the result table, each node variant with its ratio to the peers."""
    rows = []
    by_key = {(m.instance_set, m.associations, m.receiver): m for m in results}
    for m in results:
        ratios = []
        for peer in reference:
            other = by_key.get((m.instance_set, m.associations, peer))
            ratios.append(
                f"{m.rate / other.rate:.2f}" if other and m.receiver not in reference else ""
            )
        rows.append(
            [
                m.instance_set,
                str(m.associations),
                m.receiver,
                f"{m.rate:.1f}",
                f"{m.mb_per_s:.1f}",
                f"{m.cpu_ms_per_instance:.1f}",
                *ratios,
            ]
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: print the ingest table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated instance sets")
    parser.add_argument("--associations", default="1,4", help="comma-separated counts")
    parser.add_argument(
        "--peers",
        default="storescp,orthanc",
        help="reference receivers: storescp, orthanc, pynetdicom (minimal SCP)",
    )
    parser.add_argument(
        "--node",
        action="append",
        help="node variant LABEL=key:value,... (repeatable; default: node=)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per receiver (median)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench")
    args = parser.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    unknown = set(sets) - set(SETS)
    if unknown:
        parser.error(f"unknown set(s) {sorted(unknown)}; known: {sorted(SETS)}")
    peers = [p for p in args.peers.split(",") if p]
    receivers = starters(args.node or ["node="], peers)
    print(machine_summary())
    work_root = args.data_dir / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    results = list(
        run(
            sets,
            [int(n) for n in args.associations.split(",")],
            receivers,
            args.repeat,
            args.data_dir / "data",
            work_root,
        )
    )
    print_table(
        [
            "set",
            "assoc",
            "receiver",
            "inst/s",
            "MB/s",
            "CPU ms/inst",
            *[f"node/{p}" for p in peers],
        ],
        table(results, peers),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
