"""Export every network of a weights folder to ONNX (``us-ai-train export-onnx``).

Each export lands next to its weights (``name.onnx``), is checked against
torch on random inputs, carries the SHA-256 of its weights in its metadata,
and is described under ``onnx`` in the weights' card.  The engines use an
export only when it was made from the weights they load (see
:mod:`inference.models.runtime`).  Run it again after every training.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import torch

from inference.models.runtime import export_onnx
from inference.training.common import WEIGHTS_DIR

logger = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``us-ai-train export-onnx``."""
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)


def _engines() -> list[tuple[str, Callable[[Path], Any]]]:
    """Engines (and the view classifier) with the weights file that tells they are installed."""
    from inference.engines.cardiac import WEIGHTS_NAME as CARDIAC_WEIGHTS
    from inference.engines.cardiac import CardiacEngine
    from inference.engines.lesion import BreastEngine, LiverEngine
    from inference.engines.view import WEIGHTS_NAME as VIEW_WEIGHTS
    from inference.engines.view import ViewClassifier

    return [("liver_detector.pt", LiverEngine), ("breast_detector.pt", BreastEngine),
            (CARDIAC_WEIGHTS, CardiacEngine), (VIEW_WEIGHTS, ViewClassifier)]


def export_folder(weights_dir: Path) -> list[dict[str, Any]]:
    """Export every installed network under ``weights_dir``; return the card entries."""
    entries = []
    for marker, make in _engines():
        if not (weights_dir / marker).exists():
            continue
        for weights, module, shape in make(weights_dir).networks():
            card_file = weights.with_suffix(".json")
            card = json.loads(card_file.read_text())
            entry = export_onnx(module, weights, torch.zeros(shape), str(card["sha256"]))
            card["onnx"] = entry
            card_file.write_text(json.dumps(card, indent=2) + "\n")
            entries.append(entry)
    return entries


def run(args: argparse.Namespace) -> None:
    """Export the folder's networks."""
    entries = export_folder(args.weights_dir)
    logger.info("onnx_export_done", exports=len(entries), weights_dir=str(args.weights_dir))
