"""Liver and breast lesion engines: detect, classify, track, explain.

Each engine chains a single-class detector (the letterboxed scan area in,
boxes out; it also sees the mirror image and the two outputs are averaged,
see :func:`~inference.models.lesion_nets.predict_mirrored`) with a 4-class
ROI classifier (a crop around each detection in, class probabilities out), as
the published real-time system does.  On a cine, up to
:attr:`LesionEngine.max_frames` evenly sampled frames are analysed, detections
are tracked (:mod:`inference.cine`), a track is reported when its evidence
over the frames reaches the card's ``cine_track_score``, and its class is voted
3-of-5 and its probabilities smoothed.  Each finding carries a
Grad-CAM map of the classifier's evidence at full image size.

An organ may also have a verifier (``<organ>_verifier.pt``): a second stage
that looks at a crop of the full-resolution frame around each detector
candidate (down to the verifier card's ``floor``) and gives the probability that
it is a lesion.  A candidate's score is then the geometric mean of the detector's
score and that probability, and the score threshold applies to it.  The
detector sees the scan area at 256 px; the crop shows a small lesion's wall and
what lies behind it at the scanner's own resolution.

Weights are loaded once per process from ``inference/weights`` (or
``weights_dir``): ``<organ>_detector.pt``, ``<organ>_classifier.pt`` and the
optional ``<organ>_verifier.pt`` with their ``.json`` cards (the detector card
holds the score threshold and the cine track score, which apply to the final
score).
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import structlog
import torch
from PIL import Image

from inference.cine import Detection, Track, smooth, track, vote
from inference.engines.base import ImageInput, tracking_uid
from inference.findings import (
    BREAST_CLASSES,
    LIVER_CLASSES,
    MALIGNANT_CLASSES,
    AlgorithmInfo,
    AnatomyValues,
    BoundingBox,
    ImageResult,
    LesionFinding,
    LesionObservation,
    NotAssessed,
    NotAssessedReasonValues,
)
from inference.models.lesion_nets import (
    DETECTOR_HEAD,
    DETECTOR_WIDTHS,
    LesionClassifier,
    LesionDetector,
    decode,
    grad_cam,
    predict_mirrored,
)
from inference.models.roi import (
    CLASSIFIER_SIZE,
    DETECTOR_SIZE,
    letterbox,
    roi_crop,
    roi_square,
)
from inference.models.runtime import Runner, make_runner
from inference.preprocessing import scan_areas

logger = structlog.get_logger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
"""Default location of the shipped weights."""

MIN_CINE_FRAMES = 4
"""Analysed frames from which a clip is scored by tracks rather than frame by frame."""

CINE_FLOOR_FACTOR = 0.5
"""On a cine, detections down to this fraction of the score threshold are tracked."""

DEFAULT_TRACK_SCORE_FACTOR = 0.4
"""Track evidence a cine needs, as a fraction of the score threshold, when the detector
card holds no tuned ``cine_track_score``."""

_LOCK = threading.Lock()
_LOADED: dict[tuple[Path, str], _Models] = {}


@dataclass(frozen=True)
class _Verifier:
    """Second stage: lesion / not lesion on a crop around each detector candidate."""

    module: LesionClassifier
    run: Runner
    floor: float


@dataclass(frozen=True)
class _Models:
    detector: LesionDetector
    classifier: LesionClassifier
    detect: Runner
    classify: Runner
    threshold: float
    cine_track_score: float
    sha256: str
    input_size: int
    verifier: _Verifier | None


def _load_verifier(weights_dir: Path, organ: str) -> tuple[_Verifier, str] | None:
    """The organ's verifier and its weights' SHA-256, if it has one."""
    card_path = weights_dir / f"{organ}_verifier.json"
    if not card_path.exists():
        return None
    card = json.loads(card_path.read_text())
    weights = weights_dir / f"{organ}_verifier.pt"
    module = LesionClassifier(2)
    module.load_state_dict(torch.load(weights, weights_only=True))
    module.eval()
    return _Verifier(module, make_runner(module, weights, card["sha256"]),
                     float(card["floor"])), str(card["sha256"])


def _load(weights_dir: Path, organ: str, n_classes: int) -> _Models:
    """Load (once per process) the detector and classifier of ``organ``."""
    key = (weights_dir.resolve(), organ)
    with _LOCK:
        if key not in _LOADED:
            cards = [json.loads((weights_dir / f"{organ}_{part}.json").read_text())
                     for part in ("detector", "classifier")]
            detector = LesionDetector(tuple(cards[0].get("widths", DETECTOR_WIDTHS)),
                                      int(cards[0].get("head", DETECTOR_HEAD)),
                                      int(cards[0].get("blocks", 0)))
            detector.load_state_dict(torch.load(weights_dir / f"{organ}_detector.pt",
                                                weights_only=True))
            classifier = LesionClassifier(n_classes)
            classifier.load_state_dict(torch.load(weights_dir / f"{organ}_classifier.pt",
                                                  weights_only=True))
            verifier = _load_verifier(weights_dir, organ)
            sha = "".join([*(card["sha256"] for card in cards),
                           *([verifier[1]] if verifier else [])])
            models = _Models(
                detector.eval(), classifier.eval(),
                make_runner(detector, weights_dir / f"{organ}_detector.pt", cards[0]["sha256"]),
                make_runner(classifier, weights_dir / f"{organ}_classifier.pt",
                            cards[1]["sha256"]),
                float(cards[0]["threshold"]),
                float(cards[0].get("cine_track_score",
                                   DEFAULT_TRACK_SCORE_FACTOR * cards[0]["threshold"])),
                hashlib.sha256(sha.encode()).hexdigest(),
                int(cards[0].get("input_size", DETECTOR_SIZE)),
                verifier[0] if verifier else None)
            _LOADED[key] = models
            logger.info("lesion_models_loaded", organ=organ, weights_dir=str(weights_dir),
                        runtime=models.detect.backend)
        return _LOADED[key]


@functools.cache
def _package_version() -> str:
    """The installed package's version (read once: reading it costs about 1 ms)."""
    try:
        return metadata.version("us-ai-dicom-node")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _verified(verifier: _Verifier, frames: np.ndarray, indices: np.ndarray,
              found: list[list[Detection]], threshold: float) -> list[list[Detection]]:
    """The candidates ``found`` on ``frames[indices]`` (one list per index) scored by the
    geometric mean of the detector's score and the verifier's lesion probability, those at
    ``threshold`` or more; one verifier run for every frame's candidates."""
    kept: list[list[Detection]] = [[] for _ in found]
    candidates = [d for dets in found for d in dets]
    if not candidates:
        return kept
    crops = np.stack([roi_crop(frames[indices[d.frame_index]], d.box) for d in candidates])
    x = torch.from_numpy(crops[:, None].astype(np.float32) / 255.0)
    lesion = torch.softmax(verifier.run(x)[0], dim=1)[:, 1].numpy()
    for d, p in zip(candidates, lesion, strict=True):
        score = float(np.sqrt(d.score * p))
        if score >= threshold:
            kept[d.frame_index].append(Detection(d.frame_index, d.box, score))
    return kept


