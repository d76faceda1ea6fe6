"""Configurable limits: concurrent associations (total and per IP), PDU and instance size."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest
from pynetdicom.association import Association
from sqlalchemy.exc import OperationalError

from dicom_node.config import Caller, Completion, Limits, Pipeline
from dicom_node.index import IndexQueries
from dicom_node.network import NoDelayAssociationServer
from tests.dicom_node.conftest import NodeHarness, make_study
from tests.peers import wait_until
from tests.reliability.harness import requestor

MakeNode = Callable[..., NodeHarness]


def test_defaults_are_bounded() -> None:
    limits = Limits()
    assert limits.max_associations_per_ip <= limits.max_associations <= 64
    assert 0 < limits.max_pdu <= 1 << 20
    assert max(limits.acse_timeout, limits.dimse_timeout, limits.network_timeout) <= 120
    assert limits.min_free_disk_mb > 0


def test_maximum_concurrent_associations(make_node: MakeNode) -> None:
    harness = make_node(limits={"min_free_disk_mb": 0, "max_associations": 3})
    open_ = [harness.associate() for _ in range(3)]
    assert all(a.is_established for a in open_)
    assert harness.associate().is_rejected
    open_.pop().release()
    wait_until(
        lambda: any(
            a["accepted"] and a["ended_at"] is not None
            for a in IndexQueries(harness.node.index).associations()
        ),
        30,
        "the node to count the released association out",
        interval=0.02,
    )
    again = harness.associate()
    assert again.is_established
    for assoc in [*open_, again]:
        assoc.release()
    reasons = [r["reject_reason"] for r in IndexQueries(harness.node.index).associations()]
    assert reasons.count("maximum concurrent associations reached") == 1


def test_maximum_associations_per_ip(make_node: MakeNode) -> None:
    harness = make_node(limits={"min_free_disk_mb": 0, "max_associations_per_ip": 2})
    local = [harness.associate() for _ in range(2)]
    assert all(a.is_established for a in local)
    assert harness.associate().is_rejected
    other_ip = requestor().associate(
        "127.0.0.1", harness.port, ae_title="NODE", bind_address=("127.0.0.2", 0)
    )
    assert other_ip.is_established, "a second address is limited by the first one's count"
    for assoc in [*local, other_ip]:
        assoc.release()
    record = IndexQueries(harness.node.index).associations(accepted=False)[0]
    assert record["reject_reason"] == "maximum associations from 127.0.0.1 reached"


def test_silent_connections_from_one_address_cannot_take_every_slot(make_node: MakeNode) -> None:
    harness = make_node(limits={"min_free_disk_mb": 0, "max_associations_per_ip": 2})
    silent = [socket.create_connection(("127.0.0.1", harness.port)) for _ in range(4)]
    with socket.create_connection(("127.0.0.1", harness.port)) as extra:
        extra.settimeout(20)
        assert extra.recv(1) == b"", "a fifth silent connection from one address was kept"
    other_ip = requestor().associate(
        "127.0.0.1", harness.port, ae_title="NODE", bind_address=("127.0.0.2", 0)
    )
    assert other_ip.is_established
    other_ip.release()
    for sock in silent:
        sock.close()


def _silent(port: int, host: str) -> socket.socket:
    """A connection from ``host`` that never sends its A-ASSOCIATE-RQ."""
    return socket.create_connection(("127.0.0.1", port), source_address=(host, 0))


def test_silent_connections_from_several_addresses_do_not_refuse_an_admitted_association(
        make_node: MakeNode) -> None:
    # Twelve silent connections, two from each of six addresses (each address's cap):
    # pynetdicom counted them with the associations and refused the next one the node
    # had admitted (and logged as accepted) once they passed its limit.
    harness = make_node(limits={"min_free_disk_mb": 0, "max_associations": 2,
                                "max_associations_per_ip": 1})
    silent = [_silent(harness.port, f"127.0.0.{2 + n // 2}") for n in range(12)]
    assoc = harness.associate()
    assert assoc.is_established
    assoc.release()
    for sock in silent:
        sock.close()
    records = IndexQueries(harness.node.index).associations()
    assert [r["accepted"] for r in records] == [True]


def test_connections_without_an_association_are_capped(
        make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NoDelayAssociationServer, "max_unadmitted", 3)
    # A connection that never asks ends after the ACSE timeout, and frees its place.
    harness = make_node(limits={"min_free_disk_mb": 0, "acse_timeout": 2})
    silent = [_silent(harness.port, f"127.0.0.{2 + n}") for n in range(3)]
    with _silent(harness.port, "127.0.0.9") as extra:
        extra.settimeout(20)
        assert extra.recv(1) == b"", "a fourth connection without an association was kept"
    wait_until(lambda: _associates(harness), 30, "a connection to be taken again")
    for sock in silent:
        sock.close()


def _associates(harness: NodeHarness) -> bool:
    """Whether an association can be made (and released) now."""
    assoc = harness.associate()
    established = bool(assoc.is_established)
    if established:
        assoc.release()
    return established


def test_maximum_pdu_is_announced(make_node: MakeNode) -> None:
    harness = make_node(limits={"min_free_disk_mb": 0, "max_pdu": 16384})
    assoc = harness.associate()
    assert assoc.acceptor.maximum_length == 16384
    (ds,) = make_study(1)
    assert int(assoc.send_c_store(ds).Status) == 0, "a large instance over small PDUs"
    assoc.release()


def test_maximum_instance_size(make_node: MakeNode) -> None:
    harness = make_node(limits={"min_free_disk_mb": 0, "max_instance_mb": 0.04})
    (big,) = make_study(1)
    (small,) = make_study(1, rows=32, columns=32)
    assert harness.store([big, small]) == [0xA700, 0]
    assert len(harness.node.spool.instance_files()) == 1


def test_concurrent_requests_cannot_overshoot_the_limit(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first requests are held in their index write, so the others are judged while
    # they are not yet established: their slots must count all the same.
    harness = make_node(limits={"min_free_disk_mb": 0, "max_associations": 2})
    index = harness.node.receiver.index
    record = index.open_association
    go_on = threading.Event()

    def held(*args: object, accepted: bool, **kwargs: object) -> int:
        if accepted:
            go_on.wait(30)
        return record(*args, accepted=accepted, **kwargs)

    monkeypatch.setattr(index, "open_association", held)
    results: list[Association] = []
    lock = threading.Lock()

    def request() -> None:
        assoc = harness.associate()
        with lock:
            results.append(assoc)

    threads = [threading.Thread(target=request) for _ in range(5)]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: sum(1 + r["repeats"]  # alike rejections share a record
                    for r in IndexQueries(harness.node.index).associations(accepted=False)) == 3,
        30, "three requests rejected while two are held", interval=0.02,
    )
    go_on.set()
    for thread in threads:
        thread.join(30)
    assert sorted(a.is_established for a in results) == [False, False, False, True, True]
    for assoc in results:
        if assoc.is_established:
            assoc.release()


def test_an_index_failure_while_admitting_rejects_the_association(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline(called_ae="NODE", allowed_callers=[Caller(ae_title="US_ROOM")],
                        completion=Completion(quiet_seconds=30))
    harness = make_node(pipeline=pipeline, limits={"min_free_disk_mb": 0})
    index = harness.node.receiver.index
    record = index.open_association

    def broken(*args: object, **kwargs: object) -> int:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(index, "open_association", broken)
    # pynetdicom accepts an association whose request handler raised: neither a caller
    # outside the list nor a listed one may get in while the index cannot record them.
    assert harness.associate(calling="STRANGER").is_rejected
    assert harness.associate(calling="US_ROOM").is_rejected
    monkeypatch.setattr(index, "open_association", record)
    allowed = harness.associate(calling="US_ROOM")
    assert allowed.is_established
    allowed.release()
