"""Fuzzing with Hypothesis (derandomized, bounded): mutated data sets and mutated PDUs.

Whatever arrives, the node answers with a status or ends the association,
keeps serving, keeps only what it acknowledged (readable), and processes the
acknowledged instances without failing the job.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pynetdicom import AE

from dicom_node.index import IndexQueries, JobState
from tests.dicom_node.conftest import NodeHarness, make_study
from tests.reliability.harness import (
    associate,
    echo_ok,
    encode,
    requestor,
    send_raw,
    wait_until,
)

MakeNode = Callable[..., NodeHarness]
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
STUDY_UID = "1.2.826.0.1.3680043.8.498.424242"
FUZZ_SETTINGS = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ANSWERS = {0x0000, 0xA700, 0xA900, 0xC000, None}


def _base() -> tuple[bytes, str]:
    (ds,) = make_study(1, rows=16, columns=16, study_uid=STUDY_UID)
    ds.SeriesInstanceUID = STUDY_UID + ".1"
    ds.SOPInstanceUID = STUDY_UID + ".1.1"
    return encode(ds), str(ds.SOPInstanceUID)


BASE, BASE_SOP = _base()

Mutation = tuple[str, int, bytes]
mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "length"]),
        st.integers(0, len(BASE) - 1),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, steps: list[Mutation]) -> bytes:
    """Apply byte flips, truncations, insertions and absurd 32-bit lengths.

    At least one byte is kept: a C-STORE without a data set is a request the
    peer has not finished, which the node waits for until its timeouts.
    """
    buffer = bytearray(data)
    for op, position, value in steps:
        at = position % max(len(buffer), 1)
        if op == "flip":
            buffer[at] ^= value[0] or 0xFF
        elif op == "truncate":
            del buffer[max(at, 1) :]
        elif op == "insert":
            buffer[at:at] = value
        else:
            buffer[at : at + 4] = struct.pack("<L", 0xFFFFFFF0 - value[0])
    return bytes(buffer)


def test_mutated_datasets(make_node: MakeNode, figures: dict[str, object]) -> None:
    harness = make_node()
    answers: dict[int | None, int] = {}

    @FUZZ_SETTINGS
    @given(steps=mutations)
    def send(steps: list[Mutation]) -> None:
        assoc = associate(harness.port)
        assert assoc.is_established
        status = send_raw(assoc, mutate(BASE, steps), US_IMAGE, BASE_SOP)
        if assoc.is_established:
            assoc.release()
        assert status in ANSWERS
        answers[status] = answers.get(status, 0) + 1

    send()
    assert echo_ok(harness.port)
    stored = harness.node.spool.instance_files()
    for path in stored:
        assert dcmread(path).SOPInstanceUID == BASE_SOP
    harness.settle()
    jobs = IndexQueries(harness.node.index).jobs()
    assert all(j["state"] == JobState.DONE.value for j in jobs), jobs
    figures.update(
        datasets_tried=sum(answers.values()),
        answers={f"0x{k:04X}" if k is not None else "none": v for k, v in answers.items()},
    )


def _association_request(port: int) -> bytes:
    """The A-ASSOCIATE-RQ PDU pynetdicom sends, captured from a listening socket."""
    captured: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as server:

        def capture() -> None:
            client, _ = server.accept()
            with client:
                header = client.recv(6, socket.MSG_WAITALL)
                length = struct.unpack(">L", header[2:])[0]
                captured.append(header + client.recv(length, socket.MSG_WAITALL))

        thread = threading.Thread(target=capture)
        thread.start()
        ae: AE = requestor()
        ae.acse_timeout = 1
        ae.associate("127.0.0.1", server.getsockname()[1], ae_title="NODE")
        thread.join()
    return captured[0]


@pytest.mark.integration
def test_mutated_pdus(make_node: MakeNode, figures: dict[str, object]) -> None:
    harness = make_node(limits={"min_free_disk_mb": 0, "acse_timeout": 2, "network_timeout": 2})
    request = _association_request(harness.port)
    tried = []

    @FUZZ_SETTINGS
    @given(steps=mutations)
    def send(steps: list[Mutation]) -> None:
        with socket.create_connection(("127.0.0.1", harness.port), timeout=10) as sock:
            try:
                sock.sendall(mutate(request, steps))
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(4096):
                    continue
            except OSError:
                pass  # the node closed the connection first
        tried.append(steps)

    send()
    # Broken requests hold their thread up to the ACSE timeout, then the node serves again.
    wait_until(lambda: echo_ok(harness.port), 30, "the node to serve after the fuzzing")
    figures.update(pdus_tried=len(tried))
