"""Export: deliver result objects with C-STORE, one association per batch.

Each destination has its own queue (rows in the index) and its own worker, so
a dead archive never delays another.  A failed attempt is retried with
exponential backoff up to a cap; then, or at once when the destination
refuses an object with a failure status, the export goes to the error queue
for an operator to retry or discard.  An object the archive cannot take at all
(no accepted presentation context for its SOP class) or an unreadable result
file fails its export permanently without holding up the rest of the batch.
An export counts as delivered only when every object got Success or a Warning.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification

from dicom_node import metrics
from dicom_node.clock import Clock
from dicom_node.config import RETURN_TO_SENDER, ExportPolicy, NodeConfig, TLSConfig
from dicom_node.index import ExportItem, Index
from dicom_node.logs import describe_error

LOGGER = structlog.get_logger(__name__)


class AssociationFailed(ConnectionError):
    """The destination could not be reached or refused the association."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Target:
    """Network address of a destination."""

    ae_title: str
    host: str
    port: int
    tls: TLSConfig | None = None
    timeout: float = 30.0
    """ACSE timeout in seconds; the network timeout is twice as long."""
    dimse_timeout: float = 120.0
    """How long to wait for each DIMSE response, in seconds."""


@dataclass(frozen=True)
class SendOutcome:
    """The destination's answer for one file; ``status`` is ``None`` if none came.

    ``permanent`` marks a failure found on this side that no retry can cure
    (the file is unreadable, or the archive accepted no presentation context
    for its SOP class).
    """

    path: str
    status: int | None
    error: str | None = None
    permanent: bool = False

    @property
    def accepted(self) -> bool:
        """Success (0x0000) or a Warning (0x0001, 0xB000-0xBFFF)."""
        return self.status is not None and (
            self.status == 0x0000 or self.status == 0x0001 or 0xB000 <= self.status <= 0xBFFF
        )

    @property
    def transient(self) -> bool:
        """Whether a retry may succeed (no answer, or out of resources)."""
        if self.permanent:
            return False
        return self.status is None or 0xA700 <= self.status <= 0xA7FF


Sender = Callable[[str, Target, Sequence[str]], list[SendOutcome]]
"""Sends files to a target from a calling AE title, one association."""


def backoff_seconds(attempts: int, policy: ExportPolicy) -> float:
    """Delay before the next attempt after ``attempts`` failed ones."""
    delay = policy.backoff_initial_seconds * policy.backoff_factor ** max(attempts - 1, 0)
    return min(delay, policy.backoff_max_seconds)


def client_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """TLS 1.2+ client context, verifying the server when CA certificates are given
    (and that its certificate names the host dialled, when ``verify_hostname``), and
    presenting the node's certificate when one is given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    if tls.ca_certificates is not None:
        context.check_hostname = tls.verify_hostname
        context.load_verify_locations(str(tls.ca_certificates))
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    if tls.certificate is not None:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    return context


UNCOMPRESSED_PROPOSAL = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
"""Transfer syntaxes proposed together for every SOP class sent."""


def _requestor_ae(calling_ae: str, datasets: Iterable[Dataset], target: Target) -> AE:
    """An AE proposing, per SOP class of ``datasets``, the uncompressed syntaxes and,
    each in a context of its own as storescu does, every other transfer syntax the
    files of that class are in (pynetdicom sends a data set as it is encoded)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = target.timeout
    ae.dimse_timeout = target.dimse_timeout
    ae.network_timeout = target.timeout * 2
    pairs = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
                    for ds in datasets})
    for sop_class in sorted({sop_class for sop_class, _ in pairs}):
        ae.add_requested_context(sop_class, list(UNCOMPRESSED_PROPOSAL))
    for sop_class, transfer_syntax in pairs:
        if transfer_syntax not in UNCOMPRESSED_PROPOSAL:
            ae.add_requested_context(sop_class, transfer_syntax)
    return ae


def c_store_batch(calling_ae: str, target: Target, paths: Sequence[str]) -> list[SendOutcome]:
    """Send ``paths`` over one association and return each file's outcome.

    Only the SOP classes of the readable files are proposed.  A file that
    cannot be read, or whose SOP class and transfer syntax the archive
    accepted no presentation context for, gets a permanent failure outcome
    and the rest are still sent.

    Raises
    ------
    AssociationFailed
        If no association could be established.
    """
    loaded = {path: _read_result(path) for path in paths}
    outcomes = {p: o for p, o in loaded.items() if isinstance(o, SendOutcome)}
    datasets = {p: ds for p, ds in loaded.items() if isinstance(ds, Dataset)}
    if datasets:
        outcomes.update(_store_datasets(calling_ae, target, datasets))
    return [outcomes[path] for path in paths]


