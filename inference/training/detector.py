"""Train the single-class lesion detector of an organ (``us-ai-train liver-detector``).

The detector's input side is the one its cache was built at
(``lesion-data --detector-size``); it is written in the card as ``input_size``
and the engine letterboxes to it.  CenterNet targets (Gaussian centre
heatmap, log box size, centre offset) on the letterboxed phantom images of a
cache; focal loss; horizontal flips, zoom (0.7-1.5x) and grey-level
augmentation, optionally scan-area edges moved across lesions
(``--field-cut``) and measurement calipers burned in (``--calipers``); 8:1:1
split of the cache; the checkpoint with the best validation F1 at IoU 0.25 is
kept, with the score threshold that gave it (validated as the engine runs the
detector: averaged with the mirrored input).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from tqdm import tqdm

from inference.models.lesion_nets import (
    DETECTOR_HEAD,
    DETECTOR_WIDTHS,
    STRIDE,
    Detection,
    LesionDetector,
    box_iou,
    decode,
    load_grown,
    predict_mirrored,
)
from inference.training.calipers import burn_calipers
from inference.training.common import (
    CosineSchedule,
    Deadline,
    add_model_arguments,
    command_line,
    intensity_augment,
    set_seed,
    sharpness_augment,
    write_card,
)
from inference.training.lesion_data import (
    LesionCache,
    cache_card_data,
    load_cache,
    merge_caches,
    split_indices,
)

logger = structlog.get_logger(__name__)

DETECTION_IOU = 0.25
"""IoU at which a detection matches a lesion (as published)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    add_model_arguments(parser, epochs=12, batch_size=16, lr=2e-3, minutes=60.0)
    parser.add_argument("--widths", default=",".join(map(str, DETECTOR_WIDTHS)),
                        help="channels of the stem and the four stages")
    parser.add_argument("--head", type=int, default=DETECTOR_HEAD, help="channels of the FPN head")
    parser.add_argument("--blocks", type=int, default=0,
                        help="residual blocks after the stride 4-16 stages and the head; "
                             "--init may then be a network with fewer (its blocks start as "
                             "the identity)")
    parser.add_argument("--field-cut", type=float, default=0.0,
                        help="chance that a training image gets a scan-area edge moved inwards "
                             "across a lesion (lesions cut by the field of view)")
    parser.add_argument("--calipers", type=float, default=0.0,
                        help="chance that a training image gets measurement calipers burned "
                             "in, across a lesion as a rule")
    shares = parser.add_mutually_exclusive_group()
    shares.add_argument("--last-cache-share", type=float, default=None,
                        help="fraction of each epoch's training images drawn from the last "
                             "--cache (with replacement when it has too few), the rest from "
                             "the others together; default: every training image once, "
                             "whatever its cache")
    shares.add_argument("--cache-shares", type=_shares, default=None,
                        help="comma-separated fraction of each epoch's training images drawn "
                             "from each --cache, in their order (summing to 1; with "
                             "replacement when a cache has too few)")


def _shares(text: str) -> list[float]:
    """Parse ``--cache-shares``: non-negative fractions summing to 1."""
    values = [float(part) for part in text.split(",")]
    if min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise argparse.ArgumentTypeError(f"shares must be >= 0 and sum to 1: {text}")
    return values


def epoch_order(rng: np.random.Generator, train: np.ndarray, groups: np.ndarray,
                shares: list[float] | None) -> np.ndarray:
    """Training image indices of one epoch, shuffled: ``train`` itself, or as many drawn
    from each group of images (``groups[i]`` is image ``i``'s) as its share says, with
    replacement when the group has too few; the first group takes what rounding leaves."""
    if shares is None:
        return rng.permutation(train)
    parts = []
    left = len(train)
    for group in range(len(shares) - 1, -1, -1):
        pool = train[groups[train] == group]
        n = left if group == 0 else round(shares[group] * len(train))
        parts.append(rng.choice(pool, n, replace=n > len(pool)))
        left -= n
    return rng.permutation(np.concatenate(parts))


