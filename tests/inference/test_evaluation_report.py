"""The evaluation report's parts that come from the weights cards."""

from __future__ import annotations

import json
from pathlib import Path

from inference.engines.lesion import WEIGHTS_DIR
from inference.evaluation.cli import main
from inference.evaluation.report import cross_validation_lines


def test_cross_validation_table_lists_each_fold() -> None:
    cv = {"folds": 3, "crops": 4000, "epochs": 4, "accuracy_per_fold": [0.75, 0.8, 0.85],
          "accuracy_mean": 0.8, "accuracy_sd": 0.0408}
    lines = cross_validation_lines({"liver": {"metrics": {"cross_validation": cv}},
                                    "breast": {"metrics": {}}})
    rows = [line for line in lines if line.startswith("| ")]
    assert rows[1:] == ["| liver | 3 | 4000 | 4 | 0.750, 0.800, 0.850 | 0.800 | 0.041 |"]
    assert cross_validation_lines({"breast": {"metrics": {}}}) == []


def test_report_carries_the_shipped_classifiers_cross_validation(tmp_path: Path) -> None:
    output = tmp_path / "evaluation.md"
    assert main(["--organs", "--output", str(output)]) == 0
    report = output.read_text()
    assert "## Classifier cross-validation" in report
    for organ in ("liver", "breast"):
        cv = json.loads((WEIGHTS_DIR / f"{organ}_classifier.json").read_text())[
            "metrics"]["cross_validation"]
        folds = ", ".join(f"{a:.3f}" for a in cv["accuracy_per_fold"])
        assert f"| {organ} | {cv['folds']} | {cv['crops']} | {cv['epochs']} | {folds} |" in report
