"""C-STORE requests assembled directly are the primitives pynetdicom builds."""

from __future__ import annotations

import struct
from collections.abc import Callable
from io import BytesIO
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, _config, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_ECHO_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from dicom_node.reactor import EventDrivenAssociation
from dicom_node.store_request import (
    MAX_OTHER_DATA_SET_BYTES,
    MAX_QUEUED_REQUESTS,
    DirectStore,
    DiscardedStore,
    StoreRequestDIMSE,
    parse_store_command,
)
from tests.dicom_node.conftest import NodeHarness, make_study
from tests.peers import storescu

US_IMAGE = b"1.2.840.10008.5.1.4.1.1.6.1\x00"
ODD = b"1.2.826.0.1.3680043.8.498.1234567\x00"  # 33 characters: padded with a NUL
EVEN = b"1.2.826.0.1.3680043.8.498.12345678"
LENGTH_TO_END = (0x0001, b"\x00\x00\x00\x00")
"""A retired command element (ACR-NEMA): the node leaves such a request to pynetdicom."""
DATA = bytes(range(256)) * 160
FIELDS = (
    "MessageID",
    "Priority",
    "AffectedSOPClassUID",
    "AffectedSOPInstanceUID",
    "MoveOriginatorApplicationEntityTitle",
    "MoveOriginatorMessageID",
)

Element = tuple[int, bytes]


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _command(elements: list[Element]) -> bytes:
    """A command set of ``elements`` (group 0000, Implicit VR LE) with its group length."""
    body = b"".join(struct.pack("<HHI", 0, tag, len(value)) + value for tag, value in elements)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def _store(instance: bytes = ODD, message_id: int = 7, priority: int = 2,
           extra: list[Element] | None = None) -> list[Element]:
    """The elements of a C-STORE-RQ (PS3.7 table 9.3-1), plus ``extra``, in tag order."""
    elements = [
        (0x0002, US_IMAGE),
        (0x0100, _us(0x0001)),
        (0x0110, _us(message_id)),
        (0x0700, _us(priority)),
        (0x0800, _us(0x0000)),
        (0x1000, instance),
        *(extra or []),
    ]
    return sorted(elements)


def _pdvs(command: bytes, data: bytes = DATA, fragment: int = 0, context_id: int = 3
          ) -> list[tuple[int, bytes]]:
    """The command in one PDV and the data set in fragments of ``fragment`` bytes (0: one)."""
    size = fragment or len(data)
    chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    return [(context_id, b"\x03" + command)] + [
        (context_id, bytes([0x02 if i == len(chunks) - 1 else 0x00]) + chunk)
        for i, chunk in enumerate(chunks)
    ]


def _primitives(pdvs: list[tuple[int, bytes]], per_pdata: int) -> list[P_DATA]:
    """P-DATA primitives of ``per_pdata`` PDVs each, as the DUL makes them of the
    P-DATA-TF PDUs it reads."""
    out = []
    for i in range(0, len(pdvs), per_pdata):
        items = b"".join(struct.pack(">IB", len(data) + 1, context_id) + data
                         for context_id, data in pdvs[i:i + per_pdata])
        pdu = P_DATA_TF()
        pdu.decode(struct.pack(">BBI", 0x04, 0, len(items)) + items)
        out.append(pdu.to_primitive())
    return out


Outcome = tuple[list[tuple[int, object]], list[str]]


