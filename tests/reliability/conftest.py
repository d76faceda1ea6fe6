"""Fixtures of the reliability tests: node processes, Orthanc, measured figures."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dicom_node.index import Index, IndexQueries
from tests.dicom_node.conftest import _restore_logging, make_node
from tests.peers import Orthanc, run_orthanc
from tests.reliability.harness import NodeProcess, write_config

__all__ = ["_restore_logging", "make_node"]
"""Fixtures shared with the node's own tests."""

FIGURES_ENV = "RELIABILITY_FIGURES"
"""When set, tests append the figures they measured (JSON lines) to this file."""


def base_config(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A node configuration for a process on 127.0.0.1: called AE ``NODE``, no admin API.

    One receiving process, so that per-process limits (``max_associations``) and
    the metrics written at exit see every association; ``receivers: auto`` is
    covered by ``test_receivers.py`` and the product test.
    """
    config: dict[str, Any] = {
        "ae_title": "NODE",
        "host": "127.0.0.1",
        "receivers": 1,
        "data_dir": str(data_dir),
        "api_port": 0,
        "limits": {"min_free_disk_mb": 0, "acse_timeout": 10, "network_timeout": 30},
        "export": {
            "max_attempts": 30,
            "backoff_initial_seconds": 0.5,
            "backoff_factor": 2,
            "backoff_max_seconds": 2,
        },
        "destinations": [],
        "pipelines": [{"called_ae": "NODE", "completion": {"quiet_seconds": 1}}],
    }
    config.update(overrides)
    return config


def queries(data_dir: Path) -> IndexQueries:
    """Read access to a node's index (SQLite in its data dir)."""
    return IndexQueries(Index(f"sqlite:///{(data_dir / 'index.sqlite').resolve()}"))


@pytest.fixture
def spawn_node(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Factory of node processes from a configuration mapping; all are stopped at teardown."""
    started: list[NodeProcess] = []

    def factory(config: dict[str, Any], name: str = "node", **kwargs: Any) -> NodeProcess:
        data_dir = Path(config["data_dir"])
        node = NodeProcess(
            data_dir=data_dir,
            config=write_config(tmp_path / f"{name}.yaml", config),
            log=tmp_path / f"{name}.log",
            quiet_seconds=config["pipelines"][0]["completion"]["quiet_seconds"],
            **kwargs,
        )
        node.start()
        started.append(node)
        return node

    yield factory
    for node in started:
        if node.alive():
            node.stop()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """Orthanc as the archive."""
    with run_orthanc(tmp_path / "orthanc") as archive:
        yield archive


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Figures a test measured; written to ``$RELIABILITY_FIGURES`` when set."""
    measured: dict[str, Any] = {}
    yield measured
    target = os.environ.get(FIGURES_ENV)
    if target and measured:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": request.node.nodeid, **measured}) + "\n")
