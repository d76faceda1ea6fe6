"""Structured logging: human console by default, JSON in production.

Events never carry patient names, IDs, birth dates or accession numbers; a
processor drops such keys should one slip into an event by mistake.  Messages
of libraries that quote the values they complain about (pydicom: "Invalid
value for VR DA: '19381317'", which may be a birth date) have the quoted
values replaced, and Python warnings are logged as structured events too, so
nothing reaches the log as a bare line of text.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog
from pydicom.datadict import keyword_dict
from pydicom.valuerep import VR
from pynetdicom import _config as pynetdicom_config

PHI_KEYS = frozenset(
    {
        "patient_name",
        "patient_id",
        "patient_birth_date",
        "accession_number",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "AccessionNumber",
    }
)


def drop_phi(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor removing keys that could carry patient identity."""
    for key in PHI_KEYS.intersection(event_dict):
        del event_dict[key]
    return event_dict


QUOTED_VALUE = re.compile(
    r"'(?:[^'\\]|\\.)*'(?!\w)"
    r'|"(?:[^"\\]|\\.)*"(?!\w)'
    r"|'[^']*'"
    r'|"[^"]*"'
)
"""A quoted value in a library's message.  Python's repr escapes a quote inside
one (``'O\\'BRIEN "J"'``); a quote closing a value is not followed by a letter, so a
value ending in a backslash (``'DOE\\'``) closes at it."""

REDACTED_LOGGERS = frozenset({"pydicom", "highdicom", "pynetdicom", "py"})
"""Top-level logger names whose messages may quote data set values (``py``: Python
warnings, logged as ``py.warnings``).  pynetdicom logs data sets only at DEBUG, which
the node never enables for it, but it quotes the bytes of a PDU it cannot decode: a
broken P-DATA-TF decoded as an association request put a data set's patient name
in its "Called AE Title" error (found by fuzzing)."""


VR_NAMES = frozenset(vr.value for vr in VR)
"""The value representations' two-letter names."""

TAG_NOTATION = re.compile(r"\(?[0-9A-Fa-f]{4},\s?[0-9A-Fa-f]{4}\)?")
"""A data element tag as messages write it: ``(0028,0010)``."""


def _names_an_element(quoted: str) -> bool:
    """Whether a quoted text is a data element's keyword or tag, or a VR: the names an
    administrator needs to find what was wrong, never a value of the data set."""
    inner = quoted[1:-1]
    return inner in keyword_dict or inner in VR_NAMES or TAG_NOTATION.fullmatch(inner) is not None


def redact(text: str) -> str:
    """``text`` with its quoted values replaced: library messages (pydicom's, highdicom's)
    quote data set values, patient names and birth dates among them.  Quoted keywords,
    tags and VRs (``'PixelSpacing'``, ``'(0028,0030)'``, ``'DS'``) are kept."""
    return QUOTED_VALUE.sub(
        lambda match: match.group(0) if _names_an_element(match.group(0)) else "'...'", text)


def describe_error(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` of an exception for logs, the index and peers, quoted values
    redacted (:func:`redact`), at most ``limit`` characters."""
    return f"{type(exc).__name__}: {redact(str(exc))}"[:limit]


def redact_exception(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]
                     ) -> MutableMapping[str, Any]:
    """structlog processor redacting the quoted values of a rendered traceback."""
    if isinstance(event_dict.get("exception"), str):
        event_dict["exception"] = redact(event_dict["exception"])
    return event_dict


class RedactQuotedValues(logging.Filter):
    """Replaces the quoted values in the messages of :data:`REDACTED_LOGGERS`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message without its quoted values; always keep it."""
        if record.name.split(".")[0] in REDACTED_LOGGERS:
            record.msg = redact(record.getMessage())
            record.args = None
        return True


HANDLED_CONNECT_ERRORS = ("Association request failed: unable to connect",
                          "TCP Initialisation Error")
"""pynetdicom's errors when a connection the node dials fails: the node's own event
(``export_attempt_failed``, an echo's answer) names the destination and what happens
next, so these two lines are warnings, and ``error`` stays for what needs a person."""


class DemoteHandledConnectErrors(logging.Filter):
    """Logs :data:`HANDLED_CONNECT_ERRORS` of pynetdicom as warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Lower the record's level when it is one of those errors; always keep it."""
        if (record.levelno == logging.ERROR and record.name.startswith("pynetdicom")
                and record.getMessage().startswith(HANDLED_CONNECT_ERRORS)):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


@dataclass(frozen=True)
class LogSettings:
    """How logging was last configured in this process (handed to child processes)."""

    json: bool = False
    level: str = "INFO"


_settings = LogSettings()


def current_settings() -> LogSettings:
    """The settings of the last :func:`configure_logging` call in this process."""
    return _settings


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: a thread's uncaught exception as an error event
    (traceback redacted by :func:`redact_exception`)."""
    if args.exc_type is SystemExit:
        return
    structlog.get_logger(__name__).error(
        "thread_failed", thread=args.thread.name if args.thread else None,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def configure_logging(json: bool = False, level: str = "INFO", stream: Any = None) -> None:
    """Configure structlog and the standard library's logging.

    Parameters
    ----------
    json:
        One JSON object per line instead of the human console format.
    level:
        Minimum level name.
    stream:
        Where to write; standard error by default.
    """
    global _settings
    _settings = LogSettings(json=json, level=level)
    out = stream or _CurrentStderr()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_phi,
        structlog.processors.format_exc_info,
        redact_exception,
    ]
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # One write per line (PrintLogger writes the newline apart), so a line of the
        # standard library's handler, under another lock, cannot land inside it.
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=processors,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(DemoteHandledConnectErrors())
    handler.addFilter(RedactQuotedValues())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # A thread that dies of an exception is logged like the rest (its message redacted),
    # not printed to standard error as Python's default hook would.
    threading.excepthook = log_thread_exception
    # Python warnings become log events; pydicom's are logged by pydicom already.
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    # pynetdicom logs dataset contents at DEBUG; keep it at WARNING so no PHI leaks.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # highdicom narrates every attribute it copies (about 20 lines a job) and alembic
    # its migration context at every command: the node's own events say what happened.
    for noisy in ("highdicom", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # Its standard event handlers only write those INFO/DEBUG lines, yet they format
    # every PDU and DIMSE message: about 0.3 ms of CPU per received instance.
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
