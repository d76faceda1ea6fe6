"""Turnaround: last instance of a study in, its SR accepted by the archive (Orthanc).

For each study, storescu sends its images to the node over one association;
the clock starts when storescu exits (the last instance was answered, so it
is durable in the node) and stops when Orthanc's REST API first lists an SR
series of the study (polled every 50 ms).  The node's quiet period is
subtracted: what remains is completion polling, the analysis the node did not
do ahead while the study arrived and during the quiet period
(:mod:`dicom_node.ahead`), building the results and the export.  Studies are
sent one after another.  ``--ahead-mb 0`` turns analysis ahead off: every image
is then analysed after completion.

The node runs inside this process with either the real engines or the test
suite's fake engine (``--engine fake``: one box per image, no model), so the
figure can be taken before the weights exist.

Run from the repository root::

    python -m benchmarks.turnaround --engine real --studies 20 --images 30
    python -m benchmarks.turnaround --engine real --ahead-mb 0
    python -m benchmarks.turnaround --engine fake
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from pydicom.uid import generate_uid

from benchmarks.data import UID_ROOT, Pixels, write_study
from benchmarks.peers import Receiver, node_config, send_concurrently
from benchmarks.report import machine_summary, print_table
from dicom_node.config import NodeConfig
from dicom_node.service import Node, Stages
from tests.peers import Orthanc, free_port, run_orthanc

POLL_SECONDS = 0.05
"""How often Orthanc is asked whether the SR has arrived."""


TAGS = {"liver": ("LIVER", "US LIVER"), "breast": ("BREAST", "US BREAST")}
"""BodyPartExamined and StudyDescription of the studies, by organ."""


def phantom_images(organ: str, count: int, jpeg: bool = True) -> list[Pixels]:
    """``count`` single-frame 640x480 phantom images of ``organ`` (seeds 0..count-1)."""
    from inference.phantoms.generator import generate

    images = []
    for seed in range(count):
        sample = generate(organ, seed, rows=480, cols=640)  # type: ignore[arg-type]
        images.append(Pixels.encode(sample.frames, jpeg, cine=False, pixel_mm=sample.pixel_mm))
    return images


def sr_series(orthanc: Orthanc, study_uid: str) -> list[str]:
    """Orthanc ids of the SR series of ``study_uid``."""
    query = {"Level": "Series", "Query": {"StudyInstanceUID": study_uid, "Modality": "SR"}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{orthanc.http_port}/tools/find",
        data=json.dumps(query).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.loads(response.read()))


def wait_for_sr(orthanc: Orthanc, study_uid: str, timeout: float) -> float:
    """Block until Orthanc holds an SR of ``study_uid``; return that moment (perf_counter).

    Raises
    ------
    TimeoutError
        If no SR arrives within ``timeout`` seconds.
    """
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if sr_series(orthanc, study_uid):
            return time.perf_counter()
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"no SR of {study_uid} in the archive after {timeout} s")


def stages_for(engine: str, engine_names: Sequence[str]) -> Stages:
    """The real stages (``engine_names`` loaded), or the tests' fake engine.

    Both use the real decoder and result builders.
    """
    from dicom_node.stages import LazyAnalyzer, build, decode

    if engine == "real":
        analyzer = LazyAnalyzer(engine_names)
        analyzer.load()
        return Stages(analyze=analyzer, decode=decode, build=build)
    from tests.dicom_node.fake_engine import FakeAnalyzer

    return Stages(analyze=FakeAnalyzer(), decode=decode, build=build)


def run(
    engine: str,
    engine_names: Sequence[str],
    organ: str,
    studies: int,
    images: int,
    quiet: float,
    ahead_mb: int | None,
    work: Path,
) -> tuple[list[float], list[float]]:
    """Send ``studies`` studies; return (turnarounds minus quiet period, send seconds)."""
    pixels = phantom_images(organ, images)
    body_part, description = TAGS[organ]
    folders = []
    for number in range(studies):
        uid = generate_uid(UID_ROOT)
        folder = work / "studies" / str(number)
        folders.append(
            (uid, write_study(folder, pixels, uid, body_part=body_part, description=description))
        )
    stages = stages_for(engine, engine_names)
    turnarounds, sending = [], []
    with run_orthanc(work / "orthanc") as orthanc:
        archive = {"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port}
        overrides = {} if ahead_mb is None else {"analysis_ahead_mb": ahead_mb}
        values = node_config(
            work / "node", free_port(), overrides, archive, quiet, analyse_ahead=True
        )
        node = Node(NodeConfig.model_validate(values), stages)
        node.start()
        try:
            assert node.port is not None
            receiver = Receiver("node", "NODE", node.port, [os.getpid()], work, lambda: 0)
            for uid, files in folders:
                started = time.perf_counter()
                send_concurrently(receiver, [files])
                last_in = time.perf_counter()
                arrived = wait_for_sr(orthanc, uid, timeout=quiet + 600)
                turnarounds.append(arrived - last_in - quiet)
                sending.append(last_in - started)
                print(f"  study {len(turnarounds):2d}: {turnarounds[-1]:6.2f} s", flush=True)
        finally:
            node.stop()
    return turnarounds, sending


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linear interpolation."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: print the turnaround table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("real", "fake"), default="real")
    parser.add_argument(
        "--engines", default="liver,breast,cardiac", help="real engines to load (routing names)"
    )
    parser.add_argument("--organ", choices=sorted(TAGS), default="liver", help="phantom anatomy")
    parser.add_argument(
        "--torch-threads", type=int, help="torch.set_num_threads for the engines (torch default)"
    )
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--images", type=int, default=30, help="single-frame images per study")
    parser.add_argument("--quiet", type=float, default=2.0, help="quiet period in seconds")
    parser.add_argument(
        "--ahead-mb",
        type=int,
        help="analysis_ahead_mb of the node (its default when omitted; 0: no analysis ahead)",
    )
    args = parser.parse_args(argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    threads = args.torch_threads or "default"
    print(machine_summary() + f", torch threads {threads}")
    with tempfile.TemporaryDirectory(prefix="turnaround-") as folder:
        turnarounds, sending = run(
            args.engine,
            args.engines.split(","),
            args.organ,
            args.studies,
            args.images,
            args.quiet,
            args.ahead_mb,
            Path(folder),
        )
    print_table(
        [
            "engine",
            "organ",
            "studies",
            "images",
            "ahead MB",
            "send s (median)",
            "median s",
            "p95 s",
            "max s",
        ],
        [
            [
                args.engine if args.engine == "fake" else f"real ({args.engines})",
                args.organ,
                str(args.studies),
                str(args.images),
                "default" if args.ahead_mb is None else str(args.ahead_mb),
                f"{statistics.median(sending):.2f}",
                f"{statistics.median(turnarounds):.2f}",
                f"{percentile(turnarounds, 0.95):.2f}",
                f"{max(turnarounds):.2f}",
            ]
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
