"""Index writes: time per received instance's row, by batch size, SQLite and PostgreSQL.

The receiver's index writer (``dicom_node/index/writer.py``) commits whatever
arrived since its last commit in one :meth:`Index.record_instances` call, so
under load its batches grow.  This times that call alone, for batches of 1, 4
and 16 instances of one series (30 instances per study), on a fresh SQLite file
and on a throw-away PostgreSQL server (skipped when PostgreSQL is not
installed).  It prints wall time and this process's CPU time per row (for PostgreSQL the
server's own CPU is not in it).

Run from the repository root::

    python -m benchmarks.index_writes
    python -m benchmarks.index_writes --rows 2000 --backends sqlite
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from benchmarks.report import machine_summary, print_table
from dicom_node.index import Index
from tests.dicom_node.test_index import PEER, meta
from tests.peers import run_postgres

BATCH_SIZES = (1, 4, 16)
INSTANCES_PER_STUDY = 30


def time_batches(index: Index, rows: int, batch_size: int) -> tuple[float, float]:
    """Index ``rows`` new instances in batches; (wall ms, CPU ms) per row."""
    items = []
    for number in range(rows):
        study_uid = f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, str(number // INSTANCES_PER_STUDY)).int}"
        items.append((meta(study_uid, f"2.25.{uuid.uuid4().int}"), PEER, None, datetime.now(UTC)))
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, rows, batch_size):
        index.record_instances(items[start : start + batch_size])
    return (
        1000 * (time.perf_counter() - wall) / rows,
        1000 * (time.process_time() - cpu) / rows,
    )


@contextmanager
def databases(backend: str, work: Path) -> Iterator[Callable[[], str] | None]:
    """A maker of empty databases of ``backend`` (None: PostgreSQL is not installed)."""
    if backend == "sqlite":
        yield lambda: f"sqlite:///{work / f'{uuid.uuid4().hex}.sqlite'}"
        return
    if not any(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        yield None
        return
    with run_postgres() as server:

        def create() -> str:
            name = f"bench{uuid.uuid4().hex[:8]}"
            engine = create_engine(server, isolation_level="AUTOCOMMIT")
            with engine.connect() as connection:
                connection.execute(text(f"CREATE DATABASE {name}"))
            engine.dispose()
            return server.rsplit("/", 1)[0] + f"/{name}"

        yield create


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table of time per row by backend and batch size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=960, help="instances per measurement")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    print(machine_summary())
    table = []
    with tempfile.TemporaryDirectory() as work:
        for backend in args.backends.split(","):
            with databases(backend, Path(work)) as create:
                if create is None:
                    print(f"{backend}: not installed, skipped")
                    continue
                for batch_size in BATCH_SIZES:
                    index = Index(create())
                    try:
                        wall, cpu = time_batches(index, args.rows, batch_size)
                    finally:
                        index.close()
                    table.append([backend, str(batch_size), f"{wall:.2f}", f"{cpu:.2f}"])
    print_table(["backend", "batch", "wall ms/row", "CPU ms/row"], table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
