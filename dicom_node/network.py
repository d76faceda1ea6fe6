"""The DICOM receiver: Verification and Storage SCP built on pynetdicom.

Handlers decide admission, spool each instance (file and directory synced)
and answer with a named status; the instance's index row is written right
after by the :class:`~dicom_node.index.writer.IndexWriter`, batched with
others.  They hold no routing or model logic.
"""

from __future__ import annotations

import copy
import errno
import ipaddress
import re
import select
import socket
import ssl
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from functools import partial
from typing import Any

import structlog
from pydicom import Dataset
from pydicom.charset import convert_encodings
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pydicom.values import convert_text
from pynetdicom import AE, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification, register_uid, uid_to_service_class
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dicom_node import metrics
from dicom_node.balance import HAND_OFF_POLL_SECONDS, HAND_OFF_SECONDS, LoadSlot
from dicom_node.clock import Clock
from dicom_node.config import ConfigError, NodeConfig, Pipeline
from dicom_node.file_meta import file_header
from dicom_node.index import TEXT_WIDTHS, Index, InstanceMeta, Peer, index_text
from dicom_node.index.writer import IndexWriter, Received
from dicom_node.logs import describe_error, redact
from dicom_node.reactor import PDU_HEADER_BYTES, EventDrivenAssociation
from dicom_node.screening import MalformedDataset, check_structure
from dicom_node.spool import BelowFloor, Spool, SpoolError, SpoolPart, is_valid_uid
from dicom_node.store_request import DirectStore, DiscardedStore, StoreRequestDIMSE
from inference.video import VIDEO_TRANSFER_SYNTAXES

LOGGER = structlog.get_logger(__name__)

MAX_UNADMITTED_CONNECTIONS = 256
"""Connections a receiving process keeps open without an association the node admitted:
ones still to send their A-ASSOCIATE-RQ (they may wait ``acse_timeout``), and the threads
of rejected or just-ended associations.  Beyond it a new connection is closed at once.
pynetdicom's own limit, which counts all of these with the admitted associations, sits
this far above ``limits.max_associations``, so it never refuses an association the
node's count admitted (silent connections from a few addresses made it refuse every
association, after the node had logged it as accepted)."""

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
US_IMAGE_STORAGE_RETIRED = "1.2.840.10008.5.1.4.1.1.6"
US_MULTIFRAME_IMAGE_STORAGE_RETIRED = "1.2.840.10008.5.1.4.1.1.3"

ULTRASOUND_SOP_CLASSES: frozenset[str] = frozenset(
    {
        US_IMAGE_STORAGE,
        US_MULTIFRAME_IMAGE_STORAGE,
        US_IMAGE_STORAGE_RETIRED,
        US_MULTIFRAME_IMAGE_STORAGE_RETIRED,
    }
)
"""SOP classes the engines may process."""

RETIRED_STORAGE_CLASSES: dict[str, str] = {
    US_IMAGE_STORAGE_RETIRED: "UltrasoundImageStorageRetired",
    US_MULTIFRAME_IMAGE_STORAGE_RETIRED: "UltrasoundMultiFrameImageStorageRetired",
}
"""Retired US classes pynetdicom does not know as storage classes (old scanners send them)."""

ACCEPTED_ONLY_SOP_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume (3D/4D)
    "1.2.840.10008.5.1.4.1.1.6.3",  # Photoacoustic Image
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.66",  # Raw Data (scanners' raw or vendor data)
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection
    "1.2.840.10008.5.1.4.1.1.88.72",  # Simplified Adult Echo SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.11.2",  # Color Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
)
"""SOP classes a US study carries: stored, not processed (more can be configured,
``extra_storage_classes``)."""

TRANSFER_SYNTAXES: tuple[str, ...] = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
    *sorted(VIDEO_TRANSFER_SYNTAXES),
)
"""Transfer syntaxes accepted for storage; data is stored as received.

Video syntaxes (MPEG-2, H.264, HEVC cine) are decoded with FFmpeg through PyAV."""


DISK_FLOOR_REASON = "disk_floor: free disk below the floor"
"""Why an instance is refused when keeping it would leave less free disk than the floor."""

MAX_INDEX_BACKLOG = 5000
"""Spooled instances awaiting their index row above which C-STOREs are refused.

Only reached when the database is down or far slower than the network: the
sender then gets Out of Resources and sends again later, rather than the node
piling up files that nothing routes until the next start."""


class StoreStatus(IntEnum):
    """C-STORE response statuses the node uses (PS3.4 B.2.3)."""

    SUCCESS = 0x0000
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000


class Rejection(IntEnum):
    """A-ASSOCIATE-RJ (result, source, diagnostic) packed as 0xRRSSDD."""

    NO_REASON = 0x010101
    CALLING_AE_NOT_RECOGNISED = 0x010103
    CALLED_AE_NOT_RECOGNISED = 0x010107
    LOCAL_LIMIT_EXCEEDED = 0x020302
    TEMPORARY_CONGESTION = 0x020301

    def triple(self) -> tuple[int, int, int]:
        """The (result, source, diagnostic) triple."""
        return (self.value >> 16, (self.value >> 8) & 0xFF, self.value & 0xFF)


MIN_PEER_PDU = 7
"""The smallest Maximum Length Received a peer may announce (0: no limit): a P-DATA-TF
PDU of fewer bytes holds a PDV item's header (6 bytes) and no data."""

