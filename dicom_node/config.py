"""Node configuration: pydantic models, YAML loading with line-numbered errors.

The YAML file is the source of truth for AE titles, pipelines and
destinations.  A bad file fails with :class:`ConfigError`, whose message
names the offending key and its line.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydicom.config import IGNORE
from pydicom.uid import UID
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

RETURN_TO_SENDER = "return-to-sender"
"""Destination name meaning: send results back to the calling AE."""

ENGINE_NAMES: tuple[str, ...] = ("liver", "breast", "cardiac")
"""Engines a rule may name (kept in step with inference.engines.registry)."""

MAX_AUTO_RECEIVERS = 4
"""Most receiving processes ``receivers: auto`` starts (each holds about 100 MiB)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message says where."""


def validate_ae_title(value: str) -> str:
    """Check an AE title against PS3.5 (AE VR) and return it stripped.

    Raises
    ------
    ValueError
        If it is empty or only spaces, longer than 16 characters, or contains
        a backslash or a control character.
    """
    if not isinstance(value, str):
        raise ValueError("an AE title must be a string")
    stripped = value.strip(" ")
    if not stripped:
        raise ValueError("an AE title cannot be empty or only spaces")
    if len(value) > 16:
        raise ValueError(f"AE title {value!r} is longer than 16 characters")
    if _CONTROL.search(value):
        raise ValueError(f"AE title {value!r} contains a backslash or control character")
    return stripped


AETitle = Annotated[str, AfterValidator(validate_ae_title)]


def validate_storage_class_uid(value: str) -> str:
    """Check a SOP Class UID that is to be accepted for storage.

    Raises
    ------
    ValueError
        If it is not a valid UID (PS3.5 9.1), or pynetdicom knows it as a SOP class
        of another service than Storage (Verification, Query/Retrieve...).
    """
    if not isinstance(value, str) or not UID(value.strip(), validation_mode=IGNORE).is_valid:
        raise ValueError(f"{value!r} is not a UID")
    uid = value.strip()
    service = uid_to_service_class(uid)
    if service not in (ServiceClass, StorageServiceClass):
        raise ValueError(f"{uid} is a SOP class of the {service.__name__}, not a storage class")
    return uid


StorageClassUID = Annotated[str, AfterValidator(validate_storage_class_uid)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(_Model):
    """DICOM TLS settings (PEM files)."""

    certificate: Path | None = None
    """The node's certificate (chain); required to receive, and to send to a destination
    that asks for a client certificate (IHE ATNA)."""
    private_key: Path | None = None
    """The key of ``certificate``; the two go together."""
    ca_certificates: Path | None = None
    require_client_certificate: bool = False
    verify_hostname: bool = False
    """Sending to a destination with ``ca_certificates``: also require its certificate to
    name the host dialled (a DNS name or IP address in subjectAltName). Off by default:
    DICOM nodes are often addressed by an IP address their certificates do not name, and
    IHE ATNA authenticates a node by its certificate's trust, not its name."""

    @model_validator(mode="after")
    def _key_with_certificate(self) -> TLSConfig:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together: give both or neither")
        return self


class Caller(_Model):
    """A calling node allowed to send to a pipeline."""

    ae_title: AETitle
    host: str | None = None
    """IP address the association must come from; any when omitted."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port to reach the caller on, for return-to-sender results."""

    @field_validator("host")
    @classmethod
    def _ip_address(cls, value: str | None) -> str | None:
        """An IP address: a host name or a network would be taken and then match no
        association, locking the caller out."""
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address: give the address the caller connects from"
            ) from None


class Destination(_Model):
    """A C-STORE destination for results."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: AETitle
    host: str
    port: int = Field(ge=1, le=65535)
    tls: TLSConfig | None = None
    overlay_capture: bool = False
    """Also send the secondary-capture "AI overlay" image to this destination."""

    def warnings(self) -> list[str]:
        """What an administrator should know about this destination, in words: it is
        sent to over TLS without checking the archive's certificate."""
        if self.tls is not None and self.tls.ca_certificates is None:
            return [f"{self.name} is sent to over TLS without ca_certificates: any "
                    "certificate is accepted, so an impostor could receive the results"]
        return []

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == RETURN_TO_SENDER:
            raise ValueError(f"{RETURN_TO_SENDER!r} is reserved")
        return value


class Match(_Model):
    """Criteria of a routing rule; every given criterion must hold."""

    modality: list[str] | None = None
    body_part: list[str] | None = None
    sop_class: list[str] | None = None
    calling_ae: list[str] | None = None
    study_description: str | None = None
    """Regular expression searched in StudyDescription (case-insensitive)."""

    @field_validator("study_description")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value


