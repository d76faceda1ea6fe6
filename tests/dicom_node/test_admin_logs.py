"""Every log line of a node's working day is JSON and free of patient identity."""

from __future__ import annotations

import io
import json
import logging
import threading
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicom_node.admin.api import TOKEN_ENV
from dicom_node.logs import configure_logging, describe_error, redact_exception
from dicom_node.network import NoDelayAssociationServer
from tests.dicom_node.conftest import NodeHarness, free_port, make_study
from tests.dicom_node.fake_engine import FakeAnalyzer

TOKEN = "log-test-token"
PATIENT_NAME = "Phiname^Secretgiven"
PATIENT_ID = "PHI-ID-4711"
BIRTH_DATE = "19330817"
ACCESSION = "ACC98765"
IDENTIFYING = ("Phiname", "Secretgiven", PATIENT_ID, BIRTH_DATE, "1933-08-17", ACCESSION)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Production logging (JSON, DEBUG) into a buffer; restored afterwards."""
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, threading.excepthook
    buffer = io.StringIO()
    configure_logging(json=True, level="DEBUG", stream=buffer)
    yield buffer
    structlog.reset_defaults()
    logging.captureWarnings(False)
    root.handlers, root.level = handlers, level
    threading.excepthook = hook


def _call(url: str, method: str = "GET", body: dict[str, object] | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_logs_of_receive_process_export_and_admin_carry_no_phi(
    make_node: Callable[..., NodeHarness],
    json_log: io.StringIO,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    archive = make_node(data_dir=tmp_path / "archive")
    archive_destination = {
        "name": "archive",
        "ae_title": "NODE",
        "host": "127.0.0.1",
        "port": archive.port,
    }
    study = make_study(3, series=2, patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    for ds in study:
        ds.PatientBirthDate = BIRTH_DATE
        ds.AccessionNumber = ACCESSION
    node = make_node(
        analyzer=FakeAnalyzer(fail_on={str(study[2].SOPInstanceUID)}),
        admin_token=TOKEN,
        destinations=[archive_destination],
        pipeline={
            "called_ae": "NODE",
            "destinations": ["archive"],
            "allowed_callers": [{"ae_title": "MODALITY"}],
        },
    )
    api = f"http://127.0.0.1:{node.node.start_api('127.0.0.1', 0)}"

    assert node.store(study[:2]) == [0, 0]
    assert node.store(study[:1]) == [0], "a duplicate is stored once and logged"
    assert not node.associate(calling="STRANGER").is_established
    _call(f"{api}/api/studies/{study[0].StudyInstanceUID}/complete", "POST")
    node.settle()
    assert node.node.exporter.run_destination("archive") == 1
    node.store(study[2:])
    node.settle()
    _call(f"{api}/api/ae", "POST", {"called_ae": "SECOND_AE"})
    _call(f"{api}/api/destinations/archive/echo", "POST")
    dead = {"name": "dead", "ae_title": "DEAD", "host": "127.0.0.1", "port": free_port()}
    _call(f"{api}/api/destinations", "POST", dead)
    _call(f"{api}/api/destinations/dead/echo", "POST")
    for path in ("/api/studies", "/api/jobs", "/api/exports", "/api/associations", "/metrics"):
        request = urllib.request.urlopen(f"{api}{path}", timeout=60)
        assert not any(text in request.read().decode() for text in IDENTIFYING), path

    lines = [line for line in json_log.getvalue().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]
    names = {e["event"] for e in events}
    for expected in (
        "association_closed",
        "association_rejected",
        "duplicate_instance",
        "study_complete",
        "job_done",
        "job_failed",
        "export_delivered",
        "config_saved",
        "destination_echo_ok",
        "destination_echo_failed",
    ):
        assert expected in names, f"{expected} was not logged"
    for line in lines:
        for text in IDENTIFYING:
            assert text not in line, f"{text!r} leaked into the log: {line}"
    for database in (tmp_path / "var").glob("index.sqlite*"):
        content = database.read_bytes()
        assert not any(text.encode() in content for text in IDENTIFYING), database.name


class _RecordedWrites(io.StringIO):
    """A stream that keeps each ``write`` call's text."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_each_log_line_is_written_in_one_call() -> None:
    """structlog and the standard library share the stream, each under its own lock:
    a line written in two calls (text, then newline) can be split by the other's line."""
    stream = _RecordedWrites()
    configure_logging(json=True, stream=stream)
    structlog.get_logger("dicom_node.test").info("from_structlog", count=1)
    logging.getLogger("uvicorn.error").warning("from the standard library")
    assert [json.loads(text)["event"] for text in stream.calls] == [
        "from_structlog",
        "from the standard library",
    ]
    assert all(text.endswith("\n") and text.count("\n") == 1 for text in stream.calls)


