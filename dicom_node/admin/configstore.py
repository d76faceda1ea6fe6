"""Configuration changes made by an administrator: validate, persist, apply.

The YAML file stays the source of truth.  A change is validated with the
configuration models, written to the file atomically (temporary file, fsync,
``os.replace``; the previous file is kept as ``<name>.bak``) and only then
handed to the running node, which uses it for new associations, jobs and
exports.  Only the ``destinations`` and ``pipelines`` sections of the file are
rewritten; every other key stays as written (comments are not preserved).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import yaml

from dicom_node import metrics
from dicom_node.config import ConfigError, Destination, NodeConfig, Pipeline, parse_config

LOGGER = structlog.get_logger(__name__)

HEADER = (
    "# Configuration of the ultrasound AI DICOM node.\n"
    "# The destinations and pipelines sections are rewritten by `dicom-node ae|destinations`\n"
    "# and the admin API; the previous version of this file is kept as <name>.bak.\n"
)


class NotFound(LookupError):
    """The pipeline or destination named in a change does not exist."""


def read_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file; empty when the file does not exist.

    Raises
    ------
    ConfigError
        If the file exists but is not a YAML mapping.
    """
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}, line 1: the top level must be a mapping")
    return data


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or the new file.

    The previous file, if any, is copied to ``<name>.bak`` first.  A new file
    is readable by its owner only (it may hold the admin token).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    if path.exists():
        shutil.copy2(path, path.with_name(path.name + ".bak"))
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class ConfigStore:
    """Applies administrators' changes to AE titles (pipelines) and destinations.

    Parameters
    ----------
    path:
        The YAML file changes are written to (created when missing).
    current:
        Returns the configuration in use.
    apply:
        Called with the new configuration once it is saved (``Node.reconfigure``).
    """

    def __init__(
        self,
        path: Path,
        current: Callable[[], NodeConfig],
        apply: Callable[[NodeConfig], None],
    ) -> None:
        self.path = path
        self._current = current
        self._apply = apply
        self._lock = threading.Lock()
        self._seen = _fingerprint(path)
        """The file as the configuration in use was read from it (see :meth:`_save`)."""

    # -- reading --------------------------------------------------------------------

    def pipeline(self, called_ae: str) -> Pipeline:
        """The pipeline of ``called_ae``.

        Raises
        ------
        NotFound
            If no pipeline answers to that AE title.
        """
        pipeline = self._current().pipeline_for(called_ae)
        if pipeline is None:
            raise NotFound(f"no pipeline for called AE {called_ae!r}")
        return pipeline

    # -- changes --------------------------------------------------------------------

    def add_pipeline(self, pipeline: Pipeline) -> NodeConfig:
        """Add a called AE title with its pipeline.

        Raises
        ------
        ConfigError
            If the AE title already has a pipeline or the pipeline names an
            unknown destination.
        """

        def edit(values: dict[str, Any]) -> None:
            if any(p["called_ae"] == pipeline.called_ae for p in values["pipelines"]):
                raise ConfigError(f"called AE {pipeline.called_ae!r} already has a pipeline")
            values["pipelines"].append(pipeline.model_dump())

        return self._change("ae_add", edit, called_ae=pipeline.called_ae)

    def update_pipeline(self, called_ae: str, pipeline: Pipeline) -> NodeConfig:
        """Replace the pipeline of ``called_ae`` (``pipeline.called_ae`` may rename it).

        Raises
        ------
        NotFound
            If ``called_ae`` has no pipeline.
        ConfigError
            If the result is not a valid configuration.
        """

        def edit(values: dict[str, Any]) -> None:
            position = _position(values["pipelines"], "called_ae", called_ae.strip(), "pipeline")
            values["pipelines"][position] = pipeline.model_dump()

        return self._change(
            "ae_update", edit, called_ae=called_ae, new_called_ae=pipeline.called_ae
        )

    def remove_pipeline(self, called_ae: str) -> NodeConfig:
        """Remove a called AE title; new associations to it are rejected.

        Raises
        ------
        NotFound
            If ``called_ae`` has no pipeline.
        """

        def edit(values: dict[str, Any]) -> None:
            del values["pipelines"][
                _position(values["pipelines"], "called_ae", called_ae.strip(), "pipeline")
            ]

        return self._change("ae_remove", edit, called_ae=called_ae)

    def add_destination(self, destination: Destination) -> NodeConfig:
        """Add a result destination.

        Raises
        ------
        ConfigError
            If a destination of that name exists.
        """

        def edit(values: dict[str, Any]) -> None:
            if any(d["name"] == destination.name for d in values["destinations"]):
                raise ConfigError(f"destination {destination.name!r} already exists")
            values["destinations"].append(destination.model_dump())

        return self._change("destination_add", edit, destination=destination.name)

    def update_destination(self, destination: Destination) -> NodeConfig:
        """Give the destination of that name a new AE title, address or overlay choice
        (an archive moved); its TLS settings are kept unless ``destination`` has its own.
        Pending exports go to the new address.

        Raises
        ------
        NotFound
            If there is no such destination.
        """

        def edit(values: dict[str, Any]) -> None:
            items = values["destinations"]
            position = _position(items, "name", destination.name, "destination")
            updated = destination.model_dump()
            if updated["tls"] is None:
                updated["tls"] = items[position]["tls"]
            items[position] = updated

        return self._change("destination_update", edit, destination=destination.name)

    def remove_destination(self, name: str) -> NodeConfig:
        """Remove a destination no pipeline names any more.

        Exports already queued for it are not sent: the exporter puts them in the error
        queue with the reason.

        Raises
        ------
        NotFound
            If there is no such destination.
        ConfigError
            If a pipeline still sends results to it.
        """

        def edit(values: dict[str, Any]) -> None:
            del values["destinations"][
                _position(values["destinations"], "name", name, "destination")
            ]
            users = [p["called_ae"] for p in values["pipelines"] if name in p["destinations"]]
            if users:
                raise ConfigError(
                    f"destination {name!r} is used by pipeline(s) {', '.join(users)}: "
                    "remove it from them first"
                )

        return self._change("destination_remove", edit, destination=name)

    # -- machinery ------------------------------------------------------------------

    def _change(
        self, kind: str, edit: Callable[[dict[str, Any]], None], **details: str
    ) -> NodeConfig:
        with self._lock:
            values = self._current().model_dump()
            edit(values)
            config = parse_config(values, source="change")
            self._save(config)
            self._apply(config)
        metrics.CONFIG_CHANGES.labels(kind).inc()
        LOGGER.info("config_saved", change=kind, path=str(self.path), **details)
        return config

    def _save(self, config: NodeConfig) -> None:
        """Write the sections; refused when the file changed since it was read (a hand
        edit, or the CLI without ``--api`` while the node runs), whose changes would
        otherwise be overwritten unseen."""
        if _fingerprint(self.path) != self._seen:
            raise ConfigError(
                f"{self.path} was changed since the node read it (by hand, or by "
                "`dicom-node ae|destinations` without --api): restart the node to load it, "
                "then make the change again"
            )
        data = read_mapping(self.path)
        data["destinations"] = [
            d.model_dump(mode="json", exclude_defaults=True) for d in config.destinations
        ]
        data["pipelines"] = [
            p.model_dump(mode="json", exclude_defaults=True) for p in config.pipelines
        ]
        parse_config(data, source=str(self.path))
        text = HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        write_atomically(self.path, text)
        self._seen = _fingerprint(self.path)


def _fingerprint(path: Path) -> str | None:
    """A digest of the file's content, ``None`` when there is no file."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _position(items: list[dict[str, Any]], key: str, value: str, what: str) -> int:
    for position, item in enumerate(items):
        if item[key] == value:
            return position
    raise NotFound(f"no {what} {value!r}")
