"""Train a lesion verifier (``us-ai-train liver-verifier``): the detector's second stage.

The shipped detector (``--weights-dir``) runs on phantoms of both generators,
seeds given by ``--first-seed``/``--second-seed`` (fresh ones: no cache or report
uses them), and every candidate it finds down to ``--floor`` becomes a crop
(:func:`~inference.models.roi.roi_crop` of the full-resolution frame, as the
classifier's), labelled lesion when it overlaps a true lesion with IoU 0.25 or
more, as the evaluation counts it.  Each candidate gives two crops (as found,
and rotated within 10 degrees); each true lesion gives one more, its box
jittered, so lesions the detector scores below the floor are seen too.  The
verifier is a two-class :class:`~inference.models.lesion_nets.LesionClassifier`
trained by the classifier's loop (classes balanced, flips, scanner
post-processing, grey levels), keeping the best epoch on the images whose seed
ends in 9.  ``--calipers`` burns measurement marks into a share of the images
first (:mod:`inference.training.calipers`).  Its card records the floor; the
engine's score is then the geometric mean of the detector's score and the
verifier's probability (:mod:`inference.engines.lesion`).
"""

from __future__ import annotations

import argparse
import itertools
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import structlog
import torch

from inference.engines.lesion import LesionEngine
from inference.evaluation.lesion import ENGINES, image_input
from inference.evaluation.metrics import roc_auc
from inference.findings import BoundingBox
from inference.models.roi import CLASSIFIER_SIZE, roi_crop
from inference.phantoms.generator import generate
from inference.phantoms.imagedomain import generate_image_domain
from inference.phantoms.scanner import random_change
from inference.preprocessing import scan_area
from inference.training.calipers import burn_calipers
from inference.training.classifier import fit, predict
from inference.training.common import WEIGHTS_DIR, command_line, set_seed, write_card

logger = structlog.get_logger(__name__)

IOU_LESION = 0.25
"""A candidate overlapping a true lesion this much is a lesion (the evaluation's IoU)."""

BOX_JITTER = 0.08
"""Standard deviation of the jitter of a true lesion's box sides, as a fraction of its size."""

ROTATION_DEG = 10.0
"""Rotations of the crops are drawn within plus or minus this."""

CALIPER_STREAM = 1_000_000
"""Second key of the random stream that draws an image's calipers (copies use 1, 2, ...)."""

VALIDATION_DIGIT = 9
"""Images whose seed ends in this digit are the validation share (one in ten)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--organ", choices=sorted(ENGINES), required=True)
    parser.add_argument("--first-seed", type=int, required=True,
                        help="first seed of the physics generator's images")
    parser.add_argument("--second-seed", type=int, required=True,
                        help="first seed of the image-domain generator's images")
    parser.add_argument("--count", type=int, default=4000, help="images of each generator")
    parser.add_argument("--floor", type=float, default=0.10,
                        help="detector candidates down to this score are verified")
    parser.add_argument("--changed-copies", type=int, default=0,
                        help="copies of each image changed by a random scanner post-processing, "
                             "whose candidates are crops too")
    parser.add_argument("--calipers", type=float, default=0.0,
                        help="share of the images that get measurement calipers burned in, "
                             "across a lesion as a rule, before the detector runs")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR,
                        help="where the detector is read")
    parser.add_argument("--output", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-minutes", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="processes drawing the images")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)


def _lesion_label(box: BoundingBox, truths: list[BoundingBox]) -> int:
    return int(max((box.iou(t) for t in truths), default=0.0) >= IOU_LESION)


def candidate_crops(organ: str, generator: str, seeds: range, weights_dir: Path, floor: float,
                    changed_copies: int = 0, calipers: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops, lesion labels and image seeds of the detector's candidates (and of the
    true lesions) on the phantoms ``seeds`` of ``generator`` (``physics`` or
    ``image-domain``), and on ``changed_copies`` copies of each changed by a random
    scanner post-processing (:func:`~inference.phantoms.scanner.random_change`).  A
    share ``calipers`` of the images get measurement calipers burned in first
    (:func:`~inference.training.calipers.burn_calipers`, marks twice the detector
    input's size, from a random stream of their own: the other images are unchanged)."""
    torch.set_num_threads(1)
    draw = generate if generator == "physics" else generate_image_domain
    engine: LesionEngine = ENGINES[organ](weights_dir)
    crops: list[np.ndarray] = []
    labels: list[int] = []
    origin: list[int] = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        sample = draw(organ, seed)
        truths = [t.box for t in sample.truths[0]]
        area = scan_area(image_input(sample, "", True))
        frame = sample.frames[0].copy()
        marks = np.random.default_rng([seed, CALIPER_STREAM])
        if marks.random() < calipers:
            boxes = np.array([[b.x0, b.y0, b.x1, b.y1] for b in truths]).reshape(-1, 4)
            burn_calipers(frame, boxes, marks, float(marks.integers(150, 256)), scale=2.0)
        frames = np.stack([frame, *(
            random_change(frame, np.random.default_rng([seed, copy]))
            for copy in range(1, changed_copies + 1))])
        found_by_frame = engine.candidates(frames, np.arange(len(frames)), area, floor)
        for frame, found in zip(frames, found_by_frame, strict=True):
            for detection in found:
                label = _lesion_label(detection.box, truths)
                for angle in (0.0, float(rng.uniform(-ROTATION_DEG, ROTATION_DEG))):
                    crops.append(roi_crop(frame, detection.box, angle_deg=angle))
                    labels.append(label)
                    origin.append(seed)
            for box in truths:
                j = rng.normal(0.0, BOX_JITTER, 4) * [box.width, box.height, box.width, box.height]
                jittered = BoundingBox(box.x0 + j[0], box.y0 + j[1], box.x1 + j[2], box.y1 + j[3])
                crops.append(roi_crop(frame, jittered,
                                      angle_deg=float(rng.uniform(-ROTATION_DEG, ROTATION_DEG))))
                labels.append(1)
                origin.append(seed)
    logger.info("verifier_crops_drawn", generator=generator, images=len(seeds), crops=len(crops),
                lesions=int(sum(labels)))
    return (np.stack(crops) if crops else np.zeros((0, CLASSIFIER_SIZE, CLASSIFIER_SIZE), np.uint8),
            np.array(labels, np.int64), np.array(origin, np.int64))