def image_groups(sizes: list[int], args: argparse.Namespace
                 ) -> tuple[np.ndarray, list[float] | None]:
    """The group of each merged cache image and the groups' shares of an epoch, from
    ``--cache-shares`` (a group per cache) or ``--last-cache-share`` (the last cache
    against the others)."""
    groups = np.repeat(np.arange(len(sizes)), sizes)
    if args.cache_shares is not None:
        if len(args.cache_shares) != len(sizes):
            raise SystemExit(f"--cache-shares needs {len(sizes)} values, one per --cache")
        return groups, args.cache_shares
    if args.last_cache_share is not None:
        share = args.last_cache_share
        return (groups == len(sizes) - 1).astype(int), [1.0 - share, share]
    return groups, None


@dataclass
class Targets:
    """CenterNet targets of a batch."""

    heat: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor
    mask: torch.Tensor


def make_targets(boxes: list[np.ndarray], out: int) -> Targets:
    """Heatmap, size and offset targets for boxes in input pixels."""
    n = len(boxes)
    heat = np.zeros((n, 1, out, out), np.float32)
    size = np.zeros((n, 2, out, out), np.float32)
    offset = np.zeros((n, 2, out, out), np.float32)
    mask = np.zeros((n, 1, out, out), np.float32)
    ys, xs = np.mgrid[0:out, 0:out]
    for i, bxs in enumerate(boxes):
        for x0, y0, x1, y1 in bxs:
            w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
            cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
            ix, iy = min(max(int(cx), 0), out - 1), min(max(int(cy), 0), out - 1)
            sigma = max(min(w, h) / STRIDE / 6.0, 0.7)
            g = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
            heat[i, 0] = np.maximum(heat[i, 0], g)
            size[i, :, iy, ix] = np.log([w, h])
            offset[i, :, iy, ix] = (cx - ix, cy - iy)
            mask[i, 0, iy, ix] = 1.0
    return Targets(*(torch.from_numpy(a) for a in (heat, size, offset, mask)))


def detector_loss(pred: tuple[torch.Tensor, torch.Tensor, torch.Tensor], t: Targets
                  ) -> torch.Tensor:
    """Focal heatmap loss + L1 on log size and offset at the centres."""
    heat_logit, size, offset = pred
    p = torch.sigmoid(heat_logit).clamp(1e-4, 1 - 1e-4)
    pos = t.heat.eq(1.0).float()
    neg_weight = (1 - t.heat) ** 4
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p**2 * neg_weight * (1 - pos)).sum()
    n_pos = pos.sum().clamp(min=1.0)
    reg = (F.l1_loss(size * t.mask, t.size * t.mask, reduction="sum")
           + F.l1_loss(offset * t.mask, t.offset * t.mask, reduction="sum")) / n_pos
    return (pos_loss + neg_loss) / n_pos + reg


def _batch(cache: LesionCache, idx: np.ndarray, flip: np.ndarray | None
           ) -> tuple[torch.Tensor, list[np.ndarray]]:
    images = cache.det[idx].astype(np.float32) / 255.0
    boxes = [cache.boxes_of(int(i)).copy() for i in idx]
    if flip is not None:
        for k in np.nonzero(flip)[0]:
            images[k] = images[k, :, ::-1]
            b = boxes[k]
            b[:, [0, 2]] = images.shape[-1] - b[:, [2, 0]]
    return torch.from_numpy(np.ascontiguousarray(images[:, None])), boxes


ZOOM_RANGE = (0.7, 1.5)
"""Scale factors of the zoom augmentation (drawn log-uniformly)."""

MIN_KEPT_AREA = 0.5
"""A lesion cut by the zoomed view stays a target when this much of its box is left."""


