"""Export: batches, retries with backoff, error queue, per-destination isolation."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import SegmentationStorage
from structlog.testing import capture_logs

from dicom_node.config import Completion, Destination, ExportPolicy, Pipeline
from dicom_node.export import (
    REACTOR_RESUME_SECONDS,
    AssociationFailed,
    SendOutcome,
    Target,
    await_reactor,
    backoff_seconds,
)
from dicom_node.index import ExportState, IndexQueries
from inference.engines.base import ImageInput
from inference.findings import ImageResult
from tests.dicom_node.conftest import NodeHarness, make_study
from tests.dicom_node.fake_engine import FakeAnalyzer
from tests.peers import free_port, wait_until

MakeNode = Callable[..., NodeHarness]


class FakeArchive:
    """A sender double: down (association fails) or up, or refusing with a status."""

    def __init__(self) -> None:
        self.up = False
        self.refuse_status: int | None = None
        self.batches: list[tuple[str, list[str]]] = []
        self.targets: list[Target] = []

    def __call__(self, calling: str, target: Target, paths: Sequence[str]) -> list[SendOutcome]:
        if not self.up:
            raise AssociationFailed(f"association to {target.ae_title} refused")
        self.batches.append((target.ae_title, list(paths)))
        self.targets.append(target)
        status = self.refuse_status if self.refuse_status is not None else 0x0000
        return [SendOutcome(p, status) for p in paths]


def two_destinations() -> dict[str, object]:
    return {
        "destinations": [
            Destination(name="a", ae_title="ARCH_A", host="127.0.0.1", port=1),
            Destination(name="b", ae_title="ARCH_B", host="127.0.0.1", port=2),
        ],
        "pipeline": Pipeline(
            called_ae="NODE", completion=Completion(quiet_seconds=30), destinations=["a", "b"]
        ),
        "export": ExportPolicy(
            max_attempts=4, backoff_initial_seconds=10, backoff_factor=2, backoff_max_seconds=25
        ),
    }


def states(harness: NodeHarness) -> dict[str, tuple[str, int]]:
    return {
        e["destination"]: (e["state"], e["attempts"])
        for e in IndexQueries(harness.node.index).exports()
    }


def test_backoff_grows_and_is_capped() -> None:
    policy = ExportPolicy(backoff_initial_seconds=10, backoff_factor=2, backoff_max_seconds=60)
    assert [backoff_seconds(n, policy) for n in range(1, 6)] == [10, 20, 40, 60, 60]


class ResumingReactor:
    """An association whose reactor reads as paused for ``polls`` more looks."""

    def __init__(self, polls: int, alive: bool = True) -> None:
        self.polls, self.alive = polls, alive

    @property
    def _is_paused(self) -> bool:
        self.polls -= 1
        return self.polls >= 0

    def is_alive(self) -> bool:
        return self.alive


class FakeTime:
    """A monotonic clock that moves only when slept on."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def now(self) -> float:
        return self.seconds

    def sleep(self, seconds: float) -> None:
        self.seconds += seconds


def test_a_send_waits_for_the_reactor_to_resume_before_the_next() -> None:
    fake = FakeTime()

    def wait(assoc: ResumingReactor) -> None:
        await_reactor(assoc, clock=fake.now, pause=fake.sleep)  # type: ignore[arg-type]

    resuming = ResumingReactor(polls=5)
    wait(resuming)
    assert resuming.polls == -1, "returned only once the reactor ran again"
    dead = ResumingReactor(polls=5, alive=False)
    wait(dead)
    assert dead.polls == 4, "a dead association is not waited for"
    stuck = ResumingReactor(polls=10**9)
    started = fake.now()
    wait(stuck)
    assert fake.now() - started == pytest.approx(REACTOR_RESUME_SECONDS, abs=1e-3)


def test_destination_down_then_up_is_retried_with_backoff(make_node: MakeNode) -> None:
    archive = FakeArchive()
    harness = make_node(sender=archive, **two_destinations())
    harness.store(make_study(2))
    harness.settle()
    exporter = harness.node.exporter
    assert exporter.run_destination("a") == 1
    assert states(harness)["a"] == (ExportState.PENDING.value, 1)
    assert exporter.run_destination("a") == 0, "not due before the backoff"
    harness.clock.advance(10)
    assert exporter.run_destination("a") == 1
    assert states(harness)["a"] == (ExportState.PENDING.value, 2)
    harness.clock.advance(19)
    assert exporter.run_destination("a") == 0
    archive.up = True
    harness.clock.advance(1)
    assert exporter.run_destination("a") == 1
    assert states(harness)["a"] == (ExportState.DELIVERED.value, 3)
    assert len(archive.batches) == 1, "one association for the whole batch"


