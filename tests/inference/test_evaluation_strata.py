"""Held-out detection recall per lesion class and size band; the second generator's
held-out images and clips; the images of the independent generators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.engines.lesion import LiverEngine
from inference.evaluation.lesion import (
    INDEPENDENT_GENERATORS,
    SECOND_GENERATOR_CLIP_SEEDS,
    SECOND_GENERATOR_SEEDS,
    SIZE_BANDS_MM,
    LesionOutcome,
    OrganEvaluation,
    clip_roi_vote,
    clip_sample,
    evaluate_organ,
    independent_training,
)
from inference.evaluation.report import (
    independent_generator_lines,
    organ_section,
    second_generator_lines,
    strata_lines,
)
from inference.phantoms.imagedomain import generate_image_domain
from inference.training.lesion_data import image_size


def test_strata_add_up_to_the_overall_recall() -> None:
    ev = evaluate_organ("liver", n_images=4, n_clips=0)
    assert len(ev.outcomes) == ev.lesions > 0
    _, recall, _ = ev.detection
    assert sum(o.found for o in ev.outcomes) / ev.lesions == recall
    strata = ev.recall_by_stratum()
    by_class = [row for row in strata if row[0] in ev.classes]
    by_size = [row for row in strata if row[0] not in ev.classes]
    for rows in (by_class, by_size):
        assert sum(count for _, count, _ in rows) == ev.lesions
        assert sum(count * r for _, count, r in rows) / ev.lesions == pytest.approx(recall)


def test_strata_table_names_classes_and_bands() -> None:
    ev = OrganEvaluation("liver", ("hcc", "cyst"), 0.5)
    ev.outcomes = [LesionOutcome("hcc", 8.0, True), LesionOutcome("hcc", 12.0, False),
                   LesionOutcome("cyst", 25.0, True)]
    assert len(SIZE_BANDS_MM) == 3
    assert [line for line in strata_lines(ev) if line.startswith("| ")][1:] == [
        "| hcc | 2 | 0.500 |", "| cyst | 1 | 1.000 |", "| < 10 mm | 1 | 1.000 |",
        "| 10-20 mm | 1 | 0.000 |", "| >= 20 mm | 1 | 1.000 |"]


def test_the_report_gives_bootstrap_intervals(tmp_path: Path) -> None:
    ev = evaluate_organ("liver", n_images=4, n_clips=0)
    section = organ_section(ev, tmp_path, "plots")
    table = [line for line in section.splitlines() if line.startswith("| Detection F1")]
    _, _, ours, interval, published, _, _ = table[0].split("|")
    low, high = (float(v) for v in interval.split("-"))
    assert low <= float(ours) <= high and float(published) == 0.917
    (f1_low, f1_high) = ev.detection_intervals()[2]
    assert (round(f1_low, 3), round(f1_high, 3)) == (low, high)


def test_the_roi_clip_vote_counts_every_frame_that_shows_the_lesion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = LiverEngine()
    clip = clip_sample("liver", 3_000_000, clip_frames=(6, 6))
    assert clip is not None
    shown = [i for i, truths in enumerate(clip.truths) if truths]
    assert len(shown) >= 3
    # The classifier says "cyst" on the first frame that shows the lesion, "hcc" on the rest.
    answers = iter(["cyst"] + ["hcc"] * (len(shown) - 1))
    boxes_seen = []

    def classify(frame: np.ndarray, boxes: list) -> np.ndarray:
        boxes_seen.append(boxes)
        return np.eye(len(engine.classes))[[engine.classes.index(next(answers))]]

    monkeypatch.setattr(engine, "classify", classify)
    label, malignancy = clip_roi_vote(engine, clip)
    assert boxes_seen == [[clip.truths[i][0].box] for i in shown]
    assert label == "hcc"
    assert 0.0 <= malignancy <= 1.0


def test_cine_rows_set_the_published_figure_beside_the_roi_vote(tmp_path: Path) -> None:
    ev = evaluate_organ("liver", n_images=2, n_clips=2, clip_frames=(6, 6))
    assert len(ev.clip_roi_pred) == len(ev.clip_pred) == ev.clips > 0
    assert set(ev.clip_roi_pred) <= set(ev.classes)
    rows = {cells[1].strip(): cells[4].strip() for cells in (
        line.split("|") for line in organ_section(ev, tmp_path, "plots").splitlines()
        if line.startswith("| Cine"))}
    assert rows == {
        "Cine clip 4-class accuracy (ROI, 3-of-5 vote)": "0.891",
        "Cine clip benign/malignant accuracy (ROI)": "0.909",
        "Cine clip 4-class accuracy (detector + tracking, 3-of-5 vote)": "-",
        "Cine clip benign/malignant accuracy (detector + tracking)": "-",
    }


def test_the_second_generator_is_scored_on_its_own_held_out_seeds(tmp_path: Path) -> None:
    ev = evaluate_organ("breast", n_images=0, n_clips=0, n_second=3)
    assert ev.images == 0 and ev.second is not None
    assert ev.second.images == 3
    assert ev.second.lesions == sum(
        len(generate_image_domain("breast", SECOND_GENERATOR_SEEDS["breast"] + k,
                                  *image_size(SECOND_GENERATOR_SEEDS["breast"] + k)).truths[0])
        for k in range(3))
    lines = second_generator_lines(ev)
    assert lines[0].startswith(f"The same engine on 3 held-out images ({ev.second.lesions} "
                               "lesions, with regions) and 0 held-out cine clips")
    f1 = next(line for line in lines if line.startswith("| Detection F1")).split("|")[2]
    assert float(f1) == round(ev.second.detection[2], 3)
    assert not any(line.startswith("| Cine") for line in lines)


def test_the_second_generator_clips_are_scored_through_detector_and_tracking() -> None:
    ev = evaluate_organ("liver", n_images=0, n_clips=0, n_second_clips=2,
                        clip_frames=(8, 8))
    assert ev.second is not None and ev.second.images == 0
    truths = [clip_sample("liver", SECOND_GENERATOR_CLIP_SEEDS["liver"] + k, (8, 8), True)
              for k in range(2)]
    assert ev.second.clip_truth == [t.labels[0] for t in truths if t is not None]
    assert ev.second.clips == len(ev.second.clip_truth) >= 1
    lines = second_generator_lines(ev)
    assert f"and {ev.second.clips} held-out cine clips" in lines[0]
    tracked = next(line for line in lines if line.startswith(
        "| Cine clip 4-class accuracy (detector + tracking")).split("|")[2]
    assert float(tracked) == round(ev.second.summary("clip")["accuracy"], 3)
    assert not any(line.startswith("| Detection") for line in lines)


def test_the_independent_generators_are_scored_apart_from_the_others() -> None:
    ev = evaluate_organ("liver", n_images=0, n_clips=0, n_independent=2)
    assert ev.second is None and list(ev.independent) == list(INDEPENDENT_GENERATORS)
    for name, (render, seeds) in INDEPENDENT_GENERATORS.items():
        other = ev.independent[name]
        assert other.images == 2 and other.clips == 0
        assert other.lesions == sum(
            len(render("liver", seed, *image_size(seed)).truths[0])
            for seed in (seeds["liver"], seeds["liver"] + 1))
    lines = independent_generator_lines(ev)
    intros = [line for line in lines if line.startswith("The same engine on 2 images")]
    assert len(intros) == len(INDEPENDENT_GENERATORS)
    recalls = [float(line.split("|")[2]) for line in lines
               if line.startswith("| Detection recall")]
    assert recalls == [round(u.detection[1], 3) for u in ev.independent.values()]
    assert independent_generator_lines(evaluate_organ("liver", n_images=0, n_clips=0)) == []


def test_the_report_says_which_independent_generator_a_detector_was_trained_on() -> None:
    seeds = [[0, 3999], [20_003_000, 20_006_999], [30_100_000, 30_101_999],
             [30_102_000, 30_103_999]]
    assert independent_training(seeds) == {"pulse-echo": (30_100_000, 30_103_999)}
    assert independent_training(seeds[:2]) == {}
    ev = evaluate_organ("breast", n_images=0, n_clips=0, n_independent=1)
    ev.trained_on = independent_training(seeds)
    pulse_echo, volume_slice = (
        line for line in independent_generator_lines(ev) if line.startswith("The same engine"))
    assert "and the breast detector was trained on other images of it (seeds " \
        "30,100,000-30,103,999)" in pulse_echo
    assert "and no network was ever trained, tuned or chosen on its images" in volume_slice
