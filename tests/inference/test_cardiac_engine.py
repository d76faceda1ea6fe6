"""The shipped cardiac engine on a small fixed set of phantom cines."""

from __future__ import annotations

import re

import numpy as np
import pytest

from inference.analyzer import Analyzer
from inference.engines.base import Engine, ImageInput
from inference.engines.cardiac import CardiacEngine, mask_contour
from inference.evaluation.cardiac import heldout_cine, image_input
from inference.findings import AnatomyValues, NotAssessedReasonValues
from inference.geometry import ImageGeometry
from inference.phantoms.echo import EchoCine
from inference.preprocessing import image_input_from_dataset
from tests.inference.dicom_echo import echo_dataset

TEST_SEED = 31337
"""Seed of the fixed test cines (not the training or the evaluation seed)."""

EF_MAE_THRESHOLD = 5.0
"""EF mean absolute error the shipped weights must reach on the fixed cines."""


@pytest.fixture(scope="module")
def engine() -> CardiacEngine:
    return CardiacEngine()


@pytest.fixture(scope="module")
def cines() -> list[EchoCine]:
    return [heldout_cine(i, seed=TEST_SEED, size=(300, 400)) for i in range(6)]


def test_engine_protocol(engine: CardiacEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.name == "cardiac" and engine.anatomy is AnatomyValues.HEART
    assert len(engine.algorithm.weights_sha256) == 64


def test_shipped_weights_reach_the_ef_threshold(engine: CardiacEngine,
                                                cines: list[EchoCine]) -> None:
    errors = []
    for i, cine in enumerate(cines):
        result = engine.run(image_input(cine, uid=f"2.25.{i + 1}"))
        assert result.not_assessed is None, result.not_assessed
        finding = result.cardiac[0]
        errors.append(finding.ejection_fraction_percent - cine.ejection_fraction)
        assert 1 <= finding.end_diastolic_frame <= cine.frames.shape[0]
        assert 1 <= finding.end_systolic_frame <= cine.frames.shape[0]
        assert finding.end_diastolic_volume_ml > finding.end_systolic_volume_ml > 0
    assert float(np.mean(np.abs(errors))) <= EF_MAE_THRESHOLD, errors


def test_finding_content(engine: CardiacEngine, cines: list[EchoCine]) -> None:
    cine = cines[0]
    result = engine.run(image_input(cine, uid="2.25.77"))
    finding = result.cardiac[0]
    assert result.algorithm == engine.algorithm
    assert finding.volumes_calibrated
    assert finding.end_diastolic_mask is not None
    assert finding.end_diastolic_mask.shape == cine.frames.shape[1:]
    contour = finding.end_diastolic_contour
    assert contour is not None and contour.shape[1] == 2
    np.testing.assert_array_equal(contour[0], contour[-1])
    assert re.fullmatch(r"2\.25\.\d+", finding.tracking_uid) and len(finding.tracking_uid) <= 64
    assert engine.run(image_input(cine, uid="2.25.77")).cardiac[0].tracking_uid == \
        finding.tracking_uid


def test_uncalibrated_cine_reports_ef_only(engine: CardiacEngine, cines: list[EchoCine]) -> None:
    result = engine.run(image_input(cines[1], regions=False))
    finding = result.cardiac[0]
    assert not finding.volumes_calibrated
    assert np.isnan(finding.end_diastolic_volume_ml) and np.isnan(finding.end_systolic_volume_ml)
    assert 0 < finding.ejection_fraction_percent < 100


@pytest.mark.parametrize(("n_frames", "text"), [(1, "EF needs a cine"), (4, "at least")])
def test_short_inputs_are_not_assessed(engine: CardiacEngine, cines: list[EchoCine], n_frames: int,
                                       text: str) -> None:
    image = image_input(cines[0])
    image.frames = image.frames[:n_frames]
    result = engine.run(image)
    assert result.not_assessed is not None
    assert result.not_assessed.reason is NotAssessedReasonValues.IMAGE_QUALITY
    assert text in result.not_assessed.detail


def test_blank_cine_is_not_assessed(engine: CardiacEngine) -> None:
    blank = ImageInput("2.25.5", np.zeros((10, 100, 120), np.uint8), ImageGeometry(None, None))
    result = engine.run(blank)
    assert result.not_assessed is not None and not result.cardiac


def test_mask_contour() -> None:
    mask = np.zeros((50, 60), dtype=bool)
    mask[10:30, 20:40] = True
    contour = mask_contour(mask, points=32)
    assert contour is not None and contour.shape == (33, 2)
    assert contour[:, 0].min() == pytest.approx(20.0, abs=1.0)
    assert contour[:, 0].max() == pytest.approx(40.0, abs=1.0)
    assert mask_contour(np.zeros((5, 5), bool)) is None


@pytest.mark.parametrize(("regions", "description"), [(True, "ECHO TTE"), (False, "")])
def test_dicom_echo_through_the_analyzer(cines: list[EchoCine], regions: bool,
                                        description: str) -> None:
    cine = cines[2]
    image = image_input_from_dataset(echo_dataset(cine, regions=regions,
                                                   description=description))
    result = Analyzer.load(["cardiac"]).analyze(image, ["cardiac"])
    assert result.not_assessed is None, result.not_assessed
    assert result.anatomy is AnatomyValues.HEART and result.anatomy_note is None
    finding = result.cardiac[0]
    assert finding.volumes_calibrated is regions
    assert abs(finding.ejection_fraction_percent - cine.ejection_fraction) < 10.0


def test_a_timed_cine_shorter_than_a_heart_cycle_is_not_assessed(
    engine: CardiacEngine, cines: list[EchoCine]
) -> None:
    image = image_input(cines[0])
    image.frames = image.frames[:10]
    image.frame_time_ms = 16.7  # 167 ms: part of a cycle, whose EF would read falsely low
    result = engine.run(image)
    assert result.not_assessed is not None and not result.cardiac
    assert "heart cycle (600 ms)" in result.not_assessed.detail
    image.frame_time_ms = 80.0  # 800 ms: a cycle at up to 75 bpm
    image.heart_rate_bpm = 60.0
    detail = engine.run(image).not_assessed
    assert detail is not None and "at 60 bpm (1000 ms)" in detail.detail
    image.heart_rate_bpm = 68.0  # a cycle of 882 ms: 800 ms is within the tolerance
    assert engine.run(image).not_assessed is None
    image.heart_rate_bpm = 0.0  # a device's placeholder: the default applies
    assert engine.run(image).not_assessed is None