def test_attempts_are_capped_then_error_queue_then_manual_retry(make_node: MakeNode) -> None:
    archive = FakeArchive()
    harness = make_node(sender=archive, **two_destinations())
    harness.store(make_study(1))
    harness.settle()
    with capture_logs() as logs:
        for _ in range(4):
            harness.node.exporter.run_destination("a")
            harness.clock.advance(30)
    assert states(harness)["a"] == (ExportState.FAILED.value, 4)
    export_a = IndexQueries(harness.node.index).exports(ExportState.FAILED)[0]["id"]
    mine = [e for e in logs if e.get("export_id") == export_a]
    assert [(e["event"], e["attempt"]) for e in mine] == [
        ("export_retry_scheduled", 1), ("export_retry_scheduled", 2),
        ("export_retry_scheduled", 3), ("export_error_queued", 4)]
    assert mine[-1]["log_level"] == "error" and mine[-1]["destination"] == "a"
    assert "refused" in mine[-1]["reason"] and "next_attempt_at" in mine[0]
    assert harness.node.exporter.run_destination("a") == 0
    export_id = IndexQueries(harness.node.index).exports(ExportState.FAILED)[0]["id"]
    archive.up = True
    assert harness.node.index.retry_export(export_id, harness.clock.now())
    assert harness.node.exporter.run_destination("a") == 1
    assert states(harness)["a"][0] == ExportState.DELIVERED.value


def test_refusal_status_goes_to_error_queue_at_once(make_node: MakeNode) -> None:
    archive = FakeArchive()
    archive.up = True
    archive.refuse_status = 0xC000
    harness = make_node(sender=archive, **two_destinations())
    harness.store(make_study(1))
    harness.settle()
    harness.node.exporter.run_destination("a")
    export = IndexQueries(harness.node.index).exports(ExportState.FAILED)[0]
    assert export["destination"] == "a"
    assert "0xC000" in export["last_error"]
    assert harness.node.index.discard_export(export["id"])


def one_study_to_live_archives(make_node: MakeNode) -> tuple[FakeArchive, NodeHarness]:
    """A node that has analysed one study, its exports to two live destinations due."""
    archive = FakeArchive()
    archive.up = True
    harness = make_node(sender=archive, **two_destinations())
    harness.store(make_study(1))
    harness.settle()
    return archive, harness


def test_pending_exports_follow_their_destination_to_a_new_address(make_node: MakeNode) -> None:
    archive, harness = one_study_to_live_archives(make_node)
    config = harness.node.config()
    moved = Destination(name="a", ae_title="ARCH_A2", host="127.0.0.2", port=11)
    harness.node.reconfigure(
        config.model_copy(update={"destinations": [moved, *config.destinations[1:]]}))
    assert harness.node.exporter.run_destination("a") == 1
    assert [(t.ae_title, t.host, t.port) for t in archive.targets] == [
        ("ARCH_A2", "127.0.0.2", 11)]
    assert states(harness)["a"] == (ExportState.DELIVERED.value, 1)


def test_exports_to_a_removed_destination_go_to_the_error_queue_unsent(
    make_node: MakeNode,
) -> None:
    archive, harness = one_study_to_live_archives(make_node)
    config = harness.node.config()
    pipeline = config.pipelines[0].model_copy(update={"destinations": ["b"]})
    harness.node.reconfigure(config.model_copy(
        update={"destinations": config.destinations[1:], "pipelines": [pipeline]}))
    assert harness.node.exporter.run_destination("a") == 1
    assert archive.batches == []
    (export,) = IndexQueries(harness.node.index).exports(ExportState.FAILED)
    assert export["destination"] == "a"
    assert "no longer configured" in export["last_error"]


def test_out_of_resources_is_retried(make_node: MakeNode) -> None:
    archive = FakeArchive()
    archive.up = True
    archive.refuse_status = 0xA700
    harness = make_node(sender=archive, **two_destinations())
    harness.store(make_study(1))
    harness.settle()
    harness.node.exporter.run_destination("a")
    assert states(harness)["a"] == (ExportState.PENDING.value, 1)