def _associate(ae: AE, target: Target) -> tuple[Association, bool]:
    """Request an association with ``target``; whether a connection was made at all."""
    opened: list[bool] = []
    tls_args = (client_ssl_context(target.tls), target.host) if target.tls is not None else None
    assoc = ae.associate(target.host, target.port, ae_title=target.ae_title, tls_args=tls_args,
                         evt_handlers=[(evt.EVT_CONN_OPEN, lambda _event: opened.append(True))])
    return assoc, bool(opened)


def tls_handshake_failure(target: Target) -> str | None:
    """Why a TLS handshake with ``target`` fails; ``None`` when it succeeds, when
    ``target`` has no TLS, or when no TCP connection can be made at all.

    pynetdicom reports a failed handshake as a failed connection; this makes one
    handshake of its own to tell an administrator which it was.
    """
    if target.tls is None:
        return None
    context = client_ssl_context(target.tls)
    try:
        raw = socket.create_connection((target.host, target.port), timeout=target.timeout)
    except OSError:
        return None
    try:
        with context.wrap_socket(raw, server_hostname=target.host):
            return None
    except ssl.SSLCertVerificationError as exc:
        return f"its TLS certificate was not accepted: {exc.verify_message}"
    except ssl.SSLError as exc:
        return f"the TLS handshake failed: {exc.reason or exc}"
    except OSError as exc:
        return f"the TLS handshake failed: {describe_error(exc)}"
    finally:
        raw.close()


def _failure(assoc: Association, connected: bool, target: Target) -> str:
    """Why an association was not established, as an administrator needs it."""
    primitive = assoc.acceptor.primitive
    if assoc.is_rejected and primitive is not None:
        return f"rejected ({primitive.result_str}, {primitive.reason_str})"
    if not connected:
        handshake = tls_handshake_failure(target)
        if handshake is not None:
            return f"not connected: {handshake}"
        return "not connected: nothing answers there (refused, unreachable or timed out)"
    if assoc.is_aborted:
        return "aborted by the peer, or no answer within the timeout"
    return "refused"


def _read_result(path: str) -> Dataset | SendOutcome:
    """Read a result file, or return why it can never be sent."""
    try:
        ds = dcmread(path)
    except InvalidDicomError as exc:
        return SendOutcome(path, None, f"unreadable result file: {describe_error(exc)}",
                           permanent=True)
    missing = [kw for kw in ("SOPClassUID", "SOPInstanceUID") if kw not in ds]
    missing += [kw for kw in ("TransferSyntaxUID",) if kw not in ds.file_meta]
    if missing:
        reason = f"unreadable result file: no {', '.join(missing)}"
        return SendOutcome(path, None, reason, permanent=True)
    return ds


def _store_datasets(
    calling_ae: str, target: Target, datasets: dict[str, Dataset]
) -> dict[str, SendOutcome]:
    """C-STORE ``datasets`` (by path) over one association."""
    ae = _requestor_ae(calling_ae, datasets.values(), target)
    assoc, connected = _associate(ae, target)
    if not assoc.is_established:
        permanent = bool(
            assoc.is_rejected
            and assoc.acceptor.primitive is not None
            and assoc.acceptor.primitive.result == 0x01
        )
        raise AssociationFailed(
            f"association to {target.ae_title}@{target.host}:{target.port} "
            f"{_failure(assoc, connected, target)}",
            permanent=permanent,
        )
    try:
        return {path: _store_one(assoc, target, path, ds) for path, ds in datasets.items()}
    finally:
        if assoc.is_established:
            assoc.release()


def _store_one(assoc: Association, target: Target, path: str, ds: Dataset) -> SendOutcome:
    """C-STORE one dataset, unless the association is lost or cannot carry it."""
    if not assoc.is_established:
        return SendOutcome(path, None, "association lost")
    sop_class = UID(ds.SOPClassUID)
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    if not any(_carries(cx, sop_class, transfer_syntax) for cx in assoc.accepted_contexts):
        reason = (
            f"{target.ae_title} accepted no presentation context for "
            f"{sop_class.name} ({sop_class}) in {transfer_syntax.name}"
        )
        return SendOutcome(path, None, reason, permanent=True)
    status = assoc.send_c_store(ds)
    await_reactor(assoc)
    code = int(status.Status) if "Status" in status else None
    return SendOutcome(path, code, None if code is not None else "no response")


