"""Held-out evaluation of a lesion engine on fresh phantom images and clips.

The seeds start far above any training cache (:data:`FIRST_SEEDS`), so the
evaluation images were never seen in training.  Detection is matched at IoU
0.25; the classifier is scored on ground-truth ROIs (the published
protocol) and, chained, on the lesions the detector found; cine clips (one
lesion each) are scored by the class the classifier votes on the lesion's
ground-truth boxes, and end to end by the class the engine voted for the track
that follows the lesion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog
from tqdm import tqdm

from inference.engines.base import ImageInput
from inference.engines.lesion import BreastEngine, LesionEngine, LiverEngine
from inference.engines.model_card import read_card
from inference.evaluation.metrics import (
    Match,
    bootstrap_intervals,
    classification_summary,
    confusion,
    match_detections,
    prf,
)
from inference.evaluation.robustness import PERTURBATIONS, UNCHANGED, perturb
from inference.findings import MALIGNANT_CLASSES, BoundingBox, LesionFinding
from inference.geometry import ImageGeometry
from inference.phantoms.anatomy import SceneConfig
from inference.phantoms.generator import PhantomSample, Renderer, generate
from inference.phantoms.imagedomain import generate_image_domain, generate_image_domain_clip
from inference.phantoms.pulse_echo import generate_pulse_echo
from inference.phantoms.volume_slice import generate_volume_slice
from inference.preprocessing import scan_area
from inference.training.lesion_data import image_size

logger = structlog.get_logger(__name__)

FIRST_SEEDS = {"liver": (1_000_000, 3_000_000), "breast": (2_000_000, 4_000_000)}
"""Per organ: first seed of the held-out images and of the held-out clips."""

SECOND_GENERATOR_SEEDS = {"liver": 21_000_000, "breast": 22_000_000}
"""Per organ: first seed of the held-out images of the image-domain generator
(:mod:`inference.phantoms.imagedomain`; its training caches use 20,000,000 and up)."""

SECOND_GENERATOR_CLIP_SEEDS = {"liver": 23_000_000, "breast": 24_000_000}
"""Per organ: first seed of the held-out clips of the image-domain generator."""

INDEPENDENT_GENERATORS: dict[str, tuple[Renderer, dict[str, int]]] = {
    "pulse-echo": (generate_pulse_echo, {"liver": 31_000_000, "breast": 32_000_000}),
    "volume-slice": (generate_volume_slice, {"liver": 33_000_000, "breast": 34_000_000}),
}
"""Generators written by someone who had read none of the others, by name: the renderer
and, per organ, the first seed of the images scored. These images never train, tune or
choose weights; a detector may have been trained on other seeds of a generator named in
:data:`INDEPENDENT_TRAINING_SEEDS`."""

INDEPENDENT_TRAINING_SEEDS: dict[str, tuple[int, int]] = {"pulse-echo": (30_000_000, 30_999_999)}
"""Per independent generator: the seeds its training caches may use (docs/dataset-card.md)."""

ENGINES: dict[str, type[LesionEngine]] = {"liver": LiverEngine, "breast": BreastEngine}

PR_THRESHOLD = 0.05
"""Score threshold of the run that collects detections for the PR curve."""


SUMMARY_FIGURES = ("accuracy", "bm_accuracy", "sensitivity", "specificity", "auc")
"""The classification figures given with a bootstrap interval."""

SIZE_BANDS_MM = ((0.0, 10.0), (10.0, 20.0), (20.0, float("inf")))
"""Lesion size bands (longest side of the ground-truth box) of the recall table."""


@dataclass(frozen=True)
class LesionOutcome:
    """One ground-truth lesion of a held-out image and whether the detector found it."""

    label: str
    size_mm: float
    found: bool


@dataclass
class OrganEvaluation:
    """Everything measured for one organ."""

    organ: str
    classes: tuple[str, ...]
    threshold: float
    images: int = 0
    lesions: int = 0
    matches: list[Match] = field(default_factory=list)
    per_image: list[tuple[list[Match], int]] = field(default_factory=list)
    outcomes: list[LesionOutcome] = field(default_factory=list)
    roi_truth: list[str] = field(default_factory=list)
    roi_pred: list[str] = field(default_factory=list)
    roi_malignancy: list[float] = field(default_factory=list)
    chained_truth: list[str] = field(default_factory=list)
    chained_pred: list[str] = field(default_factory=list)
    chained_malignancy: list[float] = field(default_factory=list)
    clips: int = 0
    clip_truth: list[str] = field(default_factory=list)
    clip_pred: list[str] = field(default_factory=list)
    clip_malignancy: list[float] = field(default_factory=list)
    clip_roi_truth: list[str] = field(default_factory=list)
    clip_roi_pred: list[str] = field(default_factory=list)
    clip_roi_malignancy: list[float] = field(default_factory=list)
    perturbed_images: int = 0
    perturbed_lesions: int = 0
    perturbed: dict[str, list[Match]] = field(default_factory=dict)
    perturbed_roi: dict[str, list[bool]] = field(default_factory=dict)
    second: OrganEvaluation | None = None
    """The same engine on held-out images of the image-domain generator, if scored."""
    independent: dict[str, OrganEvaluation] = field(default_factory=dict)
    """The same engine on images of each of :data:`INDEPENDENT_GENERATORS`, if scored."""
    trained_on: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per independent generator the detector was trained on other images of: the first
    and last seed of those images (from its card)."""

    @property
    def detection(self) -> tuple[float, float, float]:
        """Precision, recall, F1 at the engine's threshold."""
        return prf(self.matches, self.lesions, self.threshold)

    def detection_intervals(self) -> list[tuple[float, float]]:
        """95 % bootstrap intervals of precision, recall and F1 (images resampled)."""
        def statistic(drawn: np.ndarray) -> tuple[float, float, float]:
            chosen = [self.per_image[i] for i in drawn]
            return prf([m for matches, _ in chosen for m in matches],
                       sum(lesions for _, lesions in chosen), self.threshold)

        return bootstrap_intervals(statistic, len(self.per_image))

    def summary_intervals(self, kind: str) -> dict[str, tuple[float, float]]:
        """95 % bootstrap intervals of the :data:`SUMMARY_FIGURES` of ``roi``, ``chained``,
        ``clip`` or ``clip_roi`` predictions (ROIs, found lesions or clips resampled)."""
        truth, pred, mal = (getattr(self, f"{kind}_{part}")
                            for part in ("truth", "pred", "malignancy"))

        if not truth:
            return {}

        def statistic(drawn: np.ndarray) -> list[float]:
            summary = classification_summary([truth[i] for i in drawn], [pred[i] for i in drawn],
                                             [mal[i] for i in drawn], self.classes)
            return [summary[name] for name in SUMMARY_FIGURES]

        return dict(zip(SUMMARY_FIGURES, bootstrap_intervals(statistic, len(truth)), strict=True))

    def detection_under(self, change: str) -> tuple[float, float, float]:
        """Precision, recall, F1 on the images changed by ``change`` (``unchanged``: the
        same images as they are)."""
        return prf(self.perturbed[change], self.perturbed_lesions, self.threshold)

    def roi_accuracy_under(self, change: str) -> float:
        """4-class accuracy of the classifier on the ground-truth boxes of the images
        changed by ``change``."""
        correct = self.perturbed_roi.get(change, [])
        return sum(correct) / len(correct) if correct else float("nan")

    def recall_by_stratum(self) -> list[tuple[str, int, float]]:
        """Detection recall at the engine's threshold per class, then per size band:
        ``(stratum, lesions, recall)``, strata without lesions left out."""
        strata = [(label, [o for o in self.outcomes if o.label == label])
                  for label in self.classes]
        strata += [(_band_name(low, high), [o for o in self.outcomes
                                            if low <= o.size_mm < high])
                   for low, high in SIZE_BANDS_MM]
        return [(name, len(group), sum(o.found for o in group) / len(group))
                for name, group in strata if group]

    def summary(self, kind: str) -> dict[str, float]:
        """Classification figures of ``roi``, ``chained``, ``clip`` or ``clip_roi``
        predictions."""
        truth, pred, mal = (getattr(self, f"{kind}_{part}")
                            for part in ("truth", "pred", "malignancy"))
        return classification_summary(truth, pred, mal, self.classes)

    def confusion(self, kind: str = "roi") -> np.ndarray:
        """Confusion matrix of ``roi`` / ``chained`` / ``clip`` predictions."""
        truth, pred = getattr(self, f"{kind}_truth"), getattr(self, f"{kind}_pred")
        pairs = [(self.classes.index(t), self.classes.index(p))
                 for t, p in zip(truth, pred, strict=True) if p in self.classes]
        return confusion([t for t, _ in pairs], [p for _, p in pairs], len(self.classes))


