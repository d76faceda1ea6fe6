"""Choose a lesion engine's cine threshold factor on validation clips (``us-ai-train cine-vote``).

On a cine the engine keeps a track when its detections pass the per-frame
score threshold times a factor on enough sampled frames.  This command runs
the engine on one-lesion validation clips (seeds 9,500 and up: no training
cache and no held-out set uses them) for each candidate factor and writes
into the detector card the factor with the best 4-class clip accuracy among
those that report at most ``--max-false-tracks`` false tracks per clip
(default 0.5: one every other clip; ties: the larger factor), with the
accuracy, the false tracks per clip and the tracking F1 of every candidate.
A lower factor always tracks more lesions, so accuracy alone would pick the
loosest one and fill the radiologist's screen with false tracks.  The
held-out evaluation never sees these clips.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch
from tqdm import tqdm

from inference.evaluation.lesion import ENGINES, clip_prediction, clip_sample
from inference.training.common import WEIGHTS_DIR, command_line

logger = structlog.get_logger(__name__)

FIRST_SEED = 9_500
"""First seed of the validation clips."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``us-ai-train cine-vote``."""
    parser.add_argument("--organ", choices=sorted(ENGINES), required=True)
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--factors", default="0.5,0.6,0.7,0.8,0.9,1.0")
    parser.add_argument("--max-false-tracks", type=float, default=0.5,
                        help="false tracks per clip a factor may report")
    parser.add_argument("--threads", type=int, default=1)


@dataclass(frozen=True)
class FactorScore:
    """How the engine did on the validation clips with one threshold factor."""

    f1: float
    accuracy: float
    false_tracks_per_clip: float


def score_factors(organ: str, weights_dir: Path, clips: int, factors: list[float]
                  ) -> dict[float, FactorScore]:
    """Tracking F1, 4-class accuracy and false tracks per clip, per threshold factor."""
    samples = [s for s in (clip_sample(organ, FIRST_SEED + k)
                           for k in tqdm(range(clips), desc=f"{organ} clips", mininterval=10))
               if s is not None]
    out = {}
    for factor in factors:
        engine = ENGINES[organ](weights_dir, cine_threshold_factor=factor)
        found = [clip_prediction(engine, s) for s in samples]
        correct = sum(1 for (f, _), s in zip(found, samples, strict=True)
                      if f is not None and f.label == s.labels[0])
        tracked = sum(1 for f, _ in found if f is not None)
        false = sum(extra for _, extra in found)
        n = max(len(samples), 1)
        f1 = 2 * tracked / max(2 * tracked + false + (len(samples) - tracked), 1)
        out[factor] = FactorScore(f1, correct / n, false / n)
        logger.info("cine_factor_scored", organ=organ, factor=factor, **vars(out[factor]))
    return out


def run(args: argparse.Namespace) -> None:
    """Score every factor and write the best into the detector card."""
    torch.set_num_threads(args.threads)
    factors = sorted(float(f) for f in args.factors.split(","))
    scores = score_factors(args.organ, args.weights_dir, args.clips, factors)
    allowed = [f for f in factors if scores[f].false_tracks_per_clip <= args.max_false_tracks]
    best = max(allowed or [max(factors)], key=lambda f: (scores[f].accuracy, f))
    card_file = args.weights_dir / f"{args.organ}_detector.json"
    card = json.loads(card_file.read_text())
    card["cine_threshold_factor"] = best
    card["cine_vote_tuning"] = {
        "command": command_line(args), "first_seed": FIRST_SEED, "clips": args.clips,
        "max_false_tracks_per_clip": args.max_false_tracks,
        "by_factor": {f"{f:.2f}": vars(scores[f]) for f in factors},
    }
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    logger.info("cine_factor_chosen", organ=args.organ, factor=best, **vars(scores[best]))
