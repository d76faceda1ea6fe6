"""The second generator's apical four-chamber cines, and the shipped cardiac engine on them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from inference.analyzer import Analyzer
from inference.engines.cardiac import CardiacEngine
from inference.engines.lv_volume import measure_discs
from inference.evaluation.cardiac import image_input
from inference.findings import AnatomyValues
from inference.phantoms.echo import EchoCine
from inference.phantoms.imagedomain_echo import generate_image_domain_echo
from inference.preprocessing import image_input_from_dataset
from tests.inference.dicom_echo import echo_dataset

TEST_SEED = 7_400_000
"""Seeds of this file's cines (no evaluation or training range)."""


@pytest.fixture(scope="module")
def cines() -> list[EchoCine]:
    return [generate_image_domain_echo(TEST_SEED + i, rows=300, cols=400, max_frames=40)
            for i in range(4)]


def test_the_same_seed_gives_the_same_cine(cines: list[EchoCine]) -> None:
    again = generate_image_domain_echo(TEST_SEED, rows=300, cols=400, max_frames=40)
    assert np.array_equal(again.frames, cines[0].frames)
    assert np.array_equal(again.lv_masks, cines[0].lv_masks)
    assert not np.array_equal(cines[0].frames[0], cines[1].frames[0])


def test_truth_is_the_method_of_discs_on_the_drawn_cavity(cines: list[EchoCine]) -> None:
    for cine in cines:
        assert cine.frames.dtype == np.uint8 and cine.frames.shape == cine.lv_masks.shape
        assert 10.0 <= cine.ejection_fraction <= 75.0
        for index in (cine.ed_index, cine.es_index):
            drawn = measure_discs(cine.lv_masks[index], (cine.pixel_mm, cine.pixel_mm))
            assert drawn is not None
            assert drawn.volume == pytest.approx(cine.volumes_ml[index], rel=0.02)


def test_the_cavity_is_dark_and_its_wall_bright(cines: list[EchoCine]) -> None:
    for cine in cines:
        frame, cavity = cine.frames[cine.ed_index], cine.lv_masks[cine.ed_index]
        wall = ndimage.binary_dilation(cavity, iterations=8) & ~ndimage.binary_dilation(
            cavity, iterations=3)
        assert frame[cavity].mean() + 25 < frame[wall].mean()


def test_the_shipped_engine_measures_another_generators_ef(cines: list[EchoCine]) -> None:
    engine = CardiacEngine()
    errors = []
    for i, cine in enumerate(cines):
        result = engine.run(image_input(cine, uid=f"2.25.{i + 1}"))
        assert result.not_assessed is None, result.not_assessed
        errors.append(result.cardiac[0].ejection_fraction_percent - cine.ejection_fraction)
    assert float(np.mean(np.abs(errors))) <= 5.0, errors


def test_an_untagged_uncalibrated_cine_is_recognised_and_measured(cines: list[EchoCine]) -> None:
    cine = cines[1]
    image = image_input_from_dataset(echo_dataset(cine, regions=False, description=""))
    result = Analyzer.load(["cardiac"]).analyze(image, ["cardiac"])
    assert result.not_assessed is None, result.not_assessed
    assert result.anatomy is AnatomyValues.HEART
    finding = result.cardiac[0]
    assert not finding.volumes_calibrated
    assert abs(finding.ejection_fraction_percent - cine.ejection_fraction) < 10.0