def zoom_augment(x: torch.Tensor, boxes: list[np.ndarray], rng: np.random.Generator,
                 probability: float = 0.5) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Zoom some images of a batch in or out about a random centre, boxes along.

    Lesions then appear at more sizes than the phantoms drew (small ones
    especially) and at other places of the input.  Zooming out leaves a black
    margin, as letterboxing does; a lesion cut by zooming in keeps its clipped
    box when at least :data:`MIN_KEPT_AREA` of it is left, and is dropped otherwise.

    Parameters
    ----------
    x:
        ``(n, 1, S, S)`` batch in ``[0, 1]``.
    boxes:
        Per image, ``(k, 4)`` boxes in input pixels.
    rng:
        Random generator.
    probability:
        Chance that an image is zoomed.
    """
    n, side = x.shape[0], float(x.shape[-1])
    zoomed = rng.random(n) < probability
    scale = np.where(zoomed, np.exp(rng.uniform(*np.log(ZOOM_RANGE), n)), 1.0)
    reach = np.abs(1.0 / scale - 1.0)
    shift = rng.uniform(-1.0, 1.0, (n, 2)) * reach[:, None]
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    moved = []
    for b, s, (cx, cy) in zip(boxes, scale, shift, strict=True):
        centre = np.array([side / 2 * (1 + cx), side / 2 * (1 + cy)] * 2, np.float32)
        new = (b - centre) * s + side / 2
        clipped = np.clip(new, 0.0, side)
        area = np.prod(new[:, 2:] - new[:, :2], axis=1)
        kept = np.prod(clipped[:, 2:] - clipped[:, :2], axis=1)
        moved.append(clipped[kept >= MIN_KEPT_AREA * np.maximum(area, 1e-6)])
    return out, moved


FIELD_CUT_VISIBLE = (0.3, 0.9)
"""Share of the lesion a field cut is drawn through that is left inside the field."""

FIELD_CUT_MAX_BLACK = 0.6
"""A field cut never blackens more than this share of the input."""

_CUT_NORMALS = np.array(
    [[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], np.float32)
"""Outward normals of the straight edges: left, right, top (skin line), bottom (depth)."""

_DISC = np.stack(np.meshgrid(np.linspace(-1, 1, 41), np.linspace(-1, 1, 41)), -1).reshape(-1, 2)
_DISC = _DISC[(_DISC**2).sum(1) <= 1.0].astype(np.float32)
"""Points of the unit disc: a lesion is taken as the ellipse inscribed in its box."""


def _cut_normal(rng: np.random.Generator) -> np.ndarray:
    """Outward normal of a random field edge: a straight one or a sector/convex side."""
    kind = int(rng.integers(6))
    if kind < 4:
        return _CUT_NORMALS[kind]
    tilt = np.deg2rad(rng.uniform(15.0, 45.0))
    return np.array([np.cos(tilt) * (1 if kind == 5 else -1), -np.sin(tilt)], np.float32)


def _lesion_points(box: np.ndarray) -> np.ndarray:
    """Points of the ellipse inscribed in ``box``, in input pixels."""
    centre = (box[:2] + box[2:]) / 2
    return centre + _DISC * (box[2:] - box[:2]) / 2


def _visible_box(box: np.ndarray, normal: np.ndarray, offset: float
                 ) -> tuple[float, np.ndarray]:
    """Share of a lesion left inside a field cut, and the box of that part."""
    points = _lesion_points(box)
    inside = points[points @ normal <= offset]
    if len(inside) == 0:
        return 0.0, box
    margin = (box[2:] - box[:2]) / 40  # half the spacing of the disc's points
    part = np.concatenate([inside.min(0) - margin, inside.max(0) + margin])
    part = np.clip(part, np.tile(box[:2], 2), np.tile(box[2:], 2))
    return len(inside) / len(points), part


def field_cut_augment(x: torch.Tensor, boxes: list[np.ndarray], rng: np.random.Generator,
                      probability: float) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Move an edge of the scan area inwards on some images, across a lesion as a rule.

    Fields of view cut lesions: a lesion under the skin line, at the side of a
    linear probe's field or beyond a sector's edge shows only in part.  Each
    chosen image gets one new edge (left, right, top, bottom, or a sector side
    tilted 15-45 degrees), everything beyond it black like the background;
    on four images of five that have lesions it crosses one of them, leaving
    a share drawn from :data:`FIELD_CUT_VISIBLE` inside, elsewhere it crosses
    a random place.  Boxes shrink to the visible part of their lesion (the
    ellipse inscribed in the box); a lesion left wholly outside is dropped.
    An image is left as it was when the cut would leave another lesion with
    less than the smallest share, or blacken more than :data:`FIELD_CUT_MAX_BLACK`.
    The parameters are :func:`zoom_augment`'s; ``probability`` is the chance that an
    image is cut.
    """
    if probability <= 0.0:
        return x, boxes
    n, side = x.shape[0], x.shape[-1]
    centres = torch.arange(side, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    out, moved = x.clone(), list(boxes)
    for k in np.nonzero(rng.random(n) < probability)[0]:
        normal = _cut_normal(rng)
        if len(boxes[k]) and rng.random() < 0.8:
            target = boxes[k][rng.integers(len(boxes[k]))]
            offset = float(np.quantile(_lesion_points(target) @ normal,
                                       rng.uniform(*FIELD_CUT_VISIBLE)))
        else:
            offset = float(rng.uniform(0.2, 0.8, 2).astype(np.float32) * side @ normal)
        outside = xs * float(normal[0]) + ys * float(normal[1]) > offset
        cut = [_visible_box(b, normal, offset) for b in boxes[k]]
        if (float(outside.float().mean()) > FIELD_CUT_MAX_BLACK
                or any(0.0 < share < FIELD_CUT_VISIBLE[0] for share, _ in cut)):
            continue
        out[k, :, outside] = 0.0
        moved[k] = np.array([part for share, part in cut if share > 0.0],
                            np.float32).reshape(-1, 4)
    return out, moved


def caliper_augment(x: torch.Tensor, boxes: list[np.ndarray], rng: np.random.Generator,
                    probability: float) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Burn measurement calipers into some images, across a lesion as a rule
    (:func:`inference.training.calipers.burn_calipers`; marks 5-9 pixels long, of a
    grey of 0.5-1).  Boxes are unchanged.  The parameters are :func:`zoom_augment`'s;
    ``probability`` is the chance that an image gets calipers.
    """
    if probability <= 0.0:
        return x, boxes
    out = x.clone()
    for k in np.nonzero(rng.random(x.shape[0]) < probability)[0]:
        burn_calipers(out[k, 0].numpy(), boxes[k], rng, float(rng.uniform(0.5, 1.0)))
    return out, boxes


def match_counts(dets: list[Detection], truths: np.ndarray, iou: float = DETECTION_IOU
                 ) -> tuple[int, int, int]:
    """Greedy matching by score: ``(true positives, false positives, false negatives)``."""
    used = np.zeros(len(truths), bool)
    tp = fp = 0
    for det in sorted(dets, key=lambda d: -d.score):
        ious = [box_iou(det, t) if not used[j] else 0.0 for j, t in enumerate(truths)]
        if ious and max(ious) >= iou:
            used[int(np.argmax(ious))] = True
            tp += 1
        else:
            fp += 1
    return tp, fp, int((~used).sum())


def evaluate_detector(model: LesionDetector, cache: LesionCache, idx: np.ndarray,
                      thresholds: np.ndarray) -> dict[float, tuple[float, float, float]]:
    """Precision, recall and F1 at IoU 0.25 for each score threshold."""
    model.eval()
    counts = {float(t): np.zeros(3) for t in thresholds}
    with torch.no_grad():
        for start in range(0, len(idx), 32):
            part = idx[start:start + 32]
            x, boxes = _batch(cache, part, None)
            dets = decode(*predict_mirrored(model, x), threshold=float(thresholds.min()))
            for d, b in zip(dets, boxes, strict=True):
                for t in thresholds:
                    counts[float(t)] += match_counts([e for e in d if e.score >= t], b)
    out = {}
    for t, (tp, fp, fn) in counts.items():
        precision = tp / max(tp + fp, 1)
        recall = tp / max(tp + fn, 1)
        out[t] = (precision, recall, 2 * precision * recall / max(precision + recall, 1e-9))
    return out


def run(args: argparse.Namespace) -> None:
    """Train, keep the best checkpoint, write weights and card."""
    rng = set_seed(args.seed, args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    caches = [load_cache(path) for path in args.cache]
    cache = merge_caches(caches)
    groups, shares = image_groups([len(part.det) for part in caches], args)
    del caches
    train, val, test = split_indices(len(cache.det), args.seed)
    if args.limit:
        train, val = train[: args.limit], val[: max(args.limit // 8, 4)]
    widths = tuple(int(w) for w in args.widths.split(","))
    model = LesionDetector(widths, args.head, args.blocks)
    if args.init is not None:
        grown = load_grown(model, torch.load(args.init, weights_only=True))
        logger.info("detector_initialised", init=str(args.init), new_tensors=len(grown))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * int(np.ceil(len(train) / args.batch_size))
    deadline = Deadline(args.max_minutes)
    sched = CosineSchedule(opt, args.lr, steps, deadline)
    thresholds = np.round(np.arange(0.15, 0.8, 0.05), 2)
    out_path = args.output / f"{args.organ}_detector.pt"
    args.output.mkdir(parents=True, exist_ok=True)
    best = (-1.0, 0.5, (0.0, 0.0, 0.0), 0)
    for epoch in range(args.epochs):
        model.train()
        order = epoch_order(rng, train, groups, shares)
        losses = []
        bar = tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch + 1}",
                   mininterval=30)
        for start in bar:
            idx = order[start:start + args.batch_size]
            x, boxes = _batch(cache, idx, rng.random(len(idx)) < 0.5)
            x, boxes = field_cut_augment(x, boxes, rng, args.field_cut)
            x, boxes = caliper_augment(x, boxes, rng, args.calipers)
            x, boxes = zoom_augment(x, boxes, rng)
            x = intensity_augment(sharpness_augment(x, gen), gen)
            loss = detector_loss(model(x), make_targets(boxes, x.shape[-1] // STRIDE))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if deadline.passed:
                break
        scores = evaluate_detector(model, cache, val, thresholds)
        thr, (p, r, f1) = max(scores.items(), key=lambda kv: kv[1][2])
        logger.info("epoch_done", epoch=epoch + 1, loss=float(np.mean(losses)), val_f1=f1,
                    precision=p, recall=r, threshold=thr)
        if f1 > best[0]:
            best = (f1, thr, (p, r, f1), epoch + 1)
            torch.save(model.state_dict(), out_path)
        if deadline.passed:
            logger.info("deadline_reached", epoch=epoch + 1)
            break
    p, r, f1 = best[2]
    write_card(out_path, command=command_line(args), seed=args.seed,
               data={**cache_card_data(args.cache, cache),
                     "train_images": len(train), "val_images": len(val),
                     "last_cache_share": args.last_cache_share,
                     "cache_shares": args.cache_shares, "field_cut": args.field_cut,
                     "calipers": args.calipers,
                     "test_images": len(test), "split": "8:1:1"},
               metrics={"val_precision": p, "val_recall": r, "val_f1": f1,
                        "iou": DETECTION_IOU, "best_epoch": best[3]},
               extra={"threshold": best[1], "input_size": int(cache.det.shape[-1]),
                      "architecture": "CenterNet-style FPN, stride 4",
                      "widths": list(widths), "head": args.head, "blocks": args.blocks,
                      "init": str(args.init) if args.init else None})