REJECTION_FOLD_SECONDS = 60.0
"""A request rejected like the last one recorded (same address, AE titles and reason) at
most this long after it is counted on that record instead of adding one: a peer retrying
a refused request in a loop, or a flood of them, does not grow the association log by a
row each."""

REJECTION_RECORD_SECONDS = 600.0
"""How long one record counts such repeats before the next one opens: the association
log lists records by when they opened, so a peer refused in a loop stays in its first
page."""

MAX_FOLDED_REJECTIONS = 1024
"""Rejections a receiving process remembers for folding (the oldest are forgotten)."""

UNKNOWN_AE_LABEL = "unknown"
"""Metrics label of associations rejected on a called AE title no pipeline has."""


@dataclass
class _Rejection:
    """The association-log record that counts a run of alike rejections."""

    record_id: int
    opened: datetime
    seen: datetime


@dataclass
class _AssociationStats:
    record_id: int | None
    """The association's index row; ``None`` while it is being written."""
    peer: Peer
    instances: int = 0
    failed: int = 0
    bytes: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def _instance_limit(config: NodeConfig) -> int:
    """``limits.max_instance_mb`` in bytes."""
    return int(config.limits.max_instance_mb * 1024 * 1024)


def _disk_floor(config: NodeConfig) -> int:
    """``limits.min_free_disk_mb`` in bytes."""
    return int(config.limits.min_free_disk_mb * 1024 * 1024)


def _caller_allowed(pipeline: Pipeline, calling_ae: str, host: str) -> bool:
    if pipeline.allowed_callers is None:
        return True
    return any(
        caller.ae_title == calling_ae and (caller.host is None or same_address(caller.host, host))
        for caller in pipeline.allowed_callers
    )


def same_address(allowed: str, peer: str) -> bool:
    """Whether a peer's address is the allowed one, however each is written (an IPv4
    peer on an IPv6 socket is ``::ffff:10.0.0.1``)."""
    try:
        a, b = ipaddress.ip_address(allowed), ipaddress.ip_address(peer)
    except ValueError:
        return allowed == peer
    a = a.ipv4_mapped or a if isinstance(a, ipaddress.IPv6Address) else a
    b = b.ipv4_mapped or b if isinstance(b, ipaddress.IPv6Address) else b
    return a == b