class Rule(_Model):
    """A routing rule: which images go to which engines."""

    name: str = Field(min_length=1)
    match: Match = Match()
    engines: list[Literal["liver", "breast", "cardiac"]] = Field(min_length=1)


class Completion(_Model):
    """When a study counts as complete."""

    quiet_seconds: float = Field(default=30.0, gt=0)
    expected_series: int | None = Field(default=None, ge=1)


class ResultsConfig(_Model):
    """Which result objects a pipeline writes."""

    segmentation: bool = True
    presentation_state: bool = True
    report_not_assessed: bool = True
    report_nothing_found: bool = True


def _default_rules() -> list[Rule]:
    return [Rule(name="all-ultrasound", match=Match(modality=["US"]), engines=list(ENGINE_NAMES))]


class Pipeline(_Model):
    """What the node does for one called AE title."""

    called_ae: AETitle
    allowed_callers: list[Caller] | None = None
    """Callers allowed to associate; ``None`` accepts any caller."""
    completion: Completion = Completion()
    rules: list[Rule] = Field(default_factory=_default_rules)
    destinations: list[str] = Field(default_factory=list)
    results: ResultsConfig = ResultsConfig()

    def warnings(self) -> list[str]:
        """What an administrator should know about this pipeline, in words: it accepts
        any caller, sends its results nowhere, or cannot return them to any sender."""
        found = []
        if self.allowed_callers is None:
            found.append(f"{self.called_ae} accepts any calling AE")
        if not self.destinations:
            found.append(f"{self.called_ae} has no destination: its results are not sent")
        if RETURN_TO_SENDER in self.destinations and not any(
                caller.port is not None for caller in self.allowed_callers or []):
            found.append(f"{self.called_ae} returns results to the sender, but no allowed "
                         "caller has a port: none can be returned")
        return found


class Limits(_Model):
    """Network and resource limits."""

    max_associations: int = Field(default=16, ge=1)
    max_associations_per_ip: int = Field(default=8, ge=1)
    max_pdu: int = Field(default=262144, ge=0)
    max_instance_mb: float = Field(default=2048.0, gt=0)
    acse_timeout: float = Field(default=30.0, gt=0)
    dimse_timeout: float = Field(default=60.0, gt=0)
    network_timeout: float = Field(default=60.0, gt=0)
    min_free_disk_mb: float = Field(default=1024.0, ge=0)