def _receive(provider: type[DIMSEServiceProvider], primitives: list[P_DATA],
             monkeypatch: pytest.MonkeyPatch, bind: bool = False, limit: int | None = None
             ) -> tuple[Outcome, bool]:
    """What the provider queues for the association (messages, DUL events), and whether
    pynetdicom's own assembly ran; ``limit``: the node's data set size limit."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")  # as the node runs
    assoc = EventDrivenAssociation(AE(), MODE_ACCEPTOR)
    if provider is StoreRequestDIMSE:
        assoc.dimse = StoreRequestDIMSE(assoc, limit)
    else:
        assoc.dimse = provider(assoc)
    if bind:
        assoc.bind(evt.EVT_DIMSE_RECV, lambda event: None)
    through_pynetdicom: list[P_DATA] = []
    original = DIMSEServiceProvider.receive_primitive

    def spy(self: DIMSEServiceProvider, primitive: P_DATA) -> None:
        if provider is not DIMSEServiceProvider:
            through_pynetdicom.append(primitive)
        original(self, primitive)

    monkeypatch.setattr(DIMSEServiceProvider, "receive_primitive", spy)
    for primitive in primitives:
        assoc.dimse.receive_primitive(primitive)
    return _drained(assoc), bool(through_pynetdicom)


def _drained(assoc: EventDrivenAssociation) -> Outcome:
    """The messages the provider queued for the association and the DUL events it raised."""
    queued = []
    while not assoc.dimse.msg_queue.empty():
        queued.append(assoc.dimse.msg_queue.get())
    events = []
    while not assoc.dul.event_queue.empty():
        events.append(assoc.dul.event_queue.get())
    return queued, events


def _comparable(outcome: Outcome) -> Outcome:
    """Messages as (context ID, type, field values and types, data set bytes); a
    :class:`DirectStore` counts as the ``C_STORE`` it is."""
    queued, events = outcome
    described: list[tuple[int, object]] = []
    for context_id, primitive in queued:
        fields = tuple((f, getattr(primitive, f, None), type(getattr(primitive, f, None)))
                       for f in FIELDS)
        data = getattr(primitive, "DataSet", None)
        described.append((
            context_id,
            (C_STORE if isinstance(primitive, DirectStore) else type(primitive),
             primitive._context_id, fields,  # type: ignore[attr-defined]
             data.getvalue() if isinstance(data, BytesIO) else data),
        ))
    return described, events


def _compare(primitives: list[P_DATA], monkeypatch: pytest.MonkeyPatch, bind: bool = False
             ) -> tuple[Outcome, bool]:
    expected, _ = _receive(DIMSEServiceProvider, primitives, monkeypatch, bind)
    got, through_pynetdicom = _receive(StoreRequestDIMSE, primitives, monkeypatch, bind)
    assert _comparable(got) == _comparable(expected)
    return got, through_pynetdicom


@pytest.mark.parametrize("instance", [ODD, EVEN, b"1.2.3.4 ", b"1.2.3\x00\x00", b" 1.2.3.4"])
@pytest.mark.parametrize(("message_id", "priority"), [(1, 0), (65535, 2)])
@pytest.mark.parametrize(("fragment", "per_pdata"), [(0, 2), (4096, 1), (4096, 3)])
def test_plain_requests_are_assembled_directly(
        instance: bytes, message_id: int, priority: int, fragment: int, per_pdata: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    command = _command(_store(instance, message_id, priority))
    (queued, events), through_pynetdicom = _compare(
        _primitives(_pdvs(command, fragment=fragment), per_pdata), monkeypatch)
    assert len(queued) == 1 and not events
    assert not through_pynetdicom


def test_a_request_of_a_move_is_assembled_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = [(0x1030, b"PACS            "), (0x1031, _us(9))]
    command = _command(_store(extra=extra))
    (queued, _), through_pynetdicom = _compare(_primitives(_pdvs(command), 2), monkeypatch)
    assert queued[0][1].MoveOriginatorApplicationEntityTitle == "PACS"  # type: ignore[attr-defined]
    assert not through_pynetdicom


@pytest.mark.parametrize("enforced", [False, True])
def test_a_nonconformant_uid_is_taken_as_pynetdicom_takes_it(
        enforced: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Leading zeros and letters: pynetdicom accepts such a UID unless told to
    # enforce conformance, and then aborts.
    monkeypatch.setattr(_config, "ENFORCE_UID_CONFORMANCE", enforced)
    command = _command(_store(instance=b"1.02.3.abc\x00"))
    (queued, events), through_pynetdicom = _compare(_primitives(_pdvs(command), 2), monkeypatch)
    assert bool(through_pynetdicom) == enforced
    assert (len(queued), events) == ((0, ["Evt19"]) if enforced else (1, []))


def _echo() -> bytes:
    echo = C_ECHO()
    echo.MessageID = 5
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(echo)
    (pdata,) = message.encode_msg(1, 0)
    return bytes(pdata.presentation_data_value_list[0][1][1:])


@pytest.mark.parametrize(
    "command",
    [
        _echo(),
        _command(_store(extra=[LENGTH_TO_END])),
        _command(_store(extra=[(0x0600, b"\x00\x00")])),  # an element C-STORE has not
        _command(_store(instance=b"1." * 33)),  # 66 characters: pynetdicom aborts
        _command(_store(instance=b"1.2.3\\1.2.4\x00")),  # two values
        _command(_store(instance=b"1.2.\xff")),  # not ASCII
        _command(_store(instance=b"1.2\x01.3.4\x00")),  # a control character
        _command(_store(instance=b"")),  # empty: pynetdicom finds the request invalid
        # a C-STORE-RQ that says it has no data set
        _command([e if e[0] != 0x0800 else (0x0800, _us(0x0101)) for e in _store()]),
        _command(_store())[:-4],  # truncated
        _command(_store())[:8] + struct.pack("<I", 4) + _command(_store())[12:],  # group length
        _command([(0x0110, _us(7)), *[e for e in _store() if e[0] != 0x0110]]),  # out of order
    ],
    ids=["echo", "length-to-end", "foreign-element", "long-uid", "two-uids", "not-ascii",
         "control-character", "empty-uid", "no-data-set", "truncated", "group-length",
         "out-of-order"],
)
def test_other_messages_go_through_pynetdicom(command: bytes,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _, through_pynetdicom = _compare(_primitives(_pdvs(command), 2), monkeypatch)
    assert through_pynetdicom


def _in_fragments(command: bytes, cuts: tuple[int, ...], context_id: int = 3
                  ) -> list[tuple[int, bytes]]:
    """The PDVs of ``command`` cut at ``cuts`` (the last one marked last)."""
    bounds = [0, *cuts, len(command)]
    return [(context_id, (b"\x03" if end == len(command) else b"\x01") + command[start:end])
            for start, end in pairwise(bounds)]


@pytest.mark.parametrize("cuts", [(40,), (1, 40, 90)])
@pytest.mark.parametrize("per_pdata", [1, 3])
def test_a_command_set_in_fragments_is_assembled_directly(
        cuts: tuple[int, ...], per_pdata: int, monkeypatch: pytest.MonkeyPatch) -> None:
    command = _command(_store())
    pdvs = [*_in_fragments(command, cuts), *_pdvs(command, fragment=4096)[1:]]
    (queued, events), through_pynetdicom = _compare(_primitives(pdvs, per_pdata), monkeypatch)
    assert len(queued) == 1 and not events and not through_pynetdicom
    assert type(queued[0][1]) is DirectStore


@pytest.mark.parametrize("command", [_echo(), _command(_store(instance=b"1." * 33))],
                         ids=["echo", "long-uid"])
def test_other_messages_in_fragments_go_through_pynetdicom(
        command: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    pdvs = _in_fragments(command, (20,), context_id=1 if command == _echo() else 3)
    if command != _echo():
        pdvs += _pdvs(command)[1:]
    _, through_pynetdicom = _compare(_primitives(pdvs, 1), monkeypatch)
    assert through_pynetdicom


def test_command_fragments_that_do_not_form_a_command_set_go_to_pynetdicom(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A data set fragment before the command set's last fragment, a command set's
    # fragments on two presentation contexts, and command fragments beyond 64 kB:
    # pynetdicom gets every fragment held.
    command = _command(_store())
    first, last = _in_fragments(command, (40,))
    huge = [(3, b"\x01" + bytes(40000)), (3, b"\x01" + bytes(40000)), (3, b"\x03" + command)]
    for pdvs in ([first, *_pdvs(command)[1:]], [first, (5, last[1]), *_pdvs(command)[1:]],
                 [*huge, *_pdvs(command)[1:]]):
        _, through_pynetdicom = _compare(_primitives(pdvs, 1), monkeypatch)
        assert through_pynetdicom


def test_a_bound_receive_handler_gets_pynetdicoms_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, through_pynetdicom = _compare(_primitives(_pdvs(_command(_store())), 2), monkeypatch,
                                     bind=True)
    assert through_pynetdicom


def test_two_messages_in_one_primitive_are_both_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    pdvs = _pdvs(_command(_store(message_id=1))) + _pdvs(_command(_store(message_id=2)))
    (queued, events), through_pynetdicom = _receive(
        StoreRequestDIMSE, _primitives(pdvs, len(pdvs)), monkeypatch)
    assert [p.MessageID for _, p in queued] == [1, 2]  # type: ignore[attr-defined]
    assert not events and not through_pynetdicom


def test_a_store_after_a_message_of_pynetdicoms_is_assembled_directly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pdvs = [(1, b"\x03" + _echo()), *_pdvs(_command(_store()))]
    (queued, _), _ = _compare(_primitives(pdvs, 1), monkeypatch)
    assert [type(p) for _, p in queued] == [C_ECHO, DirectStore]


@pytest.mark.parametrize("intruder", [b"\x03" + _command(_store()), b""])
def test_a_command_inside_a_data_set_aborts(intruder: bytes,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pdvs = _pdvs(_command(_store()), fragment=4096)
    pdvs.insert(2, (3, intruder))
    (queued, events), _ = _receive(StoreRequestDIMSE, _primitives(pdvs, 1), monkeypatch)
    assert not queued and events == ["Evt19"]


@pytest.mark.parametrize("per_pdata", [1, 20])
def test_a_data_set_beyond_the_limit_is_counted_not_kept(
        per_pdata: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The request is still answered (the handler refuses a DiscardedStore with
    # Out of Resources), but no more than the limit is ever held.
    pdvs = _pdvs(_command(_store()), fragment=4096)
    expected, _ = _receive(DIMSEServiceProvider, _primitives(pdvs, per_pdata), monkeypatch)
    held = []
    original = StoreRequestDIMSE._take

    def spy(self: StoreRequestDIMSE, incoming: Any, data: bytes) -> None:
        original(self, incoming, data)
        held.append(incoming.data.tell())

    monkeypatch.setattr(StoreRequestDIMSE, "_take", spy)
    (queued, events), _ = _receive(StoreRequestDIMSE, _primitives(pdvs, per_pdata),
                                   monkeypatch, limit=10000)
    ((context_id, request),) = queued
    assert isinstance(request, DiscardedStore) and request.received_bytes == len(DATA)
    assert request.DataSet.getvalue() == b"" and not events
    assert max(held) <= 10000
    (_, pynetdicoms), = expected[0]
    assert context_id == 3 and all(
        getattr(request, f) == getattr(pynetdicoms, f) for f in FIELDS)


def test_a_data_set_at_the_limit_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    pdvs = _pdvs(_command(_store()), fragment=4096)
    (queued, _), _ = _receive(StoreRequestDIMSE, _primitives(pdvs, 1), monkeypatch,
                              limit=len(DATA))
    ((_, request),) = queued
    assert type(request) is DirectStore and request.DataSet.getvalue() == DATA


def test_a_message_of_pynetdicoms_beyond_the_limit_aborts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pdvs = _pdvs(_command(_store(extra=[LENGTH_TO_END])), fragment=4096)
    (queued, events), through_pynetdicom = _receive(
        StoreRequestDIMSE, _primitives(pdvs, 1), monkeypatch, limit=10000)
    assert through_pynetdicom and not queued and events == ["Evt19"]


@pytest.mark.parametrize(("size", "aborted"), [(MAX_OTHER_DATA_SET_BYTES, False),
                                               (2**20, True)])
def test_a_data_set_on_another_message_is_bounded_far_below_the_instance_limit(
        size: int, aborted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # A C-ECHO announcing a data set: with only the instance size limit (here 100 MB) a
    # peer could make the node hold that much per association for a message it ignores.
    echo = bytearray(_echo())
    echo[-2:] = _us(0x0000)  # CommandDataSetType: a data set follows
    pdvs = _pdvs(bytes(echo), data=bytes(size), fragment=4096, context_id=1)
    (queued, events), _ = _receive(StoreRequestDIMSE, _primitives(pdvs, 1), monkeypatch,
                                   limit=100 * 2**20)
    assert (events == ["Evt19"]) == aborted
    assert len(queued) == (0 if aborted else 1)


def test_the_parser_keeps_the_values_as_sent() -> None:
    elements = parse_store_command(_command(_store(EVEN)))
    assert elements is not None
    assert elements[0x1000] == EVEN and elements[0x0110] == _us(7)


def test_the_node_codes_requests_and_responses_directly(
        make_node: Callable[..., NodeHarness]) -> None:
    # StoreRequestDIMSE is a StoreResponseDIMSE: the direct responses come with it.
    harness = make_node()
    assoc = harness.associate()
    assert assoc.is_established
    accepted = harness.node._ae.active_associations  # type: ignore[attr-defined]
    assert accepted and all(isinstance(a.dimse, StoreRequestDIMSE) for a in accepted)
    assoc.release()


@pytest.mark.integration
@pytest.mark.parametrize("max_pdu", [16384, 262144])
def test_dcmtk_requests_take_the_direct_path(
        max_pdu: int, make_node: Callable[..., NodeHarness], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # DCMTK's storescu (the benchmarks' sender, and the SCU inside Orthanc and many
    # archives) encodes its requests as the direct assembly expects, in small and
    # large PDUs.  pynetdicom's logging handlers are off, as the node runs them.
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    harness = make_node(limits={"min_free_disk_mb": 0, "max_pdu": max_pdu})
    direct: list[C_STORE] = []
    through_pynetdicom: list[P_DATA] = []
    complete, original = StoreRequestDIMSE._complete, DIMSEServiceProvider.receive_primitive

    def spy_complete(self: StoreRequestDIMSE) -> None:
        direct.append(self._incoming.primitive)  # type: ignore[union-attr]
        complete(self)

    def spy_fallback(self: DIMSEServiceProvider, primitive: P_DATA) -> None:
        through_pynetdicom.append(primitive)
        original(self, primitive)

    monkeypatch.setattr(StoreRequestDIMSE, "_complete", spy_complete)
    monkeypatch.setattr(DIMSEServiceProvider, "receive_primitive", spy_fallback)
    files = []
    for number, ds in enumerate(make_study(3)):
        files.append(tmp_path / f"{number}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    sent = storescu(harness.port, files, called="NODE")
    assert sent.returncode == 0, sent.stderr
    assert (len(direct), len(through_pynetdicom)) == (3, 0)
    assert len(harness.node.spool.instance_files()) == 3


class RecordingWriter:
    """A data set writer that keeps what it is given."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.discarded = False

    def append(self, data: memoryview) -> None:
        self.data += data

    def discard(self) -> None:
        self.discarded = True


