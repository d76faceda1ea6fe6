"""Markdown report and plots of the held-out evaluation (``docs/evaluation.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import structlog
from matplotlib.figure import Figure

from inference.evaluation.lesion import OrganEvaluation
from inference.evaluation.metrics import pr_curve
from inference.evaluation.robustness import UNCHANGED
from inference.phantoms.imagedomain import MIN_LESION_PX

logger = structlog.get_logger(__name__)

PUBLISHED: dict[str, dict[str, float]] = {
    "liver": {"det_recall": 0.929, "det_precision": 0.906, "det_f1": 0.917, "accuracy": 0.911,
              "bm_accuracy": 0.943, "sensitivity": 0.831, "specificity": 0.967,
              "clip_accuracy": 0.891, "clip_bm_accuracy": 0.909},
    "breast": {"accuracy": 0.845, "bm_accuracy": 0.897, "sensitivity": 0.919,
               "specificity": 0.871, "auc": 0.960},
}
"""Published figures (JSUM reports, see docs/clinical background) per organ."""


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.3f}"


def _interval(interval: tuple[float, float] | None) -> str:
    if interval is None or any(np.isnan(v) for v in interval):
        return "-"
    return f"{interval[0]:.3f}-{interval[1]:.3f}"


def _verdict(ours: float, published: float | None) -> str:
    if published is None or np.isnan(ours):
        return ""
    if round(ours, 3) == round(published, 3):
        return "ties"
    return "beats" if ours > published else "**misses**"


def plot_pr(ev: OrganEvaluation, path: Path) -> None:
    """Precision-recall curve of the detector at IoU 0.25."""
    precision, recall = pr_curve(ev.matches, ev.lesions)
    p, r, _ = ev.detection
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    ax.plot(recall, precision, lw=1.5)
    ax.scatter([r], [p], color="red", zorder=3, label=f"operating point (t={ev.threshold:.2f})")
    pub = PUBLISHED[ev.organ]
    if "det_recall" in pub:
        ax.scatter([pub["det_recall"]], [pub["det_precision"]], marker="x", color="k",
                   label="published YOLOv5")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
           title=f"{ev.organ} detection, IoU 0.25")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_confusion(ev: OrganEvaluation, kind: str, path: Path) -> None:
    """Confusion matrix (rows truth, columns prediction) of ``kind`` predictions."""
    cm = ev.confusion(kind)
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.subplots()
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(ev.classes)), ev.classes, rotation=30, fontsize=8)
    ax.set_yticks(range(len(ev.classes)), ev.classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="truth", title=f"{ev.organ} {kind} classification")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def organ_section(ev: OrganEvaluation, plot_dir: Path, link_prefix: str) -> str:
    """Markdown section of one organ, writing its plots into ``plot_dir``."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    plot_pr(ev, plot_dir / f"pr_{ev.organ}.png")
    plot_confusion(ev, "roi", plot_dir / f"confusion_{ev.organ}.png")
    p, r, f1 = ev.detection
    kinds = ("roi", "chained", "clip", "clip_roi")
    roi, chained, clip, clip_roi = (ev.summary(kind) for kind in kinds)
    detection_ci = ev.detection_intervals() or [None, None, None]
    roi_ci, chained_ci, clip_ci, clip_roi_ci = (ev.summary_intervals(kind) for kind in kinds)
    pub = PUBLISHED[ev.organ]
    rows = [
        ("Detection recall (IoU 0.25)", r, detection_ci[1], pub.get("det_recall")),
        ("Detection precision (IoU 0.25)", p, detection_ci[0], pub.get("det_precision")),
        ("Detection F1 (IoU 0.25)", f1, detection_ci[2], pub.get("det_f1")),
        ("4-class accuracy (ROI)", roi["accuracy"], roi_ci.get("accuracy"), pub.get("accuracy")),
        ("Benign/malignant accuracy (ROI)", roi["bm_accuracy"], roi_ci.get("bm_accuracy"),
         pub.get("bm_accuracy")),
        ("Sensitivity for malignancy (ROI)", roi["sensitivity"], roi_ci.get("sensitivity"),
         pub.get("sensitivity")),
        ("Specificity for malignancy (ROI)", roi["specificity"], roi_ci.get("specificity"),
         pub.get("specificity")),
        ("ROC AUC malignancy (ROI)", roi["auc"], roi_ci.get("auc"), pub.get("auc")),
        ("4-class accuracy (detector + classifier)", chained["accuracy"],
         chained_ci.get("accuracy"), None),
        ("Benign/malignant accuracy (detector + classifier)", chained["bm_accuracy"],
         chained_ci.get("bm_accuracy"), None),
        ("Cine clip 4-class accuracy (ROI, 3-of-5 vote)", clip_roi["accuracy"],
         clip_roi_ci.get("accuracy"), pub.get("clip_accuracy")),
        ("Cine clip benign/malignant accuracy (ROI)", clip_roi["bm_accuracy"],
         clip_roi_ci.get("bm_accuracy"), pub.get("clip_bm_accuracy")),
        ("Cine clip 4-class accuracy (detector + tracking, 3-of-5 vote)", clip["accuracy"],
         clip_ci.get("accuracy"), None),
        ("Cine clip benign/malignant accuracy (detector + tracking)", clip["bm_accuracy"],
         clip_ci.get("bm_accuracy"), None),
    ]
    lines = [f"## {ev.organ.capitalize()}", "",
             f"{ev.images} held-out images with {ev.lesions} lesions; "
             f"{len(ev.roi_truth)} ROIs classified; {ev.clips} cine clips "
             f"(one lesion each). Score threshold {ev.threshold:.2f} (the detector's score, or its "
             "geometric mean with the verifier's where the organ has one). The 95 % intervals "
             "are percentile bootstraps over the images (detection), ROIs, found lesions or "
             "clips.", "",
             "| Measure | Ours | 95 % interval | Published | |", "|---|---|---|---|---|"]
    for name, ours, interval, published in rows:
        lines.append(f"| {name} | {_fmt(ours)} | {_interval(interval)} | {_fmt(published)} | "
                     f"{_verdict(ours, published)} |")
    lines += ["", "Per-class accuracy (ROI): " + ", ".join(
        f"{c} {_fmt(roi[f'accuracy_{c}'])}" for c in ev.classes) + ".", "",
        f"![PR curve]({link_prefix}/pr_{ev.organ}.png) "
        f"![Confusion matrix]({link_prefix}/confusion_{ev.organ}.png)", ""]
    return "\n".join(lines + strata_lines(ev) + robustness_lines(ev) + second_generator_lines(ev)
                     + independent_generator_lines(ev))


