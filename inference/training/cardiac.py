"""Train the left-ventricle segmentation U-Net on phantom echo cines.

``us-ai-train cardiac --cache-dir /work/cache --output inference/weights``

1. Phantom apical four-chamber cines are drawn (:mod:`inference.phantoms.echo`)
   and a few frames of each are rendered at random phases, cropped to the
   scan area with a jittered box (the engine may find the area from the
   pixels rather than the regions) and stored at the network size with soft
   masks, in one ``.npz`` cache per configuration.
   With ``--image-domain-clips N``, N cines of the second generator
   (:mod:`inference.phantoms.imagedomain_echo`, seeds from
   :data:`IMAGE_DOMAIN_FIRST_SEED`; its held-out cines start at 26,000,000) are
   added the same way, with their own validation share.
2. The U-Net is trained with BCE + soft Dice, horizontal flips and grey-level
   augmentation, on one CPU thread (from ``--init`` weights when given); a
   checkpoint is written after every epoch, and the best validation Dice is kept.
3. The best weights and their card go to ``--output``.  Training never runs
   in CI; the tests run :func:`run` in a tiny configuration.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import structlog
import torch
import torch.nn.functional as F

from inference.engines.cardiac import ALGORITHM_NAME, WEIGHTS_NAME
from inference.engines.lv_segmentation import INPUT_SIZE, LVUNet, prepare_frames
from inference.engines.model_card import save_weights
from inference.phantoms.echo import EchoCine, random_echo_spec, render_echo
from inference.phantoms.imagedomain_echo import generate_image_domain_echo
from inference.training.common import intensity_augment
from inference.training.data_cache import jittered_box, load_cache, save_cache
from inference.training.loop import add_fit_arguments, fit, fit_options

logger = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the cardiac training options to ``parser``."""
    add_fit_arguments(parser, name="cardiac", epochs=6, batch_size=16, lr=2e-3,
                      validation=0.08, seed=20261125)
    parser.add_argument("--clips", type=int, default=700, help="Phantom cines to draw.")
    parser.add_argument("--frames-per-clip", type=int, default=8)
    parser.add_argument("--base", type=int, default=12, help="U-Net channels of level 1.")
    parser.add_argument("--image-domain-clips", type=int, default=0,
                        help="Cines of the second generator to add (seeds from 27,000,000).")
    parser.add_argument("--init", type=Path, default=None,
                        help="Start from these weights (fine-tuning) instead of at random.")


IMAGE_DOMAIN_FIRST_SEED = 27_000_000
"""Seed of the first second-generator training cine (``--image-domain-clips``)."""

SHARD_CLIPS = 50
"""Clips per cached shard; shard ``k`` has its own seed ``(seed, k)``, so shards
are generated (and resumed) independently."""


def _draw_cine(rng: np.random.Generator, clip: int, frames_per_clip: int,
               rows: tuple[int, int], image_domain: bool) -> EchoCine:
    """Render ``frames_per_clip`` frames at random phases of training cine ``clip``."""
    n_rows = int(rng.integers(rows[0], rows[1] + 1))
    n_cols = int(n_rows * rng.uniform(1.2, 1.45))
    if image_domain:
        cine = generate_image_domain_echo(IMAGE_DOMAIN_FIRST_SEED + clip, n_rows, n_cols)
        picks = np.sort(rng.choice(len(cine.frames), size=min(frames_per_clip,
                                                              len(cine.frames)), replace=False))
        return replace(cine, frames=cine.frames[picks], lv_masks=cine.lv_masks[picks],
                       volumes_ml=cine.volumes_ml[picks], frame_indices=picks)
    spec = random_echo_spec(rng, size=(n_rows, n_cols))
    picks = np.sort(rng.choice(spec.n_frames, size=min(frames_per_clip, spec.n_frames),
                               replace=False))
    return render_echo(spec, picks)


def _render_shard(shard: int, clips: int, frames_per_clip: int, rows: tuple[int, int],
                  seed: int, image_domain: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, shard, 1] if image_domain else [seed, shard])
    images, masks, clip_ids = [], [], []
    for clip in range(shard * SHARD_CLIPS, shard * SHARD_CLIPS + clips):
        cine = _draw_cine(rng, clip, frames_per_clip, rows, image_domain)
        for frame, mask in zip(cine.frames, cine.lv_masks, strict=True):
            box = jittered_box(cine.scan_box, rng, frame.shape)
            images.append(prepare_frames(frame[None], box)[0])
            masks.append(prepare_frames(mask[None].astype(np.uint8) * 255, box)[0])
            clip_ids.append(clip)
    return {
        "images": np.rint(np.stack(images) * 255).astype(np.uint8),
        "masks": np.rint(np.stack(masks) * 255).astype(np.uint8),
        "clip": np.asarray(clip_ids, dtype=np.int32),
    }