def _chunks(start: int, count: int, parts: int) -> list[range]:
    bounds = np.linspace(start, start + count, parts + 1).astype(int)
    return [range(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def draw_crops(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every generator's crops, in seed order, drawn by ``args.workers`` processes."""
    jobs = [(generator, chunk) for generator, start in (("physics", args.first_seed),
                                                        ("image-domain", args.second_seed))
            for chunk in _chunks(start, args.count, args.workers)]
    with ProcessPoolExecutor(args.workers) as pool:
        parts = list(pool.map(candidate_crops, *zip(*[
            (args.organ, generator, chunk, args.weights_dir, args.floor, args.changed_copies,
             args.calipers)
            for generator, chunk in jobs], strict=True)))
    crops, labels, origin = zip(*parts, strict=True)
    return np.concatenate(crops), np.concatenate(labels), np.concatenate(origin)


def run(args: argparse.Namespace) -> None:
    """Draw the crops, train, keep the best epoch on validation, write the card."""
    if args.count < 10:
        raise SystemExit("--count must be at least 10: one image in ten is for validation")
    if args.changed_copies < 0:
        raise SystemExit("--changed-copies must be 0 or more")
    crops, labels, seeds = draw_crops(args)
    rng = set_seed(args.seed, args.threads)
    val = seeds % 10 == VALIDATION_DIGIT
    out_path = args.output / f"{args.organ}_verifier.pt"
    args.output.mkdir(parents=True, exist_ok=True)
    model, val_acc, epoch = fit(crops[~val], labels[~val], 2, args.epochs, args, rng,
                                args.max_minutes, val=(crops[val], labels[val]),
                                save_to=out_path)
    lesion = predict(model, crops[val])[:, 1]
    write_card(out_path, command=command_line(args), seed=args.seed,
               data={"first_generator_seeds": [args.first_seed, args.first_seed + args.count - 1],
                     "second_generator_seeds": [args.second_seed,
                                                args.second_seed + args.count - 1],
                     "train_crops": int((~val).sum()), "val_crops": int(val.sum()),
                     "lesion_share": float(labels.mean()),
                     "labels": f"lesion when IoU >= {IOU_LESION} with a true lesion",
                     "changed_copies": args.changed_copies, "calipers": args.calipers,
                     "detector_sha256": _detector_sha256(args.weights_dir, args.organ),
                     "balanced": True},
               metrics={"val_accuracy": val_acc, "best_epoch": epoch,
                        "val_auc": roc_auc(lesion, labels[val].astype(bool))},
               extra={"floor": args.floor,
                      "score": "geometric mean of the detector score and this probability"})


def _detector_sha256(weights_dir: Path, organ: str) -> str:
    """SHA-256 of the detector whose candidates the verifier learned."""
    card = json.loads((weights_dir / f"{organ}_detector.json").read_text())
    return str(card["sha256"])
