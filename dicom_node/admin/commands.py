"""``dicom-node ae ...`` and ``dicom-node destinations ...`` sub-commands.

With ``--api URL`` (or ``DICOM_NODE_API``) a command goes through the running
node's REST API, which saves the YAML file and applies the change at once.
Without it, the command edits the YAML file itself (``--config FILE``, or
``<data-dir>/config.yaml``): meant for a stopped node, the change takes
effect at its next start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from dicom_node.admin.client import TOKEN_ENV, AdminClient, ApiError
from dicom_node.admin.configstore import ConfigStore
from dicom_node.admin.operations import destinations_with_health, echo_destination
from dicom_node.clock import SystemClock
from dicom_node.config import (
    ENGINE_NAMES,
    Caller,
    ConfigError,
    Destination,
    NodeConfig,
    Pipeline,
    validate_ae_title,
)
from dicom_node.export import Target
from dicom_node.index import Index, IndexQueries

API_ENV = "DICOM_NODE_API"
"""Environment variable with the admin API URL the commands use by default."""

Loader = Callable[[argparse.Namespace], tuple[NodeConfig, Path]]
"""Returns the configuration and the YAML file a command edits."""


class Backend(Protocol):
    """Where the commands read and change the configuration."""

    def pipelines(self) -> list[dict[str, Any]]:
        """Pipelines as JSON-ready mappings."""

    def pipeline(self, called_ae: str) -> dict[str, Any]:
        """One pipeline."""

    def add_pipeline(self, pipeline: Pipeline) -> str:
        """Add; returns what to tell the user."""

    def update_pipeline(self, called_ae: str, pipeline: Pipeline) -> str:
        """Replace; returns what to tell the user."""

    def remove_pipeline(self, called_ae: str) -> str:
        """Remove; returns what to tell the user."""

    def destinations(self) -> list[dict[str, Any]]:
        """Destinations with health."""

    def overlay_capture(self, name: str) -> bool:
        """Whether the destination of that name gets the AI overlay image (``False``
        when there is none)."""

    def add_destination(self, destination: Destination) -> str:
        """Add; returns what to tell the user."""

    def update_destination(self, destination: Destination) -> str:
        """Replace the destination of that name; returns what to tell the user."""

    def remove_destination(self, name: str) -> str:
        """Remove; returns what to tell the user."""

    def echo(self, name: str) -> dict[str, Any]:
        """C-ECHO a destination and record its health."""


class FileBackend:
    """Edits the YAML file of a stopped node and reads its index."""

    def __init__(self, config: NodeConfig, path: Path) -> None:
        self.config = config
        self.store = ConfigStore(path, lambda: self.config, self._set)
        self.note = f"saved to {path}; a running node applies it after a restart (or use --api)"

    def _set(self, config: NodeConfig) -> None:
        self.config = config

    def pipelines(self) -> list[dict[str, Any]]:
        return [p.model_dump(mode="json") for p in self.config.pipelines]

    def pipeline(self, called_ae: str) -> dict[str, Any]:
        return self.store.pipeline(called_ae).model_dump(mode="json")

    def add_pipeline(self, pipeline: Pipeline) -> str:
        self.store.add_pipeline(pipeline)
        return self.note

    def update_pipeline(self, called_ae: str, pipeline: Pipeline) -> str:
        self.store.update_pipeline(called_ae, pipeline)
        return self.note

    def remove_pipeline(self, called_ae: str) -> str:
        self.store.remove_pipeline(called_ae)
        return self.note

    def destinations(self) -> list[dict[str, Any]]:
        # A listing reads the index and makes none (run from the wrong folder, say).
        index = Index.existing(self.config.database)
        return destinations_with_health(self.config, IndexQueries(index))

    def overlay_capture(self, name: str) -> bool:
        destination = self.config.destination(name)
        return destination is not None and destination.overlay_capture

    def add_destination(self, destination: Destination) -> str:
        self.store.add_destination(destination)
        return self.note

    def update_destination(self, destination: Destination) -> str:
        self.store.update_destination(destination)
        return self.note

    def remove_destination(self, name: str) -> str:
        self.store.remove_destination(name)
        return self.note

    def echo(self, name: str) -> dict[str, Any]:
        # The outcome is recorded, in a new index if the node has not run yet.
        return echo_destination(self.config, Index(self.config.database), SystemClock(), name)


class ApiBackend:
    """Sends the commands to a running node's REST API."""

    def __init__(self, client: AdminClient) -> None:
        self.client = client
        self.note = f"applied by the node at {client.url}"

    def pipelines(self) -> list[dict[str, Any]]:
        return list(self.client.request("GET", "/api/ae"))

    def pipeline(self, called_ae: str) -> dict[str, Any]:
        return dict(self.client.request("GET", f"/api/ae/{self.client.quote(called_ae)}"))

    def add_pipeline(self, pipeline: Pipeline) -> str:
        self.client.request("POST", "/api/ae", pipeline.model_dump(mode="json"))
        return self.note

    def update_pipeline(self, called_ae: str, pipeline: Pipeline) -> str:
        path = f"/api/ae/{self.client.quote(called_ae)}"
        self.client.request("PUT", path, pipeline.model_dump(mode="json"))
        return self.note

    def remove_pipeline(self, called_ae: str) -> str:
        self.client.request("DELETE", f"/api/ae/{self.client.quote(called_ae)}")
        return self.note

    def destinations(self) -> list[dict[str, Any]]:
        return list(self.client.request("GET", "/api/destinations"))

    def overlay_capture(self, name: str) -> bool:
        return any(d["name"] == name and d["overlay_capture"] for d in self.destinations())

    def add_destination(self, destination: Destination) -> str:
        self.client.request("POST", "/api/destinations", destination.model_dump(mode="json"))
        return self.note

    def update_destination(self, destination: Destination) -> str:
        self.client.request("PUT", f"/api/destinations/{self.client.quote(destination.name)}",
                            destination.model_dump(mode="json"))
        return self.note

    def remove_destination(self, name: str) -> str:
        self.client.request("DELETE", f"/api/destinations/{self.client.quote(name)}")
        return self.note

    def echo(self, name: str) -> dict[str, Any]:
        return dict(
            self.client.request("POST", f"/api/destinations/{self.client.quote(name)}/echo")
        )


