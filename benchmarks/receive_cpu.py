"""Receive CPU: the node's CPU time per instance, source trees compared in turn.

An A/B tool for changes to the receive path, steadier than ``benchmarks.ingest``
on a noisy machine: each variant runs as ``dicom-node serve`` with one
receiving process (``--receivers``; one keeps the spreading of associations
over processes out), is left to settle, and then receives the set ``--sends``
times over ``--associations`` concurrent storescu associations, each time
under new UIDs (a copy of the set), so every send stores new instances.
Until 2026-11-26 the sends repeated the same UIDs: from the second on, the
node found duplicates and wrote nothing, so the figures left out most of the
file system's cost.  Only the node's own
CPU time (from ``/proc``) and the wall time of the sends are counted, not its
start-up.  Variants take turns within each round; medians over the rounds are
printed, with every round's figures.

Run from the repository root (extract the trees to compare first, e.g.
``git archive 80f2aa6 dicom_node inference | tar -x -C /tmp/old``)::

    python -m benchmarks.receive_cpu --node old=/tmp/old --node new=. --rounds 6
    python -m benchmarks.receive_cpu --set stills-raw --associations 1 --node ...
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.data import SETS, cached_set, split
from benchmarks.peers import run_node, send_concurrently
from benchmarks.report import machine_summary, print_table

SETTLE_SECONDS = 1.5
"""Idle time after start-up before the clock starts."""


def measure(
    source: Path, sends: Sequence[Sequence[Path]], associations: int, work: Path,
    receivers: int | str = 1,
) -> tuple[float, float]:
    """One round of one variant, each of ``sends`` sent in turn: (instances per
    second, CPU ms per instance)."""
    with run_node(work, overrides={"receivers": receivers}, source=source) as receiver:
        time.sleep(SETTLE_SECONDS)
        cpu = receiver.cpu_seconds()
        seconds = sum(send_concurrently(receiver, split(files, associations)) for files in sends)
        instances = sum(len(files) for files in sends)
        return instances / seconds, 1000 * (receiver.cpu_seconds() - cpu) / instances


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table of rate and CPU per instance by variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", action="append", required=True, help="LABEL=SOURCE_TREE")
    parser.add_argument("--set", default="stills-jpeg", choices=sorted(SETS))
    parser.add_argument("--associations", type=int, default=4)
    parser.add_argument("--sends", type=int, default=2, help="sends of the set per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--receivers", default="1", help="receiving processes: a number or auto")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/bench/data"))
    args = parser.parse_args(argv)
    variants = dict(item.split("=", 1) for item in args.node)
    sends = [cached_set(args.data_dir, args.set, copy) for copy in range(args.sends)]
    print(machine_summary())
    rounds: dict[str, list[tuple[float, float]]] = {label: [] for label in variants}
    with tempfile.TemporaryDirectory() as work:
        for number in range(args.rounds):
            for label, source in variants.items():
                folder = Path(work) / f"{label}-{number}"
                rounds[label].append(
                    measure(Path(source).resolve(), sends, args.associations, folder,
                            int(args.receivers) if args.receivers.isdigit() else args.receivers)
                )
    table = [
        [
            label,
            f"{statistics.median(r for r, _ in results):.1f}",
            f"{statistics.median(c for _, c in results):.2f}",
            " ".join(f"{r:.0f}/{c:.2f}" for r, c in results),
        ]
        for label, results in rounds.items()
    ]
    print(f"{args.set}, {args.associations} association(s), {args.sends} sends per round, "
          f"receivers: {args.receivers}")
    print_table(["variant", "inst/s", "CPU ms/inst", "rounds (inst/s / CPU ms)"], table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
