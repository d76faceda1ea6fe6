"""From one decoded image to one :class:`ImageResult`: gate, anatomy, engine.

1. Quality gate (:mod:`inference.quality`): blank, frozen, Doppler/colour,
   measurement screens and too little scan area are not assessed.
2. Anatomy: the tags win when present (and consistent among themselves,
   see :func:`inference.preprocessing.tag_anatomy`), unless they and a very
   confident view classifier disagree on the heart; without tags the view
   classifier decides when it is confident enough.  When both speak and
   disagree confidently, the result carries an ``anatomy_note``.
3. The routed engine (among ``engine_names``) whose anatomy matches runs;
   its exceptions become ``ENGINE_ERROR``; no match gives ``NO_ENGINE``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog
import torch

from inference.engines.base import Engine, ImageInput
from inference.engines.view import ViewClassifier, ViewPrediction
from inference.findings import AnatomyValues, ImageResult, NotAssessed, NotAssessedReasonValues
from inference.quality import QualityThresholds, check_quality

logger = structlog.get_logger(__name__)

MIN_VIEW_PROBABILITY = 0.6
"""The classifier decides alone (no tags) or contradicts the tags only above this."""

HEART_OVERRIDE_PROBABILITY = 0.95
"""The image wins over tags that disagree on the heart (an echo cine tagged ABDOMEN by a
preset left on, an abdominal image tagged as an echo) when the classifier is this sure.
The heart view is the one the classifier does not confuse (docs/dataset-card.md), and
following such tags runs an engine on an anatomy the image does not show."""


@dataclass(frozen=True)
class AnatomyDecision:
    """The anatomy the analyzer settled on, and how.

    Attributes
    ----------
    anatomy:
        The anatomy, or ``None`` when neither tags nor image tell.
    source:
        ``"tags"``, ``"image"``, ``"routing"`` or ``"none"``.
    note:
        Disagreement between the tags and the image, or why a doubtful view
        was followed, if any.
    """

    anatomy: AnatomyValues | None
    source: str
    note: str | None = None


def decide_anatomy(tag: AnatomyValues | None, prediction: ViewPrediction | None,
                   min_probability: float = MIN_VIEW_PROBABILITY,
                   routed: AnatomyValues | None = None) -> AnatomyDecision:
    """Combine the tag anatomy with the classifier's view.

    Parameters
    ----------
    tag:
        Anatomy from the tags (``None`` when absent or inconsistent).
    prediction:
        The view classifier's answer, if it ran.
    min_probability:
        Confidence the classifier needs to decide or to contradict.
    routed:
        The one anatomy the study's routing rule sends it to, when its
        engines all serve one (a pipeline for breast studies only, say).

    Returns
    -------
    AnatomyDecision
        Tags win when present, unless they and a view of at least
        :data:`HEART_OVERRIDE_PROBABILITY` disagree on the heart (tags naming
        other anatomy, fetal or obstetric imaging, always win); the image
        decides otherwise.  Without tags, a
        view below ``min_probability`` is followed only when it is the most
        probable class and the anatomy the routing rule names: the rule and the
        image then agree.
    """
    confident = prediction is not None and prediction.probability >= min_probability
    if tag is not None:
        if confident and prediction is not None and prediction.anatomy is not tag:
            seen = (f"Tags say {tag.value}; the image looks like {prediction.anatomy.value} "
                    f"(p={prediction.probability:.2f}).")
            heart = AnatomyValues.HEART in (tag, prediction.anatomy)
            if (heart and tag is not AnatomyValues.OTHER
                    and prediction.probability >= HEART_OVERRIDE_PROBABILITY):
                return AnatomyDecision(prediction.anatomy, "image",
                                       f"{seen} The image was followed.")
            return AnatomyDecision(tag, "tags", f"{seen} The tags were followed.")
        return AnatomyDecision(tag, "tags")
    if confident and prediction is not None:
        return AnatomyDecision(prediction.anatomy, "image")
    if prediction is not None and routed is not None and prediction.anatomy is routed:
        note = (f"The image looks most like {routed.value}, with low confidence "
                f"(p={prediction.probability:.2f}); the routing rule names {routed.value} "
                "only, so it was analysed as such.")
        return AnatomyDecision(routed, "routing", note)
    return AnatomyDecision(None, "none")


class Analyzer:
    """Runs the quality gate, decides the anatomy and dispatches to an engine.

    Parameters
    ----------
    engines:
        Loaded engines by routing name.
    view_classifier:
        Recognises the anatomy/view from the pixels; without it only the tags
        decide.
    thresholds:
        Quality-gate limits.
    """

    def __init__(self, engines: Mapping[str, Engine],
                 view_classifier: ViewClassifier | None = None,
                 thresholds: QualityThresholds | None = None) -> None:
        self.engines = dict(engines)
        self.view_classifier = view_classifier
        self.thresholds = thresholds or QualityThresholds()

    @classmethod
    def load(cls, engine_names: Sequence[str], threads: int | None = None) -> Analyzer:
        """Load the named engines (cached per process) and the shipped view classifier.

        Parameters
        ----------
        engine_names:
            Engine names from :data:`inference.engines.registry.ENGINE_NAMES`.
        threads:
            Threads of the networks (torch and ONNX Runtime sessions, which are
            created with torch's count); the current setting when ``None``.

        Returns
        -------
        Analyzer
            Ready to analyse.
        """
        from inference.engines.registry import load_engine

        if threads is not None:
            torch.set_num_threads(threads)
        engines = {name: load_engine(name) for name in engine_names}
        return cls(engines, ViewClassifier())

    def _not_assessed(self, image: ImageInput, anatomy: AnatomyValues | None,
                      reason: NotAssessedReasonValues, detail: str,
                      note: str | None = None) -> ImageResult:
        return ImageResult(
            source_sop_instance_uid=image.sop_instance_uid,
            anatomy=anatomy or AnatomyValues.OTHER,
            not_assessed=NotAssessed(image.sop_instance_uid, reason, detail),
            anatomy_note=note,
        )

    def analyze(self, image: ImageInput, engine_names: Sequence[str]) -> ImageResult:
        """Analyse one image with the matching engine among ``engine_names``.

        Parameters
        ----------
        image:
            The decoded image.
        engine_names:
            Engines the routing rules allow for this image's study.

        Returns
        -------
        ImageResult
            The engine's result, or a :class:`NotAssessed` with the reason.
        """
        verdict = check_quality(image, self.thresholds)
        if verdict is not None:
            return self._not_assessed(image, image.tag_anatomy, verdict.reason, verdict.detail)
        prediction = self.view_classifier.predict(image) if self.view_classifier else None
        routed = {self.engines[name].anatomy for name in engine_names if name in self.engines}
        decision = decide_anatomy(image.tag_anatomy, prediction,
                                  routed=routed.pop() if len(routed) == 1 else None)
        if decision.note:
            logger.info("anatomy_noted", source=decision.source, tags=image.tag_anatomy.value
                        if image.tag_anatomy else None,
                        image=prediction.anatomy.value if prediction else None)
        candidates = [self.engines[name] for name in engine_names
                      if name in self.engines
                      and self.engines[name].anatomy is decision.anatomy]
        if decision.anatomy is None or not candidates:
            seen = ("fetal or obstetric imaging, which no engine serves"
                    if decision.anatomy is AnatomyValues.OTHER and decision.source == "tags"
                    else decision.anatomy.value if decision.anatomy
                    else "unknown (no tags, image not recognised)")
            routed = ", ".join(engine_names) or "none"
            return self._not_assessed(
                image, decision.anatomy, NotAssessedReasonValues.NO_ENGINE,
                f"Anatomy {seen} (from {decision.source}); routed engines: {routed}.",
                decision.note)
        engine = candidates[0]
        try:
            result = engine.run(image)
        except Exception as exc:  # an engine failure must not stop the study
            logger.exception("engine_failed", engine=engine.name)
            return self._not_assessed(
                image, decision.anatomy, NotAssessedReasonValues.ENGINE_ERROR,
                f"Engine {engine.name} failed: {type(exc).__name__}: {exc}", decision.note)
        if result.anatomy_note is None:
            result.anatomy_note = decision.note
        return result
