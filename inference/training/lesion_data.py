"""Phantom datasets for the lesion detector and classifier, cached as ``.npz``.

One cache per organ and seed range holds, for every phantom image, the
letterboxed detector input with its lesion boxes, and for every lesion a few
classifier crops whose boxes are jittered like a detector's and rotated
within 10 degrees (the published augmentation).  Caches live outside the
repository (default ``/work/cache``); the seed range fixes the content.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from tqdm import tqdm

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, BoundingBox
from inference.models.roi import CLASSIFIER_SIZE, DETECTOR_SIZE, letterbox, roi_crop
from inference.phantoms.convolution import generate_convolution
from inference.phantoms.generator import Organ, PhantomSample, Renderer, generate
from inference.phantoms.imagedomain import generate_image_domain
from inference.phantoms.pulse_echo import generate_pulse_echo
from inference.phantoms.statistical import generate_statistical

logger = structlog.get_logger(__name__)

CLASSES: dict[str, tuple[str, ...]] = {"liver": LIVER_CLASSES, "breast": BREAST_CLASSES}
"""Class names per organ, in model output order."""

IMAGE_SIZES: tuple[tuple[int, int], ...] = ((480, 640), (480, 640), (600, 800), (384, 512),
                                            (768, 1024))
"""Image sizes drawn per sample (rows, cols); 480 x 640 twice as often."""


def image_size(seed: int) -> tuple[int, int]:
    """Image size of the sample with ``seed``."""
    return IMAGE_SIZES[np.random.default_rng([seed, 7]).integers(len(IMAGE_SIZES))]


def jitter_box(box: BoundingBox, rng: np.random.Generator, amount: float = 0.12
               ) -> BoundingBox:
    """A box perturbed like a detector's output (size and position, ``amount`` ~ 12 %)."""
    w, h = box.width, box.height
    cx, cy = box.center
    cx += rng.normal(0, amount * 0.6) * w
    cy += rng.normal(0, amount * 0.6) * h
    w *= float(np.exp(rng.normal(0, amount)))
    h *= float(np.exp(rng.normal(0, amount)))
    return BoundingBox(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def sample_arrays(sample: PhantomSample, rng: np.random.Generator, crops_per_lesion: int,
                  detector_size: int = DETECTOR_SIZE) -> dict[str, np.ndarray]:
    """Detector input (``detector_size`` square), boxes and classifier crops of a still."""
    classes = CLASSES[sample.organ]
    frame = sample.frames[0]
    det, lb = letterbox(frame, sample.scan_box, detector_size)
    boxes, labels, crops, crop_labels = [], [], [], []
    for truth in sample.truths[0]:
        boxes.append(lb.to_input(truth.box))
        labels.append(classes.index(truth.label))
        for k in range(crops_per_lesion):
            box = truth.box if k == 0 else jitter_box(truth.box, rng)
            crops.append(roi_crop(frame, box, angle_deg=float(rng.uniform(-10, 10)) if k else 0.0))
            crop_labels.append(classes.index(truth.label))
    return {
        "det": det,
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, dtype=np.int64),
        "crops": np.asarray(crops, dtype=np.uint8).reshape(-1, CLASSIFIER_SIZE, CLASSIFIER_SIZE),
        "crop_labels": np.asarray(crop_labels, dtype=np.int64),
    }


GENERATORS: dict[str, Renderer] = {
    "physics": generate,
    "image-domain": generate_image_domain,
    "pulse-echo": generate_pulse_echo,
    "convolution": generate_convolution,
    "statistical": generate_statistical,
}
"""The phantom generators a cache can be built from: :mod:`inference.phantoms.generator`,
:mod:`inference.phantoms.imagedomain`, :mod:`inference.phantoms.pulse_echo` (its
training seeds 30,000,000-30,999,999, below its evaluation seeds in
:data:`inference.evaluation.lesion.INDEPENDENT_GENERATORS`),
:mod:`inference.phantoms.convolution` (seeds from 35,000,000) and
:mod:`inference.phantoms.statistical` (seeds from 36,000,000): the last two were written
for training only, by authors who had read none of the other generators."""