def generate(prefix: Path, clips: int, frames_per_clip: int, rows: tuple[int, int],
             seed: int, image_domain: bool = False) -> dict[str, np.ndarray]:
    """Render the training set shard by shard (cached shards are loaded, not redrawn).

    Parameters
    ----------
    prefix:
        Cache path without suffix; shard ``k`` is ``<prefix>_shard<k>.npz``.
    clips:
        Phantom cines in total.
    frames_per_clip:
        Frames rendered per cine, at random phases.
    rows:
        Range of image heights.
    seed:
        Data seed.
    image_domain:
        Draw the cines with the second generator instead of the first.

    Returns
    -------
    dict
        ``images`` uint8 ``(n, S, S)``, ``masks`` uint8 soft masks
        ``(n, S, S)`` (255 = cavity), ``clip`` index of each sample.
    """
    parts = []
    started = time.monotonic()
    for shard in range(-(-clips // SHARD_CLIPS)):
        count = min(SHARD_CLIPS, clips - shard * SHARD_CLIPS)
        path = prefix.parent / f"{prefix.name}_n{count}_shard{shard:03d}.npz"
        part = load_cache(path)
        if part is None:
            part = _render_shard(shard, count, frames_per_clip, rows, seed, image_domain)
            save_cache(path, part)
            logger.info("shard_generated", shard=shard, clips=(shard + 1) * SHARD_CLIPS,
                        of=clips, minutes=round((time.monotonic() - started) / 60, 1))
        parts.append(part)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    dice = (2 * inter + 1.0) / (prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1.0)
    return bce + (1.0 - dice).mean()


def dice_score(model: torch.nn.Module, images: np.ndarray, masks: np.ndarray) -> float:
    """Mean Dice of thresholded predictions against thresholded soft masks."""
    model.eval()
    scores = []
    with torch.inference_mode():
        for start in range(0, len(images), 32):
            x = torch.from_numpy(images[start : start + 32].astype(np.float32) / 255.0)[:, None]
            pred = (model(x) > 0).numpy()[:, 0]
            truth = masks[start : start + 32] >= 128
            inter = (pred & truth).sum(axis=(1, 2))
            total = pred.sum(axis=(1, 2)) + truth.sum(axis=(1, 2))
            scores.extend((2 * inter + 1e-6) / (total + 1e-6))
    return float(np.mean(scores)) if scores else float("nan")


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
    cache = (args.cache_dir / "cardiac"
             / f"lv_s{args.seed}_f{args.frames_per_clip}_r{args.min_rows}-{args.max_rows}"
               f"_{INPUT_SIZE}")
    sources = [(cache, args.clips, False)]
    if args.image_domain_clips:
        sources.append((cache.with_name(cache.name + "_imagedomain"), args.image_domain_clips,
                        True))
    parts = []
    for prefix, clips, image_domain in sources:
        data = generate(prefix, clips, args.frames_per_clip, (args.min_rows, args.max_rows),
                        args.seed, image_domain)
        n_val = max(1, round(clips * args.validation))
        parts.append((data, data["clip"] >= clips - n_val))
    train_x = np.concatenate([data["images"][~val] for data, val in parts])
    train_y = np.concatenate([data["masks"][~val] for data, val in parts])
    val_x = np.concatenate([data["images"][val] for data, val in parts])
    val_y = np.concatenate([data["masks"][val] for data, val in parts])
    logger.info("data", train=len(train_x), validation=len(val_x), cache=str(cache))

    def batch(idx: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(train_x[idx].astype(np.float32) / 255.0)[:, None]
        y = torch.from_numpy(train_y[idx].astype(np.float32) / 255.0)[:, None]
        x = intensity_augment(x, gen)
        flip = (torch.rand(len(idx), generator=gen) < 0.5)[:, None, None, None]
        return torch.where(flip, x.flip(-1), x), torch.where(flip, y.flip(-1), y)

    model = LVUNet(args.base)
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, weights_only=True))
    result = fit(
        model, batch, len(train_x), _loss, lambda m: dice_score(m, val_x, val_y),
        fit_options(args, "cardiac"),
    )
    return save_weights(
        model, args.output / WEIGHTS_NAME, name=ALGORITHM_NAME, seed=args.seed,
        architecture={"class": "LVUNet", "base": args.base, "input_size": INPUT_SIZE},
        data={"phantom": "inference.phantoms.echo", "clips": args.clips,
              "image_domain_clips": args.image_domain_clips,
              "image_domain_first_seed": IMAGE_DOMAIN_FIRST_SEED,
              "init": str(args.init) if args.init else None,
              "frames_per_clip": args.frames_per_clip, "rows": [args.min_rows, args.max_rows],
              "train_samples": len(train_x), "validation_samples": len(val_x)},
        metrics={"validation_dice": round(result.best_score, 4),
                 "best_epoch": result.best_epoch, "epochs_run": result.epochs_run},
    )
