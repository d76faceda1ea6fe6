"""Several receiver processes on one port (``receivers: N``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dicom_node.config import ConfigError, NodeConfig, parse_config
from dicom_node.index import IndexQueries
from tests.dicom_node.conftest import NodeHarness, make_study

MakeNode = Callable[..., NodeHarness]


def test_extra_receivers_store_durably_and_index(make_node: MakeNode) -> None:
    harness = make_node(receivers=3)
    processes = harness.node.receiver_processes
    assert processes is not None
    assert processes.alive() == 2
    first = make_study(3)
    assert harness.store(first) == [0, 0, 0]
    # With the main receiver closed, only the extra processes listen on the port.
    harness.node._ae.shutdown()  # type: ignore[attr-defined]
    second = make_study(4)
    assert harness.store(second) == [0, 0, 0, 0]
    assert len(harness.node.spool.instance_files()) == 7
    counts = {
        s["study_instance_uid"]: s["instance_count"]
        for s in IndexQueries(harness.node.index).studies()
    }
    assert counts == {first[0].StudyInstanceUID: 3, second[0].StudyInstanceUID: 4}
    harness.node.stop()
    assert processes.alive() == 0


def test_one_receiver_starts_no_process(make_node: MakeNode) -> None:
    assert make_node().node.receiver_processes is None


def test_receivers_must_be_positive() -> None:
    assert NodeConfig().receivers == 1
    with pytest.raises(ConfigError, match="receivers"):
        parse_config({"receivers": 0})
