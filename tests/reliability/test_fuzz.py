"""Fuzzing with Hypothesis (derandomized, bounded): mutated data sets, mutated
association requests and mutated C-STORE command sets.

Whatever arrives, the node answers with a status or ends the association,
keeps serving, keeps only what it acknowledged (readable), and processes the
acknowledged instances without failing the job.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ

from dicom_node.index import IndexQueries, JobState
from tests.dicom_node.conftest import NodeHarness, make_study
from tests.reliability.harness import (
    associate,
    echo_ok,
    encode,
    requestor,
    send_raw,
    store_request,
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


def _association_request(port: int, contexts: Sequence[str] = ()) -> bytes:
    """The A-ASSOCIATE-RQ PDU pynetdicom sends (proposing ``contexts``, see
    :func:`~tests.reliability.harness.requestor`), captured from a listening socket."""
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
        ae: AE = requestor(contexts=contexts)
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


def _store_command() -> bytes:
    """The command set pynetdicom encodes for a C-STORE-RQ of :data:`BASE`."""
    message = C_STORE_RQ()
    message.primitive_to_message(store_request(BASE, US_IMAGE, BASE_SOP))
    (first, *_) = message.encode_msg(1, 0)
    return bytes(first.presentation_data_value_list[0][1][1:])


def _p_data(context_id: int, command: bytes, data: bytes) -> bytes:
    """A P-DATA-TF PDU: the whole command set in one PDV, the whole data set in another."""
    items = b"".join(
        struct.pack(">IB", len(value) + 1, context_id) + value
        for value in (b"\x03" + command, b"\x02" + data)
    )
    return struct.pack(">BBI", 0x04, 0, len(items)) + items


A_RELEASE_RQ = struct.pack(">BBIL", 0x05, 0, 4, 0)


def _read_pdu(sock: socket.socket) -> bytes | None:
    """The next PDU from the node, ``None`` once it closed the connection."""
    try:
        header = sock.recv(6, socket.MSG_WAITALL)
        if len(header) < 6:
            return None
        length = struct.unpack(">L", header[2:])[0]
        return header + sock.recv(length, socket.MSG_WAITALL)
    except OSError:
        return None


@pytest.mark.integration
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("part", ["command set", "P-DATA-TF PDU"])
def test_mutated_store_requests(part: str, make_node: MakeNode,
                                figures: dict[str, object]) -> None:
    # The command set is what the node parses itself (dicom_node/store_request.py) before
    # anything of pynetdicom's; the whole PDU also exercises PDV framing and PDU lengths.
    # Whatever arrives, the node answers, releases, aborts or closes, and frees the
    # association's place.
    harness = make_node(limits={"min_free_disk_mb": 0, "network_timeout": 2,
                                "dimse_timeout": 2, "acse_timeout": 2})
    request = _association_request(harness.port, contexts=[US_IMAGE])
    command = _store_command()
    outcomes: Counter[str] = Counter()

    def p_data(steps: list[Mutation]) -> bytes:
        # Context 1: the US image class in Explicit VR Little Endian.
        if part == "command set":
            return _p_data(1, mutate(command, steps), BASE)
        return mutate(_p_data(1, command, BASE), steps)

    @FUZZ_SETTINGS
    @given(steps=mutations)
    def send(steps: list[Mutation]) -> None:
        with socket.create_connection(("127.0.0.1", harness.port), timeout=30) as sock:
            sock.sendall(request)
            accepted = _read_pdu(sock)
            assert accepted is not None and accepted[0] == 0x02
            with contextlib.suppress(OSError):  # the node closed the connection first
                sock.sendall(p_data(steps) + A_RELEASE_RQ)
            kinds = []
            while (pdu := _read_pdu(sock)) is not None:
                kinds.append({0x04: "answer", 0x06: "released", 0x07: "aborted"}[pdu[0]])
        outcomes[" ".join(kinds) or "closed"] += 1

    send()
    assert echo_ok(harness.port)
    harness.wait_for_associations_closed(30)
    for path in harness.node.spool.instance_files():
        assert dcmread(path).SOPInstanceUID == BASE_SOP
    key = part.split()[0].lower().replace("-", "_")
    figures.update({f"store_{key}s_tried": sum(outcomes.values()),
                    f"store_{key}_outcomes": dict(outcomes)})


def _without_command_field(command: bytes) -> bytes:
    """``command`` without its Command Field (0000,0100), group length kept as it was."""
    at = command.index(struct.pack("<HHI", 0, 0x0100, 2))
    return command[:at] + command[at + 10:]


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


BROKEN_MESSAGES = {
    "empty PDV": _pdu(0x04, struct.pack(">IB", 1, 1)),
    "data set without a command": _pdu(0x04, struct.pack(">IB", 3, 1) + b"\x02\x00"),
    "command without a Command Field": _p_data(1, _without_command_field(_store_command()), BASE),
    "PDV longer than its PDU": _pdu(0x04, struct.pack(">IB", 4096, 1) + b"\x03\x00"),
    "unknown PDU type": _pdu(0x09, b"\x00" * 8),
}


@pytest.mark.parametrize("message", sorted(BROKEN_MESSAGES))
def test_broken_messages_end_the_association_and_free_its_place(
        message: str, make_node: MakeNode) -> None:
    # The ACSE and network timeouts bound how long the node waits for the peer to close
    # after an abort, and for the rest of a PDU it reads.
    harness = make_node(limits={"min_free_disk_mb": 0, "acse_timeout": 2, "network_timeout": 2})
    request = _association_request(harness.port, contexts=[US_IMAGE])
    with socket.create_connection(("127.0.0.1", harness.port), timeout=20) as sock:
        sock.sendall(request)
        accepted = _read_pdu(sock)
        assert accepted is not None and accepted[0] == 0x02
        sock.sendall(BROKEN_MESSAGES[message])
        kinds = []
        while (pdu := _read_pdu(sock)) is not None:
            kinds.append(pdu[0])
    assert kinds and set(kinds) == {0x07}  # A-ABORT, then the node closed the connection
    harness.wait_for_associations_closed(10)
    assert echo_ok(harness.port)
