"""Inference speed of each engine at 640x480 on the CPU, torch and ONNX Runtime.

For every engine whose weights are installed:

* still: ``Engine.run`` on one single-frame 640x480 phantom image, repeated;
  frames/s = runs / seconds;
* cine: ``Engine.run`` on a 60-frame 640x480 clip; frames/s = 60 / seconds
  (the lesion engines analyse an even sample of the clip, ``max_frames``);
* end to end: decoding the JPEG-baseline clip as the node does, then
  ``Analyzer.analyze`` (quality gate, view classifier, engine);
* each network of the engine alone (`Engine.networks()`), on a random input of
  its shape, in torch and in ONNX Runtime (the export shipped next to the weights).

Inputs are the project's phantoms (liver, breast, echo) through the node's
own decoder, so geometry and scan areas are those the engines see in service.

Run from the repository root::

    python -m benchmarks.engines                # every engine, 2 threads
    python -m benchmarks.engines --engines liver --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.data import Pixels, make_dataset
from benchmarks.report import machine_summary, print_table
from inference.engines.base import ImageInput
from inference.preprocessing import image_input_from_dataset

CINE_FRAMES = 60
BODY_PARTS = {"liver": ("LIVER", "US LIVER"), "breast": ("BREAST", "US BREAST")}


def _seconds(call: Callable[[], Any], repeat: int) -> float:
    """Median wall seconds of ``call`` over ``repeat`` runs (after one warm-up)."""
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def phantom_dataset(engine: str, frames: int) -> Any:
    """A JPEG-baseline 640x480 dataset of ``engine``'s anatomy with ``frames`` frames."""
    if engine == "cardiac":
        from inference.phantoms.echo import random_echo_spec, render_echo

        spec = random_echo_spec(np.random.default_rng(3), size=(480, 640), n_frames=frames)
        cine = render_echo(spec)
        pixels = Pixels.encode(cine.frames, jpeg=True, cine=True, pixel_mm=cine.pixel_mm)
        body_part, description = "HEART", "ECHO TTE"
    else:
        from inference.phantoms.generator import generate

        sample = generate(engine, seed=5, rows=480, cols=640, n_frames=frames)  # type: ignore[arg-type]
        pixels = Pixels.encode(sample.frames, jpeg=True, cine=frames > 1, pixel_mm=sample.pixel_mm)
        body_part, description = BODY_PARTS[engine]
    return make_dataset(pixels, "2.25.1", "2.25.2", 1, body_part, description)


def torch_vs_onnx(
    module: torch.nn.Module, weights: Path, x: torch.Tensor, repeat: int
) -> tuple[float, float | None, str]:
    """(torch ms, ONNX Runtime ms or ``None``, note) of one forward pass on ``x``.

    ONNX Runtime runs the export shipped next to the weights, as the engine does.
    """
    from inference.engines.model_card import sha256_of
    from inference.models.runtime import TorchRunner, make_runner

    torch_ms = 1000 * _seconds(lambda: TorchRunner(module)(x), repeat)
    runner = make_runner(module, weights, sha256_of(weights))
    if runner.backend != "onnxruntime":
        return torch_ms, None, "no matching ONNX export"
    return torch_ms, 1000 * _seconds(lambda: runner(x), repeat), ""


def load(name: str, weights_dir: Path | None) -> tuple[Any, Any]:
    """The engine ``name`` and an analyzer around it (shipped weights, or ``weights_dir``)."""
    from inference.analyzer import Analyzer

    if weights_dir is None:
        from inference.engines.registry import load_engine

        return load_engine(name), Analyzer.load([name])
    from inference.engines.view import ViewClassifier

    if name == "cardiac":
        from inference.engines.cardiac import CardiacEngine

        engine: Any = CardiacEngine(weights_dir)
    else:
        from inference.engines import lesion

        engine = {"liver": lesion.LiverEngine, "breast": lesion.BreastEngine}[name](
            weights_dir=weights_dir
        )
    return engine, Analyzer({name: engine}, ViewClassifier(weights_dir))


def bench_engine(
    name: str, threads: int, repeat: int, weights_dir: Path | None = None
) -> tuple[list[str], list[list[str]]]:
    """The engine's row and its networks' rows."""
    engine, analyzer = load(name, weights_dir)
    cine_ds = phantom_dataset(name, CINE_FRAMES)
    cine = image_input_from_dataset(cine_ds)
    still_fps = "n/a (cine only)"
    still: ImageInput | None = None
    if name != "cardiac":
        still = image_input_from_dataset(phantom_dataset(name, 1))
        still_fps = f"{1 / _seconds(lambda: engine.run(still), repeat):.1f}"
    cine_seconds = _seconds(lambda: engine.run(cine), max(1, repeat // 5))

    def end_to_end() -> None:
        analyzer.analyze(image_input_from_dataset(cine_ds), [name])

    e2e_seconds = _seconds(end_to_end, max(1, repeat // 5))
    row = [
        name,
        still_fps,
        f"{cine_seconds:.2f}",
        f"{CINE_FRAMES / cine_seconds:.1f}",
        f"{e2e_seconds:.2f}",
        f"{CINE_FRAMES / e2e_seconds:.1f}",
    ]
    network_rows = []
    batch = 16 if name == "cardiac" else 1  # the cardiac engine segments 16 frames at a time
    for weights, module, shape in engine.networks():
        x = torch.rand((batch, *shape[1:]), generator=torch.Generator().manual_seed(0))
        torch_ms, ort_ms, note = torch_vs_onnx(module, weights, x, repeat)
        network_rows.append(
            [
                weights.stem,
                "x".join(map(str, x.shape)),
                f"{torch_ms:.1f}",
                f"{ort_ms:.1f}" if ort_ms is not None else note,
                f"{torch_ms / ort_ms:.2f}" if ort_ms else "",
            ]
        )
    return row, network_rows


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: print the engine and network tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="liver,breast,cardiac")
    parser.add_argument("--threads", type=int, default=2, help="torch and ORT threads")
    parser.add_argument("--repeat", type=int, default=10, help="runs per still measurement")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        help="weights to use instead of the shipped ones (all engines and the view classifier)",
    )
    args = parser.parse_args(argv)
    from inference.engines.registry import EngineUnavailableError

    torch.set_num_threads(args.threads)
    weights = args.weights_dir or "shipped weights"
    print(machine_summary() + f", torch {torch.__version__}, {args.threads} thread(s), {weights}")
    rows, networks = [], []
    for name in args.engines.split(","):
        try:
            row, network_rows = bench_engine(name, args.threads, args.repeat, args.weights_dir)
        except (EngineUnavailableError, FileNotFoundError) as exc:
            rows.append([name, f"pending: {type(exc).__name__}: {exc}", "", "", "", ""])
            continue
        rows.append(row)
        networks.extend(network_rows)
    print_table(
        [
            "engine",
            "still frames/s",
            f"{CINE_FRAMES}-frame cine s",
            "cine frames/s",
            "end-to-end cine s",
            "end-to-end frames/s",
        ],
        rows,
    )
    if networks:
        print()
        print_table(["network", "input", "torch ms", "ORT ms", "ORT speed-up"], networks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
