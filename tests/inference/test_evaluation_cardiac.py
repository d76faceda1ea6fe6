"""Tests of the EF agreement statistics, the Bland-Altman plot and EF under perturbations."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from inference.engines.cardiac import DEFAULT_WEIGHTS_DIR, WEIGHTS_NAME
from inference.engines.model_card import read_card
from inference.evaluation.cardiac import (
    agreement,
    evaluate,
    plot_bland_altman,
    robustness_markdown,
    second_generator_markdown,
)
from inference.evaluation.robustness import PERTURBATIONS, UNCHANGED


def test_agreement_statistics() -> None:
    truth = np.array([20.0, 40.0, 60.0, 70.0])
    measured = truth + np.array([1.0, -1.0, 3.0, 1.0])
    stats = agreement(truth, measured)
    assert stats["mae"] == pytest.approx(1.5)
    assert stats["bias"] == pytest.approx(1.0)
    sd = float(np.std([1.0, -1.0, 3.0, 1.0], ddof=1))
    assert stats["loa_low"] == pytest.approx(1.0 - 1.96 * sd)
    assert stats["loa_high"] == pytest.approx(1.0 + 1.96 * sd)
    assert stats["rmse"] == pytest.approx(np.sqrt(3.0))
    assert 0.99 < stats["r"] <= 1.0


def test_bland_altman_plot_is_written(tmp_path: Path) -> None:
    truth = np.array([20.0, 40.0, 60.0])
    measured = np.array([22.0, 39.0, 61.0])
    path = tmp_path / "ba.png"
    plot_bland_altman(path, truth, measured, agreement(truth, measured), "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ef_is_measured_under_every_perturbation(tmp_path: Path) -> None:
    metrics = evaluate(tmp_path, n_cines=2, size=(240, 320), n_perturbed=1)
    changes = metrics["robustness"]
    assert isinstance(changes, dict)
    assert list(changes) == [UNCHANGED, *PERTURBATIONS]
    assert all(m["cines"] == 1 for m in changes.values())
    # The unchanged cine scores exactly as in the main figures.
    with (tmp_path / "cardiac_cines.csv").open() as handle:
        first = next(csv.DictReader(handle))
    assert changes[UNCHANGED]["assessed"] == (first["ef"] != "")
    if first["ef"]:
        error = abs(float(first["ef"]) - float(first["ef_true"]))
        assert changes[UNCHANGED]["ef_mae"] == pytest.approx(error)
    table = robustness_markdown(changes)
    assert len([line for line in table if line.startswith("| ")]) == 2 + len(PERTURBATIONS)


def test_the_second_generators_cines_are_summarised_apart(tmp_path: Path) -> None:
    metrics = evaluate(tmp_path, n_cines=1, size=(240, 320), n_second=2)
    second = metrics["second_generator"]
    assert isinstance(second, dict)
    assert second["n_cines"] == 2
    with (tmp_path / "cardiac_second_cines.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    errors = [abs(float(r["ef"]) - float(r["ef_true"])) for r in rows if r["ef"]]
    assert second["n_assessed"] == len(errors)
    assert second["ef_mae"] == pytest.approx(np.mean(errors))
    assert metrics["n_cines"] == 1
    table = second_generator_markdown(second)
    assert any(line.startswith("| EF mean absolute error |") for line in table)
    assert any("no network was trained on its cines" in line for line in table)
    assert any("trained on 300 other cines of this generator (seeds from 27,000,000)" in line
               for line in second_generator_markdown(second, 300, 27_000_000))
    card_data = read_card(DEFAULT_WEIGHTS_DIR / WEIGHTS_NAME)["data"]
    assert metrics["second_generator_training_clips"] == card_data.get("image_domain_clips", 0)
    assert metrics["second_generator_training_first_seed"] == card_data.get(
        "image_domain_first_seed", 0)
    assert second_generator_markdown({}) == []
