"""Tests of the engine registry."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from inference.engines import registry
from inference.engines.base import Engine
from inference.findings import AnatomyValues


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    registry.load_engine.cache_clear()


def test_names() -> None:
    assert registry.ENGINE_NAMES == ("liver", "breast", "cardiac")


def test_unknown_engine() -> None:
    with pytest.raises(ValueError, match="Unknown engine"):
        registry.load_engine("thyroid")


def test_cardiac_engine_is_loaded_once() -> None:
    engine = registry.load_engine("cardiac")
    assert isinstance(engine, Engine)
    assert engine.name == "cardiac" and engine.anatomy is AnatomyValues.HEART
    assert registry.load_engine("cardiac") is engine


def test_missing_lesion_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake_import(name: str, package: str | None = None) -> ModuleType:
        if name == "inference.engines.lesion":
            raise ImportError("No module named 'inference.engines.lesion'")
        return real(name, package)

    monkeypatch.setattr(registry.importlib, "import_module", fake_import)
    with pytest.raises(registry.EngineUnavailableError, match="liver"):
        registry.load_engine("liver")
