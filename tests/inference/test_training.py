"""The cardiac and view training paths run end to end in a tiny configuration.

Real training never runs in CI; these check that data generation, the loop,
the weights and their cards fit together and that the engines load the result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from inference.engines.base import ImageInput
from inference.engines.cardiac import CardiacEngine
from inference.engines.model_card import sha256_of, update_metrics
from inference.engines.view import VIEW_CLASSES, ViewClassifier
from inference.evaluation.cardiac import heldout_cine, image_input
from inference.training import cardiac, view


def _args(module: ModuleType, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def _common(tmp_path: Path) -> list[str]:
    return ["--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "weights"),
            "--min-rows", "120", "--max-rows", "140", "--epochs", "1", "--batch-size", "4"]


def test_cardiac_training_end_to_end(tmp_path: Path) -> None:
    args = _args(cardiac, [*_common(tmp_path), "--clips", "3", "--frames-per-clip", "2",
                           "--base", "4"])
    card = cardiac.run(args)
    weights = tmp_path / "weights" / "cardiac_lv_unet.pt"
    assert card["sha256"] == sha256_of(weights)
    assert json.loads(weights.with_suffix(".json").read_text())["seed"] == args.seed
    assert (tmp_path / "cache" / "cardiac" / "checkpoints" / "epoch001.pt").exists()
    engine = CardiacEngine(tmp_path / "weights")
    assert engine.algorithm.weights_sha256 == card["sha256"]
    cine = heldout_cine(0, seed=1, size=(120, 160))
    result = engine.run(image_input(cine))
    assert result.source_sop_instance_uid == "1.2.3"
    assert (result.not_assessed is None) == bool(result.cardiac)
    # A second run reuses the cached data set.
    assert cardiac.run(args)["data"] == card["data"]


def test_cardiac_fine_tuning_with_the_second_generators_cines(tmp_path: Path) -> None:
    first = cardiac.run(_args(cardiac, [*_common(tmp_path), "--clips", "2",
                                        "--frames-per-clip", "1", "--base", "4"]))
    weights = tmp_path / "weights" / "cardiac_lv_unet.pt"
    init = weights.rename(tmp_path / "init.pt")
    card = cardiac.run(_args(cardiac, [*_common(tmp_path), "--clips", "2",
                                       "--frames-per-clip", "1", "--base", "4",
                                       "--image-domain-clips", "2", "--init", str(init)]))
    assert card["data"]["image_domain_clips"] == 2 and card["data"]["init"] == str(init)
    assert card["data"]["train_samples"] == 2 * first["data"]["train_samples"]
    assert card["data"]["validation_samples"] == 2 * first["data"]["validation_samples"]
    shards = sorted(p.name for p in (tmp_path / "cache" / "cardiac").glob("*imagedomain*.npz"))
    assert len(shards) == 1
    assert CardiacEngine(tmp_path / "weights").algorithm.weights_sha256 == card["sha256"]


def test_card_metrics_update_checks_the_weights(tmp_path: Path) -> None:
    cardiac.run(_args(cardiac, [*_common(tmp_path), "--clips", "2", "--frames-per-clip", "1",
                                "--base", "4", "--validation", "0.5"]))
    weights = tmp_path / "weights" / "cardiac_lv_unet.pt"
    assert update_metrics(weights, {"ef_mae": 3.0})["metrics"]["ef_mae"] == 3.0
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="does not match"):
        update_metrics(weights, {"ef_mae": 1.0})
    with pytest.raises(ValueError, match="SHA-256"):
        CardiacEngine(tmp_path / "weights")


def test_view_training_end_to_end(tmp_path: Path) -> None:
    card = view.run(_args(view, [*_common(tmp_path), "--per-class", "2", "--width", "4",
                                 "--validation", "0.5"]))
    classifier = ViewClassifier(tmp_path / "weights")
    assert classifier.algorithm.weights_sha256 == card["sha256"]
    frames = np.full((2, 100, 120), 60, np.uint8)
    frames[:, 20:80, 20:100] = np.random.default_rng(0).integers(20, 200, (2, 60, 80))
    prediction = classifier.predict(ImageInput("1.2", frames, image_input(
        heldout_cine(0, seed=1, size=(100, 120)), regions=False).geometry))
    assert prediction.anatomy in VIEW_CLASSES
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_missing_weights_are_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Cardiac"):
        CardiacEngine(tmp_path)
    with pytest.raises(FileNotFoundError, match="View classifier"):
        ViewClassifier(tmp_path)


def test_view_data_can_mix_in_the_image_domain_generator(tmp_path: Path) -> None:
    first = view.generate(tmp_path / "a.npz", 2, (120, 120), 5)
    mixed = view.generate(tmp_path / "b.npz", 2, (120, 120), 5, image_domain_share=1.0)
    for label, anatomy in enumerate(VIEW_CLASSES):
        rows = first["labels"] == label
        same = np.array_equal(first["images"][rows], mixed["images"][rows])
        assert same == (anatomy not in view.LESION_VIEWS), anatomy
