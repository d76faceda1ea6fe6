"""The shipped lesion engines on a small fixed held-out phantom set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydicom.uid import UID

from inference.engines.base import Engine, ImageInput
from inference.engines.lesion import WEIGHTS_DIR, BreastEngine, LesionEngine, LiverEngine
from inference.evaluation.lesion import clip_prediction, image_input
from inference.evaluation.metrics import match_detections, prf
from inference.evaluation.robustness import perturb
from inference.findings import (
    AnatomyValues,
    BoundingBox,
    LesionFinding,
    NotAssessedReasonValues,
)
from inference.geometry import ImageGeometry, UltrasoundRegion
from inference.phantoms.anatomy import SceneConfig
from inference.phantoms.generator import generate
from inference.phantoms.imagedomain import generate_image_domain_clip
from inference.training.common import sha256_file
from inference.training.lesion_data import GENERATORS

THRESHOLDS = {
    # organ: (detection recall, detection precision, ROI 4-class accuracy) on 20 images;
    # measured with the shipped weights: liver 0.92 / 0.97 / 0.92 (0.86 / 0.94 without its
    # verifier), breast 0.83 / 0.95 / 0.91; edge-enhanced: liver 0.81 / 0.91 / 0.89 (0.86 /
    # 0.97 without the verifier), breast 0.83 / 0.86 / 0.91 (the breast detector before
    # it, 2026-11-28: 0.83 / 0.90 / 0.91; the breast detector and classifier trained
    # without scanner post-processing had 0.83 / 0.79 / 0.74).
    "liver": (0.75, 0.8, 0.8),
    "breast": (0.72, 0.82, 0.8),
}
"""Floors for the shipped weights, a margin below what they measure on this set."""

IMAGE_DOMAIN_THRESHOLDS = {
    # The same on 20 images of the image-domain generator (inference.phantoms.imagedomain),
    # 22 lesions each; measured with the shipped weights: liver 0.82 / 1.00 / 0.77 (0.86 /
    # 0.95 / 0.77 without the liver verifier), breast
    # 0.82 / 0.95 / 1.00 (the breast detectors before it: 0.77 / 0.94 / 1.00 and, before
    # 2026-11-28, 0.73 / 0.94 / 1.00);
    # the weights trained on the first generator alone had liver 0.59 / 0.87 / 0.68 and
    # breast 0.55 / 0.80 / 0.91.
    "liver": (0.65, 0.8, 0.65),
    "breast": (0.65, 0.7, 0.85),
}
"""Floors on the second generator's images."""

PULSE_ECHO_THRESHOLDS = {
    # The same on 20 images of the pulse-echo generator (inference.phantoms.pulse_echo;
    # these seeds are outside its held-out range); measured with the shipped weights:
    # liver 0.62 / 0.67 / 0.85 (13 lesions; no liver network was trained on it), breast
    # 0.78 / 0.93 / 0.83 (18 lesions; its detector was trained on other pulse-echo images,
    # the one before it, which was not, had 0.78 / 0.52 / 0.83).
    "liver": (0.45, 0.5, 0.65),
    "breast": (0.65, 0.8, 0.7),
}
"""Floors on the pulse-echo generator's images."""

EDGE_ENHANCEMENT = "edge enhancement (unsharp mask, radius 2 px, 150 %)"
"""A scanner's post-processing the shipped weights must also stand (see robustness.py)."""

ENGINES: dict[str, type[LesionEngine]] = {"liver": LiverEngine, "breast": BreastEngine}


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_engine_contract_and_weight_cards(organ: str) -> None:
    engine = ENGINES[organ]()
    assert isinstance(engine, Engine)
    assert engine.name == organ
    assert engine.anatomy == AnatomyValues(organ)
    parts = ("detector", "classifier", *(("verifier",) if organ == "liver" else ()))
    for part in parts:
        weights = WEIGHTS_DIR / f"{organ}_{part}.pt"
        card = json.loads(weights.with_suffix(".json").read_text())
        assert card["sha256"] == sha256_file(weights)
        assert weights.stat().st_size < 20 * 1024 * 1024
        assert card["command"].startswith("us-ai-train")
    assert ENGINES[organ]().algorithm.device_uid == engine.algorithm.device_uid


@pytest.mark.parametrize(("generator", "change"), [("physics", None),
                                                   ("physics", EDGE_ENHANCEMENT),
                                                   ("image-domain", None),
                                                   ("pulse-echo", None)])
