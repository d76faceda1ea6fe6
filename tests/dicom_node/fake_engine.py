"""A small test-only engine: one 'lesion' box in the middle of the first frame.

It stands in for the real engines so that the node's tests do not depend on
trained weights; it can be told to fail on images whose first pixel row is
all zeros, to test engine failures.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.uid import generate_uid

from inference.engines.base import ImageInput
from inference.findings import (
    AlgorithmInfo,
    AnatomyValues,
    BoundingBox,
    ImageResult,
    LesionFinding,
    LesionObservation,
)

ALGORITHM = AlgorithmInfo(name="test-engine", version="0.0.1", weights_sha256="00" * 32)


class EngineCrash(RuntimeError):
    """Raised by the fake engine when asked to fail."""


class FakeAnalyzer:
    """Callable with the dispatcher's ``analyze`` signature."""

    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.fail_on = fail_on or set()
        self.calls: list[tuple[str, tuple[str, ...], int]] = []

    def __call__(self, image: ImageInput, engines: Sequence[str]) -> ImageResult:
        self.calls.append((image.sop_instance_uid, tuple(engines), image.number_of_frames))
        if image.sop_instance_uid in self.fail_on:
            raise EngineCrash("fake engine crashed")
        rows, columns = image.frames.shape[1:3]
        box = BoundingBox(columns * 0.4, rows * 0.4, columns * 0.6, rows * 0.6)
        lesion = LesionFinding(
            tracking_id="Lesion 1",
            tracking_uid=generate_uid(),
            anatomy=AnatomyValues.LIVER,
            label="hcc",
            probabilities={"hcc": 0.7, "metastasis": 0.1, "hemangioma": 0.1, "cyst": 0.1},
            malignancy_probability=0.8,
            source_sop_instance_uid=image.sop_instance_uid,
            observations=[LesionObservation(frame_number=1, box=box, score=0.9)],
        )
        return ImageResult(
            source_sop_instance_uid=image.sop_instance_uid,
            anatomy=AnatomyValues.LIVER,
            algorithm=ALGORITHM,
            lesions=[lesion],
        )
