"""Shipped weights and their JSON cards (command, seed, SHA-256, metrics).

A card sits next to its weights file (``name.pt`` -> ``name.json``) and is
what the engines report as their identity: the SHA-256 goes into
:class:`inference.findings.AlgorithmInfo`, so a retrained model gets a new
device UID.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog
import torch

logger = structlog.get_logger(__name__)


def sha256_of(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def card_path(weights: Path) -> Path:
    """The card file of a weights file."""
    return weights.with_suffix(".json")


def save_weights(model: torch.nn.Module, weights: Path, *, name: str, seed: int,
                 architecture: Mapping[str, Any], data: Mapping[str, Any],
                 metrics: Mapping[str, Any], command: str | None = None) -> dict[str, Any]:
    """Save a state dict and write its card.

    Parameters
    ----------
    model:
        The trained model (its ``state_dict`` is saved in float32).
    weights:
        Destination ``.pt`` path.
    name:
        Algorithm name.
    seed:
        Training seed.
    architecture:
        Constructor arguments and input size, enough to rebuild the model.
    data:
        What the model was trained on.
    metrics:
        Validation figures.
    command:
        The command line; the current ``us-ai-train`` one when ``None``.

    Returns
    -------
    dict
        The card.
    """
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().float() if v.is_floating_point() else v.cpu()
             for k, v in model.state_dict().items()}
    torch.save(state, weights)
    card = {
        "name": name,
        "weights": weights.name,
        "sha256": sha256_of(weights),
        "size_bytes": weights.stat().st_size,
        "command": command if command is not None else "us-ai-train " + shlex.join(sys.argv[1:]),
        "seed": seed,
        "architecture": dict(architecture),
        "data": dict(data),
        "metrics": dict(metrics),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    card_path(weights).write_text(json.dumps(card, indent=2) + "\n")
    logger.info("weights_saved", path=str(weights), sha256=card["sha256"])
    return card


def read_card(weights: Path) -> dict[str, Any]:
    """The card of a weights file."""
    return json.loads(card_path(weights).read_text())


def update_metrics(weights: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``metrics`` into the card of ``weights`` (e.g. after an evaluation)."""
    card = read_card(weights)
    if card["sha256"] != sha256_of(weights):
        raise ValueError(f"The card of {weights} does not match the weights file.")
    card["metrics"] = {**card["metrics"], **metrics}
    card_path(weights).write_text(json.dumps(card, indent=2) + "\n")
    return card


def load_model(weights: Path, what: str,
               build: Callable[[Mapping[str, Any]], torch.nn.Module]
               ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build a model from its card and load its weights, after checking their SHA-256.

    Parameters
    ----------
    weights:
        The ``.pt`` file.
    what:
        Human name of the model, for error messages.
    build:
        Makes the (untrained) model from the card's ``architecture``.

    Returns
    -------
    tuple
        The model in evaluation mode and the card.

    Raises
    ------
    FileNotFoundError
        When the weights or their card are missing.
    ValueError
        When the weights do not match the SHA-256 of their card.
    """
    if not weights.exists():
        raise FileNotFoundError(f"{what} weights not found: {weights}")
    card = read_card(weights)
    if sha256_of(weights) != card["sha256"]:
        raise ValueError(f"{weights} does not match the SHA-256 of its card.")
    model = build(card["architecture"])
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    return model, card