def _band_name(low: float, high: float) -> str:
    if high == float("inf"):
        return f">= {low:.0f} mm"
    return f"< {high:.0f} mm" if low == 0 else f"{low:.0f}-{high:.0f} mm"


def image_input(sample: PhantomSample, uid: str, with_regions: bool) -> ImageInput:
    """The engine input of a phantom sample (regions known or not)."""
    geometry = (ImageGeometry((sample.pixel_mm, sample.pixel_mm), sample.scan_box)
                if with_regions else ImageGeometry(None, None))
    return ImageInput(uid, sample.frames, geometry, frame_time_ms=sample.frame_time_ms)


def _score_perturbed(ev: OrganEvaluation, engine: LesionEngine, sample: PhantomSample) -> None:
    """Detection on ``sample`` (with its regions) as it is and changed by each of
    :data:`PERTURBATIONS`, in one batch of the engine's detector, and the classifier
    on the ground-truth boxes of each."""
    truths = [t.box for t in sample.truths[0]]
    labels = [t.label for t in sample.truths[0]]
    ev.perturbed_images += 1
    ev.perturbed_lesions += len(truths)
    frame = sample.frames[:1]
    variants = np.concatenate(
        [frame, *(perturb(frame, change, sample.seed) for change in PERTURBATIONS)])
    area = scan_area(image_input(sample, "", True))
    detections = engine.detect(variants, np.arange(len(variants)), area,
                               engine.score_threshold)
    for change, variant, found in zip([UNCHANGED, *PERTURBATIONS], variants, detections,
                                      strict=True):
        ev.perturbed.setdefault(change, []).extend(match_detections(
            [d.box for d in found], [d.score for d in found], truths))
        probs = engine.classify(variant, truths)
        ev.perturbed_roi.setdefault(change, []).extend(
            ev.classes[int(p.argmax())] == label for p, label in zip(probs, labels, strict=True))


