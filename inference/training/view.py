"""Train the anatomy/view classifier on phantom images of all four classes.

``us-ai-train view --cache-dir /work/cache --output inference/weights``

Liver and breast images come from :mod:`inference.phantoms.generator` (and, for a
share ``--image-domain-share`` of them, from :mod:`inference.phantoms.imagedomain`), apical
four-chamber frames from :mod:`inference.phantoms.echo` and the negatives
("other": thyroid, carotid, kidney, bladder, parasternal short axis) from
:mod:`inference.phantoms.other`.  Each image is cropped to its (jittered)
scan area and resized to the classifier input, as the engine does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import structlog
import torch
import torch.nn.functional as F

from inference.engines.lv_segmentation import prepare_frames
from inference.engines.model_card import save_weights
from inference.engines.view import (
    ALGORITHM_NAME,
    VIEW_CLASSES,
    VIEW_INPUT_SIZE,
    WEIGHTS_NAME,
    ViewCNN,
)
from inference.findings import AnatomyValues, BoundingBox
from inference.phantoms.echo import random_echo_spec, render_echo
from inference.phantoms.generator import generate as generate_lesion_phantom
from inference.phantoms.imagedomain import generate_image_domain
from inference.phantoms.other import generate_other
from inference.training.common import intensity_augment, sharpness_augment
from inference.training.data_cache import jittered_box, load_cache, save_cache
from inference.training.loop import add_fit_arguments, fit, fit_options

logger = structlog.get_logger(__name__)

LESION_VIEWS = (AnatomyValues.LIVER, AnatomyValues.BREAST)
"""The classes drawn by a lesion phantom generator."""

TRAIN_SEEDS = (10_000, 1_000_000)
"""Phantom seeds drawn for training; held-out evaluation uses seeds from 2,000,000."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the view-classifier training options to ``parser``."""
    add_fit_arguments(parser, name="view", epochs=12, batch_size=32, lr=3e-3,
                      validation=0.1, seed=20261126)
    parser.add_argument("--per-class", type=int, default=600, help="Images per class.")
    parser.add_argument("--width", type=int, default=16, help="Channels of the first layer.")
    parser.add_argument("--image-domain-share", type=float, default=0.0,
                        help="Share of the liver and breast images drawn by the image-domain "
                             "generator (inference.phantoms.imagedomain).")


def render_view_sample(anatomy: AnatomyValues, seed: int, rows: int, cols: int,
                       image_domain: bool = False
                       ) -> tuple[np.ndarray, BoundingBox | tuple[int, int, int, int]]:
    """One phantom frame of ``anatomy`` and its scan box.

    Parameters
    ----------
    anatomy:
        Class to draw (HEART is the apical four-chamber view).
    seed:
        Seed of the phantom.
    rows, cols:
        Image size.
    image_domain:
        Draw a liver or breast image with the image-domain generator.

    Returns
    -------
    tuple
        ``uint8`` ``(rows, cols)`` frame and the scan box.
    """
    if anatomy is AnatomyValues.HEART:
        rng = np.random.default_rng(seed)
        spec = random_echo_spec(rng, size=(rows, cols))
        cine = render_echo(spec, [int(rng.integers(0, spec.n_frames))])
        return cine.frames[0], cine.scan_box
    if anatomy is AnatomyValues.OTHER:
        other = generate_other(seed, rows, cols)
        return other.frames[0], other.scan_box
    organ = "liver" if anatomy is AnatomyValues.LIVER else "breast"
    draw = generate_image_domain if image_domain else generate_lesion_phantom
    sample = draw(organ, seed, rows, cols)
    return sample.frames[0], sample.scan_box