def _work(args: tuple[Organ, int, int, int, str]) -> dict[str, np.ndarray]:
    organ, seed, crops_per_lesion, detector_size, generator = args
    rows, cols = image_size(seed)
    sample = GENERATORS[generator](organ, seed, rows, cols)
    return sample_arrays(sample, np.random.default_rng([seed, 11]), crops_per_lesion,
                         detector_size)


@dataclass
class LesionCache:
    """A loaded cache (see :func:`build_cache`)."""

    organ: str
    seeds: np.ndarray
    det: np.ndarray
    boxes: np.ndarray
    box_image: np.ndarray
    labels: np.ndarray
    crops: np.ndarray
    crop_labels: np.ndarray
    crop_image: np.ndarray

    def boxes_of(self, index: int) -> np.ndarray:
        """Boxes ``(k, 4)`` of image ``index`` in detector-input pixels."""
        return self.boxes[self.box_image == index]


CHUNK = 250
"""Images per chunk file; finished chunks are reused when a build is resumed."""


def _assemble(organ: str, seeds: np.ndarray, parts: list[dict[str, np.ndarray]]
              ) -> LesionCache:
    return LesionCache(
        organ=organ, seeds=seeds,
        det=np.stack([p["det"] for p in parts]),
        boxes=np.concatenate([p["boxes"] for p in parts]),
        box_image=np.concatenate([np.full(len(p["boxes"]), i) for i, p in enumerate(parts)]),
        labels=np.concatenate([p["labels"] for p in parts]),
        crops=np.concatenate([p["crops"] for p in parts]),
        crop_labels=np.concatenate([p["crop_labels"] for p in parts]),
        crop_image=np.concatenate([np.full(len(p["crops"]), i) for i, p in enumerate(parts)]),
    )


def _merge(caches: list[LesionCache]) -> LesionCache:
    """Concatenate caches, renumbering the image indices."""
    offsets = np.cumsum([0] + [len(c.det) for c in caches[:-1]])
    return LesionCache(
        organ=caches[0].organ,
        seeds=np.concatenate([c.seeds for c in caches]),
        det=np.concatenate([c.det for c in caches]),
        boxes=np.concatenate([c.boxes for c in caches]),
        box_image=np.concatenate([c.box_image + o for c, o in zip(caches, offsets, strict=True)]),
        labels=np.concatenate([c.labels for c in caches]),
        crops=np.concatenate([c.crops for c in caches]),
        crop_labels=np.concatenate([c.crop_labels for c in caches]),
        crop_image=np.concatenate([c.crop_image + o for c, o in zip(caches, offsets, strict=True)]),
    )


def _save(cache: LesionCache, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **vars(cache))
    tmp.replace(path)


def _chunk_paths(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.stem}.part*.npz"))


