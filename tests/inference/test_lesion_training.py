"""The lesion training path end to end in a tiny configuration (no real training)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference.engines import lesion as lesion_engine
from inference.engines.base import Engine
from inference.engines.lesion import LiverEngine
from inference.evaluation.lesion import image_input
from inference.findings import BoundingBox
from inference.models.lesion_nets import LesionDetector, load_grown
from inference.models.roi import Letterbox, letterbox, roi_crop
from inference.phantoms.generator import Organ, generate
from inference.training import detector
from inference.training.calipers import ON_LESION
from inference.training.cli import SUBCOMMANDS, main
from inference.training.common import intensity_augment, sha256_file, sharpness_augment
from inference.training.detector import (
    FIELD_CUT_MAX_BLACK,
    caliper_augment,
    epoch_order,
    field_cut_augment,
    zoom_augment,
)
from inference.training.lesion_data import build_cache, load_cache
from inference.training.verifier import candidate_crops


def test_cli_knows_every_model() -> None:
    assert {"liver-detector", "liver-classifier", "breast-detector", "breast-classifier",
            "lesion-data", "cardiac", "view"} <= set(SUBCOMMANDS)
    with pytest.raises(SystemExit):
        main(["no-such-model"])


@pytest.mark.parametrize(("generator", "organ", "first_seed"),
                         [("image-domain", "breast", 100), ("pulse-echo", "liver", 30_000_000)])
def test_a_training_cache_can_be_built_from_another_generator(
        tmp_path: Path, generator: str, organ: Organ, first_seed: int) -> None:
    path = tmp_path / "cache.npz"
    build_cache(organ, first_seed, 4, path, generator=generator)
    built = load_cache(path)
    assert len(built.det) == 4 and built.det.shape[-1] == built.det.shape[-2]
    assert list(built.seeds) == list(range(first_seed, first_seed + 4))
    assert len(built.crops) == 4 * len(built.labels)


def test_tiny_cache_train_and_run(tmp_path: Path) -> None:
    cache = tmp_path / "liver.npz"
    weights = tmp_path / "weights"
    assert main(["lesion-data", "--organ", "liver", "--count", "6", "--output", str(cache),
                 "--crops-per-lesion", "2"]) == 0
    data = load_cache(cache)
    assert data.det.shape == (6, 256, 256)
    assert len(data.crops) == 2 * len(data.labels)
    more = tmp_path / "liver-more.npz"
    assert main(["lesion-data", "--organ", "liver", "--first-seed", "10", "--count", "3",
                 "--output", str(more), "--crops-per-lesion", "2"]) == 0
    assert main(["liver-detector", "--cache", str(cache), str(more), "--output", str(weights),
                 "--epochs", "1", "--batch-size", "2", "--seed", "3",
                 "--last-cache-share", "0.5"]) == 0
    assert main(["liver-classifier", "--cache", str(cache), "--output", str(weights),
                 "--epochs", "1", "--folds", "2", "--cv-epochs", "1", "--seed", "3"]) == 0
    for part in ("detector", "classifier"):
        card = json.loads((weights / f"liver_{part}.json").read_text())
        assert card["sha256"] == sha256_file(weights / f"liver_{part}.pt")
        assert card["command"].startswith(f"us-ai-train liver-{part}")
        assert card["seed"] == 3
    detector_data = json.loads((weights / "liver_detector.json").read_text())["data"]
    assert detector_data["cache"] == [str(cache), str(more)]
    assert detector_data["cache_seeds"] == [[0, 5], [10, 12]]
    assert detector_data["last_cache_share"] == 0.5
    assert detector_data["train_images"] + detector_data["val_images"] \
        + detector_data["test_images"] == 9
    engine = LiverEngine(weights_dir=weights)
    assert isinstance(engine, Engine)
    sample = generate("liver", 99, 240, 320)
    result = engine.run(image_input(sample, "2.25.99", True))
    assert result.not_assessed is None
    assert result.algorithm is not None and len(result.algorithm.weights_sha256) == 64
    for finding in result.lesions:
        assert finding.heatmap is not None and finding.heatmap.shape == (240, 320)
        assert np.isclose(sum(finding.probabilities.values()), 1.0, atol=1e-4)


def test_a_verifier_trains_on_detector_candidates_and_rescores_them(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    for part in ("detector", "classifier"):
        for suffix in (".pt", ".json"):
            name = f"liver_{part}{suffix}"
            (weights / name).write_bytes((lesion_engine.WEIGHTS_DIR / name).read_bytes())
    plain = LiverEngine(weights_dir=weights)
    assert main(["liver-verifier", "--first-seed", "40000", "--second-seed", "20910000",
                 "--count", "10", "--epochs", "1", "--workers", "1", "--threads", "1",
                 "--changed-copies", "1", "--weights-dir", str(weights),
                 "--output", str(weights), "--seed", "3"]) == 0
    card = json.loads((weights / "liver_verifier.json").read_text())
    assert card["sha256"] == sha256_file(weights / "liver_verifier.pt")
    assert card["command"].startswith("us-ai-train liver-verifier")
    assert card["floor"] == 0.1 and card["data"]["val_crops"] > 0
    assert card["data"]["changed_copies"] == 1
    with pytest.raises(SystemExit):
        main(["liver-verifier", "--first-seed", "0", "--second-seed", "0", "--count", "9",
              "--output", str(tmp_path / "none")])
    lesion_engine._LOADED.clear()
    verified = LiverEngine(weights_dir=weights)
    assert verified.algorithm.weights_sha256 != plain.algorithm.weights_sha256
    assert [path.name for path, _, _ in verified.networks()][-1] == "liver_verifier.pt"
    sample = generate("liver", 99, 240, 320)
    area = BoundingBox(0, 0, 320, 240)
    frames, first = sample.frames[:1], np.array([0])
    (candidates,) = verified.candidates(frames, first, area, 0.1)
    assert candidates
    verifier = verified._models.verifier
    assert verifier is not None
    crops = np.stack([roi_crop(sample.frames[0], d.box) for d in candidates])
    with torch.no_grad():
        lesion = torch.softmax(verifier.module(torch.from_numpy(
            crops[:, None].astype(np.float32) / 255.0)), dim=1)[:, 1].numpy()
    rescored = np.sqrt([d.score for d in candidates] * lesion)
    for threshold in (0.1, float(np.median(rescored))):
        (kept,) = verified.detect(frames, first, area, threshold)
        np.testing.assert_allclose([d.score for d in kept],
                                   rescored[rescored >= threshold], atol=1e-4)


def test_detector_runs_at_the_input_size_of_its_cache(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "liver96.npz"
    weights = tmp_path / "weights"
    assert main(["lesion-data", "--organ", "liver", "--count", "4", "--output", str(cache),
                 "--crops-per-lesion", "1", "--detector-size", "96"]) == 0
    data = load_cache(cache)
    assert data.det.shape == (4, 96, 96)
    assert float(data.boxes.max()) <= 96.0
    with pytest.raises(SystemExit):
        main(["lesion-data", "--organ", "liver", "--count", "1", "--output", str(cache),
              "--detector-size", "100"])
    assert main(["liver-detector", "--cache", str(cache), "--output", str(weights),
                 "--epochs", "1", "--batch-size", "2"]) == 0
    assert main(["liver-classifier", "--cache", str(cache), "--output", str(weights),
                 "--epochs", "1", "--folds", "2", "--cv-epochs", "1"]) == 0
    assert json.loads((weights / "liver_detector.json").read_text())["input_size"] == 96
    engine = LiverEngine(weights_dir=weights)
    assert engine.networks()[0][2] == (1, 1, 96, 96)
    seen: list[tuple[int, ...]] = []

    def recording(*args: Any) -> tuple[np.ndarray, Letterbox]:
        out = letterbox(*args)
        seen.append(out[0].shape)
        return out

    monkeypatch.setattr(lesion_engine, "letterbox", recording)
    sample = generate("liver", 7, 240, 320)
    assert engine.run(image_input(sample, "2.25.7", True)).not_assessed is None
    assert seen and all(shape == (96, 96) for shape in seen)


def test_a_detector_grown_by_residual_blocks_starts_as_its_init_and_trains(tmp_path: Path) -> None:
    plain = LesionDetector((8, 8, 16, 16, 24), 16)
    for module in plain.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    plain.eval()
    grown = LesionDetector((8, 8, 16, 16, 24), 16, blocks=2).eval()
    new = load_grown(grown, plain.state_dict())
    assert new and all(".body." in name for name in new)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        for before, after in zip(plain(x), grown(x), strict=True):
            assert torch.equal(before, after)
    with pytest.raises(ValueError, match="do not fit"):
        load_grown(plain, grown.state_dict())
    with pytest.raises(ValueError, match="do not fit"):
        load_grown(LesionDetector((8, 8, 16, 16, 32), 16, blocks=1), plain.state_dict())

    cache = tmp_path / "liver64.npz"
    weights = tmp_path / "weights"
    init = tmp_path / "plain.pt"
    torch.save(plain.state_dict(), init)
    assert main(["lesion-data", "--organ", "liver", "--count", "4", "--output", str(cache),
                 "--crops-per-lesion", "1", "--detector-size", "64"]) == 0
    assert main(["liver-detector", "--cache", str(cache), "--output", str(weights),
                 "--widths", "8,8,16,16,24", "--head", "16", "--blocks", "2",
                 "--init", str(init), "--epochs", "1", "--batch-size", "2"]) == 0
    assert main(["liver-classifier", "--cache", str(cache), "--output", str(weights),
                 "--epochs", "1", "--folds", "2", "--cv-epochs", "1"]) == 0
    assert json.loads((weights / "liver_detector.json").read_text())["blocks"] == 2
    engine = LiverEngine(weights_dir=weights)
    sample = generate("liver", 7, 240, 320)
    assert engine.run(image_input(sample, "2.25.7", True)).not_assessed is None


@pytest.mark.parametrize("seed", range(6))
def test_zoom_augment_moves_boxes_with_the_pixels(seed: int) -> None:
    x = torch.zeros((1, 1, 256, 256))
    x[0, 0, 100:140, 60:100] = 1.0
    out, boxes = zoom_augment(x, [np.array([[60.0, 100.0, 100.0, 140.0]], np.float32)],
                              np.random.default_rng(seed), probability=1.0)
    bright = out[0, 0].numpy() > 0.5
    assert len(boxes[0]) == 1  # a lesion in the middle is never cut off by these zooms
    x0, y0, x1, y1 = boxes[0][0]
    ys, xs = np.nonzero(bright)
    assert abs(xs.min() - x0) <= 1.5 and abs(xs.max() + 1 - x1) <= 1.5
    assert abs(ys.min() - y0) <= 1.5 and abs(ys.max() + 1 - y1) <= 1.5


def _ellipses(boxes: np.ndarray, side: int = 256) -> torch.Tensor:
    """A grey input with a bright lesion filling the ellipse inscribed in each box."""
    ys, xs = np.mgrid[:side, :side] + 0.5
    image = np.full((side, side), 0.5, np.float32)
    for x0, y0, x1, y1 in boxes:
        inside = (((xs - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2
                  + ((ys - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2) <= 1.0
        image[inside] = 1.0
    return torch.from_numpy(image)[None, None]


@pytest.mark.parametrize("seed", range(24))
def test_field_cut_blackens_beyond_the_new_edge_and_boxes_keep_to_the_visible_lesion(
        seed: int) -> None:
    lesions = np.array([[40.0, 60.0, 120.0, 110.0], [150.0, 150.0, 190.0, 230.0]], np.float32)
    x = _ellipses(lesions)
    out, boxes = field_cut_augment(x, [lesions], np.random.default_rng(seed), probability=1.0)
    image = out[0, 0].numpy()
    black = image == 0.0
    assert black.mean() <= FIELD_CUT_MAX_BLACK
    assert np.isin(image, [0.0, 0.5, 1.0]).all()  # pixels are kept or blackened, not moved
    for part in boxes[0]:
        x0, y0, x1, y1 = np.round(part).astype(int)
        ys, xs = np.nonzero(image[y0 - 3:y1 + 3, x0 - 3:x1 + 3] == 1.0)
        tolerance = 0.03 * max(x1 - x0, y1 - y0) + 1.5
        assert abs(xs.min() - 3) <= tolerance and abs(xs.max() + 1 - (x1 - x0) - 3) <= tolerance
        assert abs(ys.min() - 3) <= tolerance and abs(ys.max() + 1 - (y1 - y0) - 3) <= tolerance
    original = x[0, 0].numpy() == 1.0
    lesion_pixels = [original & (_ellipses(b[None])[0, 0].numpy() == 1.0) for b in lesions]
    visible = [(m & ~black).sum() / m.sum() for m in lesion_pixels]
    assert len(boxes[0]) == sum(v > 0 for v in visible)  # a lesion wholly cut away is dropped
    assert all(v == 0 or v >= 0.25 for v in visible)  # no sliver is left as a target


def test_field_cut_crosses_lesions_on_most_images_and_leaves_others_alone() -> None:
    lesion = np.array([[100.0, 100.0, 140.0, 130.0]], np.float32)
    x = _ellipses(lesion).repeat(200, 1, 1, 1)
    rng = np.random.default_rng(5)
    out, boxes = field_cut_augment(x, [lesion] * 200, rng, probability=0.5)
    changed = (out != x).flatten(1).any(1).numpy()
    crossed = np.array([len(b) == 1 and not np.array_equal(b, lesion) for b in boxes])
    assert 70 <= changed.sum() <= 130
    assert crossed.sum() >= 0.6 * changed.sum()
    assert not (crossed & ~changed).any()
    assert field_cut_augment(x, [lesion] * 200, rng, probability=0.0)[0] is x


def test_calipers_measure_a_lesion_on_most_images_and_leave_boxes_alone() -> None:
    lesion = np.array([[100.0, 90.0, 160.0, 130.0]], np.float32)
    x = torch.full((200, 1, 256, 256), 0.3)
    out, boxes = caliper_augment(x, [lesion] * 200, np.random.default_rng(6), probability=0.5)
    assert all(b is lesion for b in boxes)
    changed = (out != x)[:, 0].numpy()
    marked = changed.any(axis=(1, 2))
    assert 70 <= marked.sum() <= 130
    assert changed.sum(axis=(1, 2)).max() < 0.01 * 256 * 256  # thin marks, not a blot
    centre, radii = np.array([130.0, 110.0]), np.array([30.0, 20.0])
    on_outline = 0
    for k in np.nonzero(marked)[0]:
        ys, xs = np.nonzero(changed[k])
        offsets = (np.stack([xs, ys], 1) + 0.5 - centre) / radii
        reach = np.hypot(*offsets.T)
        # measured: marks on opposite sides of the lesion, the farthest just past its outline
        on_outline += bool(np.hypot(*offsets.mean(0)) < 0.35 and 0.9 <= reach.max() <= 1.4)
    assert abs(on_outline / marked.sum() - ON_LESION) < 0.15
    assert caliper_augment(x, [lesion] * 200, np.random.default_rng(6), 0.0)[0] is x


def _augmented(augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
               batch: torch.Tensor, seed: int) -> torch.Tensor:
    """``augment`` applied to ``batch``, checked to keep its shape, its black background
    (the top 6 rows), the range [0, 1], and to repeat with the same seed."""
    out = augment(batch, torch.Generator().manual_seed(seed))
    assert out.shape == batch.shape
    assert bool((out[:, :, :6, :] == 0).all())
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, augment(batch, torch.Generator().manual_seed(seed)))
    return out


def test_sharpness_augment_sharpens_some_smooths_others_keeps_background() -> None:
    speckle = torch.rand((32, 1, 64, 64), generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    speckle[:, :, :6, :] = 0.0  # black background above the scan area
    out = _augmented(sharpness_augment, speckle, 2)
    ratio = out[:, :, 8:].std(dim=(1, 2, 3)) / speckle[:, :, 8:].std(dim=(1, 2, 3))
    assert int((ratio > 1.05).sum()) >= 3  # edge enhancement: more high-frequency contrast
    assert int((ratio < 0.95).sum()) >= 2  # speckle reduction
    assert int((ratio == 1.0).sum()) >= 8  # about half the images are left as they are


def test_intensity_augment_softens_the_grey_scale_of_some_images_keeps_background() -> None:
    # With this seed, gain, offset, gamma and noise alone (contrast fixed at 1) never bring
    # the spread below 0.64 of the input's: a smaller spread is the contrast term's.
    grey = torch.linspace(0.1, 0.9, 64).repeat(64, 1, 64, 1)
    grey[:, :, :6, :] = 0.0  # black background above the scan area
    out = _augmented(intensity_augment, grey, 3)
    spread = out[:, :, 8:].std(dim=(1, 2, 3)) / grey[:, :, 8:].std(dim=(1, 2, 3))
    assert float(spread.min()) < 0.6  # a grey scale as soft as contrast 0.6 is seen


def test_epoch_order_draws_the_share_from_the_chosen_images() -> None:
    rng = np.random.default_rng(0)
    train = np.arange(100, 1100)
    chosen = np.zeros(1200, int)
    chosen[1000:] = 1  # 100 of the training images, the last cache's
    np.testing.assert_array_equal(np.sort(epoch_order(rng, train, chosen, None)), train)
    order = epoch_order(rng, train, chosen, [0.5, 0.5])
    assert len(order) == len(train) and set(order) <= set(train)
    assert int(chosen[order].sum()) == 500  # drawn again and again: only 100 exist
    assert len(set(order[chosen[order] == 0])) == 500  # the others, each at most once


def test_cache_shares_give_each_cache_its_share() -> None:
    parser = argparse.ArgumentParser()
    detector.add_arguments(parser)
    args = parser.parse_args(["--organ", "breast", "--cache", "a", "b", "c",
                              "--cache-shares", "0.5,0.25,0.25"])
    groups, shares = detector.image_groups([600, 300, 300], args)
    train = np.arange(1200)
    order = epoch_order(np.random.default_rng(1), train, groups, shares)
    assert np.bincount(groups[order]).tolist() == [600, 300, 300]
    last = parser.parse_args(["--organ", "breast", "--cache", "a", "b", "c",
                              "--last-cache-share", "0.25"])
    groups, shares = detector.image_groups([600, 300, 300], last)
    assert shares == [0.75, 0.25] and int(groups.sum()) == 300  # the first two together
    with pytest.raises(SystemExit):
        parser.parse_args(["--organ", "breast", "--cache", "a", "--cache-shares", "0.5,0.4"])
    with pytest.raises(SystemExit):
        detector.image_groups([600, 300], args)  # three shares for two caches


def test_changed_copies_add_crops_from_post_processed_frames() -> None:
    seeds = range(40000, 40003)
    plain = candidate_crops("liver", "physics", seeds, lesion_engine.WEIGHTS_DIR, 0.1)
    more = candidate_crops("liver", "physics", seeds, lesion_engine.WEIGHTS_DIR, 0.1,
                           changed_copies=1)
    assert len(more[0]) > len(plain[0])
    # An image's unchanged frame gives the same crops either way, before its copy's.
    first = int((plain[2] == seeds[0]).sum())
    assert np.array_equal(more[0][:first], plain[0][:first])


def test_calipers_are_burned_into_the_verifiers_images_before_the_detector_runs() -> None:
    seeds = range(40000, 40003)
    plain = candidate_crops("liver", "physics", seeds, lesion_engine.WEIGHTS_DIR, 0.1)
    unmarked = candidate_crops("liver", "physics", seeds, lesion_engine.WEIGHTS_DIR, 0.1,
                               calipers=0.0)
    marked = candidate_crops("liver", "physics", seeds, lesion_engine.WEIGHTS_DIR, 0.1,
                             calipers=1.0)
    assert all(np.array_equal(a, b) for a, b in zip(plain, unmarked, strict=True))
    n = min(len(marked[0]), len(plain[0]))
    # the crops are drawn from the marked frames
    changed = [not np.array_equal(m, q) for m, q in zip(marked[0][:n], plain[0][:n], strict=True)]
    assert sum(changed) >= 1
