"""Tests of the analyzer: quality gate, anatomy decision and dispatch (fake engines)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from inference.analyzer import Analyzer, decide_anatomy
from inference.engines.base import Engine, ImageInput
from inference.engines.view import VIEW_CLASSES, ViewPrediction
from inference.findings import (
    AlgorithmInfo,
    AnatomyValues,
    ImageResult,
    NotAssessedReasonValues,
)
from inference.geometry import ImageGeometry
from inference.phantoms.echo import random_echo_spec, render_echo

HEART, LIVER, BREAST, OTHER = (AnatomyValues.HEART, AnatomyValues.LIVER, AnatomyValues.BREAST,
                               AnatomyValues.OTHER)


@dataclass
class FakeEngine:
    """Records its calls; fails on demand."""

    name: str
    anatomy: AnatomyValues
    fail: bool = False
    calls: list[str] = field(default_factory=list)

    @property
    def algorithm(self) -> AlgorithmInfo:
        return AlgorithmInfo(f"fake-{self.name}", "0", "0" * 64)

    def run(self, image: ImageInput) -> ImageResult:
        self.calls.append(image.sop_instance_uid)
        if self.fail:
            raise RuntimeError("boom")
        return ImageResult(image.sop_instance_uid, self.anatomy, algorithm=self.algorithm)


@dataclass
class FakeClassifier:
    anatomy: AnatomyValues
    probability: float

    def predict(self, image: ImageInput) -> ViewPrediction:
        rest = (1.0 - self.probability) / (len(VIEW_CLASSES) - 1)
        probs = {c: (self.probability if c is self.anatomy else rest) for c in VIEW_CLASSES}
        return ViewPrediction(self.anatomy, self.probability, probs)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    spec = random_echo_spec(np.random.default_rng(2), size=(200, 260), n_frames=3)
    return render_echo(spec).frames


def _image(frames: np.ndarray, tag: AnatomyValues | None) -> ImageInput:
    return ImageInput("1.2.840.99", frames, ImageGeometry(None, None), tag_anatomy=tag)


def _engines(fail: bool = False) -> dict[str, FakeEngine]:
    return {"liver": FakeEngine("liver", LIVER), "breast": FakeEngine("breast", BREAST),
            "cardiac": FakeEngine("cardiac", HEART, fail=fail)}


ALL = ("liver", "breast", "cardiac")


def test_fake_engines_satisfy_the_protocol() -> None:
    assert isinstance(FakeEngine("liver", LIVER), Engine)


def test_tags_and_image_agree(frames: np.ndarray) -> None:
    engines = _engines()
    result = Analyzer(engines, FakeClassifier(HEART, 0.9)).analyze(_image(frames, HEART), ALL)
    assert result.not_assessed is None and result.anatomy is HEART
    assert result.anatomy_note is None
    assert engines["cardiac"].calls == ["1.2.840.99"]


def test_tags_win_and_the_disagreement_is_noted(frames: np.ndarray) -> None:
    engines = _engines()
    result = Analyzer(engines, FakeClassifier(LIVER, 0.99)).analyze(_image(frames, BREAST), ALL)
    assert result.anatomy is BREAST and engines["breast"].calls
    assert result.anatomy_note is not None and "liver" in result.anatomy_note
    assert "tags were followed" in result.anatomy_note
    assert not engines["liver"].calls


@pytest.mark.parametrize(("tag", "seen"), [(LIVER, HEART), (HEART, LIVER)])
def test_a_sure_image_wins_over_tags_that_disagree_on_the_heart(
    frames: np.ndarray, tag: AnatomyValues, seen: AnatomyValues
) -> None:
    engines = _engines()
    result = Analyzer(engines, FakeClassifier(seen, 0.97)).analyze(_image(frames, tag), ALL)
    assert result.anatomy is seen
    assert result.anatomy_note is not None and "image was followed" in result.anatomy_note
    engine = {HEART: "cardiac", LIVER: "liver"}
    assert engines[engine[seen]].calls and not engines[engine[tag]].calls
    doubtful = Analyzer(_engines(), FakeClassifier(seen, 0.9)).analyze(_image(frames, tag), ALL)
    assert doubtful.anatomy is tag, "below 0.95 the tags still win"


def test_tags_of_fetal_imaging_win_over_a_sure_heart_view(frames: np.ndarray) -> None:
    engines = _engines()
    result = Analyzer(engines, FakeClassifier(HEART, 0.99)).analyze(_image(frames, OTHER), ALL)
    assert not any(engine.calls for engine in engines.values())
    assert result.not_assessed is not None
    assert result.not_assessed.reason is NotAssessedReasonValues.NO_ENGINE
    assert "fetal or obstetric" in result.not_assessed.detail


def test_image_decides_without_tags(frames: np.ndarray) -> None:
    engines = _engines()
    result = Analyzer(engines, FakeClassifier(BREAST, 0.8)).analyze(_image(frames, None), ALL)
    assert result.anatomy is BREAST and engines["breast"].calls
    assert result.anatomy_note is None


@pytest.mark.parametrize(
    ("classifier", "tag", "routed"),
    [
        (FakeClassifier(BREAST, 0.4), None, ALL),  # not confident
        (None, None, ALL),  # no tags, no classifier
        (FakeClassifier(OTHER, 0.99), None, ALL),  # nothing reads "other"
        (FakeClassifier(LIVER, 0.9), LIVER, ("cardiac",)),  # liver not routed
    ],
)
def test_no_engine(frames: np.ndarray, classifier: FakeClassifier | None,
                   tag: AnatomyValues | None, routed: tuple[str, ...]) -> None:
    engines = _engines()
    result = Analyzer(engines, classifier).analyze(_image(frames, tag), routed)
    assert result.not_assessed is not None
    assert result.not_assessed.reason is NotAssessedReasonValues.NO_ENGINE
    assert not any(e.calls for e in engines.values())


def test_engine_error_is_reported(frames: np.ndarray) -> None:
    result = Analyzer(_engines(fail=True), FakeClassifier(HEART, 0.9)).analyze(
        _image(frames, HEART), ALL)
    assert result.not_assessed is not None
    assert result.not_assessed.reason is NotAssessedReasonValues.ENGINE_ERROR
    assert "boom" in result.not_assessed.detail
    assert result.anatomy is HEART


def test_quality_gate_comes_first() -> None:
    engines = _engines()
    blank = np.zeros((3, 120, 160), np.uint8)
    result = Analyzer(engines, FakeClassifier(HEART, 0.9)).analyze(_image(blank, HEART), ALL)
    assert result.not_assessed is not None
    assert result.not_assessed.reason is NotAssessedReasonValues.IMAGE_QUALITY
    assert not engines["cardiac"].calls


def test_decide_anatomy_rules() -> None:
    strong = FakeClassifier(LIVER, 0.9).predict(None)  # type: ignore[arg-type]
    weak = FakeClassifier(LIVER, 0.5).predict(None)  # type: ignore[arg-type]
    assert decide_anatomy(BREAST, strong).note is not None
    assert decide_anatomy(BREAST, strong).anatomy is BREAST
    assert decide_anatomy(BREAST, weak).note is None
    assert decide_anatomy(None, strong).source == "image"
    assert decide_anatomy(None, weak).anatomy is None
    assert decide_anatomy(None, None).source == "none"


def test_a_doubtful_view_is_followed_only_where_the_routing_names_that_anatomy_alone() -> None:
    weak = FakeClassifier(LIVER, 0.45).predict(None)  # type: ignore[arg-type]
    decision = decide_anatomy(None, weak, routed=LIVER)
    assert (decision.anatomy, decision.source) == (LIVER, "routing")
    assert decision.note is not None and "p=0.45" in decision.note
    assert decide_anatomy(None, weak, routed=BREAST).anatomy is None
    assert decide_anatomy(None, None, routed=LIVER).anatomy is None
    assert decide_anatomy(BREAST, weak, routed=LIVER).anatomy is BREAST


def test_a_single_anatomy_route_analyses_a_doubtful_image(frames: np.ndarray) -> None:
    engines = _engines()
    analyzer = Analyzer(engines, FakeClassifier(HEART, 0.45))
    result = analyzer.analyze(_image(frames, None), ["cardiac"])
    assert result.not_assessed is None and engines["cardiac"].calls
    assert result.anatomy_note is not None and "routing rule" in result.anatomy_note
    unsure = analyzer.analyze(_image(frames, None), ALL)
    assert unsure.not_assessed is not None
    assert unsure.not_assessed.reason is NotAssessedReasonValues.NO_ENGINE
