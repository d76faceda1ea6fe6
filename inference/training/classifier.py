"""Train the 4-class lesion ROI classifier of an organ (``us-ai-train liver-classifier``).

Follows the published protocol where it fits on two CPU cores: 8:1:1 split
of the cache by image, classes balanced to equal counts by the sampler,
horizontal flips and rotations within 10 degrees (rotations are baked into
the cached crops, along with detector-like box jitter), random scanner
post-processing and grey levels (as for the detectors), and k-fold
cross-validation on a subset (``--folds``, default 3 folds of at most
``--cv-subset`` crops, fewer epochs) reported in the weight card.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from tqdm import tqdm

from inference.findings import MALIGNANT_CLASSES
from inference.models.lesion_nets import LesionClassifier
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
    CLASSES,
    LesionCache,
    cache_card_data,
    load_caches,
    split_indices,
)

logger = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    add_model_arguments(parser, epochs=15, batch_size=64, lr=3e-3, minutes=30.0)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--cv-subset", type=int, default=4000)
    parser.add_argument("--cv-epochs", type=int, default=4)
    parser.add_argument("--cv-minutes", type=float, default=8.0, help="budget of all folds")


def _tensor(crops: np.ndarray, flip: np.ndarray | None = None) -> torch.Tensor:
    x = crops.astype(np.float32) / 255.0
    if flip is not None:
        x[flip] = x[flip][:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(x[:, None]))


def balanced_order(labels: np.ndarray, n_classes: int, rng: np.random.Generator
                   ) -> np.ndarray:
    """An epoch of indices with every class drawn equally often."""
    per_class = max(int(np.bincount(labels, minlength=n_classes).max()), 1)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class)
             for c in range(n_classes) if (labels == c).any()]
    return rng.permutation(np.concatenate(picks))


def predict(model: LesionClassifier, crops: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n, classes)``."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(crops), 256):
            out.append(F.softmax(model(_tensor(crops[start:start + 256])), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.fc.out_features))


def metrics(probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]
            ) -> dict[str, float]:
    """Accuracy, per-class accuracy, benign/malignant accuracy, sensitivity, specificity."""
    pred = probs.argmax(1)
    malignant = np.array([c in MALIGNANT_CLASSES for c in classes])
    truth_m, pred_m = malignant[labels], malignant[pred]
    out = {"accuracy": float((pred == labels).mean()),
           "benign_malignant_accuracy": float((truth_m == pred_m).mean()),
           "sensitivity": float(pred_m[truth_m].mean()) if truth_m.any() else float("nan"),
           "specificity": float((~pred_m[~truth_m]).mean()) if (~truth_m).any() else float("nan")}
    for c, name in enumerate(classes):
        if (labels == c).any():
            out[f"accuracy_{name}"] = float((pred[labels == c] == c).mean())
    return out


def fit(crops: np.ndarray, labels: np.ndarray, n_classes: int, epochs: int,
        args: argparse.Namespace, rng: np.random.Generator, minutes: float,
        val: tuple[np.ndarray, np.ndarray] | None = None, save_to: Path | None = None,
        init: Path | None = None) -> tuple[LesionClassifier, float, int]:
    """Train a classifier (from ``init`` when given); keep the best validation accuracy
    (when ``val`` is given)."""
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    model = LesionClassifier(n_classes)
    if init is not None:
        model.load_state_dict(torch.load(init, weights_only=True))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    per_epoch = int(np.ceil(len(balanced_order(labels, n_classes, rng)) / args.batch_size))
    deadline = Deadline(minutes)
    sched = CosineSchedule(opt, args.lr, epochs * per_epoch, deadline)
    best_acc, best_epoch = -1.0, 0
    for epoch in range(epochs):
        model.train()
        order = balanced_order(labels, n_classes, rng)
        for start in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch + 1}",
                          mininterval=30):
            idx = order[start:start + args.batch_size]
            x = _tensor(crops[idx], rng.random(len(idx)) < 0.5)
            x = intensity_augment(sharpness_augment(x, gen), gen)
            loss = F.cross_entropy(model(x), torch.from_numpy(labels[idx]), label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if deadline.passed:
                break
        if val is not None:
            acc = float((predict(model, val[0]).argmax(1) == val[1]).mean())
            logger.info("epoch_done", epoch=epoch + 1, val_accuracy=acc)
            if acc > best_acc and save_to is not None:
                best_acc, best_epoch = acc, epoch + 1
                torch.save(model.state_dict(), save_to)
        if deadline.passed:
            logger.info("deadline_reached", epoch=epoch + 1)
            break
    if save_to is not None and best_epoch:
        model.load_state_dict(torch.load(save_to))
    return model, best_acc, best_epoch


def cross_validate(cache: LesionCache, idx: np.ndarray, n_classes: int,
                   args: argparse.Namespace, rng: np.random.Generator) -> dict[str, float]:
    """k-fold accuracy on a subset of the training crops (folds split by image)."""
    subset = idx[: args.cv_subset]
    images = np.unique(cache.crop_image[subset])
    folds = np.array_split(rng.permutation(images), args.folds)
    accs = []
    for k, held in enumerate(folds):
        test_mask = np.isin(cache.crop_image[subset], held)
        tr, te = subset[~test_mask], subset[test_mask]
        model, _, _ = fit(cache.crops[tr], cache.crop_labels[tr], n_classes, args.cv_epochs, args,
                          rng, args.cv_minutes / args.folds)
        acc = float((predict(model, cache.crops[te]).argmax(1) == cache.crop_labels[te]).mean())
        logger.info("fold_done", fold=k + 1, accuracy=acc)
        accs.append(acc)
    return {"folds": args.folds, "crops": len(subset), "epochs": args.cv_epochs,
            "accuracy_mean": float(np.mean(accs)), "accuracy_sd": float(np.std(accs)),
            "accuracy_per_fold": accs}


def run(args: argparse.Namespace) -> None:
    """Cross-validate, train on the train split, keep the best on validation, write the card."""
    rng = set_seed(args.seed, args.threads)
    cache = load_caches(args.cache)
    classes = CLASSES[args.organ]
    train_img, val_img, test_img = split_indices(len(cache.det), args.seed)
    train = np.flatnonzero(np.isin(cache.crop_image, train_img))
    train = rng.permutation(train)[: args.limit or None]
    # Validation and internal test use the unjittered crop of every lesion only.
    first = _first_of_lesion(cache)
    val = np.flatnonzero(np.isin(cache.crop_image, val_img) & first)
    test = np.flatnonzero(np.isin(cache.crop_image, test_img) & first)
    cv = cross_validate(cache, train, len(classes), args, rng) if args.folds > 1 else {}
    out_path = args.output / f"{args.organ}_classifier.pt"
    args.output.mkdir(parents=True, exist_ok=True)
    model, val_acc, epoch = fit(cache.crops[train], cache.crop_labels[train], len(classes),
                                args.epochs, args, rng, args.max_minutes,
                                val=(cache.crops[val], cache.crop_labels[val]), save_to=out_path,
                                init=args.init)
    test_metrics = metrics(predict(model, cache.crops[test]), cache.crop_labels[test], classes)
    write_card(out_path, command=command_line(args), seed=args.seed,
               data={**cache_card_data(args.cache, cache),
                     "train_crops": len(train), "val_lesions": len(val),
                     "test_lesions": len(test), "split": "8:1:1 by image",
                     "balanced": True,
                     "augmentation": "hflip, rotation within 10 deg, box jitter, scanner "
                                     "post-processing, grey levels (gain, offset, gamma, "
                                     "contrast, noise)"},
               metrics={"val_accuracy": val_acc, "best_epoch": epoch,
                        "internal_test": test_metrics, "cross_validation": cv},
               extra={"classes": list(classes), "init": str(args.init) if args.init else None})


def _first_of_lesion(cache: LesionCache) -> np.ndarray:
    """True for the unjittered crop of each lesion (crops come in runs per lesion)."""
    counts = np.bincount(cache.crop_image, minlength=len(cache.det))
    lesions = np.bincount(cache.box_image, minlength=len(cache.det))
    per = np.divide(counts, np.maximum(lesions, 1)).astype(int)
    starts = np.zeros(len(cache.crop_image), bool)
    position = 0
    for image in range(len(cache.det)):
        for _ in range(lesions[image]):
            starts[position] = True
            position += per[image]
    return starts