def _writing_provider(monkeypatch: pytest.MonkeyPatch, limit: int | None = None,
                      spill: int = 4096) -> tuple[StoreRequestDIMSE, list[RecordingWriter]]:
    """A provider whose direct requests each get a :class:`RecordingWriter` once they
    grow past ``spill`` bytes."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    assoc = EventDrivenAssociation(AE(), MODE_ACCEPTOR)
    writers: list[RecordingWriter] = []

    def open_writer(request: C_STORE, context_id: int) -> RecordingWriter:
        assert context_id == 3 and request.MessageID == 7
        writers.append(RecordingWriter())
        return writers[-1]

    assoc.dimse = StoreRequestDIMSE(assoc, limit, open_writer, spill)
    return assoc.dimse, writers


def test_a_large_data_set_goes_to_its_writer_as_it_arrives(
        monkeypatch: pytest.MonkeyPatch) -> None:
    dimse, writers = _writing_provider(monkeypatch)
    command, first, second, *rest = _primitives(_pdvs(_command(_store()), fragment=4096), 1)
    for primitive in (command, first):
        dimse.receive_primitive(primitive)
    assert not writers  # 4096 bytes: held in memory
    dimse.receive_primitive(second)
    (writer,) = writers
    assert bytes(writer.data) == DATA[:8192] and dimse.msg_queue.empty()
    for primitive in rest:
        dimse.receive_primitive(primitive)
    _, request = dimse.msg_queue.get()
    assert isinstance(request, DirectStore) and request.writer is writer
    assert bytes(writer.data) == DATA and request.DataSet.getvalue() == b""
    assert not writer.discarded


def test_a_data_set_within_the_spill_size_stays_in_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    dimse, writers = _writing_provider(monkeypatch, spill=len(DATA))
    for primitive in _primitives(_pdvs(_command(_store()), fragment=4096), 1):
        dimse.receive_primitive(primitive)
    _, request = dimse.msg_queue.get()
    assert not writers and request.writer is None
    assert request.DataSet.getvalue() == DATA


def test_a_writer_is_discarded_when_its_data_set_is_not_served(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pdvs = _pdvs(_command(_store()), fragment=4096)
    beyond, writers = _writing_provider(monkeypatch, limit=10000)
    for primitive in _primitives(pdvs, 1):
        beyond.receive_primitive(primitive)
    _, request = beyond.msg_queue.get()
    assert isinstance(request, DiscardedStore) and writers[0].discarded

    ended, writers = _writing_provider(monkeypatch)
    for primitive in _primitives([*pdvs, *pdvs[:3]], 1):  # one queued, one arriving
        ended.receive_primitive(primitive)
    assert ended.msg_queue.qsize() == 1 and not any(w.discarded for w in writers)
    ended.drop_unserved()  # the association ended
    assert len(writers) == 2 and all(w.discarded for w in writers)

    invalid, writers = _writing_provider(monkeypatch)
    for primitive in _primitives([*pdvs[:3], (3, b"\x03" + _command(_store()))], 1):
        invalid.receive_primitive(primitive)
    assert writers[0].discarded and invalid.msg_queue.empty()
    assert invalid.dul.event_queue.get() == "Evt19"


def _paced(pdvs: list[tuple[int, bytes]], seconds_apart: float,
           start: float = 0.0) -> list[tuple[float, P_DATA]]:
    """One P-DATA primitive per PDV, ``seconds_apart`` from each other."""
    return [(start + i * seconds_apart, primitive)
            for i, primitive in enumerate(_primitives(pdvs, 1))]


def _receive_paced(paced: list[tuple[float, P_DATA]]) -> Outcome:
    """What the node's provider queues and raises for primitives arriving at the given
    times of its clock (the AE's DIMSE timeout is pynetdicom's default, 30 s)."""
    now = [0.0]
    assoc = EventDrivenAssociation(AE(), MODE_ACCEPTOR)
    assoc.dimse = StoreRequestDIMSE(assoc, clock=lambda: now[0])
    for at, primitive in paced:
        now[0] = at
        assoc.dimse.receive_primitive(primitive)
    return _drained(assoc)


def _request(data: bytes, fragment: int, pynetdicoms: bool) -> list[tuple[int, bytes]]:
    """A C-STORE request the node assembles, or one pynetdicom does (the retired
    Length to End in its command set)."""
    return _pdvs(_command(_store(extra=[LENGTH_TO_END] if pynetdicoms else None)), data,
                 fragment)


@pytest.mark.parametrize("pynetdicoms", [False, True])
def test_a_message_trickling_past_the_dimse_timeout_aborts(
        pynetdicoms: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 kB a second: past 30 s plus a second per 8 kB received, the next PDV aborts.
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    pdvs = _request(DATA, 1024, pynetdicoms)
    queued, events = _receive_paced(_paced(pdvs, 1.0))
    assert not queued and events == ["Evt19"]


@pytest.mark.parametrize("pynetdicoms", [False, True])
def test_a_slow_but_steady_message_is_received(
        pynetdicoms: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # 10 kB a second for 40 s: beyond the DIMSE timeout, above the minimum rate. The
    # next message's time starts with it.
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    data = bytes(range(256)) * 1600
    first = _request(data, 10240, pynetdicoms)
    second = _pdvs(_command(_store(message_id=8)), fragment=1024)
    queued, events = _receive_paced([*_paced(first, 1.0), *_paced(second, 0.5, start=100.0)])
    assert not events
    assert [request.DataSet.getvalue() for _, request in queued] == [data, DATA]


@pytest.mark.parametrize("pynetdicoms", [False, True])
def test_requests_sent_without_waiting_for_responses_abort_past_the_bound(
        pynetdicoms: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # No asynchronous operations window is negotiated; with nobody serving the queue
    # (the association's thread busy), 16 requests wait and the 17th aborts (pynetdicom's
    # assembly has queued it by then; the aborted association serves none of them).
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    pdvs = [pdv for n in range(20) for pdv in _request(DATA, 4096, pynetdicoms)]
    queued, events = _receive_paced(_paced(pdvs, 0.0))
    assert len(queued) == MAX_QUEUED_REQUESTS + pynetdicoms and events == ["Evt19"]