class LesionEngine:
    """Detector + classifier engine of one organ (see the module docstring).

    Parameters
    ----------
    weights_dir:
        Directory of the weights (default: the shipped ones).
    score_threshold:
        Detection score threshold (default: the one in the detector card).
    max_frames:
        Frames of a cine analysed at most (evenly sampled).
    vote_k, vote_n:
        k-of-n frame voting of a track's class.
    cine_track_score:
        On a cine of at least :data:`MIN_CINE_FRAMES` analysed frames, detections
        down to :data:`CINE_FLOOR_FACTOR` times the score threshold are tracked,
        and a track is reported when its evidence (its scores summed over the
        analysed frames, :meth:`~inference.cine.Track.evidence`) reaches this.
        Lower values recover faint lesions but keep more persistent false tracks
        (vessel cross-sections).  Default: the value chosen on validation clips
        by ``us-ai-train cine-vote`` and written in the detector card
        (:data:`DEFAULT_TRACK_SCORE_FACTOR` times the score threshold if none).
    """

    name: str = ""
    anatomy: AnatomyValues = AnatomyValues.OTHER
    classes: tuple[str, ...] = ()

    def __init__(self, weights_dir: Path | None = None, score_threshold: float | None = None,
                 max_frames: int = 16, vote_k: int = 3, vote_n: int = 5,
                 cine_track_score: float | None = None, keep_sure_tracks: bool = True) -> None:
        self.weights_dir = weights_dir or WEIGHTS_DIR
        self.keep_sure_tracks = keep_sure_tracks
        self._models = _load(self.weights_dir, self.name, len(self.classes))
        self.score_threshold = (score_threshold if score_threshold is not None
                                else self._models.threshold)
        self.max_frames = max_frames
        self.vote_k, self.vote_n = vote_k, vote_n
        self.cine_track_score = (cine_track_score if cine_track_score is not None
                                 else self._models.cine_track_score)

    @property
    def algorithm(self) -> AlgorithmInfo:
        """Identity of the detector + classifier pair, with every parameter."""
        return self.algorithm_for(cine=True)

    def algorithm_for(self, cine: bool) -> AlgorithmInfo:
        """Identity of the detector + classifier pair, with the parameters that shape the
        result of a cine (``cine``) or of a still: voting, frame sampling and track
        evidence play no part in a still's."""
        parameters = {"score_threshold": f"{self.score_threshold:.2f}",
                      "runtime": self._models.detect.backend}
        if cine:
            parameters |= {"cine_vote": f"{self.vote_k} of {self.vote_n} frames",
                           "max_frames": str(self.max_frames),
                           "cine_track_score": f"{self.cine_track_score:.3f}"}
        return AlgorithmInfo(name=f"us-{self.name}-lesion", version=_package_version(),
                             weights_sha256=self._models.sha256, parameters=parameters)

    def networks(self) -> list[tuple[Path, torch.nn.Module, tuple[int, ...]]]:
        """The networks this engine runs: weights file, module and input shape (for export)."""
        crop = (1, 1, CLASSIFIER_SIZE, CLASSIFIER_SIZE)
        found = [
            (self.weights_dir / f"{self.name}_detector.pt", self._models.detector,
             (1, 1, self._models.input_size, self._models.input_size)),
            (self.weights_dir / f"{self.name}_classifier.pt", self._models.classifier, crop),
        ]
        if self._models.verifier is not None:
            found.append((self.weights_dir / f"{self.name}_verifier.pt",
                          self._models.verifier.module, crop))
        return found

    def run(self, image: ImageInput) -> ImageResult:
        """Detect, classify and (on cine) track the lesions of one image."""
        result = ImageResult(image.sop_instance_uid, self.anatomy,
                             algorithm=self.algorithm_for(cine=len(image.frames) > 1))
        try:
            areas = scan_areas(image)
        except ValueError as exc:
            result.not_assessed = NotAssessed(image.sop_instance_uid,
                                              NotAssessedReasonValues.IMAGE_QUALITY, str(exc))
            return result
        frames = image.frames
        indices = np.round(np.linspace(0, len(frames) - 1, min(len(frames), self.max_frames))
                           ).astype(int) if len(frames) > 1 else np.array([0])
        if len(indices) >= MIN_CINE_FRAMES:
            per_frame = self._detect_views(frames, indices, areas,
                                           self.score_threshold * CINE_FLOOR_FACTOR)
            tracks = [t for t in track(per_frame) if self._reported(t, len(indices))]
        else:
            tracks = track(self._detect_views(frames, indices, areas))
        for number, t in enumerate(sorted(tracks, key=lambda t: -t.mean_score), start=1):
            result.lesions.append(self._finding(image, frames, indices, t, number))
        return result

    def _reported(self, t: Track, analysed: int) -> bool:
        """Whether a cine track is reported: at least 2 detections, and either evidence
        over the clip of at least :attr:`cine_track_score`, or (with
        :attr:`keep_sure_tracks`) at least 2 detections as sure as a still's, so a lesion
        seen clearly on part of a sweep is reported as it would be on a still."""
        if len(t.detections) < 2:
            return False
        if t.evidence(analysed) >= self.cine_track_score:
            return True
        sure = sum(d.score >= self.score_threshold for d in t.detections)
        return self.keep_sure_tracks and sure >= 2

    def _detect_views(self, frames: np.ndarray, indices: np.ndarray, areas: list[BoundingBox],
                      threshold: float | None = None) -> list[list[Detection]]:
        """:meth:`detect` in each view of a dual or quad display, joined frame by frame."""
        per_view = [self.detect(frames, indices, area, threshold) for area in areas]
        return [[d for view in views for d in view] for views in zip(*per_view, strict=True)]

    def detect(self, frames: np.ndarray, indices: np.ndarray, area: BoundingBox,
               threshold: float | None = None) -> list[list[Detection]]:
        """Detections (original pixels) on ``frames[indices]``, one list per index.

        ``Detection.frame_index`` is the position in ``indices``; ``threshold``
        defaults to :attr:`score_threshold`.  With a verifier, the detector's
        candidates down to its floor are verified and scored again (see the module
        docstring) before the threshold applies.
        """
        threshold = self.score_threshold if threshold is None else threshold
        verifier = self._models.verifier
        if verifier is None:
            return self.candidates(frames, indices, area, threshold)
        found = self.candidates(frames, indices, area, min(threshold, verifier.floor))
        return _verified(verifier, frames, indices, found, threshold)

    def candidates(self, frames: np.ndarray, indices: np.ndarray, area: BoundingBox,
                   threshold: float) -> list[list[Detection]]:
        """The detector's own detections (original pixels) scoring ``threshold`` or more
        on ``frames[indices]``, one list per index, before any verifier."""
        inputs, boxes = [], []
        for i in indices:
            det_in, lb = letterbox(frames[i], area, self._models.input_size)
            inputs.append(det_in)
            boxes.append(lb)
        x = torch.from_numpy(np.stack(inputs)[:, None].astype(np.float32) / 255.0)
        decoded = decode(*predict_mirrored(self._models.detect, x), threshold=threshold)
        out = []
        for k, (dets, lb) in enumerate(zip(decoded, boxes, strict=True)):
            frame_dets = []
            for d in dets:
                b = lb.to_original(d.x0, d.y0, d.x1, d.y1)
                x0, y0 = max(b.x0, area.x0), max(b.y0, area.y0)
                x1, y1 = min(b.x1, area.x1), min(b.y1, area.y1)
                if x1 - x0 >= 2 and y1 - y0 >= 2:
                    frame_dets.append(Detection(k, BoundingBox(x0, y0, x1, y1), d.score))
            out.append(frame_dets)
        return out

    def classify(self, frame: np.ndarray, boxes: list[BoundingBox]) -> np.ndarray:
        """Class probabilities ``(len(boxes), classes)`` of lesion boxes on a frame."""
        return self._classify([roi_crop(frame, b) for b in boxes])

    def lesion_class(self, probs: np.ndarray) -> tuple[int, np.ndarray]:
        """Class of one lesion from its per-frame class probabilities ``(frames, classes)``:
        the k-of-n vote (the class of a single frame) and the smoothed mean probabilities.

        When the smoothed mean favours another class than the vote (a few frames very
        sure of one class, more frames narrowly of another), the probabilities are the
        mean of the frames whose most probable class is the voted one, so the report
        never names a class beside a higher probability for another.
        """
        if len(probs) > 1:
            label_index, _ = vote(probs, self.vote_k, self.vote_n)
            mean = smooth(probs).mean(axis=0)
            if int(mean.argmax()) != label_index:
                voters = probs[probs.argmax(axis=1) == label_index]
                mean = voters.mean(axis=0) if len(voters) else probs.mean(axis=0)
            return label_index, mean
        return int(probs[0].argmax()), probs[0]

    def _classify(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, len(self.classes)))
        x = torch.from_numpy(np.stack(crops)[:, None].astype(np.float32) / 255.0)
        return torch.softmax(self._models.classify(x)[0], dim=1).numpy()

    def _finding(self, image: ImageInput, frames: np.ndarray, indices: np.ndarray, t: Track,
                 number: int) -> LesionFinding:
        probs = self._classify([roi_crop(frames[indices[d.frame_index]], d.box)
                                for d in t.detections])
        label_index, mean = self.lesion_class(probs)
        probabilities = {c: float(p) for c, p in zip(self.classes, mean, strict=True)}
        observations = [LesionObservation(int(indices[d.frame_index]) + 1, d.box, d.score)
                        for d in t.detections]
        key = max(t.detections, key=lambda d: d.score)
        heatmap = self._heatmap(frames[indices[key.frame_index]], key.box, label_index)
        return LesionFinding(
            tracking_id=f"Lesion {number}",
            tracking_uid=tracking_uid(image.sop_instance_uid, self.algorithm, f"lesion {number}"),
            anatomy=self.anatomy,
            label=self.classes[label_index], probabilities=probabilities,
            malignancy_probability=float(sum(p for c, p in probabilities.items()
                                             if c in MALIGNANT_CLASSES)),
            source_sop_instance_uid=image.sop_instance_uid, observations=observations,
            heatmap=heatmap)

    def _heatmap(self, frame: np.ndarray, box: BoundingBox, class_index: int) -> np.ndarray:
        """Grad-CAM of the classifier pasted back at full image size."""
        crop = torch.from_numpy(roi_crop(frame, box)[None, None].astype(np.float32) / 255.0)
        cam = grad_cam(self._models.classifier, crop, class_index)
        cx, cy, side = roi_square(box)
        x0, y0, span = round(cx - side / 2), round(cy - side / 2), max(round(side), 1)
        resized = np.asarray(Image.fromarray(cam).resize((span, span), Image.BILINEAR))
        out = np.zeros(frame.shape, dtype=np.float32)
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x0 + span, frame.shape[1]), min(y0 + span, frame.shape[0])
        if sx1 > sx0 and sy1 > sy0:
            out[sy0:sy1, sx0:sx1] = resized[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
        return np.clip(out, 0.0, 1.0)


class LiverEngine(LesionEngine):
    """Liver tumours: HCC, metastasis, hemangioma, cyst."""

    name = "liver"
    anatomy = AnatomyValues.LIVER
    classes = LIVER_CLASSES


class BreastEngine(LesionEngine):
    """Breast tumours: carcinoma, fibroadenoma, simple cyst, other."""

    name = "breast"
    anatomy = AnatomyValues.BREAST
    classes = BREAST_CLASSES


__all__ = ["BreastEngine", "LesionEngine", "LiverEngine"]