def _score_image(ev: OrganEvaluation, engine: LesionEngine, sample: PhantomSample,
                 uid: str, with_regions: bool) -> None:
    result = engine.run(image_input(sample, uid, with_regions))
    truths = sample.truths[0]
    boxes = [f.key_observation.box for f in result.lesions]
    scores = [f.key_observation.score for f in result.lesions]
    matches = match_detections(boxes, scores, [t.box for t in truths])
    ev.images += 1
    ev.lesions += len(truths)
    ev.matches.extend(matches)
    ev.per_image.append((matches, len(truths)))
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    hits = [(m.truth, result.lesions[int(i)]) for m, i in zip(matches, order, strict=True)
            if m.truth >= 0 and m.score >= ev.threshold]
    found = {j for j, _ in hits}
    ev.outcomes.extend(
        LesionOutcome(t.label, max(t.box.width, t.box.height) * sample.pixel_mm, j in found)
        for j, t in enumerate(truths))
    for j, finding in hits:
        ev.chained_truth.append(truths[j].label)
        ev.chained_pred.append(finding.label)
        ev.chained_malignancy.append(finding.malignancy_probability)
    if truths:
        probs = engine.classify(sample.frames[0], [t.box for t in truths])
        for t, p in zip(truths, probs, strict=True):
            ev.roi_truth.append(t.label)
            ev.roi_pred.append(ev.classes[int(p.argmax())])
            ev.roi_malignancy.append(float(sum(q for c, q in zip(ev.classes, p, strict=True)
                                               if c in MALIGNANT_CLASSES)))