REACTOR_RESUME_SECONDS = 1.0
"""Longest wait for an association's reactor to resume after a send."""


def await_reactor(assoc: Association, clock: Callable[[], float] = time.monotonic,
                  pause: Callable[[float], None] = time.sleep) -> None:
    """Wait until ``assoc``'s reactor has resumed after a ``send_c_store``.

    pynetdicom 3.0 pauses the reactor while a send waits for its response and resumes
    it on return, but the reactor marks itself paused before each wait, so a next send
    made before the reactor thread has woken sees it "paused" while it is about to read
    the DIMSE queue, and the reactor may take that send's response ("unexpected C-STORE
    service message"; pynetdicom issues #435, #875): the send then waits out its DIMSE
    timeout and the association is aborted.  Waiting for the reactor to mark itself
    running (``_is_paused``, pynetdicom 3.0's flag) closes that window.
    """
    deadline = clock() + REACTOR_RESUME_SECONDS
    while getattr(assoc, "_is_paused", False) and assoc.is_alive() and clock() < deadline:
        pause(0.0001)


def _carries(context: PresentationContext, sop_class: UID, transfer_syntax: UID) -> bool:
    """Whether an accepted context can carry ``sop_class`` as SCU in ``transfer_syntax``.

    Mirrors pynetdicom's choice: the same transfer syntax, or any uncompressed
    one of the same byte order (pynetdicom converts between them).
    """
    if context.abstract_syntax != sop_class or not context.as_scu:
        return False
    accepted = UID(context.transfer_syntax[0])
    if accepted == transfer_syntax:
        return True
    return (
        not accepted.is_compressed
        and not transfer_syntax.is_compressed
        and accepted.is_little_endian == transfer_syntax.is_little_endian
    )


def _verification_ae(calling_ae: str, target: Target) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = target.timeout
    ae.network_timeout = target.timeout
    return ae


def dicom_answers(calling_ae: str, target: Target) -> bool:
    """Whether ``target`` answers an association request, accepting or rejecting it."""
    assoc, _connected = _associate(_verification_ae(calling_ae, target), target)
    if assoc.is_established:
        assoc.release()
        return True
    return bool(assoc.is_rejected)


def c_echo(calling_ae: str, target: Target) -> float:
    """C-ECHO ``target``; returns the round trip in ms.

    Raises
    ------
    AssociationFailed
        If the association fails or the echo is not answered with Success.
    """
    ae = _verification_ae(calling_ae, target)
    started = time.perf_counter()
    assoc, connected = _associate(ae, target)
    if not assoc.is_established:
        raise AssociationFailed(
            f"no association with {target.ae_title}@{target.host}:{target.port}: "
            f"{_failure(assoc, connected, target)}"
        )
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    if "Status" not in status or int(status.Status) != 0:
        raise AssociationFailed("C-ECHO not answered with Success")
    return (time.perf_counter() - started) * 1000.0