class Receiver:
    """Event handlers of the Storage and Verification SCP.

    Parameters
    ----------
    config:
        Returns the current configuration; called for every association, so
        changed AE titles take effect without a restart.
    spool, index, clock:
        Where instances go and how time is read.
    """

    def __init__(
        self,
        config: Callable[[], NodeConfig],
        spool: Spool,
        index: Index,
        clock: Clock,
    ) -> None:
        self._config = config
        self.spool = spool
        self.index = index
        self.clock = clock
        self._lock = threading.Lock()
        self._associations: dict[int, _AssociationStats] = {}
        self._rejections: dict[tuple[str, str, str, str], _Rejection] = {}
        """The record of the last requests rejected, by (address, calling AE, called AE,
        reason with its figures masked), least recently seen first."""
        self.writer = IndexWriter(index, self._indexed)

    def close(self) -> None:
        """Commit the index rows still queued and stop the index writer."""
        self.writer.close()

    # -- admission -------------------------------------------------------------------

    def admission(self, called_ae: str, calling_ae: str, host: str) -> tuple[Rejection, str] | None:
        """Why an association must be rejected for its AE titles or the disk, or ``None``
        (the association limits are checked as its slot is taken, see :meth:`_reserve`)."""
        config = self._config()
        pipeline = config.pipeline_for(called_ae)
        if pipeline is None:
            return Rejection.CALLED_AE_NOT_RECOGNISED, f"no pipeline for called AE {called_ae!r}"
        if not _caller_allowed(pipeline, calling_ae, host):
            return (
                Rejection.CALLING_AE_NOT_RECOGNISED,
                f"calling AE {calling_ae!r} from {host} is not allowed on {called_ae!r}",
            )
        free = self.spool.free_bytes()
        metrics.SPOOL_FREE.set(free)
        refusing = free < _disk_floor(config)
        metrics.ADMISSION_REFUSED.set(1 if refusing else 0)
        if refusing:
            return (
                Rejection.LOCAL_LIMIT_EXCEEDED,
                f"free disk {free // 2**20} MB is below the floor of "
                f"{config.limits.min_free_disk_mb:.0f} MB",
            )
        return None

    def _reserve(self, key: int, peer: Peer) -> tuple[Rejection, str] | _AssociationStats:
        """Take a slot for an association within the limits (checked and taken under one
        lock, so concurrent requests cannot overshoot), or say why there is none."""
        limits = self._config().limits
        with self._lock:
            active = list(self._associations.values())
            if len(active) >= limits.max_associations:
                return Rejection.LOCAL_LIMIT_EXCEEDED, "maximum concurrent associations reached"
            from_host = sum(1 for a in active if a.peer.host == peer.host)
            if from_host >= limits.max_associations_per_ip:
                return (Rejection.LOCAL_LIMIT_EXCEEDED,
                        f"maximum associations from {peer.host} reached")
            stats = self._associations[key] = _AssociationStats(record_id=None, peer=peer)
            return stats

    def on_requested(self, event: Event) -> None:
        """EVT_REQUESTED: accept or reject, and log the association.

        pynetdicom accepts an association whose handler raised, so every failure here
        (the index down, say) rejects it as a transient congestion instead.
        """
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        peer = Peer(
            calling_ae=str(primitive.calling_ae_title).strip(),
            called_ae=str(primitive.called_ae_title).strip(),
            host=str(assoc.requestor.address),
            port=int(assoc.requestor.port),
        )
        log = LOGGER.bind(calling_ae=peer.calling_ae, called_ae=peer.called_ae, peer=peer.host)
        unreadable = assoc.unreadable_ae_titles if isinstance(
            assoc, EventDrivenAssociation) else {}
        if unreadable:
            rejection = (Rejection.CALLED_AE_NOT_RECOGNISED if "called" in unreadable
                         else Rejection.CALLING_AE_NOT_RECOGNISED)
            self._reject(assoc, peer, rejection, "; ".join(unreadable.values()), log=log)
            return
        peer_pdu = int(assoc.requestor.maximum_length or 0)
        if 0 < peer_pdu < MIN_PEER_PDU:
            self._reject(assoc, peer, Rejection.NO_REASON,
                         f"maximum PDU length {peer_pdu} cannot carry a response", log=log)
            return
        try:
            decision = self.admission(peer.called_ae, peer.calling_ae, peer.host)
            if decision is None:
                decision = self._reserve(id(assoc), peer)
            if not isinstance(decision, _AssociationStats):
                self._reject(assoc, peer, *decision, log=log)
                return
            decision.record_id = self.index.open_association(peer, self.clock.now(), accepted=True)
        except Exception as exc:
            with self._lock:
                self._associations.pop(id(assoc), None)
            reason = f"cannot admit: {describe_error(exc)}"
            self._reject(assoc, peer, Rejection.TEMPORARY_CONGESTION, reason, log=log)
            return
        metrics.ASSOCIATIONS.labels(peer.called_ae, "accepted").inc()

    def _reject(self, assoc: Association, peer: Peer, rejection: Rejection, reason: str,
                log: structlog.typing.FilteringBoundLogger) -> None:
        """Record the rejection, then send the A-ASSOCIATE-RJ (also when the record
        fails: the peer is rejected all the same)."""
        try:
            self._record_rejection(peer, reason)
        except Exception as exc:
            log.warning("association_not_recorded", error=type(exc).__name__)
        known = self._config().pipeline_for(peer.called_ae) is not None
        # Only configured AE titles become labels: a peer must not mint time series.
        metrics.ASSOCIATIONS.labels(peer.called_ae if known else UNKNOWN_AE_LABEL,
                                    "rejected").inc()
        log.warning("association_rejected", reason=reason)
        assoc.acse.send_reject(*rejection.triple())
        assoc.kill()

    def _record_rejection(self, peer: Peer, reason: str) -> None:
        """Add a rejected association to the log, or count it on the last record of the
        same rejection (its figures aside) if that was counted on at most
        :data:`REJECTION_FOLD_SECONDS` ago and opened at most
        :data:`REJECTION_RECORD_SECONDS` ago."""
        key = (peer.host, peer.calling_ae, peer.called_ae, re.sub(r"\d+", "#", reason))
        now = self.clock.now()
        with self._lock:
            last = self._rejections.pop(key, None)
        if (last is not None
                and (now - last.seen).total_seconds() <= REJECTION_FOLD_SECONDS
                and (now - last.opened).total_seconds() <= REJECTION_RECORD_SECONDS
                and self.index.repeat_rejection(last.record_id, now)):
            last.seen = now
        else:
            record_id = self.index.open_association(peer, now, accepted=False, reason=reason)
            last = _Rejection(record_id, opened=now, seen=now)
        with self._lock:
            self._rejections[key] = last
            while len(self._rejections) > MAX_FOLDED_REJECTIONS:
                del self._rejections[next(iter(self._rejections))]

    def on_closed(self, event: Event, outcome: str) -> None:
        """EVT_RELEASED / EVT_ABORTED / EVT_CONN_CLOSE: close the association's record
        (and delete what was written of a data set it left incomplete).  A connection
        closed after the node sent an A-ABORT is recorded as aborted, whichever of the
        two events comes first."""
        if isinstance(event.assoc.dimse, StoreRequestDIMSE):
            event.assoc.dimse.drop_unserved()
        if outcome == "connection_closed" and getattr(event.assoc, "abort_sent", False):
            outcome = "aborted"  # the node aborted; the peer closed before the abort's event
        with self._lock:
            stats = self._associations.pop(id(event.assoc), None)
        if stats is None or stats.record_id is None:
            return
        self.index.close_association(
            stats.record_id,
            self.clock.now(),
            outcome=outcome,
            instances=stats.instances,
            failed=stats.failed,
            bytes_received=stats.bytes,
        )
        LOGGER.info(
            "association_closed",
            association_id=stats.record_id,
            calling_ae=stats.peer.calling_ae,
            called_ae=stats.peer.called_ae,
            peer=stats.peer.host,
            outcome=outcome,
            instances=stats.instances,
            failed=stats.failed,
            bytes=stats.bytes,
            failures=dict(stats.reasons) or None,
            refused_contexts=refused_contexts(event.assoc) or None,
        )

    # -- services -------------------------------------------------------------------

    def on_echo(self, event: Event) -> int:
        """EVT_C_ECHO: always Success."""
        return 0x0000

    def on_store(self, event: Event) -> Dataset | int:
        """EVT_C_STORE: validate, spool durably, answer; the index row follows."""
        with self._lock:
            stats = self._associations.get(id(event.assoc))
        if stats is None:
            _discard_writer(event.request)
            return self._refuse(None, "association_unknown", StoreStatus.OUT_OF_RESOURCES)
        status, reason = self._store(event, stats)
        if status != StoreStatus.SUCCESS:
            return self._refuse(stats, reason, status)
        return int(status)

    def _refuse(self, stats: _AssociationStats | None, reason: str, status: StoreStatus) -> Dataset:
        metrics.STORE_FAILURES.labels(reason.split(":")[0]).inc()
        if stats is not None:
            with self._lock:
                stats.failed += 1
                stats.reasons[reason.split(":")[0]] += 1
        LOGGER.warning("store_refused", reason=reason, status=f"0x{int(status):04X}")
        response = Dataset()
        response.Status = int(status)
        response.ErrorComment = reason[:64]
        return response

    def open_data_set(self, assoc: Association, request: C_STORE,
                      context_id: int) -> SpoolPart | None:
        """A spool part for a C-STORE request's data set, started with the file header
        it will have; ``None`` unless the association was accepted and will hand the
        request to :meth:`on_store` (else nothing would commit or discard the part)."""
        with self._lock:
            stats = self._associations.get(id(assoc))
        if stats is None or not (
            isinstance(assoc, EventDrivenAssociation) and assoc.serves_storage(context_id)
        ):
            return None
        context = assoc._accepted_cx[context_id]
        header = _file_header(request, context.transfer_syntax[0], stats.peer)
        return self.spool.begin(header, writeback=True, floor=_disk_floor(self._config()))

    def admitted_associations(self) -> int:
        """Associations admitted and not yet closed."""
        with self._lock:
            return len(self._associations)

    def max_instance_bytes(self) -> int:
        """The size limit of a received instance (``limits.max_instance_mb``), in bytes."""
        return _instance_limit(self._config())

    def _store(self, event: Event, stats: _AssociationStats) -> tuple[StoreStatus, str]:
        request = event.request
        if _sop_class_refused(event):
            _discard_writer(request)
            return (StoreStatus.SOP_CLASS_NOT_SUPPORTED,
                    f"sop_class_not_supported: {request.AffectedSOPClassUID} on the context"
                    f" of {event.context.abstract_syntax}")
        if isinstance(request, DiscardedStore):
            return StoreStatus.OUT_OF_RESOURCES, "instance_too_large"
        writer = request.writer if isinstance(request, DirectStore) else None
        if isinstance(writer, SpoolPart):
            return self._store_written(event, stats, writer)
        # The received bytes are written as they are, after a file meta header.
        stream = event.encoded_dataset(include_meta=False)
        header = _file_header(request, event.context.transfer_syntax, stats.peer)
        size = len(header) + len(stream)
        status, reason, meta = self._check(event, stream, size, unwritten=size)
        if meta is None:
            return status, reason
        part = self.spool.begin(header, stream)
        try:
            return self._commit(stats, meta, part)
        finally:
            part.discard()

    def _store_written(
        self, event: Event, stats: _AssociationStats, part: SpoolPart
    ) -> tuple[StoreStatus, str]:
        """Check and commit an instance whose data set went to ``part`` as it arrived."""
        try:
            with part.data() as stream:
                status, reason, meta = self._check(event, stream, part.size, unwritten=0)
            if meta is None:
                return status, reason
            return self._commit(stats, meta, part)
        except OSError as exc:  # a write failed while the data set arrived
            return _spool_failure(exc)
        finally:
            part.discard()

    def _check(
        self, event: Event, stream: bytes | memoryview, size: int, unwritten: int
    ) -> tuple[StoreStatus, str, InstanceMeta | None]:
        """Check a received instance of ``size`` bytes (with its file header), of which
        ``unwritten`` are not on disk yet, before it is kept; its index description if
        it passes."""
        request = event.request
        config = self._config()
        syntax = event.context.transfer_syntax
        max_bytes = _instance_limit(config)
        if size > max_bytes:
            return StoreStatus.OUT_OF_RESOURCES, "instance_too_large", None
        if self.spool.free_bytes() < _disk_floor(config) + unwritten:
            return StoreStatus.OUT_OF_RESOURCES, DISK_FLOOR_REASON, None
        if self.writer.backlog >= MAX_INDEX_BACKLOG:
            return (StoreStatus.OUT_OF_RESOURCES,
                    "index_backlog: the index is not keeping up", None)
        try:
            identifying = _screen(stream, syntax, max_bytes)
        except MalformedDataset as exc:
            return StoreStatus.CANNOT_UNDERSTAND, f"malformed_dataset: {redact(str(exc))}", None
        try:
            meta = self._meta(identifying, request, syntax, size)
        except ValueError as exc:
            return StoreStatus.CANNOT_UNDERSTAND, f"invalid_dataset: {redact(str(exc))}", None
        except Exception as exc:
            return (StoreStatus.CANNOT_UNDERSTAND,
                    f"undecodable_dataset: {type(exc).__name__}", None)
        if meta.sop_class_uid != str(request.AffectedSOPClassUID):
            return StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, "sop_class_mismatch", None
        return StoreStatus.SUCCESS, "checked", meta

    def _commit(
        self, stats: _AssociationStats, meta: InstanceMeta, part: SpoolPart
    ) -> tuple[StoreStatus, str]:
        """Make a checked instance durable in the spool; submit its index row."""
        path = self.spool.path_for(
            meta.study_instance_uid, meta.series_instance_uid, meta.sop_instance_uid
        )
        try:
            self.spool.commit(part, path)
        except SpoolError as exc:
            return _spool_failure(exc)
        meta = InstanceMeta(**{**meta.__dict__, "path": str(path)})
        self.writer.submit(Received(meta, stats.peer, stats.record_id, self.clock.now()))
        with self._lock:
            stats.instances += 1
            stats.bytes += part.size
        metrics.BYTES.inc(part.size)
        return StoreStatus.SUCCESS, "stored"

    @staticmethod
    def _indexed(item: Received, created: bool) -> None:
        if created:
            metrics.INSTANCES.labels(item.peer.called_ae).inc()
        else:
            metrics.DUPLICATES.inc()
            LOGGER.info("duplicate_instance", sop_instance_uid=item.meta.sop_instance_uid)

    @staticmethod
    def _meta(
        identifying: dict[int, bytes], request: Any, transfer_syntax: str, size: int
    ) -> InstanceMeta:
        """The index's description of an instance from its identifying elements' values."""
        sop_instance = str(request.AffectedSOPInstanceUID)
        uids = {keyword: _uid_value(identifying.get(tag)) for keyword, tag in UID_TAGS.items()}
        for keyword, value in uids.items():
            if not is_valid_uid(value):
                raise ValueError(f"missing or illegal {keyword}")
        if uids["SOPInstanceUID"] != sop_instance:
            raise ValueError("SOPInstanceUID differs from the request's")
        charset = identifying.get(SPECIFIC_CHARACTER_SET)
        terms = charset.decode("ascii", "replace").split("\\") if charset else []
        if len(terms) > MAX_CHARSET_TERMS:
            raise ValueError(f"Specific Character Set has {len(terms)} values")
        encodings = convert_encodings([v.strip() for v in terms]) if terms else None
        texts = {
            name: _text_value(identifying.get(tag), encodings, TEXT_WIDTHS[name])
            for name, tag in TEXT_TAGS.items()
        }
        return InstanceMeta(
            study_instance_uid=str(uids["StudyInstanceUID"]),
            series_instance_uid=str(uids["SeriesInstanceUID"]),
            sop_instance_uid=sop_instance,
            sop_class_uid=str(uids["SOPClassUID"]),
            transfer_syntax_uid=str(transfer_syntax),
            path="",
            size_bytes=size,
            **texts,
        )

    def handlers(self) -> list[tuple[Any, ...]]:
        """The pynetdicom event handler list."""
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_RELEASED, self.on_closed, ["released"]),
            (evt.EVT_ABORTED, self.on_closed, ["aborted"]),
            (evt.EVT_CONN_CLOSE, self.on_closed, ["connection_closed"]),
        ]


