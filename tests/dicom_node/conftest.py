"""Fixtures for the node's tests: a node on a free loopback port, an SCU, datasets."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association

from dicom_node.clock import ManualClock
from dicom_node.config import Caller, Completion, Destination, NodeConfig, Pipeline
from dicom_node.export import Sender, c_store_batch
from dicom_node.index import IndexQueries
from dicom_node.network import ULTRASOUND_SOP_CLASSES
from dicom_node.reactor import EventDrivenAssociation, EventDrivenDUL
from dicom_node.service import Node, Stages
from dicom_node.stages import build, decode
from tests.dicom_node.fake_engine import FakeAnalyzer
from tests.peers import free_port, wait_until
from tests.sr_templates.sr_factories import make_us_image

__all__ = ["associate", "make_study", "make_us_image"]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo logging set up by a test: ``cli.main`` points structlog at a captured stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers = handlers
    root.setLevel(level)


def make_study(
    count: int = 2,
    study_uid: str | None = None,
    series: int = 1,
    photometric: str = "RGB",
    frames: int | None = None,
    **kwargs: Any,
) -> list[Dataset]:
    """``count`` US images of one study spread over ``series`` series."""
    study_uid = study_uid or f"2.25.{uuid.uuid4().int}"
    series_uids = [generate_uid() for _ in range(series)]
    images = []
    for i in range(count):
        ds = make_us_image(photometric=photometric, frames=frames, study_uid=study_uid, **kwargs)
        ds.SeriesInstanceUID = series_uids[i % series]
        ds.InstanceNumber = i + 1
        images.append(ds)
    return images


ARCHIVE = Destination(name="archive", ae_title="ARCHIVE", host="127.0.0.1", port=1)
"""A destination nobody listens on (dispatch tests never export)."""


def pipeline(**kwargs: object) -> Pipeline:
    """The ``NODE`` pipeline with a 30 s quiet period sending to :data:`ARCHIVE`."""
    values: dict[str, object] = {
        "called_ae": "NODE",
        "completion": Completion(quiet_seconds=30),
        "destinations": ["archive"],
    }
    values.update(kwargs)
    return Pipeline.model_validate(values)


def node_config(tmp_path: Path, **overrides: Any) -> NodeConfig:
    """A node config on 127.0.0.1, port 0, data in ``tmp_path``, one receiving process
    (tests inspect that process's receiver; ``test_receivers.py`` starts more)."""
    pipeline = overrides.pop(
        "pipeline",
        Pipeline(called_ae="NODE", completion=Completion(quiet_seconds=30)),
    )
    values: dict[str, Any] = {
        "ae_title": "NODE",
        "host": "127.0.0.1",
        "port": 0,
        "receivers": 1,
        "data_dir": tmp_path / "var",
        "pipelines": [pipeline],
        "limits": {"min_free_disk_mb": 0},
    }
    values.update(overrides)
    return NodeConfig.model_validate(values)


def associate(port: int, calling: str = "MODALITY", called: str = "NODE") -> Association:
    """An association to 127.0.0.1:``port`` proposing the US storage classes and echo."""
    ae = AE(ae_title=calling)
    for uid in sorted(ULTRASOUND_SOP_CLASSES):
        ae.add_requested_context(uid, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"])
    ae.add_requested_context("1.2.840.10008.1.1")
    return ae.associate("127.0.0.1", port, ae_title=called)


class NodeHarness:
    """A started node without background workers, plus the things tests poke at."""

    def __init__(self, node: Node, clock: ManualClock, analyzer: FakeAnalyzer) -> None:
        self.node = node
        self.clock = clock
        self.analyzer = analyzer

    @property
    def port(self) -> int:
        assert self.node.port is not None
        return self.node.port

    def associate(self, calling: str = "MODALITY", called: str = "NODE") -> Association:
        return associate(self.port, calling, called)

    def store(
        self, datasets: list[Dataset], calling: str = "MODALITY", called: str = "NODE"
    ) -> list[int]:
        """Send over one association; return when the node has logged its end
        and indexed what it stored."""
        assoc = self.associate(calling, called)
        assert assoc.is_established
        statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets]
        assoc.release()
        self.wait_for_associations_closed()
        self.node.receiver.writer.flush(30.0)
        return statuses

    def wait_for_associations_closed(self, timeout: float = 30.0) -> None:
        """Wait (bounded) until the node has recorded the end of every association."""
        wait_until(
            lambda: (
                not any(
                    a["accepted"] and a["ended_at"] is None
                    for a in IndexQueries(self.node.index).associations(limit=1000)
                )
            ),
            timeout,
            "the node to log the end of every association",
            interval=0.02,
        )

    def settle(self, seconds: float = 31) -> list[int]:
        """Index what was received, advance the clock past the quiet period and run
        every due job."""
        self.node.receiver.writer.flush(30.0)
        self.clock.advance(seconds)
        jobs = self.node.dispatcher.complete_due_studies()
        while self.node.dispatcher.run_next_job():
            pass
        return jobs


def node_threads() -> list[threading.Thread]:
    """The node's association and DUL threads still running."""
    kinds = (EventDrivenAssociation, EventDrivenDUL)
    return [thread for thread in threading.enumerate() if isinstance(thread, kinds)]


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., NodeHarness]]:
    """Factory of started nodes (no workers); all are stopped at teardown."""
    started: list[Node] = []

    def factory(
        analyzer: FakeAnalyzer | None = None,
        sender: Sender = c_store_batch,
        **overrides: Any,
    ) -> NodeHarness:
        clock = ManualClock()
        analyzer = analyzer or FakeAnalyzer()
        config = node_config(tmp_path, **overrides)
        node = Node(config, Stages(analyze=analyzer, decode=decode, build=build), clock, sender)
        node.start(workers=False)
        started.append(node)
        return NodeHarness(node, clock, analyzer)

    yield factory
    for node in started:
        node.stop()


__all__ += ["Caller", "Destination", "NodeHarness", "free_port", "node_config", "node_threads"]