class Exporter:
    """Sends due exports, one destination at a time.

    Parameters
    ----------
    config:
        Returns the current configuration (AE title, TLS, retry policy).
    index, clock:
        The node's index and clock.
    send:
        The C-STORE function; injectable for tests.
    """

    def __init__(
        self,
        config: Callable[[], NodeConfig],
        index: Index,
        clock: Clock,
        send: Sender = c_store_batch,
    ) -> None:
        self._config = config
        self.index = index
        self.clock = clock
        self.send = send

    def run_destination(self, destination: str) -> int:
        """Send one batch of due exports to ``destination``; returns how many were tried.

        Every failure of the attempt, expected or not, is counted on the
        batch's exports (backoff, then the error queue), so a caller looping
        on this never retries an export before it is due.
        """
        config = self._config()
        items = self.index.due_exports(destination, self.clock.now(), config.export.batch_size)
        if not items:
            return 0
        configured = config.destination(destination)
        if configured is not None:
            target = Target(configured.ae_title, configured.host, configured.port,
                            configured.tls, config.limits.acse_timeout,
                            config.limits.dimse_timeout)
            batch = items
        elif destination.startswith(f"{RETURN_TO_SENDER}:"):
            target = Target(items[0].ae_title, items[0].host, items[0].port, None,
                            config.limits.acse_timeout, config.limits.dimse_timeout)
            batch = [i for i in items
                     if (i.ae_title, i.host, i.port) == (target.ae_title, target.host, target.port)]
        else:
            reason = f"destination {destination!r} is no longer configured"
            self._fail_batch(items, reason, permanent=True, policy=config.export)
            LOGGER.warning("export_destination_removed", destination=destination,
                           exports=len(items))
            return len(items)
        outcomes = self._send(destination, config, target, batch)
        if outcomes is None:
            return len(batch)
        self.index.record_destination_health(destination, self.clock.now(), None)
        for item in batch:
            self._settle(
                item,
                [outcomes.get(p, SendOutcome(p, None, "not sent")) for p in item.paths],
                config.export,
            )
        return len(batch)

    def _send(
        self, destination: str, config: NodeConfig, target: Target, batch: Sequence[ExportItem]
    ) -> dict[str, SendOutcome] | None:
        """Each file's outcome, or ``None`` when the attempt failed as a whole
        (then counted on every export of the batch)."""
        paths = [p for item in batch for p in item.paths]
        log = LOGGER.bind(destination=destination, exports=len(batch), objects=len(paths))
        try:
            return {o.path: o for o in self.send(config.ae_title, target, paths)}
        except AssociationFailed as exc:
            self._fail_batch(batch, str(exc), permanent=exc.permanent, policy=config.export)
            self.index.record_destination_health(destination, self.clock.now(), str(exc))
            log.warning("export_attempt_failed", reason=str(exc))
        except OSError as exc:
            self._fail_batch(batch, f"I/O error: {exc}", permanent=False, policy=config.export)
            log.warning("export_attempt_failed", reason=str(exc))
        except Exception as exc:
            reason = f"unexpected {describe_error(exc)}"
            self._fail_batch(batch, reason, permanent=False, policy=config.export)
            log.error("export_attempt_failed", reason=reason, error_type=type(exc).__name__)
        return None

    def _settle(self, item: ExportItem, outcomes: list[SendOutcome], policy: ExportPolicy) -> None:
        log = LOGGER.bind(
            export_id=item.export_id, job_id=item.job_id, destination=item.destination
        )
        refused = [o for o in outcomes if not o.accepted]
        if not refused:
            self.index.mark_delivered(item.export_id, self.clock.now())
            metrics.EXPORTS.labels(item.destination, "delivered").inc()
            log.info("export_delivered", objects=len(outcomes), attempt=item.attempts + 1)
            return
        first = refused[0]
        reason = (
            f"status 0x{first.status:04X} for {len(refused)} of {len(outcomes)} object(s)"
            if first.status is not None
            else f"{first.error} for {len(refused)} of {len(outcomes)} object(s)"
        )
        permanent = any(not o.transient for o in refused)
        self._fail(item, reason, permanent, policy)
        log.warning("export_attempt_failed", reason=reason, permanent=permanent)

    def _fail_batch(
        self, batch: Sequence[ExportItem], reason: str, permanent: bool, policy: ExportPolicy
    ) -> None:
        for item in batch:
            self._fail(item, reason, permanent, policy)

    def _fail(self, item: ExportItem, reason: str, permanent: bool, policy: ExportPolicy) -> None:
        """Count a failed attempt on ``item``: another after the backoff, or the error
        queue (logged as an error, the line to alert on: results not delivered)."""
        attempts = item.attempts + 1
        log = LOGGER.bind(export_id=item.export_id, job_id=item.job_id,
                          destination=item.destination, attempt=attempts, reason=reason)
        if permanent or attempts >= policy.max_attempts:
            next_at: datetime | None = None
            metrics.EXPORTS.labels(item.destination, "error_queue").inc()
            log.error("export_error_queued", permanent=permanent)
        else:
            next_at = self.clock.now() + timedelta(seconds=backoff_seconds(attempts, policy))
            metrics.EXPORTS.labels(item.destination, "retry").inc()
            log.info("export_retry_scheduled", next_attempt_at=next_at.isoformat())
        self.index.mark_attempt_failed(item.export_id, reason, next_at)