SPECIFIC_CHARACTER_SET = 0x00080005
UID_TAGS = {
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
}
"""The UIDs that file and index an instance."""
MAX_CHARSET_TERMS = 8
"""Most values of Specific Character Set accepted (PS3.3 C.12.1.1.2 defines 14 code
extension terms; a data set uses a few): pydicom logs a warning for each unknown one."""
TEXT_TAGS = {"modality": 0x00080060, "body_part": 0x00180015, "study_description": 0x00081030}
"""The texts the index keeps of an instance."""
IDENTIFYING_TAGS = frozenset({SPECIFIC_CHARACTER_SET, *UID_TAGS.values(), *TEXT_TAGS.values()})
"""The top-level elements whose encoded values :func:`_screen` keeps."""


def _file_header(request: C_STORE, transfer_syntax: str, peer: Peer) -> bytes:
    """What precedes a received data set in its spooled file: the request's SOP Class
    and Instance UIDs, the context's transfer syntax and the association's peer."""
    return file_header(
        str(request.AffectedSOPClassUID),
        str(request.AffectedSOPInstanceUID),
        str(transfer_syntax),
        peer,
    )


def _sop_class_refused(event: Event) -> bool:
    """Whether a C-STORE request names a SOP class that is not stored on its context
    (:meth:`~dicom_node.reactor.EventDrivenAssociation.refuses_sop_class`)."""
    assoc = event.assoc
    return isinstance(assoc, EventDrivenAssociation) and assoc.refuses_sop_class(
        event.request, int(event.context.context_id))