def test_one_dead_destination_does_not_hold_the_other(make_node: MakeNode) -> None:
    archive = FakeArchive()
    harness = make_node(sender=archive, **two_destinations())
    harness.store(make_study(1))
    harness.settle()
    harness.node.exporter.run_destination("a")
    archive.up = True
    harness.node.exporter.run_destination("b")
    assert states(harness)["b"][0] == ExportState.DELIVERED.value
    assert states(harness)["a"] == (ExportState.PENDING.value, 1)


@pytest.fixture
def hanging_server() -> Iterator[int]:
    """A TCP server that accepts and never answers (a hung archive)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    clients: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                clients.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for client in clients:
        client.close()
    server.close()


def serve_storage(
    ae_title: str, contexts: Sequence[PresentationContext]
) -> tuple[AE, int, list[str]]:
    """Start a pynetdicom Storage SCP taking ``contexts``; it records the SOP
    Instance UIDs it receives."""
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title=ae_title)
    ae.supported_contexts = contexts
    port = free_port()
    ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    return ae, port, received


@pytest.fixture
def storage_scp(tmp_path: Path) -> Iterator[tuple[int, list[str]]]:
    """A pynetdicom Storage SCP that records what it receives."""
    ae, port, received = serve_storage("GOOD", AllStoragePresentationContexts)
    yield port, received
    ae.shutdown()


@pytest.fixture
def archive_without_seg() -> Iterator[tuple[int, list[str]]]:
    """A Storage SCP ``NOSEG`` taking every storage SOP class but Segmentation."""
    contexts = [
        c for c in AllStoragePresentationContexts if c.abstract_syntax != SegmentationStorage
    ]
    ae, port, received = serve_storage("NOSEG", contexts)
    yield port, received
    ae.shutdown()


class SwitchableAnalyzer(FakeAnalyzer):
    """The fake engine; once ``lesions`` is off it finds nothing (no segmentation)."""

    def __init__(self) -> None:
        super().__init__()
        self.lesions = True

    def __call__(self, image: ImageInput, engines: Sequence[str]) -> ImageResult:
        result = super().__call__(image, engines)
        if not self.lesions:
            result.lesions = []
        return result


def one_archive(ae_title: str, port: int) -> dict[str, object]:
    """Config overrides: one real destination ``archive``, three attempts."""
    return {
        "destinations": [
            Destination(name="archive", ae_title=ae_title, host="127.0.0.1", port=port)
        ],
        "pipeline": Pipeline(
            called_ae="NODE", completion=Completion(quiet_seconds=30), destinations=["archive"]
        ),
        "export": ExportPolicy(max_attempts=3, backoff_initial_seconds=10),
    }


def due_paths(harness: NodeHarness) -> list[str]:
    """The files of the exports now due to ``archive``."""
    items = harness.node.index.due_exports("archive", harness.clock.now(), 100)
    return [p for item in items for p in item.paths]


def test_sop_class_without_accepted_context_fails_alone_and_at_once(
    make_node: MakeNode, archive_without_seg: tuple[int, list[str]]
) -> None:
    port, received = archive_without_seg
    analyzer = SwitchableAnalyzer()
    harness = make_node(analyzer=analyzer, **one_archive("NOSEG", port))
    harness.store(make_study(2))
    harness.settle()
    objects = [dcmread(p) for p in due_paths(harness)]
    accepted = {str(ds.SOPInstanceUID) for ds in objects if ds.SOPClassUID != SegmentationStorage}
    assert accepted and len(accepted) < len(objects), "the results include a segmentation"
    exporter = harness.node.exporter

    assert exporter.run_destination("archive") == 1
    [failed] = IndexQueries(harness.node.index).exports(ExportState.FAILED)
    assert failed["attempts"] == 1, "permanent: no retry"
    assert "Segmentation Storage" in failed["last_error"]
    assert "NOSEG" in failed["last_error"]
    assert sorted(received) == sorted(accepted), "the rest of the batch was sent, once"

    harness.clock.advance(3600)
    assert exporter.run_destination("archive") == 0
    assert sorted(received) == sorted(accepted), "nothing sent again"

    analyzer.lesions = False
    harness.store(make_study(1))
    harness.settle()
    later = {str(dcmread(p).SOPInstanceUID) for p in due_paths(harness)}
    assert exporter.run_destination("archive") == 1
    assert [e["state"] for e in IndexQueries(harness.node.index).exports()] == [
        ExportState.DELIVERED.value,
        ExportState.FAILED.value,
    ]
    assert sorted(received) == sorted(accepted | later)


def test_unreadable_result_file_fails_its_export_at_once(
    make_node: MakeNode, storage_scp: tuple[int, list[str]]
) -> None:
    port, received = storage_scp
    harness = make_node(**one_archive("GOOD", port))
    harness.store(make_study(1))
    harness.settle()
    broken, *others = due_paths(harness)
    sent = {str(dcmread(p).SOPInstanceUID) for p in others}
    Path(broken).write_bytes(b"not a DICOM file")

    assert harness.node.exporter.run_destination("archive") == 1
    [failed] = IndexQueries(harness.node.index).exports(ExportState.FAILED)
    assert failed["attempts"] == 1
    assert "unreadable result file" in failed["last_error"]
    assert sorted(received) == sorted(sent)


def test_unexpected_error_is_counted_with_backoff(make_node: MakeNode) -> None:
    def broken(calling: str, target: Target, paths: Sequence[str]) -> list[SendOutcome]:
        raise KeyError("surprise")

    harness = make_node(sender=broken, **two_destinations())
    harness.store(make_study(1))
    harness.settle()
    exporter = harness.node.exporter
    assert exporter.run_destination("a") == 1, "counted, not raised"
    assert states(harness)["a"] == (ExportState.PENDING.value, 1)
    [export] = [e for e in IndexQueries(harness.node.index).exports() if e["destination"] == "a"]
    # The type is kept, the quoted value redacted (it could be a data set's).
    assert export["last_error"] == "unexpected KeyError: '...'"
    assert exporter.run_destination("a") == 0, "not due before the backoff"
    for delay, attempts in ((10, 2), (20, 3)):
        harness.clock.advance(delay - 1)
        assert exporter.run_destination("a") == 0
        harness.clock.advance(1)
        assert exporter.run_destination("a") == 1
        assert states(harness)["a"] == (ExportState.PENDING.value, attempts)
    harness.clock.advance(25)
    exporter.run_destination("a")
    assert states(harness)["a"] == (ExportState.FAILED.value, 4)


def test_hung_archive_does_not_delay_a_live_one(
    tmp_path: Path, hanging_server: int, storage_scp: tuple[int, list[str]]
) -> None:
    """With real workers: the live destination gets results while the hung one blocks."""
    from dicom_node.service import Node, Stages
    from dicom_node.stages import build, decode
    from tests.dicom_node.conftest import node_config
    from tests.dicom_node.fake_engine import FakeAnalyzer

    good_port, received = storage_scp
    config = node_config(
        tmp_path,
        destinations=[
            Destination(name="hung", ae_title="HUNG", host="127.0.0.1", port=hanging_server),
            Destination(name="good", ae_title="GOOD", host="127.0.0.1", port=good_port),
        ],
        pipeline=Pipeline(
            called_ae="NODE",
            completion=Completion(quiet_seconds=0.1),
            destinations=["hung", "good"],
        ),
        limits={"min_free_disk_mb": 0, "acse_timeout": 20},
    )
    node = Node(config, Stages(analyze=FakeAnalyzer(), decode=decode, build=build))
    node.start()
    try:
        harness = NodeHarness(node, None, None)  # type: ignore[arg-type]
        harness.store(make_study(1))
        exports: dict[str, str] = {}

        def good_delivered() -> bool:
            exports.update(
                (e["destination"], e["state"]) for e in IndexQueries(node.index).exports()
            )
            return exports.get("good") == ExportState.DELIVERED.value

        wait_until(good_delivered, 60, "delivery to the live archive")
        assert received, "the live archive got nothing while the other one hung"
        assert exports["good"] == ExportState.DELIVERED.value
        assert exports["hung"] == ExportState.PENDING.value
    finally:
        node.stop()


def test_an_association_failure_says_why(make_node: Callable[..., NodeHarness]) -> None:
    from dicom_node.export import c_echo

    harness = make_node()
    with pytest.raises(AssociationFailed, match=r"rejected \(Rejected Permanent, .*[Cc]alled AE"):
        c_echo("MODALITY", Target("NOBODY", "127.0.0.1", harness.port, None, 5))
    with pytest.raises(AssociationFailed, match="not connected: nothing answers there"):
        c_echo("MODALITY", Target("NODE", "127.0.0.1", free_port(), None, 5))
