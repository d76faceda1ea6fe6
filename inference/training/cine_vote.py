"""Choose a lesion engine's cine track score on validation clips (``us-ai-train cine-vote``).

On a cine the engine tracks detections down to half the per-frame score
threshold and reports a track when its evidence (its scores summed and divided
by the analysed frames) reaches the track score.  This command runs the engine on
one-lesion validation clips (seeds 9,500 and up: no training cache and no
held-out set uses them) for each candidate track score and writes into the
detector card the one with the best 4-class clip accuracy among those that
report at most ``--max-false-tracks`` false tracks per clip (default 0.5: one
every other clip; ties: the larger score), with the accuracy, the false tracks
per clip and the tracking F1 of every candidate.  A lower score always tracks
more lesions, so accuracy alone would pick the loosest one and fill the
radiologist's screen with false tracks.  ``--image-domain-clips`` adds clips of
the image-domain generator (seeds 25,000,000 and up) to the pool, so that the
score does not suit one generator's clips only.  The held-out evaluation never
sees these clips.
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

IMAGE_DOMAIN_FIRST_SEED = 25_000_000
"""First seed of the image-domain generator's validation clips."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``us-ai-train cine-vote``."""
    parser.add_argument("--organ", choices=sorted(ENGINES), required=True)
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--image-domain-clips", type=int, default=0,
                        help="validation clips of the image-domain generator, pooled")
    parser.add_argument("--track-scores", default="0.08,0.1,0.12,0.14,0.16,0.18,0.2,0.24",
                        help="candidate track scores (comma-separated)")
    parser.add_argument("--max-false-tracks", type=float, default=0.5,
                        help="false tracks per clip a candidate may report")
    parser.add_argument("--threads", type=int, default=1)


@dataclass(frozen=True)
class TrackScoreResult:
    """How the engine did on the validation clips with one track score."""

    f1: float
    accuracy: float
    false_tracks_per_clip: float


def score_candidates(organ: str, weights_dir: Path, clips: int, candidates: list[float],
                     image_domain_clips: int = 0) -> dict[float, TrackScoreResult]:
    """Tracking F1, 4-class accuracy and false tracks per clip, per track score, on
    ``clips`` validation clips of the first generator and ``image_domain_clips`` of the
    image-domain one."""
    seeds = [(FIRST_SEED + k, False) for k in range(clips)] + [
        (IMAGE_DOMAIN_FIRST_SEED + k, True) for k in range(image_domain_clips)]
    samples = [s for s in (clip_sample(organ, seed, image_domain=image_domain)
                           for seed, image_domain in tqdm(seeds, desc=f"{organ} clips",
                                                          mininterval=10))
               if s is not None]
    out = {}
    for candidate in candidates:
        engine = ENGINES[organ](weights_dir, cine_track_score=candidate)
        found = [clip_prediction(engine, s) for s in samples]
        correct = sum(1 for (f, _), s in zip(found, samples, strict=True)
                      if f is not None and f.label == s.labels[0])
        tracked = sum(1 for f, _ in found if f is not None)
        false = sum(extra for _, extra in found)
        n = max(len(samples), 1)
        f1 = 2 * tracked / max(2 * tracked + false + (len(samples) - tracked), 1)
        out[candidate] = TrackScoreResult(f1, correct / n, false / n)
        logger.info("cine_track_score_scored", organ=organ, track_score=candidate,
                    **vars(out[candidate]))
    return out


def run(args: argparse.Namespace) -> None:
    """Score every candidate and write the best into the detector card."""
    torch.set_num_threads(args.threads)
    candidates = sorted(float(f) for f in args.track_scores.split(","))
    scores = score_candidates(args.organ, args.weights_dir, args.clips, candidates,
                              args.image_domain_clips)
    allowed = [c for c in candidates if scores[c].false_tracks_per_clip <= args.max_false_tracks]
    best = max(allowed or [max(candidates)], key=lambda c: (scores[c].accuracy, c))
    card_file = args.weights_dir / f"{args.organ}_detector.json"
    card = json.loads(card_file.read_text())
    card.pop("cine_threshold_factor", None)
    card.pop("cine_vote_tuning", None)
    card["cine_track_score"] = best
    card["cine_track_tuning"] = {
        "command": command_line(args), "first_seed": FIRST_SEED, "clips": args.clips,
        "image_domain_first_seed": IMAGE_DOMAIN_FIRST_SEED,
        "image_domain_clips": args.image_domain_clips,
        "max_false_tracks_per_clip": args.max_false_tracks,
        "by_track_score": {f"{c:.3f}": vars(scores[c]) for c in candidates},
    }
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    logger.info("cine_track_score_chosen", organ=args.organ, track_score=best,
                **vars(scores[best]))