def test_library_messages_and_warnings_are_json_without_quoted_values(
    json_log: io.StringIO,
) -> None:
    # pydicom quotes the values it finds invalid: here a birth date with a 13th month.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = Dataset()
        ds.PatientBirthDate = "19331317"
    # Python warnings are logged under py.warnings once captured (configure_logging).
    logging.getLogger("py.warnings").warning("x.py:1: UserWarning: about 'Phiname^Secretgiven'")
    # pynetdicom quotes the bytes of a PDU it cannot decode, a data set's among them.
    logging.getLogger("pynetdicom.dul").error(
        "Invalid 'Called AE Title' value 'Quixotez^Wilh' - must not contain control characters")
    logging.getLogger("dicom_node.test").warning("the node's own 'quoted' text stays")
    events = [json.loads(line)["event"] for line in json_log.getvalue().splitlines()]
    assert events == [
        "Invalid value for VR DA: '...'.",
        "x.py:1: UserWarning: about '...'",
        "Invalid '...' value '...' - must not contain control characters",
        "the node's own 'quoted' text stays",
    ]


def test_error_texts_and_tracebacks_lose_their_quoted_values() -> None:
    try:
        raise ValueError("'DOE^JOHN' is not a valid PatientSexValues")
    except ValueError as exc:
        assert describe_error(exc) == "ValueError: '...' is not a valid PatientSexValues"
        event = structlog.processors.format_exc_info(None, "error", {"exc_info": exc})
    assert "DOE" in event["exception"]
    assert "DOE" not in redact_exception(None, "error", event)["exception"]


def _events(log: io.StringIO, name: str) -> list[dict[str, object]]:
    return [e for e in map(json.loads, log.getvalue().splitlines()) if e["event"] == name]


def test_what_escapes_a_thread_or_a_connection_is_logged_redacted(
        json_log: io.StringIO) -> None:
    def fail() -> None:
        raise ValueError("'DOE^JOHN' is not a valid PN")

    worker = threading.Thread(target=fail, name="worker-x")
    worker.start()
    worker.join()
    try:
        fail()
    except ValueError:  # as socketserver calls it, inside the handler's except clause
        server = object.__new__(NoDelayAssociationServer)
        server.handle_error(None, ("192.0.2.1", 40000))
    (thread,) = _events(json_log, "thread_failed")
    assert thread["thread"] == "worker-x" and "ValueError" in str(thread["exception"])
    (connection,) = _events(json_log, "connection_handler_failed")
    assert connection["address"] == "192.0.2.1" and connection["level"] == "error"
    assert "DOE" not in json_log.getvalue()


def test_a_quoted_value_with_quotes_inside_is_redacted_whole() -> None:
    for value in ("O'BRIEN \"JACK\"", "O'BRIEN^JACK", 'SMITH "JR"'):
        assert describe_error(ValueError(f"{value!r} is not valid")) == (
            "ValueError: '...' is not valid"), value
    assert describe_error(ValueError("'DOE\\' and 'SMITH'")) == "ValueError: '...' and '...'"


def test_quoted_names_of_elements_are_kept() -> None:
    message = ("'DOE^JOHN' in 'PatientName' (0010,0010) '(0010,0010)' of VR 'PN' and "
               "'19331317' in 'PatientBirthDate'; 'PixelSpacing' \"0.2\\0.2\"")
    assert describe_error(ValueError(message), limit=400) == (
        "ValueError: '...' in 'PatientName' (0010,0010) '(0010,0010)' of VR 'PN' and "
        "'...' in 'PatientBirthDate'; 'PixelSpacing' '...'")


def test_libraries_narration_stays_out_of_the_log() -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    logging.getLogger("highdicom.base").info("copy attributes of module 'Patient'")
    logging.getLogger("alembic.runtime.migration").info("Will assume non-transactional DDL.")
    logging.getLogger("highdicom.sr").warning("a real problem")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["a real problem"]


def test_a_failed_connection_the_node_dialled_is_a_warning(json_log: io.StringIO) -> None:
    # pynetdicom logs it as two errors; the node's own event says which destination and
    # what follows, and level "error" is kept for what needs a person (the error queue).
    ae = AE(ae_title="NODE")
    ae.add_requested_context(Verification)
    assert not ae.associate("127.0.0.1", free_port(), ae_title="NOBODY").is_established
    logging.getLogger("pynetdicom.assoc").error("DIMSE timeout reached while waiting")
    levels = [(json.loads(line)["event"][:28], json.loads(line)["level"])
              for line in json_log.getvalue().splitlines()]
    assert levels == [
        ("Association request failed: ", "warning"),
        ("TCP Initialisation Error: [E", "warning"),
        ("DIMSE timeout reached while ", "error"),
    ]