def strata_lines(ev: OrganEvaluation) -> list[str]:
    """Markdown table of detection recall per lesion class and size band."""
    lines = ["Detection recall at the threshold by lesion class and by size (longest side "
             "of the ground-truth box):", "", "| Lesions | Count | Recall |", "|---|---|---|"]
    lines += [f"| {name} | {count} | {_fmt(recall)} |"
              for name, count, recall in ev.recall_by_stratum()]
    return [*lines, ""]


def robustness_lines(ev: OrganEvaluation) -> list[str]:
    """Markdown table of detection and ROI classification on the changed images (none if
    none were scored)."""
    if not ev.perturbed:
        return []
    images = ev.perturbed_images
    _, _, base = ev.detection_under(UNCHANGED)
    base_roi = ev.roi_accuracy_under(UNCHANGED)
    lines = [f"Detection and ROI classification on the first {images} held-out images (with "
             f"regions, {ev.perturbed_lesions} lesions) as they are and changed the way other "
             "scanners and generators differ (inference/evaluation/robustness.py), at the same "
             "threshold:", "",
             "| Image change | Precision | Recall | F1 | F1 change | 4-class accuracy (ROI) "
             "| Accuracy change |", "|---|---|---|---|---|---|---|"]
    for change in ev.perturbed:
        p, r, f1 = ev.detection_under(change)
        roi = ev.roi_accuracy_under(change)
        deltas = ("", "") if change == UNCHANGED else (f"{f1 - base:+.3f}",
                                                       f"{roi - base_roi:+.3f}")
        lines.append(f"| {change} | {_fmt(p)} | {_fmt(r)} | {_fmt(f1)} | {deltas[0]} | "
                     f"{_fmt(roi)} | {deltas[1]} |")
    return [*lines, ""]


