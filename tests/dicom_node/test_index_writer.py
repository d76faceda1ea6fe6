"""The index writer: rows follow the answer, in batches, and survive a dead database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from dicom_node import network
from dicom_node.config import Completion, Pipeline
from dicom_node.index import Index, IndexQueries
from dicom_node.index import writer as writer_module
from dicom_node.index.writer import GATHER_ROWS, IndexWriter, Received
from dicom_node.network import StoreStatus
from tests.dicom_node.conftest import NodeHarness, make_study
from tests.dicom_node.test_index import NOW, PEER, meta
from tests.peers import wait_until

MakeNode = Callable[..., NodeHarness]


def _received(study: str, sop: str) -> Received:
    return Received(meta(study, sop), PEER, None, NOW)


class FlakyIndex:
    """An index whose first ``failures`` batches raise, as a database going away would."""

    def __init__(self, index: Index, failures: int) -> None:
        self.index = index
        self.failures = failures
        self.batches: list[int] = []

    def record_instances(self, items: Sequence[Any]) -> list[bool]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unreachable")
        self.batches.append(len(items))
        return self.index.record_instances(items)


@pytest.fixture
def index(tmp_path: Path) -> Index:
    return Index(f"sqlite:///{tmp_path / 'index.db'}")


def test_rows_are_written_and_duplicates_reported(index: Index) -> None:
    seen: list[tuple[str, bool]] = []
    writer = IndexWriter(index, lambda item, new: seen.append((item.meta.sop_instance_uid, new)))
    for sop in ("1.2.3.1", "1.2.3.2", "1.2.3.1"):
        writer.submit(_received("1.2.3", sop))
    assert writer.flush(30)
    writer.close()
    assert writer.backlog == 0
    assert seen == [("1.2.3.1", True), ("1.2.3.2", True), ("1.2.3.1", False)]
    study = IndexQueries(index).studies()[0]
    assert study["instance_count"] == 2
    assert study["calling_ae"] == PEER.calling_ae


def test_rows_arriving_together_are_gathered_into_one_transaction(index: Index) -> None:
    """A flush ends the gathering at once; a full batch ends it without waiting."""
    counted = FlakyIndex(index, failures=0)
    writer = IndexWriter(counted, gather_seconds=600.0, idle_seconds=600.0)  # type: ignore[arg-type]
    for number in range(5):
        writer.submit(_received("1.2.5", f"1.2.5.{number}"))
    assert writer.flush(30)
    for number in range(GATHER_ROWS):
        writer.submit(_received("1.2.6", f"1.2.6.{number}"))
    wait_until(lambda: writer.backlog == 0, 30, "a full batch to be written unasked")
    writer.close()
    assert counted.batches == [5, GATHER_ROWS]


class CountingCondition(threading.Condition):
    """A condition that counts its ``notify_all`` calls."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.notified = 0

    def notify_all(self) -> None:
        self.notified += 1
        super().notify_all()


def test_the_writer_is_woken_for_a_first_row_and_a_full_batch_only(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waking the writer for every row cost every instance a switch of threads.
    monkeypatch.setattr(writer_module.threading, "Condition", CountingCondition)
    writer = IndexWriter(index, gather_seconds=600.0, idle_seconds=600.0)
    changed = writer._changed
    assert isinstance(changed, CountingCondition)
    writer.submit(_received("1.2.7", "1.2.7.0"))
    assert changed.notified == 1
    for number in range(1, GATHER_ROWS - 1):
        writer.submit(_received("1.2.7", f"1.2.7.{number}"))
    assert changed.notified == 1
    writer.submit(_received("1.2.7", f"1.2.7.{GATHER_ROWS - 1}"))
    assert changed.notified == 2
    wait_until(lambda: writer.backlog == 0, 30, "the full batch to be written unasked")
    writer.close()
    assert IndexQueries(index).studies()[0]["instance_count"] == GATHER_ROWS


def test_the_gathering_ends_once_no_row_arrives(index: Index) -> None:
    # Rows are not held for the whole gathering time after the senders stopped.
    writer = IndexWriter(index, gather_seconds=600.0, idle_seconds=0.01)
    for number in range(3):
        writer.submit(_received("1.2.8", f"1.2.8.{number}"))
    wait_until(lambda: writer.backlog == 0, 30, "the rows to be written without a flush")
    writer.close()
    assert IndexQueries(index).studies()[0]["instance_count"] == 3


def test_failed_batches_are_retried_until_written(index: Index) -> None:
    flaky = FlakyIndex(index, failures=2)
    seen: list[bool] = []
    writer = IndexWriter(flaky, lambda item, new: seen.append(new),  # type: ignore[arg-type]
                         retry_seconds=0.0)
    writer.submit(_received("1.2.4", "1.2.4.1"))
    writer.submit(_received("1.2.4", "1.2.4.2"))
    assert writer.flush(30)
    writer.close()
    assert flaky.failures == 0
    assert sum(flaky.batches) == 2
    assert seen == [True, True]
    assert IndexQueries(index).studies()[0]["instance_count"] == 2


def test_closing_with_the_database_down_leaves_rows_to_reconciliation(index: Index) -> None:
    writer = IndexWriter(FlakyIndex(index, failures=10**6))  # type: ignore[arg-type]
    writer.submit(_received("1.2.5", "1.2.5.1"))
    writer.close(timeout=0)
    assert writer.backlog == 1
    assert not writer.flush(30)  # closed: returns at once
    writer.close()  # again: nothing to do
    assert IndexQueries(index).studies() == []


def test_answered_instance_is_indexed_at_restart_with_its_association(
    make_node: MakeNode,
) -> None:
    pipelines = [
        Pipeline(called_ae="NODE", completion=Completion(quiet_seconds=30)),
        Pipeline(called_ae="SECOND", completion=Completion(quiet_seconds=30)),
    ]
    harness = make_node(pipelines=pipelines)
    # The writer stops as if the process died between the answers and the commit.
    harness.node.receiver.writer.close(timeout=0)
    assert harness.store(make_study(2), calling="US_ROOM", called="SECOND") == [0, 0]
    assert len(harness.node.spool.instance_files()) == 2
    assert IndexQueries(harness.node.index).studies() == []
    harness.node.stop()

    restarted = make_node(pipelines=pipelines)
    studies = IndexQueries(restarted.node.index).studies()
    assert [(s["called_ae"], s["calling_ae"], s["instance_count"]) for s in studies] == [
        ("SECOND", "US_ROOM", 2)
    ]


def test_store_is_refused_while_the_index_is_far_behind(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_node()
    monkeypatch.setattr(network, "MAX_INDEX_BACKLOG", 1)
    harness.node.receiver.writer.close(timeout=0)  # nothing drains the queue any more
    statuses = harness.store(make_study(2))
    assert statuses[0] == 0x0000
    assert statuses[1] == StoreStatus.OUT_OF_RESOURCES
    assert len(harness.node.spool.instance_files()) == 1


def test_a_failing_callback_does_not_stop_the_writer(index: Index) -> None:
    def broken(item: Received, new: bool) -> None:
        raise ValueError("metrics backend gone")

    writer = IndexWriter(index, broken)
    writer.submit(_received("1.2.6", "1.2.6.1"))
    assert writer.flush(30)
    writer.submit(_received("1.2.6", "1.2.6.2"))
    assert writer.flush(30)
    writer.close()
    assert IndexQueries(index).studies()[0]["instance_count"] == 2
