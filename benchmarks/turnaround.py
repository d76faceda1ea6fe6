"""Turnaround: last instance of a study in, its SR accepted by the archive (Orthanc).

For each study, storescu sends its images to the node over one association;
the clock starts when storescu exits (the last instance was answered, so it
is durable in the node) and stops when Orthanc's REST API first lists an SR
series of the study (polled every 50 ms).  The node's quiet period is
subtracted: what remains is completion polling, the analysis, building the
results and the export.  Studies are sent one after another.

The node runs inside this process with either the real engines or the test
suite's fake engine (``--engine fake``: one box per image, no model), so the
figure can be taken before the weights exist.

Run from the repository root::

    python -m benchmarks.turnaround --engine real --studies 20 --images 30
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
from dicom_node.service import Node, Stages, real_stages
from tests.peers import Orthanc, free_port, run_orthanc

POLL_SECONDS = 0.05
"""How often Orthanc is asked whether the SR has arrived."""


def liver_images(count: int, jpeg: bool = True) -> list[Pixels]:
    """``count`` single-frame 640x480 liver phantom images (seeds 0..count-1)."""
    from inference.phantoms.generator import generate

    images = []
    for seed in range(count):
        sample = generate("liver", seed, rows=480, cols=640)
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


def stages_for(engine: str) -> Stages:
    """The real stages, or the tests' fake engine with the real decoder and builders."""
    if engine == "real":
        stages = real_stages()
        stages.analyze.load()  # type: ignore[attr-defined]
        return stages
    from dicom_node.stages import build, decode
    from tests.dicom_node.fake_engine import FakeAnalyzer

    return Stages(analyze=FakeAnalyzer(), decode=decode, build=build)


def run(
    engine: str, studies: int, images: int, quiet: float, work: Path
) -> tuple[list[float], list[float]]:
    """Send ``studies`` studies; return (turnarounds minus quiet period, send seconds)."""
    pixels = liver_images(images)
    folders = []
    for number in range(studies):
        uid = generate_uid(UID_ROOT)
        folders.append((uid, write_study(work / "studies" / str(number), pixels, uid)))
    stages = stages_for(engine)
    turnarounds, sending = [], []
    with run_orthanc(work / "orthanc") as orthanc:
        archive = {"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port}
        values = node_config(work / "node", free_port(), {}, archive, quiet)
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
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--images", type=int, default=30, help="single-frame images per study")
    parser.add_argument("--quiet", type=float, default=2.0, help="quiet period in seconds")
    args = parser.parse_args(argv)
    print(machine_summary())
    with tempfile.TemporaryDirectory(prefix="turnaround-") as folder:
        turnarounds, sending = run(args.engine, args.studies, args.images, args.quiet, Path(folder))
    print_table(
        ["engine", "studies", "images", "send s (median)", "median s", "p95 s", "max s"],
        [
            [
                args.engine,
                str(args.studies),
                str(args.images),
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