@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_shipped_weights_reach_their_floors(organ: str, generator: str, change: str | None
                                            ) -> None:
    engine = ENGINES[organ]()
    matches, n_truth, correct, n_roi = [], 0, 0, 0
    for k in range(20):
        sample = GENERATORS[generator](organ, 7_000_000 + k, 480, 640)  # type: ignore[arg-type]
        if change is not None:
            sample.frames[:] = perturb(sample.frames, change, seed=k)
        result = engine.run(image_input(sample, f"2.25.{k}", with_regions=k % 2 == 0))
        truths = sample.truths[0]
        n_truth += len(truths)
        matches += match_detections([f.key_observation.box for f in result.lesions],
                                    [f.key_observation.score for f in result.lesions],
                                    [t.box for t in truths])
        for finding in result.lesions:
            box = finding.key_observation.box
            assert 0 <= box.x0 < box.x1 <= 640 and 0 <= box.y0 < box.y1 <= 480
            assert finding.heatmap is not None and finding.heatmap.shape == (480, 640)
            assert finding.heatmap.min() >= 0.0 and finding.heatmap.max() <= 1.0
            assert UID(finding.tracking_uid).is_valid
        if truths:
            probs = engine.classify(sample.frames[0], [t.box for t in truths])
            correct += sum(engine.classes[int(p.argmax())] == t.label
                           for p, t in zip(probs, truths, strict=True))
            n_roi += len(truths)
    precision, recall, _ = prf(matches, n_truth, engine.score_threshold)
    floors = {"physics": THRESHOLDS, "image-domain": IMAGE_DOMAIN_THRESHOLDS,
              "pulse-echo": PULSE_ECHO_THRESHOLDS}[generator]
    floor_recall, floor_precision, floor_accuracy = floors[organ]
    assert recall >= floor_recall
    assert precision >= floor_precision
    assert correct / n_roi >= floor_accuracy