def _clip_finding(findings: list[LesionFinding], sample: PhantomSample) -> LesionFinding | None:
    """The finding whose observations overlap the lesion on the most frames."""
    truth_by_frame: dict[int, BoundingBox] = {
        i + 1: t.box for i, frame in enumerate(sample.truths) for t in frame}
    best, best_hits = None, 0
    for finding in findings:
        hits = sum(1 for o in finding.observations
                   if o.frame_number in truth_by_frame
                   and o.box.iou(truth_by_frame[o.frame_number]) >= 0.25)
        if hits > best_hits:
            best, best_hits = finding, hits
    return best


CLIP_CONFIG = SceneConfig(lesion_counts=(0.0, 1.0))
"""Scene of an evaluation clip: exactly one lesion."""


def clip_sample(organ: str, seed: int, clip_frames: tuple[int, int] = (20, 30),
                image_domain: bool = False) -> PhantomSample | None:
    """The one-lesion 640x480 clip of ``seed`` (20-30 frames), or ``None`` if its lesion
    is never visible; from the image-domain generator if ``image_domain``."""
    n_frames = clip_frames[0] + seed % (clip_frames[1] - clip_frames[0] + 1)
    sample = (generate_image_domain_clip(organ, seed, n_frames,  # type: ignore[arg-type]
                                         lesions=1) if image_domain
              else generate(organ, seed, 480, 640, n_frames=n_frames,  # type: ignore[arg-type]
                            config=CLIP_CONFIG))
    return sample if sample.labels and any(sample.truths) else None


def clip_prediction(engine: LesionEngine, sample: PhantomSample
                    ) -> tuple[LesionFinding | None, int]:
    """The engine's finding for the clip's lesion (``None`` when it was not tracked) and
    the number of other tracks it reported (false tracks: the clip has one lesion)."""
    result = engine.run(image_input(sample, f"2.25.{sample.seed}", True))
    finding = _clip_finding(result.lesions, sample)
    return finding, len(result.lesions) - (finding is not None)


def clip_roi_vote(engine: LesionEngine, sample: PhantomSample) -> tuple[str, float]:
    """Class and probability of malignancy the engine's classifier votes for the clip's
    lesion on its ground-truth boxes (every frame that shows it), as it votes for a track."""
    probs = np.concatenate([engine.classify(frame, [truths[0].box])
                            for frame, truths in zip(sample.frames, sample.truths, strict=True)
                            if truths])
    label_index, mean = engine.lesion_class(probs)
    return engine.classes[label_index], float(sum(
        p for c, p in zip(engine.classes, mean, strict=True) if c in MALIGNANT_CLASSES))


def _score_clip(ev: OrganEvaluation, engine: LesionEngine, clip: PhantomSample) -> None:
    """The engine's class of the clip's lesion, through its detector and tracking and by
    its classifier's vote on the ground-truth boxes."""
    ev.clips += 1
    finding, _ = clip_prediction(engine, clip)
    ev.clip_truth.append(clip.labels[0])
    ev.clip_pred.append(finding.label if finding else "missed")
    ev.clip_malignancy.append(finding.malignancy_probability if finding else 0.0)
    label, malignancy = clip_roi_vote(engine, clip)
    ev.clip_roi_truth.append(clip.labels[0])
    ev.clip_roi_pred.append(label)
    ev.clip_roi_malignancy.append(malignancy)


