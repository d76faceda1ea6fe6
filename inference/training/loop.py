"""The training loop shared by the cardiac and view models.

One CPU thread, AdamW with a one-cycle learning rate, a checkpoint after
every epoch and the best validation score kept.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
import torch

logger = structlog.get_logger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


def add_fit_arguments(parser: argparse.ArgumentParser, *, name: str, epochs: int,
                      batch_size: int, lr: float, validation: float, seed: int) -> None:
    """Options every training command shares (data cache, output, optimisation).

    Parameters
    ----------
    parser:
        The subcommand parser.
    name:
        Model name, for the default checkpoint directory ``<cache-dir>/<name>``.
    epochs, batch_size, lr, validation, seed:
        Defaults of the corresponding options.
    """
    parser.add_argument("--cache-dir", type=Path, default=Path("/work/cache"),
                        help="Where generated phantom data is cached.")
    parser.add_argument("--output", type=Path, default=Path("inference/weights"),
                        help="Directory for the weights and their card.")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help=f"Per-epoch checkpoints (default: <cache-dir>/{name}/checkpoints).")
    parser.add_argument("--min-rows", type=int, default=240, help="Smallest phantom image.")
    parser.add_argument("--max-rows", type=int, default=480, help="Largest phantom image.")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr, help="Peak (one-cycle) learning rate.")
    parser.add_argument("--validation", type=float, default=validation,
                        help="Share of the data held out for validation.")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="Stop after the epoch that passes this wall time.")
    parser.add_argument("--threads", type=int, default=1, help="Torch CPU threads.")
    parser.add_argument("--seed", type=int, default=seed)


def fit_options(args: argparse.Namespace, name: str) -> FitOptions:
    """The :class:`FitOptions` of parsed :func:`add_fit_arguments` options."""
    return FitOptions(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      seed=args.seed,
                      checkpoints=args.checkpoint_dir or args.cache_dir / name / "checkpoints",
                      max_minutes=args.max_minutes)


@dataclass(frozen=True)
class FitOptions:
    """Optimisation settings of :func:`fit`."""

    epochs: int
    batch_size: int
    lr: float
    seed: int
    checkpoints: Path
    max_minutes: float | None = None


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit` (the model holds the best weights)."""

    best_score: float
    best_epoch: int
    epochs_run: int


def fit(
    model: torch.nn.Module,
    batch: Callable[[np.ndarray, torch.Generator], Batch],
    n_train: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    score_fn: Callable[[torch.nn.Module], float],
    options: FitOptions,
) -> FitResult:
    """Train ``model`` and leave the weights of the best validation epoch in it.

    Parameters
    ----------
    model:
        The network.
    batch:
        ``batch(indices, generator) -> (inputs, targets)``: the (augmented)
        training batch of the given sample indices.
    n_train:
        Number of training samples.
    loss_fn:
        ``loss_fn(outputs, targets)``.
    score_fn:
        Validation score of the model (higher is better).
    options:
        Epochs, batch size, learning rate, seed, checkpoint directory, time budget.

    Returns
    -------
    FitResult
        Best score, its epoch and the epochs run.
    """
    torch.manual_seed(options.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=1e-4)
    steps = max(1, math.ceil(n_train / options.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=options.lr, total_steps=options.epochs * steps)
    options.checkpoints.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(options.seed)
    best = FitResult(best_score=-math.inf, best_epoch=0, epochs_run=0)
    best_state: dict[str, torch.Tensor] = {}
    started = time.monotonic()
    for epoch in range(1, options.epochs + 1):
        model.train()
        order = torch.randperm(n_train, generator=gen).numpy()
        total = 0.0
        for step in range(steps):
            idx = np.sort(order[step * options.batch_size : (step + 1) * options.batch_size])
            inputs, targets = batch(idx, gen)
            loss = loss_fn(model(inputs), targets)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            total += float(loss.detach())
        score = score_fn(model)
        minutes = (time.monotonic() - started) / 60.0
        logger.info("epoch", epoch=epoch, loss=round(total / steps, 4),
                    validation=round(score, 4), minutes=round(minutes, 1))
        torch.save({"epoch": epoch, "model": model.state_dict(), "validation": score},
                   options.checkpoints / f"epoch{epoch:03d}.pt")
        if score > best.best_score:
            best = FitResult(score, epoch, epoch)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        best = FitResult(best.best_score, best.best_epoch, epoch)
        if options.max_minutes is not None and minutes > options.max_minutes:
            logger.info("time_budget_reached", epoch=epoch)
            break
    if best_state:
        model.load_state_dict(best_state)
    return best

