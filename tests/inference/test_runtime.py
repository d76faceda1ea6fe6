"""ONNX exports of the shipped networks: same outputs as torch, used only when they match."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from inference.engines.cardiac import CardiacEngine
from inference.engines.lesion import _LOADED, BreastEngine, LiverEngine
from inference.engines.view import ViewClassifier
from inference.models import runtime
from inference.models.runtime import (
    OnnxRunner,
    TorchRunner,
    export_onnx,
    make_runner,
    onnx_path,
)
from inference.training.common import WEIGHTS_DIR
from inference.training.onnx_export import export_folder

pytest.importorskip("onnxruntime")

SHIPPED = sorted(WEIGHTS_DIR.glob("*.pt"))


@pytest.mark.parametrize("weights", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_network_has_a_matching_export(weights: Path) -> None:
    card = json.loads(weights.with_suffix(".json").read_text())
    export = onnx_path(weights)
    assert export.exists(), f"run `us-ai-train export-onnx` after training {weights.name}"
    session = OnnxRunner(export, 1)
    assert session.source_sha256 == card["sha256"]
    assert card["onnx"]["source_sha256"] == card["sha256"]


@pytest.mark.parametrize("make", [LiverEngine, BreastEngine, CardiacEngine, ViewClassifier])
def test_exports_give_the_torch_outputs(make: type) -> None:
    _LOADED.clear()
    for weights, module, shape in make().networks():
        card = json.loads(weights.with_suffix(".json").read_text())
        runner = make_runner(module, weights, card["sha256"])
        assert runner.backend == "onnxruntime"
        x = torch.rand((3, *shape[1:]), generator=torch.Generator().manual_seed(5))
        for got, expected in zip(runner(x), TorchRunner(module)(x), strict=True):
            assert torch.allclose(got, expected, atol=1e-4), weights.name
    _LOADED.clear()


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y, y.mean(dim=(2, 3))


def test_export_records_its_source_and_a_stale_export_is_not_used(tmp_path: Path) -> None:
    module = _Tiny().eval()
    weights = tmp_path / "tiny.pt"
    torch.save(module.state_dict(), weights)
    entry = export_onnx(module, weights, torch.zeros(1, 1, 8, 8), "a" * 64)
    assert entry["source_sha256"] == "a" * 64 and entry["max_abs_diff"] < 1e-5
    assert make_runner(module, weights, "a" * 64).backend == "onnxruntime"
    assert make_runner(module, weights, "b" * 64).backend == "torch"
    assert make_runner(module, weights, "a" * 64, prefer_onnx=False).backend == "torch"
    batch = torch.rand(4, 1, 8, 8)
    outputs = make_runner(module, weights, "a" * 64)(batch)
    assert [tuple(o.shape) for o in outputs] == [(4, 2, 8, 8), (4, 2)]


def test_without_onnxruntime_everything_runs_in_torch(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    module = _Tiny().eval()
    weights = tmp_path / "tiny.pt"
    export_onnx(module, weights, torch.zeros(1, 1, 8, 8), "a" * 64)
    monkeypatch.setattr(runtime, "onnxruntime_available", lambda: False)
    assert make_runner(module, weights, "a" * 64).backend == "torch"


def test_export_command_refreshes_a_weights_folder(tmp_path: Path) -> None:
    for path in WEIGHTS_DIR.glob("view_cnn.*"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "view_cnn.onnx").unlink()
    entries = export_folder(tmp_path)
    assert [e["file"] for e in entries] == ["view_cnn.onnx"]
    assert ViewClassifier(tmp_path).algorithm.weights_sha256 == entries[0]["source_sha256"]
    assert json.loads((tmp_path / "view_cnn.json").read_text())["onnx"] == entries[0]