def evaluate_organ(organ: str, n_images: int, n_clips: int, weights_dir: Path | None = None,
                   clip_frames: tuple[int, int] = (20, 30), n_perturbed: int = 0,
                   n_second: int = 0, n_second_clips: int = 0, n_independent: int = 0
                   ) -> OrganEvaluation:
    """Run the engine of ``organ`` on held-out images and clips and collect the figures.

    The first ``n_perturbed`` images (at most ``n_images``) are also scored as they are
    and changed by each of :data:`~inference.evaluation.robustness.PERTURBATIONS`, all
    with their ultrasound regions.  ``n_second`` held-out images and ``n_second_clips``
    held-out clips of the image-domain generator are scored into ``second``,
    ``n_independent`` images of each independent generator into ``independent``.
    """
    engine = ENGINES[organ](weights_dir, score_threshold=PR_THRESHOLD)
    operating = ENGINES[organ](weights_dir)
    ev = OrganEvaluation(organ, engine.classes, operating.score_threshold)
    first_image, first_clip = FIRST_SEEDS[organ]
    for k in tqdm(range(n_images), desc=f"{organ} images", mininterval=10):
        seed = first_image + k
        sample = generate(organ, seed, *image_size(seed))  # type: ignore[arg-type]
        _score_image(ev, engine, sample, f"2.25.{seed}", with_regions=k % 4 != 3)
        if k < n_perturbed:
            _score_perturbed(ev, engine, sample)
    for k in tqdm(range(n_clips), desc=f"{organ} clips", mininterval=10):
        clip = clip_sample(organ, first_clip + k, clip_frames)
        if clip is not None:
            _score_clip(ev, operating, clip)
    second = _score_stills(ev, engine, generate_image_domain, SECOND_GENERATOR_SEEDS[organ],
                           n_second, "image-domain")
    for k in tqdm(range(n_second_clips), desc=f"{organ} image-domain clips", mininterval=10):
        clip = clip_sample(organ, SECOND_GENERATOR_CLIP_SEEDS[organ] + k, clip_frames, True)
        if clip is not None:
            _score_clip(second, operating, clip)
    if n_second or n_second_clips:
        ev.second = second
    if n_independent:
        ev.independent = {
            name: _score_stills(ev, engine, render, seeds[organ], n_independent, name)
            for name, (render, seeds) in INDEPENDENT_GENERATORS.items()}
        card = read_card(engine.weights_dir / f"{organ}_detector.pt")
        ev.trained_on = independent_training(card["data"]["cache_seeds"])
    return ev


def independent_training(cache_seeds: list[list[int]]) -> dict[str, tuple[int, int]]:
    """Which independent generators a detector card's training caches (their first and
    last seeds) drew from, with the first and last seed drawn from each."""
    found: dict[str, tuple[int, int]] = {}
    for name, (low, high) in INDEPENDENT_TRAINING_SEEDS.items():
        spans = [(first, last) for first, last in cache_seeds if low <= first <= high]
        if spans:
            found[name] = (min(f for f, _ in spans), max(last for _, last in spans))
    return found


def _score_stills(ev: OrganEvaluation, engine: LesionEngine,
                  render: Renderer, first_seed: int,
                  n_images: int, name: str) -> OrganEvaluation:
    """``n_images`` stills of another generator, from ``first_seed``, scored with their
    ultrasound regions into a new evaluation at ``ev``'s threshold."""
    other = OrganEvaluation(ev.organ, ev.classes, ev.threshold)
    for k in tqdm(range(n_images), desc=f"{ev.organ} {name}", mininterval=10):
        seed = first_seed + k
        sample = render(ev.organ, seed, *image_size(seed))  # type: ignore[arg-type]
        _score_image(other, engine, sample, f"2.25.{seed}", with_regions=True)
    return other