def generate(path: Path, per_class: int, rows: tuple[int, int], seed: int,
             image_domain_share: float = 0.0) -> dict[str, np.ndarray]:
    """Render the classifier data set (or load it from ``path`` when cached).

    A share ``image_domain_share`` of the liver and breast images comes from the
    image-domain generator (none: the data set of earlier versions, seed for seed).

    Returns
    -------
    dict
        ``images`` uint8 ``(n, S, S)`` and ``labels`` (index in VIEW_CLASSES);
        samples are ordered class by class, ``index`` is the rank within the
        class (the last ones are the validation split).
    """
    cached = load_cache(path)
    if cached is not None:
        return cached
    rng = np.random.default_rng(seed)
    choice = np.random.default_rng([seed, 1])  # its own stream: the other draws stay the same
    images, labels, ranks = [], [], []
    for label, anatomy in enumerate(VIEW_CLASSES):
        for rank in range(per_class):
            n_rows = int(rng.integers(rows[0], rows[1] + 1))
            n_cols = int(n_rows * rng.uniform(1.2, 1.45))
            image_domain = anatomy in LESION_VIEWS and choice.random() < image_domain_share
            frame, box = render_view_sample(anatomy, int(rng.integers(*TRAIN_SEEDS)),
                                            n_rows, n_cols, image_domain)
            crop = jittered_box(box, rng, frame.shape)
            images.append(prepare_frames(frame[None], crop, VIEW_INPUT_SIZE)[0])
            labels.append(label)
            ranks.append(rank)
        logger.info("generated_class", anatomy=anatomy.value, images=per_class)
    data = {
        "images": np.rint(np.stack(images) * 255).astype(np.uint8),
        "labels": np.asarray(labels, dtype=np.int64),
        "index": np.asarray(ranks, dtype=np.int32),
    }
    save_cache(path, data)
    return data


def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on uint8 images."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), 64):
            x = torch.from_numpy(images[start : start + 64].astype(np.float32) / 255.0)[:, None]
            correct += int((model(x).argmax(dim=1).numpy() == labels[start : start + 64]).sum())
    return correct / max(len(images), 1)


def run(args: argparse.Namespace) -> dict[str, object]:
    """Generate (or load) the data, train, and write the weights and card.

    Parameters
    ----------
    args:
        Parsed options of :func:`add_arguments`.

    Returns
    -------
    dict
        The card of the written weights.
    """
    torch.set_num_threads(args.threads)
    share = f"_id{args.image_domain_share:g}" if args.image_domain_share else ""
    cache = (args.cache_dir / "view"
             / f"view_s{args.seed}_n{args.per_class}_r{args.min_rows}-{args.max_rows}"
               f"_{VIEW_INPUT_SIZE}{share}.npz")
    data = generate(cache, args.per_class, (args.min_rows, args.max_rows), args.seed,
                    args.image_domain_share)
    n_val = max(1, round(args.per_class * args.validation))
    val = data["index"] >= args.per_class - n_val
    train_x, train_y = data["images"][~val], data["labels"][~val]
    val_x, val_y = data["images"][val], data["labels"][val]
    logger.info("data", train=len(train_x), validation=len(val_x), cache=str(cache))

    def batch(idx: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(train_x[idx].astype(np.float32) / 255.0)[:, None]
        x = intensity_augment(sharpness_augment(x, gen), gen)
        flip = (torch.rand(len(idx), generator=gen) < 0.5)[:, None, None, None]
        return torch.where(flip, x.flip(-1), x), torch.from_numpy(train_y[idx])

    model = ViewCNN(args.width)
    result = fit(
        model, batch, len(train_x), F.cross_entropy, lambda m: accuracy(m, val_x, val_y),
        fit_options(args, "view"),
    )
    return save_weights(
        model, args.output / WEIGHTS_NAME, name=ALGORITHM_NAME, seed=args.seed,
        architecture={"class": "ViewCNN", "width": args.width, "input_size": VIEW_INPUT_SIZE,
                      "classes": [c.value for c in VIEW_CLASSES]},
        data={"phantoms": ["inference.phantoms.generator (liver, breast)",
                           *([f"inference.phantoms.imagedomain ({args.image_domain_share:g} of "
                              "liver and breast)"] if args.image_domain_share else []),
                           "inference.phantoms.echo (apical four-chamber)",
                           "inference.phantoms.other"],
              "per_class": args.per_class, "rows": [args.min_rows, args.max_rows],
              "train_samples": len(train_x), "validation_samples": len(val_x)},
        metrics={"validation_accuracy": round(result.best_score, 4),
                 "best_epoch": result.best_epoch, "epochs_run": result.epochs_run},
    )