# -- argument types -------------------------------------------------------------------


def ae_title_arg(text: str) -> str:
    """An AE title argument, refused with the standard's rule it breaks."""
    try:
        return validate_ae_title(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def caller_arg(text: str) -> Caller:
    """``AET``, ``AET@HOST`` or ``AET@HOST:PORT`` as an allowed caller."""
    ae_title, _, address = text.partition("@")
    host, _, port = address.partition(":")
    try:
        return Caller(ae_title=ae_title, host=host or None, port=int(port) if port else None)
    except (ValidationError, ValueError) as exc:
        message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise argparse.ArgumentTypeError(f"caller {text!r}: {message}") from exc


def _validated(model: type[Pipeline] | type[Destination], values: dict[str, Any]) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(
            "\n".join(
                f"{'.'.join(str(p) for p in e['loc']) or model.__name__}: {e['msg']}"
                for e in exc.errors()
            )
        ) from exc


def _apply_flags(values: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``values`` (a pipeline mapping) with the flags given on the command line."""
    if args.any_caller:
        values["allowed_callers"] = None
    elif args.caller:
        values["allowed_callers"] = [c.model_dump() for c in args.caller]
    if args.modality or args.body_part or args.sop_class or args.engine:
        match = {
            "modality": args.modality,
            "body_part": args.body_part,
            "sop_class": args.sop_class,
        }
        values["rules"] = [
            {
                "name": "command-line",
                "match": {k: v for k, v in match.items() if v},
                "engines": args.engine or list(ENGINE_NAMES),
            }
        ]
    completion = dict(values.get("completion") or {})
    if args.quiet_seconds is not None:
        completion["quiet_seconds"] = args.quiet_seconds
    if args.expected_series is not None:
        completion["expected_series"] = args.expected_series
    values["completion"] = completion
    if args.destination is not None:
        values["destinations"] = args.destination
    return values


# -- commands -------------------------------------------------------------------------


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def cmd_ae(args: argparse.Namespace, backend: Backend) -> int:
    """List, add, update or remove a called AE title."""
    if args.action == "list":
        _print(backend.pipelines())
        return 0
    if args.action == "remove":
        print(f"removed called AE {args.called_ae}: {backend.remove_pipeline(args.called_ae)}")
        return 0
    if args.action == "add":
        pipeline = _validated(Pipeline, _apply_flags({"called_ae": args.called_ae}, args))
        note = backend.add_pipeline(pipeline)
    else:
        current = backend.pipeline(args.called_ae)
        pipeline = _validated(Pipeline, _apply_flags(current, args))
        note = backend.update_pipeline(args.called_ae, pipeline)
    for warning in pipeline.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.action} called AE {pipeline.called_ae}: {note}")
    return 0


def cmd_destinations(args: argparse.Namespace, backend: Backend) -> int:
    """List, add, update, remove or C-ECHO a destination."""
    if args.action == "list":
        _print(backend.destinations())
        return 0
    if args.action in ("add", "update"):
        target: Target = args.address
        overlay = args.overlay_capture
        if overlay is None:
            # Not given: off for a new destination, kept for one that moved.
            overlay = args.action == "update" and backend.overlay_capture(args.name)
        destination = _validated(
            Destination,
            {
                "name": args.name,
                "ae_title": target.ae_title,
                "host": target.host,
                "port": target.port,
                "overlay_capture": overlay,
            },
        )
        if args.action == "add":
            print(f"added destination {args.name}: {backend.add_destination(destination)}")
        else:
            print(f"updated destination {args.name}: {backend.update_destination(destination)}")
        return 0
    if args.action == "remove":
        print(f"removed destination {args.name}: {backend.remove_destination(args.name)}")
        return 0
    result = backend.echo(args.name)
    if not result["ok"]:
        print(f"echo {args.name} failed: {result['error']}", file=sys.stderr)
        return 1
    print(f"echo {args.name}: OK {result['ms']:.1f} ms")
    return 0


def _run(
    command: Callable[[argparse.Namespace, Backend], int], load: Loader
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        backend: Backend
        if args.api:
            backend = ApiBackend(AdminClient(args.api, args.token))
        else:
            config, path = load(args)
            backend = FileBackend(config, path)
            if args.action == "list":
                print(f"as saved in {path}: a running node started with --archive or "
                      "--quiet-seconds runs more than this; --api URL lists what it runs",
                      file=sys.stderr)
        try:
            return command(args, backend)
        except ApiError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2 if exc.status == 422 else 1
        except ConfigError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        except LookupError as exc:
            print(f"not found: {exc}", file=sys.stderr)
            return 1

    return run


def _remote(parser: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None]):
    common(parser)
    parser.add_argument(
        "--api",
        default=os.environ.get(API_ENV),
        help=f"admin API of the running node, e.g. http://127.0.0.1:8080 (env {API_ENV})",
    )
    parser.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV), help=f"admin token (env {TOKEN_ENV})"
    )


def _pipeline_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("called_ae", type=ae_title_arg, help="the called AE title")
    parser.add_argument(
        "--caller",
        action="append",
        type=caller_arg,
        help="allowed calling node AET[@IP[:PORT]] (repeat; replaces the list)",
    )
    parser.add_argument("--any-caller", action="store_true", help="accept any calling AE")
    rule = "; these four make the pipeline's one routing rule, replacing its rules"
    parser.add_argument("--modality", action="append", help=f"modality filter (repeat{rule})")
    parser.add_argument("--body-part", action="append", help="body part filter (repeat)")
    parser.add_argument("--sop-class", action="append", help="SOP class UID filter (repeat)")
    parser.add_argument(
        "--engine", action="append", choices=ENGINE_NAMES, help="engine (repeat; default all)"
    )
    parser.add_argument("--quiet-seconds", type=float, help="study quiet period")
    parser.add_argument("--expected-series", type=int, help="complete when this many arrived")
    parser.add_argument(
        "--destination",
        action="append",
        help="destination name or return-to-sender (repeat; replaces the list)",
    )


def add_admin_commands(
    sub: Any,
    common: Callable[[argparse.ArgumentParser], None],
    load: Loader,
    address: Callable[[str], Target],
) -> None:
    """Add the ``ae`` and ``destinations`` sub-commands to the ``dicom-node`` parser.

    Parameters
    ----------
    sub:
        The sub-parsers action of the main parser.
    common:
        Adds ``--config``, ``--data-dir`` and ``--database-url``.
    load:
        Returns the configuration and the YAML file to edit from those flags.
    address:
        Parses ``AET@HOST:PORT``.
    """
    ae = sub.add_parser("ae", help="list, add, update or remove called AE titles (pipelines)")
    ae_sub = ae.add_subparsers(dest="action", required=True)
    for action, help_text in (
        ("list", "list called AE titles and their pipelines"),
        ("add", "add a called AE title"),
        ("update", "change a called AE title's pipeline (only the flags given)"),
        ("remove", "remove a called AE title"),
    ):
        parser = ae_sub.add_parser(action, help=help_text)
        _remote(parser, common)
        if action in ("add", "update"):
            _pipeline_flags(parser)
        elif action == "remove":
            parser.add_argument("called_ae", type=ae_title_arg)
        parser.set_defaults(func=_run(cmd_ae, load))

    destinations = sub.add_parser("destinations",
                                  help="list, add, update, remove or echo destinations")
    dest_sub = destinations.add_subparsers(dest="action", required=True)
    for action, help_text in (
        ("list", "list destinations with their last success and failure"),
        ("add", "add a destination"),
        ("update", "give a destination a new address (TLS and overlay choice kept); pending "
                   "exports follow"),
        ("remove", "remove a destination no pipeline uses"),
        ("echo", "C-ECHO a destination and record the outcome"),
    ):
        parser = dest_sub.add_parser(action, help=help_text)
        _remote(parser, common)
        if action != "list":
            parser.add_argument("name")
        if action in ("add", "update"):
            parser.add_argument("address", type=address, help="AET@HOST:PORT")
            parser.add_argument(
                "--overlay-capture", action=argparse.BooleanOptionalAction,
                help="also send the AI overlay image (update: kept unless given)",
            )
        parser.set_defaults(func=_run(cmd_destinations, load))