def _discard_writer(request: C_STORE) -> None:
    """Discard what a direct request's data set was written to, if anything."""
    if isinstance(request, DirectStore) and request.writer is not None:
        request.writer.discard()


def _spool_failure(exc: OSError) -> tuple[StoreStatus, str]:
    """The status and reason of an instance the spool could not keep."""
    if isinstance(exc, BelowFloor):
        return StoreStatus.OUT_OF_RESOURCES, DISK_FLOOR_REASON
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreStatus.OUT_OF_RESOURCES, "disk_full"
    return StoreStatus.OUT_OF_RESOURCES, f"spool_error: {exc.strerror}"


def _uid_value(raw: bytes | None) -> str | None:
    """A UI value as sent, without its padding (``None`` when absent)."""
    return None if raw is None else raw.decode("ascii", "replace").strip("\0 ")


def _text_value(raw: bytes | None, encodings: list[str] | None, width: int) -> str | None:
    """A text value decoded in the data set's character set, made fit for its index
    column of ``width`` characters (:func:`~dicom_node.index.store.index_text`)."""
    return index_text(convert_text(raw, encodings), width) if raw else None


MAX_DEFLATE_RATIO = 200
"""Most a deflated data set may inflate, as a multiple of its deflated size, above
:data:`MIN_INFLATE_BOUND`: ultrasound images deflate a few times to some tens of times
(black backgrounds); a data set inflating a thousandfold is a decompression bomb, which
every later reading of the file would inflate whole again."""
MIN_INFLATE_BOUND = 64 * 2**20
"""Size up to which a deflated data set may inflate whatever its ratio (64 MiB)."""

