"""Frames per second of the lesion engines (detector + classifier) on CPU.

Runs each engine on phantom frames of 480 x 640 (rows x cols) and reports
the throughput of the chained detector + classifier per frame, for the
engine's own path (letterbox, detect, crop, classify) without Grad-CAM, and
for the full ``run`` (with Grad-CAM maps and findings).

Usage::

    python benchmarks/inference_speed.py --threads 2 --frames 60
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from inference.engines.lesion import BreastEngine, LesionEngine, LiverEngine
from inference.evaluation.lesion import image_input
from inference.phantoms.generator import generate


def _frames(organ: str, count: int) -> list:
    return [generate(organ, 5_000_000 + k, 480, 640) for k in range(count)]  # type: ignore[arg-type]


def bench(engine: LesionEngine, organ: str, n: int) -> tuple[float, float]:
    """Frames/s of detect+classify and of the full ``run``."""
    samples = _frames(organ, min(n, 20))
    inputs = [image_input(s, f"2.25.{k}", True) for k, s in enumerate(samples)]
    engine.run(inputs[0])  # warm-up
    start = time.perf_counter()
    for k in range(n):
        image = inputs[k % len(inputs)]
        dets = engine.detect(image.frames, np.array([0]), image.geometry.scan_area)[0]
        engine.classify(image.frames[0], [d.box for d in dets])
    chained = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for k in range(n):
        engine.run(inputs[k % len(inputs)])
    full = n / (time.perf_counter() - start)
    return chained, full


def main() -> None:
    """Print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), 480x640 frames")
    for organ, cls in (("liver", LiverEngine), ("breast", BreastEngine)):
        chained, full = bench(cls(), organ, args.frames)
        print(f"{organ:7s} detector+classifier {chained:6.1f} frames/s | "
              f"full run with Grad-CAM {full:6.1f} frames/s")


if __name__ == "__main__":
    main()
