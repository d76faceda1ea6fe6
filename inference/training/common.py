"""Helpers shared by the training commands: seeds, augmentation, weight cards."""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

logger = structlog.get_logger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
"""Where shipped weights and their cards live."""


def add_model_arguments(parser: argparse.ArgumentParser, *, epochs: int, batch_size: int,
                        lr: float, minutes: float) -> None:
    """Options every lesion model trainer takes (organ, cache, output, budget, seed, init)."""
    parser.add_argument("--organ", choices=["liver", "breast"], required=True)
    parser.add_argument("--cache", type=Path, nargs="+", required=True,
                        help="one or more caches from lesion-data (used together)")
    parser.add_argument("--output", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--max-minutes", type=float, default=minutes,
                        help="wall-clock budget of the final model")
    parser.add_argument("--limit", type=int, default=0, help="use only this many samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", type=Path, default=None,
                        help="start from these weights (fine-tuning)")


def set_seed(seed: int, threads: int = 1) -> np.random.Generator:
    """Seed torch and numpy, limit torch threads; return a numpy generator."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    return np.random.default_rng(seed)


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def command_line(args: object = None) -> str:
    """The command that is running, as a user would type it.

    The ``us-ai-train`` CLI stores it on its namespace as ``command_line``;
    otherwise it is rebuilt from ``sys.argv``.
    """
    recorded = getattr(args, "command_line", None)
    if recorded:
        return str(recorded)
    return "us-ai-train " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def write_card(weights: Path, *, command: str, seed: int, data: dict[str, Any],
               metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write ``<weights>.json`` next to the weights: command, seed, data, sha256, metrics."""
    card = {
        "model": weights.stem,
        "file": weights.name,
        "sha256": sha256_file(weights),
        "size_bytes": weights.stat().st_size,
        "command": command,
        "seed": seed,
        "data": data,
        "metrics": metrics,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    path = weights.with_suffix(".json")
    path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    logger.info("card_written", path=str(path))
    return path


CONTRAST_RANGE = (0.55, 1.2)
"""Factor by which :func:`intensity_augment` pulls grey levels towards or away from
mid-grey, on half the images (a softer or harder grey scale, as display maps and
dynamic-range settings differ between scanners)."""


def intensity_augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random gain, offset, gamma, contrast about mid-grey and noise on a ``(n, 1, h, w)``
    batch in ``[0, 1]``.

    Pixels that are exactly black (the background) stay black.
    """
    n = batch.shape[0]
    shape = (n, 1, 1, 1)
    gain = torch.empty(shape).uniform_(0.7, 1.35, generator=generator)
    offset = torch.empty(shape).uniform_(-0.08, 0.08, generator=generator)
    gamma = torch.exp(torch.empty(shape).uniform_(-0.35, 0.35, generator=generator))
    noise = torch.randn(batch.shape, generator=generator) * torch.empty(shape).uniform_(
        0.0, 0.04, generator=generator)
    contrast = torch.where(torch.rand(shape, generator=generator) < 0.5,
                           torch.empty(shape).uniform_(*CONTRAST_RANGE, generator=generator),
                           torch.ones(shape))
    out = (batch.clamp(1e-4, 1.0) ** gamma) * gain + offset
    out = 0.5 + (out - 0.5) * contrast + noise
    return torch.where(batch > 0, out.clamp(0.0, 1.0), batch)


def sharpness_augment(batch: torch.Tensor, generator: torch.Generator,
                      probability: float = 0.5) -> torch.Tensor:
    """Random edge enhancement or smoothing, as scanners' post-processing applies.

    With ``probability`` an image of the ``(n, 1, h, w)`` batch (in ``[0, 1]``)
    becomes ``x + a * (x - blur(x))``, ``blur`` a Gaussian of 1 pixel and ``a``
    uniform in ``[-0.7, 1.6]``: below 0 speckle reduction (smoothing), above 0
    unsharp masking (edge enhancement).  Pixels that are exactly black (the
    background) stay black.
    """
    n = batch.shape[0]
    taps = torch.exp(-torch.arange(-2.0, 3.0) ** 2 / 2.0)
    taps = taps / taps.sum()
    padded = torch.nn.functional.pad(batch, (2, 2, 2, 2), mode="replicate")
    blurred = torch.nn.functional.conv2d(padded, taps.view(1, 1, 1, 5))
    blurred = torch.nn.functional.conv2d(blurred, taps.view(1, 1, 5, 1))
    amount = torch.empty((n, 1, 1, 1)).uniform_(-0.7, 1.6, generator=generator)
    applied = torch.rand((n, 1, 1, 1), generator=generator) < probability
    out = batch + torch.where(applied, amount, torch.zeros_like(amount)) * (batch - blurred)
    return torch.where(batch > 0, out.clamp(0.0, 1.0), batch)


class Deadline:
    """Wall-clock budget for a training run."""

    def __init__(self, minutes: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + minutes * 60.0

    @property
    def passed(self) -> bool:
        """Whether the budget is spent."""
        return time.monotonic() >= self.end

    @property
    def fraction(self) -> float:
        """Fraction of the budget spent, in ``[0, 1]``."""
        return min(1.0, (time.monotonic() - self.start) / max(self.end - self.start, 1e-9))


class CosineSchedule:
    """Warm-up then cosine decay over whichever ends first: the steps or the time budget.

    Training stopped by the deadline thus still ends at a small learning rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, total_steps: int,
                 deadline: Deadline, warmup: float = 0.05) -> None:
        self.optimizer, self.lr, self.total = optimizer, lr, max(total_steps, 1)
        self.deadline, self.warmup, self.steps = deadline, warmup, 0

    def step(self) -> None:
        """Advance one step and set the learning rate."""
        self.steps += 1
        progress = max(self.steps / self.total, self.deadline.fraction)
        if progress < self.warmup:
            factor = progress / self.warmup
        else:
            factor = 0.5 * (1.0 + np.cos(np.pi * (progress - self.warmup) / (1 - self.warmup)))
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * max(float(factor), 0.01)
