"""Several receiver processes on one port (``receivers: N``)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from dicom_node import metrics
from dicom_node.admin.api import create_app
from dicom_node.config import MAX_AUTO_RECEIVERS, ConfigError, NodeConfig, parse_config
from dicom_node.index import IndexQueries
from tests.dicom_node.conftest import NodeHarness, make_study
from tests.peers import wait_until

RECEIVED = ("dicom_node_instances_received_total", (("called_ae", "NODE"),))


def _exposed(others: dict[metrics.SampleKey, float]) -> dict[metrics.SampleKey, float]:
    """Every sample of :func:`metrics.exposition`, parsed back from its text."""
    return {
        metrics.sample_key(sample): sample.value
        for family in text_string_to_metric_families(metrics.exposition(others).decode())
        for sample in family.samples
    }

MakeNode = Callable[..., NodeHarness]


def test_extra_receivers_store_durably_and_index(make_node: MakeNode) -> None:
    harness = make_node(receivers=3)
    processes = harness.node.receiver_processes
    assert processes is not None
    assert processes.alive() == 2
    before = metrics.counter_values().get(RECEIVED, 0.0)
    first = make_study(3)
    assert harness.store(first) == [0, 0, 0]
    # With the main receiver closed, only the extra processes listen on the port.
    harness.node._ae.shutdown()  # type: ignore[attr-defined]
    second = make_study(4)
    assert harness.store(second) == [0, 0, 0, 0]
    assert len(harness.node.spool.instance_files()) == 7
    expected = {first[0].StudyInstanceUID: 3, second[0].StudyInstanceUID: 4}

    def counts() -> dict[str, int]:
        studies = IndexQueries(harness.node.index).studies()
        return {s["study_instance_uid"]: s["instance_count"] for s in studies}

    # The extra processes' writers commit their rows shortly after the answers.
    wait_until(lambda: counts() == expected, 30, f"the index to count {expected}")
    # The extra processes' counters reach /metrics, added to the main process's
    # (the first study may have gone to any of the three processes).
    def counted() -> float:
        own = metrics.counter_values().get(RECEIVED, 0.0) - before
        return own + harness.node.receiver_counters().get(RECEIVED, 0.0)

    wait_until(lambda: counted() == 7, 30, "the three receivers to count 7 instances")
    assert harness.node.receiving_processes() == 3
    api = TestClient(create_app(harness.node), client=("127.0.0.1", 50000),
                     base_url="http://localhost:8080")
    assert api.get("/api/status").json()["receiving_processes"] == 3
    assert "dicom_node_receiving_processes 3.0" in api.get("/metrics").text
    exposed = _exposed(harness.node.receiver_counters())
    assert exposed[RECEIVED] - before == 7
    harness.node.stop()
    assert processes.alive() == 0
    assert harness.node.receiver_counters() == {}


def test_an_extra_receiver_shuts_down_on_sigterm(
        make_node: MakeNode, capfd: pytest.CaptureFixture[str]) -> None:
    processes = make_node(receivers=2).node.receiver_processes
    assert processes is not None and processes.alive() == 1
    for pid in processes.pids():
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: processes.alive() == 0, 30, "the extra receiver to exit")
    # It shut down (closed its receiver and index), not merely died of the signal.
    assert "receiver_process_stopped" in capfd.readouterr().err


def test_one_receiver_starts_no_process(make_node: MakeNode) -> None:
    assert make_node().node.receiver_processes is None


def test_receivers_default_to_one_per_core() -> None:
    config = NodeConfig()
    assert config.receivers == "auto"
    cores = len(os.sched_getaffinity(0))
    assert config.receiver_count() == max(1, min(MAX_AUTO_RECEIVERS, cores))
    assert parse_config({"receivers": 3}).receiver_count() == 3


def test_auto_is_one_receiver_outside_linux(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert NodeConfig().receiver_count() == 1
    assert parse_config({"receivers": 2}).receiver_count() == 2


@pytest.mark.parametrize("value", [0, 33, "many"])
def test_receivers_must_be_a_count_or_auto(value: object) -> None:
    with pytest.raises(ConfigError, match="receivers"):
        parse_config({"receivers": value})


def test_counters_of_other_processes_are_added_or_listed() -> None:
    own = metrics.counter_values()
    only_there = ("dicom_node_instances_received_total", (("called_ae", "ZZ-ONLY"),))
    others = {RECEIVED: 5.0, only_there: 2.0}
    exposed = _exposed(others)
    assert exposed[RECEIVED] == own.get(RECEIVED, 0.0) + 5.0
    assert exposed[only_there] == 2.0