def test_cine_gives_one_tracked_finding_per_lesion() -> None:
    clip = generate("liver", 7_100_000, 480, 640, n_frames=12,
                    config=SceneConfig(lesion_counts=(0.0, 1.0), size_mm=(15.0, 25.0),
                                       classes=("cyst",)))
    result = LiverEngine().run(image_input(clip, "2.25.1", True))

    def on_the_lesion(finding: LesionFinding) -> bool:
        return any(clip.truths[o.frame_number - 1]
                   and o.box.iou(clip.truths[o.frame_number - 1][0].box) > 0.25
                   for o in finding.observations)

    # One track follows the cyst through the clip (not several fragments). Other tracks
    # are false positives (this clip's kidney look-alike), scored by precision elsewhere.
    spanning = [f for f in result.lesions if len(f.observations) >= 6 and on_the_lesion(f)]
    assert len(spanning) == 1
    assert [f for f in result.lesions if on_the_lesion(f)] == spanning
    assert {"cine_vote", "max_frames", "cine_track_score"} <= set(result.algorithm.parameters)
    finding = spanning[0]
    assert finding.frame_numbers == sorted(finding.frame_numbers)
    assert finding.frame_numbers[0] >= 1 and finding.frame_numbers[-1] <= 12
    assert finding.label == "cyst"
    assert sum(finding.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    truth = clip.truths[finding.key_observation.frame_number - 1][0].box
    assert finding.key_observation.box.iou(truth) > 0.25
    again = LiverEngine().run(image_input(clip, "2.25.1", True))
    assert [f.tracking_uid for f in again.lesions] == [f.tracking_uid for f in result.lesions]
    assert len({f.tracking_uid for f in result.lesions}) == len(result.lesions)


IMAGE_DOMAIN_CLIP_FLOORS = {"liver": 6, "breast": 5}
"""Of 12 one-lesion clips of the image-domain generator (16 frames: probe motion,
breathing, the plane sweeping through the lesion), how many the shipped engine must track
and class right; measured: liver 10 (9 without its verifier), breast 9 (the breast detector
before it: 8; its misses are untracked "other" lesions), with 3 false tracks each."""


@pytest.mark.parametrize("organ", ["liver", "breast"])
def test_lesions_of_another_generators_clips_are_tracked_and_classed(organ: str) -> None:
    engine = ENGINES[organ]()
    right = false_tracks = 0
    for k in range(12):
        clip = generate_image_domain_clip(organ, 7_300_000 + k, 16, lesions=1)  # type: ignore[arg-type]
        finding, false = clip_prediction(engine, clip)
        right += finding is not None and finding.label == clip.labels[0]
        false_tracks += false
    assert right >= IMAGE_DOMAIN_CLIP_FLOORS[organ]
    assert false_tracks <= 12


def test_blank_image_is_not_assessed() -> None:
    image = ImageInput("2.25.5", np.zeros((1, 480, 640), np.uint8), ImageGeometry(None, None))
    result = BreastEngine().run(image)
    assert result.not_assessed is not None
    assert result.not_assessed.reason == NotAssessedReasonValues.IMAGE_QUALITY
    assert result.lesions == []
    # A still names the parameters that shaped it, not the cine's voting and tracking.
    assert set(result.algorithm.parameters) == {"score_threshold", "runtime"}


def _shifted(box: BoundingBox, dx: float) -> BoundingBox:
    return BoundingBox(box.x0 + dx, box.y0, box.x1 + dx, box.y1)


@pytest.mark.parametrize("with_regions", [False, True])
def test_each_view_of_a_dual_display_is_analysed(with_regions: bool) -> None:
    # Two held-out liver images side by side, 24 px of black between them, as a
    # scanner's dual display shows them: each view is found and analysed as if alone.
    engine = LiverEngine()
    left, right = (generate("liver", 7_000_000 + k, 480, 640) for k in (1, 3))
    shift = 640 + 24
    frames = np.zeros((1, 480, shift + 640), np.uint8)
    frames[:, :, :640], frames[:, :, shift:] = left.frames, right.frames
    geometry = ImageGeometry(None, None)
    if with_regions:
        views = [(left.scan_box, left.pixel_mm), (_shifted(right.scan_box, shift), right.pixel_mm)]
        regions = tuple(
            UltrasoundRegion(int(box.x0), int(box.y0), int(box.x1) - 1, int(box.y1) - 1,
                             data_type=0x0001, delta_x_mm=mm, delta_y_mm=mm, spatial_format=1)
            for box, mm in views)
        geometry = ImageGeometry((left.pixel_mm, left.pixel_mm), left.scan_box, regions)
    dual = engine.run(ImageInput("2.25.9", frames, geometry))
    alone = [engine.run(image_input(sample, "2.25.8", with_regions)) for sample in (left, right)]
    expected = ([f.key_observation.box for f in alone[0].lesions]
                + [_shifted(f.key_observation.box, shift) for f in alone[1].lesions])
    found = [f.key_observation.box for f in dual.lesions]
    assert len(alone[0].lesions) >= 1 and len(alone[1].lesions) >= 1
    assert len(found) == len(expected)
    for box in expected:
        assert max(box.iou(other) for other in found) > 0.95


def test_a_voted_class_is_reported_with_probabilities_that_agree() -> None:
    engine = LiverEngine()
    hcc = engine.classes.index("hcc")
    cyst = engine.classes.index("cyst")
    narrow, sure = np.full(4, 0.0), np.full(4, 0.0)
    narrow[[hcc, cyst]] = 0.4, 0.35
    narrow += (1.0 - narrow.sum()) / 4
    sure[cyst] = 0.97
    sure += (1.0 - sure.sum()) / 4
    probs = np.stack([narrow, sure, narrow, sure, narrow])  # 3 of 5 narrowly HCC
    label, probabilities = engine.lesion_class(probs)
    assert label == hcc
    assert int(np.argmax(probabilities)) == hcc
    np.testing.assert_allclose(probabilities, narrow)
    steady = np.stack([sure] * 5)
    assert engine.lesion_class(steady)[0] == cyst


@pytest.mark.parametrize(("keep", "reported"), [(True, 1), (False, 0)])
def test_a_lesion_seen_clearly_on_part_of_a_sweep_is_reported(
    monkeypatch: pytest.MonkeyPatch, keep: bool, reported: int
) -> None:
    from inference.cine import Detection

    # Evidence 4 x 0.95 / 16 frames = 0.24, under this track score: only keep_sure_tracks
    # reports it.
    engine = LiverEngine(keep_sure_tracks=keep, cine_track_score=0.3)
    box = BoundingBox(100, 100, 140, 130)
    frames = np.random.default_rng(0).integers(20, 200, size=(120, 240, 320), dtype=np.uint8)
    image = ImageInput("2.25.9", frames, ImageGeometry(None, BoundingBox(0, 0, 320, 240)))
    visible = range(40, 70)  # a quarter of the sweep: 4 of the 16 analysed frames

    def detect(frames: np.ndarray, indices: np.ndarray, areas: list[BoundingBox],
               threshold: float | None = None) -> list[list[Detection]]:
        return [[Detection(k, box, 0.95)] if int(i) in visible else []
                for k, i in enumerate(indices)]

    monkeypatch.setattr(engine, "_detect_views", detect)
    assert len(engine.run(image).lesions) == reported