def cross_validation_lines(cards: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown table of the classifiers' k-fold cross-validation, from their weights cards.

    ``cards`` maps an organ to its classifier card; cards without a
    ``cross_validation`` entry are left out (no table if none has one).
    """
    rows = [(organ, card["metrics"]["cross_validation"]) for organ, card in cards.items()
            if card.get("metrics", {}).get("cross_validation")]
    if not rows:
        return []
    lines = ["## Classifier cross-validation", "",
             "k-fold cross-validation of each ROI classifier on its training crops, run by "
             "`us-ai-train <organ>-classifier` before the final model is trained and kept in "
             "the classifier's card. Folds are split by image. Each fold's model is trained "
             "from scratch on a subset of the crops for a few epochs, a smaller budget than "
             "the shipped model's, so these accuracies sit below the held-out figures above; "
             "they show how much the result depends on the split.", "",
             "| Classifier | Folds | Crops | Epochs | Accuracy per fold | Mean | SD |",
             "|---|---|---|---|---|---|---|"]
    for organ, cv in rows:
        folds = ", ".join(_fmt(a) for a in cv["accuracy_per_fold"])
        lines.append(f"| {organ} | {cv['folds']} | {cv['crops']} | {cv['epochs']} | {folds} | "
                     f"{_fmt(cv['accuracy_mean'])} | {_fmt(cv['accuracy_sd'])} |")
    return [*lines, ""]


def second_generator_lines(ev: OrganEvaluation) -> list[str]:
    """Markdown table of the engine on the image-domain generator's held-out images and
    clips (none if neither was scored)."""
    second = ev.second
    if second is None or not (second.images or second.clips):
        return []
    intro = (f"The same engine on {second.images} held-out images ({second.lesions} lesions, "
             f"with regions) and {second.clips} held-out cine clips (one lesion each; probe "
             "motion, breathing, the plane sweeping through the lesion, speckle "
             "decorrelation) of the second, image-domain generator "
             "(inference/phantoms/imagedomain.py), at the same threshold. It draws the same "
             "published appearances by another route; see docs/dataset-card.md for which "
             "weights were trained on its other seeds (stills only). Its ground truth has no "
             f"visibility test: every lesion with {MIN_LESION_PX} pixels or more in the field of "
             "view that no rib shadow hides counts, faint ones too (the lipoma-like lesions, "
             "a little brighter than their surroundings, among them), where the first "
             "generator keeps only lesions that reach a Rose index of 4:")
    return _other_generator_lines(second, intro)


INDEPENDENT_DESCRIPTIONS = {
    "pulse-echo": ("inference/phantoms/pulse_echo.py", "simulates radio-frequency echo lines "
                   "(pulse, beam, attenuation along each line, envelope, log compression, scan "
                   "conversion)"),
    "volume-slice": ("inference/phantoms/volume_slice.py", "slices a 3-D tissue volume with a "
                     "beam of finite elevational width (partial volume), casts rays for "
                     "shadows, refraction edges, mirror and reverberation artefacts, and "
                     "post-processes the display like a scanner"),
}
"""Per generator of :data:`~inference.evaluation.lesion.INDEPENDENT_GENERATORS`: its module
and how it renders."""


def independent_generator_lines(ev: OrganEvaluation) -> list[str]:
    """Markdown tables of the engine on the images of each independent generator (none if
    they were not scored), each saying whether the detector was trained on others of it."""
    lines: list[str] = []
    for name, other in ev.independent.items():
        if not other.images:
            continue
        module, route = INDEPENDENT_DESCRIPTIONS[name]
        if name in ev.trained_on:
            first, last = ev.trained_on[name]
            use = (f"the {ev.organ} detector was trained on other images of it (seeds "
                   f"{first:,}-{last:,}) and chosen on others again; no classifier saw it, "
                   "and these images were never used")
        else:
            use = ("no network was ever trained, tuned or chosen on its images: it stands for "
                   "the generator the engines will be judged on")
        intro = (f"The same engine on {other.images} images ({other.lesions} lesions, with "
                 f"regions) of the {name} generator ({module}), at the same threshold. It was "
                 f"written by someone who had read none of the other generators, {route}, and "
                 f"{use}. Its ground truth keeps the lesions that pass its own visibility "
                 "test (see the module):")
        lines += _other_generator_lines(other, intro)
    return lines


def _other_generator_lines(other: OrganEvaluation, intro: str) -> list[str]:
    """``intro``, then the table of ``other``'s detection, ROI and clip figures with their
    intervals, then recall by lesion class and size."""
    rows: list[tuple[str, float, tuple[float, float] | None]] = []
    if other.images:
        p, r, f1 = other.detection
        ci = other.detection_intervals() or [None, None, None]
        roi, roi_ci = other.summary("roi"), other.summary_intervals("roi")
        rows += [("Detection recall (IoU 0.25)", r, ci[1]),
                 ("Detection precision (IoU 0.25)", p, ci[0]),
                 ("Detection F1 (IoU 0.25)", f1, ci[2]),
                 ("4-class accuracy (ROI)", roi["accuracy"], roi_ci.get("accuracy")),
                 ("Benign/malignant accuracy (ROI)", roi["bm_accuracy"],
                  roi_ci.get("bm_accuracy"))]
    if other.clips:
        for kind, name in (("clip_roi", "ROI"), ("clip", "detector + tracking")):
            clip, clip_ci = other.summary(kind), other.summary_intervals(kind)
            rows += [(f"Cine clip 4-class accuracy ({name}, 3-of-5 vote)", clip["accuracy"],
                      clip_ci.get("accuracy")),
                     (f"Cine clip benign/malignant accuracy ({name})", clip["bm_accuracy"],
                      clip_ci.get("bm_accuracy"))]
    lines = [intro, "", "| Measure | Ours | 95 % interval |", "|---|---|---|"]
    lines += [f"| {name} | {_fmt(value)} | {_interval(interval)} |"
              for name, value, interval in rows]
    if other.images:
        lines += ["", "Detection recall there by lesion class and size: " + ", ".join(
            f"{name} {_fmt(recall)} ({count})"
            for name, count, recall in other.recall_by_stratum()) + "."]
    return [*lines, ""]