DEFLATE_PADDING = b"\0"
"""What may follow a deflated data set's stream: one NUL byte padding it to an even
length (pydicom and pynetdicom write it)."""


def _inflate(data: bytes | memoryview, max_bytes: int) -> bytes:
    """A deflated data set inflated, at most ``max_bytes`` of it; it must be one whole
    deflate stream (its final block reached), followed by nothing but padding."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise MalformedDataset(f"deflated data set does not inflate: {exc}") from exc
    if len(inflated) > max_bytes or inflater.unconsumed_tail:
        raise MalformedDataset(f"deflated data set inflates beyond {max_bytes} bytes "
                               "(the instance size limit, or 200 times its deflated size)")
    if not inflater.eof:
        raise MalformedDataset("deflated data set ends before its deflate stream")
    if inflater.unused_data not in (b"", DEFLATE_PADDING):
        raise MalformedDataset(
            f"{len(inflater.unused_data)} bytes after the deflated data set's stream")
    return inflated


def _screen(data: bytes | memoryview, syntax: Any, max_bytes: int) -> dict[int, bytes]:
    """Check the structure of a received data set, inflating a deflated one (bounded);
    return the encoded values of its :data:`IDENTIFYING_TAGS`."""
    if syntax.is_deflated:
        data = _inflate(data, min(max_bytes, max(MIN_INFLATE_BOUND,
                                                 MAX_DEFLATE_RATIO * len(data))))
    return check_structure(
        data, syntax.is_implicit_VR, syntax.is_little_endian, keep=IDENTIFYING_TAGS
    )


MIN_PDU_LIMIT = 65536
"""Association requests may be longer than a small maximum PDU; never limit below this."""


class PduLimitedSocket(AssociationSocket):
    """An association socket that refuses PDUs longer than the node's maximum PDU, or
    slower than the network timeout, and reads a PDU in as few system calls as the
    kernel allows.

    pynetdicom reads whatever length a PDU header announces; a peer announcing
    gigabytes would have it buffered.  Reading more than the limit raises
    :class:`OSError`, which pynetdicom treats as a closed connection.

    pynetdicom reads 4 kB per call and appends each piece to a growing buffer
    (a 256 kB PDU: 64 calls, 130 µs of CPU); here the PDU goes straight into a
    buffer of its size, as much per call as has arrived (22 µs).
    """

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` unless that exceeds the maximum PDU length; fewer only if
        the peer closes the connection first (as pynetdicom's ``recv``)."""
        limit = int(self.assoc.acceptor.maximum_length or 0)
        if limit and nr_bytes > max(limit, MIN_PDU_LIMIT) + PDU_HEADER_BYTES:
            LOGGER.warning(
                "pdu_too_large",
                peer=str(self.assoc.requestor.address),
                announced_bytes=nr_bytes,
                limit_bytes=limit,
            )
            raise OSError(f"PDU of {nr_bytes} bytes exceeds the limit of {limit}")
        assert self.socket is not None
        timeout = self.socket.gettimeout()
        deadline = None if timeout is None else time.monotonic() + timeout
        buffer = bytearray(nr_bytes)
        read = 0
        with memoryview(buffer) as view:
            while read < nr_bytes:
                count = self.socket.recv_into(view[read:], nr_bytes - read)
                if not count:
                    break
                read += count
                if deadline is not None and read < nr_bytes and time.monotonic() > deadline:
                    self._too_slow(read, nr_bytes, timeout)
        del buffer[read:]
        return buffer

    def _too_slow(self, read: int, nr_bytes: int, timeout: float | None) -> None:
        """Give up a PDU still arriving after the network timeout: the socket's timeout
        bounds each read, so a peer sending a byte at a time would hold the association's
        threads for good."""
        LOGGER.warning("pdu_too_slow", peer=str(self.assoc.requestor.address),
                       received_bytes=read, announced_bytes=nr_bytes, seconds=timeout)
        raise OSError(f"{read} of {nr_bytes} bytes of a PDU arrived in {timeout} s")


def copy_contexts(contexts: list[PresentationContext]) -> list[PresentationContext]:
    """Copies of the server's presentation contexts for one association to negotiate.

    pynetdicom deep-copies them for each association, which remakes (and
    validates with regular expressions) every UID: about 4 ms of CPU per
    association for the node's contexts.  A context's only mutable part is its
    list of transfer syntaxes; UIDs are immutable strings and are shared.
    """
    copies = []
    for context in contexts:
        duplicate = copy.copy(context)
        duplicate._transfer_syntax = list(context._transfer_syntax)
        copies.append(duplicate)
    return copies