class ExportPolicy(_Model):
    """Retry policy of the exporter."""

    max_attempts: int = Field(default=100, ge=1)
    """Attempts before an export goes to the error queue: with the default backoff, about
    24 hours, so an archive's maintenance window or a night's outage does not need an
    operator."""
    backoff_initial_seconds: float = Field(default=10.0, gt=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    backoff_max_seconds: float = Field(default=900.0, gt=0)
    batch_size: int = Field(default=50, ge=1)


class RetentionPolicy(_Model):
    """How long the spool keeps a study once it is finished with (:mod:`dicom_node.retention`)."""

    keep_days: float | None = Field(default=14.0, gt=0)
    """Days after a study's last activity (an instance received, a job finished, an export
    delivered) before its images and results are removed from the spool and the index,
    once every job of it is done and every export delivered or discarded; ``null`` keeps
    everything."""


class NodeConfig(_Model):
    """The whole node configuration."""

    ae_title: AETitle = "DICOM_NODE"
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    receivers: Annotated[int, Field(ge=1, le=32)] | Literal["auto"] = "auto"
    """Processes receiving on ``port`` (one listening socket); ``auto`` is one per usable CPU
    core on Linux, at most :data:`MAX_AUTO_RECEIVERS`, and one elsewhere.  See
    :mod:`dicom_node.receivers`."""
    inference_threads: int = Field(default=1, ge=1, le=64)
    """torch threads of the engines; 1 keeps a 2-core node responsive while it receives
    (benchmarks/history.md: 1 thread was faster than 2 on a loaded 2-core machine)."""
    analysis_ahead_mb: int = Field(default=128, ge=0)
    """Memory for the results of images analysed while their study is still arriving
    (:mod:`dicom_node.ahead`); 0 analyses images only once their study is complete."""
    data_dir: Path = Path("./var")
    database_url: str | None = None
    """SQLAlchemy URL; SQLite in the data dir when omitted."""
    tls: TLSConfig | None = None
    limits: Limits = Limits()
    export: ExportPolicy = ExportPolicy()
    retention: RetentionPolicy = RetentionPolicy()
    destinations: list[Destination] = Field(default_factory=list)
    pipelines: list[Pipeline] = Field(default_factory=list)
    extra_storage_classes: list[StorageClassUID] = Field(default_factory=list)
    """Storage SOP classes accepted beyond the built-in ones (a scanner's private
    classes, say), with every accepted transfer syntax; their instances are kept with
    their study and not analysed.  Read when the node starts."""
    manufacturer: str = "US-AI DICOM Node project"
    institution_name: str | None = None
    api_host: str = "127.0.0.1"
    """Address of the admin REST API and status page."""
    api_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the admin REST API; 0 disables it."""
    admin_token: SecretStr | None = None
    """Bearer token for state-changing API calls (env ``DICOM_NODE_ADMIN_TOKEN`` wins)."""

    @model_validator(mode="after")
    def _consistent(self) -> NodeConfig:
        if self.tls is not None and self.tls.certificate is None:
            raise ValueError("tls: receiving over TLS needs the node's certificate and "
                             "private_key")
        if (self.tls is not None and self.tls.require_client_certificate
                and self.tls.ca_certificates is None):
            raise ValueError("tls: require_client_certificate needs ca_certificates, the CA "
                             "that signs the calling nodes' certificates")
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError("destination names must be unique")
        called = [p.called_ae for p in self.pipelines]
        if len(set(called)) != len(called):
            raise ValueError("each called_ae may have only one pipeline")
        for pipeline in self.pipelines:
            for name in pipeline.destinations:
                if name != RETURN_TO_SENDER and name not in names:
                    raise ValueError(
                        f"pipeline {pipeline.called_ae!r} names unknown destination {name!r}"
                    )
        return self

    @property
    def database(self) -> str:
        """The SQLAlchemy URL of the index."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    def receiver_count(self) -> int:
        """How many processes receive on the port (``receivers`` with ``auto`` resolved)."""
        if self.receivers != "auto":
            return self.receivers
        if not sys.platform.startswith("linux"):
            return 1  # several receiving processes are tested on Linux only
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, min(MAX_AUTO_RECEIVERS, cores or 1))

    def pipeline_for(self, called_ae: str) -> Pipeline | None:
        """The pipeline of a called AE title, or ``None``."""
        wanted = called_ae.strip()
        return next((p for p in self.pipelines if p.called_ae == wanted), None)

    def destination(self, name: str) -> Destination | None:
        """The destination called ``name``, or ``None``."""
        return next((d for d in self.destinations if d.name == name), None)


def _node_line(node: yaml.Node, loc: Sequence[int | str]) -> int | None:
    """Line (1-based) of the YAML node at ``loc``, as deep as it exists."""
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    line = key.start_mark.line + 1
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _format_errors(exc: ValidationError, root: yaml.Node | None, source: str) -> str:
    messages = []
    for error in exc.errors():
        loc = [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        key = ".".join(str(p) for p in loc) or "(top level)"
        where = ""
        if root is not None:
            where = f", line {_node_line(root, loc)}"
        messages.append(f"{source}{where}: {key}: {error['msg']}")
    return "\n".join(messages)


def parse_config(
    data: dict[str, Any], root: yaml.Node | None = None, source: str = "config"
) -> NodeConfig:
    """Validate a configuration mapping.

    Raises
    ------
    ConfigError
        With one line per problem, naming the key (and line when known).
    """
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, root, source)) from exc


def load_config(path: Path) -> NodeConfig:
    """Load and validate a YAML configuration file.

    A relative ``data_dir`` in the file is taken from the file's folder, so that the
    node finds its data whatever folder it is started from (a service starts in ``/``).

    Raises
    ------
    ConfigError
        If the file cannot be read, is empty, is not YAML, or is not a valid config.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        # A truncated copy or a failed edit: starting on defaults would open the node.
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}, line 1: the top level must be a mapping")
    config = parse_config(data, root, str(path))
    if "data_dir" in data and not config.data_dir.is_absolute():
        return config.model_copy(update={"data_dir": path.absolute().parent / config.data_dir})
    return config


def with_overrides(config: NodeConfig, **overrides: Any) -> NodeConfig:
    """Return ``config`` with top-level fields replaced (``None`` values ignored)."""
    values = config.model_dump()
    values.update({k: v for k, v in overrides.items() if v is not None})
    return parse_config(values, source="command line")