def build_cache(organ: Organ, first_seed: int, count: int, path: Path, workers: int = 1,
                crops_per_lesion: int = 4, detector_size: int = DETECTOR_SIZE,
                generator: str = "physics") -> LesionCache:
    """Generate ``count`` phantom images from ``first_seed`` on and save them.

    Work is saved in chunks of :data:`CHUNK` images (``<stem>.partNNNN.npz``)
    so that an interrupted build resumes and a partial cache can be used.

    Parameters
    ----------
    organ:
        ``"liver"`` or ``"breast"``.
    first_seed, count:
        Seed range ``[first_seed, first_seed + count)``.
    path:
        Output ``.npz`` path.
    workers:
        Worker processes (keep at 1-2 on a shared machine).
    crops_per_lesion:
        Classifier crops per lesion (the first one unjittered).
    detector_size:
        Side of the letterboxed detector input; a detector trained on the
        cache runs at this size (it is recorded in the detector's card).
    generator:
        A key of :data:`GENERATORS`.

    Returns
    -------
    LesionCache
        The cache just written.
    """
    chunks = []
    bar = tqdm(total=count, desc=f"{organ} phantoms", mininterval=10)
    for start in range(first_seed, first_seed + count, CHUNK):
        seeds = np.arange(start, min(start + CHUNK, first_seed + count))
        chunk_path = path.with_name(f"{path.stem}.part{start:07d}.npz")
        if chunk_path.exists():
            chunks.append(load_cache(chunk_path))
            bar.update(len(seeds))
            continue
        jobs = [(organ, int(s), crops_per_lesion, detector_size, generator) for s in seeds]
        parts = []
        with mp.get_context("fork").Pool(workers) if workers > 1 else _Serial() as pool:
            for part in pool.imap(_work, jobs, chunksize=8):
                parts.append(part)
                bar.update(1)
        chunks.append(_assemble(organ, seeds, parts))
        _save(chunks[-1], chunk_path)
    bar.close()
    cache = _merge(chunks)
    _save(cache, path)
    logger.info("cache_written", path=str(path), images=count, lesions=len(cache.labels))
    return cache


def load_cache(path: Path) -> LesionCache:
    """Load a cache written by :func:`build_cache` (or its finished chunks so far)."""
    if not path.exists():
        chunks = _chunk_paths(path)
        if not chunks:
            raise FileNotFoundError(path)
        return _merge([load_cache(c) for c in chunks])
    with np.load(path) as data:
        return LesionCache(**{k: (str(data[k]) if k == "organ" else data[k])
                              for k in data.files})


def load_caches(paths: list[Path]) -> LesionCache:
    """Load several caches (of one organ) as one, in the order given."""
    return merge_caches([load_cache(path) for path in paths])


def merge_caches(caches: list[LesionCache]) -> LesionCache:
    """Several loaded caches (of one organ) as one, in the order given."""
    organs = {cache.organ for cache in caches}
    if len(organs) != 1:
        raise ValueError(f"caches of different organs: {sorted(organs)}")
    return caches[0] if len(caches) == 1 else _merge(caches)


def cache_card_data(paths: list[Path], cache: LesionCache) -> dict[str, object]:
    """The caches a model was trained on, for its card: paths and seed ranges."""
    return {"cache": [str(path) for path in paths], "cache_seeds": seed_ranges(cache.seeds)}


def seed_ranges(seeds: np.ndarray) -> list[list[int]]:
    """Consecutive runs of ``seeds`` as ``[first, last]`` pairs (for the model card)."""
    ranges: list[list[int]] = []
    for seed in (int(s) for s in seeds):
        if ranges and seed == ranges[-1][1] + 1:
            ranges[-1][1] = seed
        else:
            ranges.append([seed, seed])
    return ranges


class _Serial:
    """A stand-in for a pool that runs in this process."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def imap(fn, jobs, chunksize: int = 1):  # type: ignore[no-untyped-def]
        """Apply ``fn`` lazily."""
        return map(fn, jobs)


def split_indices(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8:1:1 train / validation / test split of ``n`` images (fixed seed)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = n_test = max(1, n // 10)
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``us-ai-train lesion-data``."""
    parser.add_argument("--organ", choices=["liver", "breast"], required=True)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=4500)
    parser.add_argument("--output", type=Path, required=True, help=".npz path")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--crops-per-lesion", type=int, default=4)
    parser.add_argument("--detector-size", type=int, default=DETECTOR_SIZE,
                        help="side of the letterboxed detector input, pixels (a multiple of 32)")
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="physics",
                        help="phantom generator (physics: inference.phantoms.generator; the "
                             "others: the module of inference.phantoms with that name)")


def run(args: argparse.Namespace) -> None:
    """Build a cache."""
    if args.detector_size % 32:
        raise SystemExit("--detector-size must be a multiple of 32")
    build_cache(args.organ, args.first_seed, args.count, args.output, args.workers,
                args.crops_per_lesion, args.detector_size, args.generator)