class GuardedRequestHandler(RequestHandler):
    """Completes the TLS handshake in the association's own thread, limits PDU sizes."""

    def _create_association(self) -> Association:
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.do_handshake()
            except OSError as exc:  # ssl.SSLError included
                LOGGER.warning(
                    "tls_handshake_failed", peer=str(self.client_address[0]), reason=str(exc)
                )
                raise
        return self._event_driven_association()

    def _event_driven_association(self) -> Association:
        """pynetdicom 3.0's acceptor set-up, with an event-driven association, a
        PDU-limited socket, and C-STORE requests and responses coded directly."""
        assoc = EventDrivenAssociation(
            self.ae, MODE_ACCEPTOR, partial(self.server.connection_ended, self.request)
        )
        limit = self.server.instance_limit
        opener = self.server.open_data_set
        assoc.dimse = StoreRequestDIMSE(
            assoc,
            None if limit is None else limit(),
            None if opener is None else partial(opener, assoc),
        )
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(PduLimitedSocket(assoc, client_socket=self.request))
        acceptor = assoc.acceptor
        acceptor.maximum_length = self.ae.maximum_pdu_size
        acceptor.ae_title = self.server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        acceptor.supported_contexts = copy_contexts(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event, handlers in self.server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in handlers:
                    assoc.bind(event, handler, args)
        return assoc


class NoDelayAssociationServer(ThreadedAssociationServer):
    """Association server that disables Nagle's algorithm on accepted sockets.

    Each accepted socket gets the network timeout, so a peer that stops in
    the middle of a PDU cannot hold an association thread forever, and the
    TLS handshake is left to the association's thread, so a peer that never
    completes it cannot block the accept loop.  Connections from one address
    are capped at :attr:`max_connections_per_ip`: a connection that never
    becomes an association (silent, or a broken request) holds its thread for
    up to the ACSE timeout, and one address must not hold them all.
    """

    max_connections_per_ip = 16
    max_unadmitted = MAX_UNADMITTED_CONNECTIONS
    admitted_associations: Callable[[], int] | None = None
    """Returns how many associations the node has admitted (and not yet closed)."""
    instance_limit: Callable[[], int] | None = None
    """Returns the size limit of a received data set, read as each association starts."""
    open_data_set: Callable[[Association, C_STORE, int], SpoolPart | None] | None = None
    """Opens the spool part a C-STORE request's data set is written to as it arrives."""

    def server_activate(self) -> None:
        """Listen, with no connection pending."""
        self._pending_lock = threading.Lock()
        self._pending: set[tuple[str, int]] = set()
        super().server_activate()

    def _connections(self) -> set[tuple[str, int]]:
        """``(host, port)`` of the live connections: the associations pynetdicom runs as
        acceptor and the connections not yet handed to one (a connection is briefly both)."""
        live = {
            (str(a.requestor.address), int(a.requestor.port))
            for a in self.ae.active_associations
            if a.is_acceptor
        }
        return live | self._pending

    def _refusal(self, host: str) -> str | None:
        """Why a new connection from ``host`` is closed at once, or ``None``."""
        connections = self._connections()
        if sum(1 for peer in connections if peer[0] == host) >= self.max_connections_per_ip:
            return f"more than {self.max_connections_per_ip} connections from this address"
        admitted = self.admitted_associations() if self.admitted_associations else 0
        if len(connections) - admitted >= self.max_unadmitted:
            return f"more than {self.max_unadmitted} connections without an association"
        return None

    @staticmethod
    def _peer(client_address: Any) -> tuple[str, int]:
        """``(host, port)`` of a client address (IPv4 or IPv6)."""
        return str(client_address[0]), int(client_address[1])

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Accept a connection unless its address already holds its share, or the
        process holds :attr:`max_unadmitted` connections without an admitted association."""
        peer = self._peer(client_address)
        with self._pending_lock:
            refusal = self._refusal(peer[0])
            if refusal is None:
                self._pending.add(peer)
        if refusal is not None:
            metrics.CONNECTIONS_REFUSED.inc()
            LOGGER.warning("connection_refused", peer=peer[0], reason=refusal)
        return refusal is None

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Start the connection's association; from then on it counts as live."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._pending_lock:
                self._pending.discard(self._peer(client_address))

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection, set TCP_NODELAY and a timeout, wrap it for TLS if configured."""
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(self.ae.network_timeout)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def connection_ended(self, request: Any) -> None:
        """Called as the association on ``request`` ends (nothing to count in one process)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed handshake is logged by the handler; anything else that escapes a
        connection's handler is logged with its traceback (redacted), never printed raw
        to the console as :mod:`socketserver` does."""
        if not isinstance(request, ssl.SSLSocket):
            LOGGER.error("connection_handler_failed", address=client_address[0],
                         exc_info=True)


def register_storage_classes(extra: Sequence[str] = ()) -> None:
    """Teach pynetdicom that the retired US classes and the ``extra`` (configured)
    classes are Storage classes (idempotent).  A configured class pynetdicom does not
    know gets the keyword ``Storage_`` and its UID's digits (``Storage_1_2_3``)."""
    keywords = {uid: "Storage_" + uid.replace(".", "_") for uid in extra}
    for uid, keyword in {**keywords, **RETIRED_STORAGE_CLASSES}.items():
        if uid_to_service_class(uid) is not StorageServiceClass:
            register_uid(uid, keyword, StorageServiceClass)


def build_ae(config: NodeConfig) -> AE:
    """An AE with the node's presentation contexts, limits and timeouts."""
    register_storage_classes(config.extra_storage_classes)
    ae = AE(ae_title=config.ae_title)
    ae.require_called_aet = False
    ae.maximum_pdu_size = config.limits.max_pdu
    ae.maximum_associations = config.limits.max_associations + MAX_UNADMITTED_CONNECTIONS
    ae.acse_timeout = config.limits.acse_timeout
    ae.dimse_timeout = config.limits.dimse_timeout
    ae.network_timeout = config.limits.network_timeout
    ae.add_supported_context(Verification)
    classes = [*sorted(ULTRASOUND_SOP_CLASSES), *ACCEPTED_ONLY_SOP_CLASSES]
    for uid in [*classes, *(uid for uid in config.extra_storage_classes if uid not in classes)]:
        ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
    return ae


def server_ssl_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The TLS context for receiving, or ``None`` without TLS.

    With ``ca_certificates`` a calling node's certificate is asked for and, when it
    presents one, must be signed by them; ``require_client_certificate`` also refuses
    callers that present none.
    """
    tls = config.tls
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    except OSError as exc:  # ssl.SSLError included
        raise ConfigError(f"tls.certificate {tls.certificate}, tls.private_key "
                          f"{tls.private_key}: cannot load: {exc.strerror or exc}") from exc
    context.verify_mode = ssl.CERT_NONE
    if tls.ca_certificates is not None:
        try:
            context.load_verify_locations(str(tls.ca_certificates))
        except OSError as exc:  # ssl.SSLError included
            raise ConfigError(f"tls.ca_certificates {tls.ca_certificates}: cannot load: "
                              f"{exc.strerror or exc}") from exc
        context.verify_mode = (ssl.CERT_REQUIRED if tls.require_client_certificate
                               else ssl.CERT_OPTIONAL)
    return context


CONTEXT_RESULTS = {
    0x01: "refused by the node",
    0x02: "no reason",
    0x03: "SOP class not supported",
    0x04: "transfer syntaxes not supported",
}
"""Presentation context results of an A-ASSOCIATE-AC (PS3.8 9.3.3.2), in words."""


def refused_contexts(assoc: Association) -> list[str]:
    """The presentation contexts the node refused on ``assoc``, as ``<SOP class>: <why>``
    (what a modality administrator asks when a CT or a transfer syntax is not taken)."""
    return sorted({
        f"{UID(context.abstract_syntax).name}: "
        f"{CONTEXT_RESULTS.get(context.result or 0, f'result {context.result}')}"
        for context in assoc.rejected_contexts
    })


class SharedSocketAssociationServer(NoDelayAssociationServer):
    """Association server of one of several processes accepting from one socket.

    The main process binds the socket; the others are given it
    (``listening``).  The socket does not block, so a process that finds a
    connection already taken by another goes back to waiting.  Before it
    accepts, a process holding more connections than another one leaves the
    connection to that one for up to :data:`~dicom_node.balance.HAND_OFF_SECONDS`
    (:mod:`dicom_node.balance`).
    """

    def __init__(self, *args: Any, load: LoadSlot, listening: socket.socket | None = None,
                 **kwargs: Any) -> None:
        self.load = load
        self._listening = listening
        self._held: set[Any] = set()
        self._held_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        """Bind (main process), or take the socket the main process bound."""
        if self._listening is None:
            super().server_bind()
            return
        assert self.socket is not None
        self.socket.close()
        self.socket = self._listening
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Listen, and accept without blocking."""
        super().server_activate()
        assert self.socket is not None
        self.socket.setblocking(False)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a waiting connection unless a less busy process takes it first."""
        assert self.socket is not None
        deadline = time.monotonic() + HAND_OFF_SECONDS
        while self.load.busier_than_another() and time.monotonic() < deadline:
            time.sleep(HAND_OFF_POLL_SECONDS)
            if not select.select([self.socket], [], [], 0)[0]:
                raise BlockingIOError(errno.EAGAIN, "taken by another receiving process")
        client, address = super().get_request()
        with self._held_lock:
            self._held.add(client)
            self.load.add(1)
        return client, address

    def shutdown_request(self, request: Any) -> None:
        """Close a connection (refused, failed, or its association ended)."""
        super().shutdown_request(request)
        self.connection_ended(request)

    def connection_ended(self, request: Any) -> None:
        """``request`` no longer counts (once, however many paths report its end)."""
        with self._held_lock:
            if request in self._held:
                self._held.remove(request)
                self.load.add(-1)

    def server_close(self) -> None:
        """Stop accepting here: the other processes no longer leave connections to this
        one, and still listen on the socket (pynetdicom would shut it down for all)."""
        self.load.retire()
        assert self.socket is not None
        self.socket.close()


def start_receiver(
    config: NodeConfig,
    receiver: Receiver,
    load: LoadSlot | None = None,
    listening: socket.socket | None = None,
) -> tuple[AE, ThreadedAssociationServer]:
    """Start the SCP in a background thread and return the AE and its server.

    Parameters
    ----------
    config:
        The node's configuration (AE title, address, limits, TLS).
    receiver:
        What handles the associations and their instances.
    load:
        This process's place among several receiving processes, ``None`` when
        it receives alone.
    listening:
        With ``load``, the socket the main process bound (``None`` in the main
        process, which binds it).
    """
    ae = build_ae(config)
    ssl_context = server_ssl_context(config)
    try:
        server = ae.make_server(
            (config.host, config.port),
            evt_handlers=receiver.handlers(),
            ssl_context=ssl_context,
            server_class=(
                NoDelayAssociationServer if load is None else SharedSocketAssociationServer
            ),
            request_handler=GuardedRequestHandler,
            **({} if load is None else {"load": load, "listening": listening}),
        )
    except OSError as exc:
        raise OSError(exc.errno, f"DICOM port {config.host}:{config.port}: {exc.strerror}"
                      ) from exc
    server.max_connections_per_ip = 2 * config.limits.max_associations_per_ip
    server.admitted_associations = receiver.admitted_associations
    server.instance_limit = receiver.max_instance_bytes
    server.open_data_set = receiver.open_data_set
    thread = threading.Thread(target=server.serve_forever, name="dicom-receiver", daemon=True)
    thread.start()
    ae._servers.append(server)
    LOGGER.info(
        "receiver_started",
        ae_title=config.ae_title,
        host=config.host,
        port=server.server_address[1],
        tls=config.tls is not None,
    )
    return ae, server
