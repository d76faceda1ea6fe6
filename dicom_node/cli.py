"""``dicom-node``: serve, echo, send, and operate studies, jobs and exports."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dicom_node import __version__
from dicom_node.admin.commands import add_admin_commands
from dicom_node.admin.operations import STUDY_STATES, as_utc
from dicom_node.clock import SystemClock
from dicom_node.config import (
    ConfigError,
    Destination,
    NodeConfig,
    Pipeline,
    load_config,
    validate_ae_title,
)
from dicom_node.export import AssociationFailed, Target, c_echo, c_store_batch, dicom_answers
from dicom_node.index import ExportState, Index, IndexQueries, JobState, shown_url
from dicom_node.logs import configure_logging

LOGGER = structlog.get_logger(__name__)

DATABASE_URL_ENV = "DICOM_NODE_DATABASE_URL"
"""Environment variable giving ``--database-url`` (used by the container image)."""


def parse_address(text: str) -> Target:
    """Parse ``AET@HOST:PORT``.

    Raises
    ------
    argparse.ArgumentTypeError
        If the text is not of that form or the AE title is invalid.
    """
    try:
        ae_title, rest = text.split("@", 1)
        host, port = rest.rsplit(":", 1)
        return Target(ae_title=validate_ae_title(ae_title), host=host, port=int(port))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected AET@HOST:PORT, got {text!r} ({exc})") from exc


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def config_file(args: argparse.Namespace) -> Path:
    """The YAML file of ``--config``, else ``<data-dir>/config.yaml`` (quick start)."""
    if args.config:
        return Path(args.config)
    data_dir = getattr(args, "data_dir", None) or NodeConfig().data_dir
    return Path(data_dir) / "config.yaml"


def build_config(args: argparse.Namespace) -> NodeConfig:
    """The configuration from ``--config`` (or defaults) and the quick-start flags.

    Without ``--config``, ``<data-dir>/config.yaml`` is loaded when it exists:
    it holds the changes administrators made to a quick-start node.
    """
    path = config_file(args)
    config = load_config(path) if args.config or path.exists() else NodeConfig()
    values: dict[str, Any] = config.model_dump()
    for flag, key in (
        ("ae_title", "ae_title"),
        ("host", "host"),
        ("port", "port"),
        ("data_dir", "data_dir"),
        ("database_url", "database_url"),
        ("api_host", "api_host"),
        ("api_port", "api_port"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            values[key] = value
    archive: Target | None = getattr(args, "archive", None)
    if archive is not None:
        values["destinations"] = [d for d in values["destinations"] if d["name"] != "archive"] + [
            Destination(
                name="archive", ae_title=archive.ae_title, host=archive.host, port=archive.port
            ).model_dump()
        ]
    if not values["pipelines"] and "pipelines" not in config.model_fields_set:
        # A quick start: one pipeline on the node's AE title.  A file that lists no
        # pipeline (the last one removed by an administrator) keeps the node closed.
        destinations = [d["name"] for d in values["destinations"]]
        values["pipelines"] = [
            Pipeline(called_ae=values["ae_title"], destinations=destinations).model_dump()
        ]
    quiet = getattr(args, "quiet_seconds", None)
    # The quick-start pipeline's only: pipelines an administrator added keep theirs.
    for pipeline in values["pipelines"]:
        if pipeline["called_ae"] != values["ae_title"]:
            continue
        if quiet is not None:
            pipeline["completion"]["quiet_seconds"] = quiet
        if archive is not None and "archive" not in pipeline["destinations"]:
            # Also when an offline `ae` or `destinations` edit saved it without the flag.
            pipeline["destinations"].append("archive")
    try:
        return NodeConfig.model_validate(values)
    except ValueError as exc:
        raise ConfigError(f"command line: {exc}") from exc


def _print(rows: Sequence[dict[str, Any]] | dict[str, Any]) -> None:
    print(json.dumps(rows, indent=2, default=str))


def configuration_summary(config: NodeConfig, path: Path) -> dict[str, Any]:
    """What a node of ``config`` would run: files, ports, pipelines and their warnings."""
    return {
        "config": str(path.absolute()),
        "data_dir": str(config.data_dir.absolute()),
        "index": shown_url(config.database),
        "dicom": f"{config.host}:{config.port}",
        "tls": config.tls is not None,
        "api": f"{config.api_host}:{config.api_port}" if config.api_port else None,
        "pipelines": {
            p.called_ae: {
                "allowed_callers": None if p.allowed_callers is None
                else [c.ae_title if c.host is None else f"{c.ae_title}@{c.host}"
                      for c in p.allowed_callers],
                "destinations": p.destinations,
                "warnings": p.warnings(),
            }
            for p in config.pipelines
        },
        "destinations": {d.name: f"{d.ae_title}@{d.host}:{d.port}" for d in config.destinations},
        "destination_warnings": [w for d in config.destinations for w in d.warnings()],
    }


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the node until interrupted (with ``--check``: check the configuration only)."""
    from dicom_node.service import Node

    config = build_config(args)
    if args.check:
        _print(configuration_summary(config, config_file(args)))
        return 0
    try:
        node = Node(config, clock=SystemClock(), config_path=config_file(args))
    except (OSError, RuntimeError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    for pipeline in config.pipelines:
        for warning in pipeline.warnings():
            LOGGER.warning("pipeline_warning", called_ae=pipeline.called_ae, detail=warning)
    for destination in config.destinations:
        for warning in destination.warnings():
            LOGGER.warning("destination_warning", destination=destination.name, detail=warning)
    # Handled from the start: a SIGTERM while the extra receivers start still stops cleanly.
    signal.signal(signal.SIGTERM, lambda *_: node.request_stop())
    signal.signal(signal.SIGINT, lambda *_: node.request_stop())
    try:
        node.start(api=True)
    except (OSError, RuntimeError, ConfigError) as exc:
        node.stop()
        if isinstance(exc, ConfigError):
            raise  # a setting that cannot be used (a TLS file): named, exit code 2
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    node.wait()
    node.stop()
    return 0


def _calling_ae(args: argparse.Namespace) -> str:
    """``--calling-ae``, else the configured AE title: the one peers whitelist."""
    return str(args.calling_ae or build_config(args).ae_title)


def cmd_echo(args: argparse.Namespace) -> int:
    """C-ECHO a remote node."""
    try:
        ms = c_echo(_calling_ae(args), args.address)
    except AssociationFailed as exc:
        print(f"echo failed: {exc}", file=sys.stderr)
        return 1
    print(f"echo {args.address.ae_title}@{args.address.host}:{args.address.port}: OK {ms:.1f} ms")
    return 0


def _loopback(host: str) -> str:
    """The address to dial a server listening on ``host`` from the same machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def node_health(config: NodeConfig, ready: bool, timeout: float) -> str | None:
    """Why the node of ``config`` on this machine does not answer, or ``None`` when it does.

    With the admin API on: its ``/healthz`` (``/readyz`` when ``ready``) must
    answer 200.  With it off: the DICOM port must answer an association
    request, accepted or rejected (the node's own AE title may not be allowed),
    or, when it speaks TLS only, accept a connection.
    """
    if config.api_port:
        host = _loopback(config.api_host)
        url = f"http://{f'[{host}]' if ':' in host else host}:{config.api_port}"
        url += "/readyz" if ready else "/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout):
                return None
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()
            return f"{url} answered {exc.code}: {detail}"
        except OSError as exc:
            return f"{url} does not answer: {exc}"
    target = Target(ae_title=config.ae_title, host=_loopback(config.host), port=config.port,
                    timeout=timeout)
    if config.tls is not None:
        try:
            socket.create_connection((target.host, target.port), timeout=timeout).close()
        except OSError:
            return f"nothing accepts connections on {target.host}:{target.port}"
        return None
    if dicom_answers(config.ae_title, target):
        return None
    return f"nothing answers association requests on {target.host}:{target.port}"


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the configured node answers (container health checks, monitoring)."""
    problem = node_health(build_config(args), args.ready, args.timeout)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("ready" if args.ready else "healthy")
    return 0


def _dicom_files(paths: Sequence[str]) -> list[str]:
    files: list[str] = []
    for name in paths:
        path = Path(name)
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for candidate in candidates:
            try:
                dcmread(candidate, stop_before_pixels=True)
            except (InvalidDicomError, OSError):
                print(f"skipping {candidate}: not a DICOM file", file=sys.stderr)
                continue
            files.append(str(candidate))
    return files


def cmd_send(args: argparse.Namespace) -> int:
    """C-STORE files (or folders) to a remote node over one association."""
    files = _dicom_files(args.files)
    if not files:
        print("no DICOM files to send", file=sys.stderr)
        return 1
    try:
        outcomes = c_store_batch(_calling_ae(args), args.address, files)
    except AssociationFailed as exc:
        print(f"send failed: {exc}", file=sys.stderr)
        return 1
    failed = [o for o in outcomes if not o.accepted]
    for outcome in failed:
        status = f"0x{outcome.status:04X}" if outcome.status is not None else outcome.error
        print(f"{outcome.path}: {status}", file=sys.stderr)
    print(f"sent {len(outcomes) - len(failed)} of {len(outcomes)} file(s)")
    return 1 if failed else 0


def _user() -> str:
    """Who runs this command (the operating-system account), for the audit trail."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _index(args: argparse.Namespace) -> Index:
    """The node's index; an SQLite index that does not exist is an error, not made
    anew (a command run from the wrong folder would report an empty node)."""
    return Index.existing(build_config(args).database)


def cmd_study_complete(args: argparse.Namespace) -> int:
    """Force completion of a study; the running node picks it up."""
    count = _index(args).force_complete(args.study_uid)
    if count == 0:
        print(f"no study {args.study_uid}", file=sys.stderr)
        return 1
    LOGGER.info("study_force_completed", study_instance_uid=args.study_uid, via="cli",
                user=_user())
    print(f"study {args.study_uid} flagged for completion ({count} pipeline(s))")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List studies, jobs, exports or associations as JSON."""
    queries = IndexQueries(_index(args))
    if args.what == "studies":
        pending = None if args.state is None else args.state == "receiving"
        _print(queries.studies(limit=args.limit, pending=pending))
    elif args.what == "jobs":
        _print(queries.jobs(JobState(args.state) if args.state else None, limit=args.limit))
    elif args.what == "exports":
        _print(queries.exports(ExportState(args.state) if args.state else None, limit=args.limit))
    else:
        accepted = None if args.accepted is None else args.accepted == "yes"
        _print(
            queries.associations(
                limit=args.limit,
                calling_ae=args.calling_ae,
                called_ae=args.called_ae,
                accepted=accepted,
                since=as_utc(args.since) if args.since else None,
            )
        )
    return 0


def cmd_export_action(args: argparse.Namespace) -> int:
    """Send exports again now, or discard a failed export."""
    index = _index(args)
    if args.action == "retry" and args.destination is not None:
        count = index.retry_exports(args.destination, SystemClock().now())
        LOGGER.info("destination_retry_requested", destination=args.destination, exports=count,
                    via="cli", user=_user())
        print(f"{count} export(s) to {args.destination} queued again, due now")
        return 0
    if args.export_id is None:
        print("give an export id (or --destination for retry)", file=sys.stderr)
        return 2
    if args.action == "retry":
        ok = index.retry_export(args.export_id, SystemClock().now())
        done, refused = "queued again, due now", "is delivered or does not exist"
    else:
        ok = index.discard_export(args.export_id)
        done, refused = "discarded", "is not in the error queue"
    if not ok:
        print(f"export {args.export_id} {refused}", file=sys.stderr)
        return 1
    LOGGER.info(f"export_{args.action}_requested", export_id=args.export_id, via="cli",
                user=_user())
    print(f"export {args.export_id}: {done}")
    return 0


def cmd_demo_study(args: argparse.Namespace) -> int:
    """Write phantom studies (liver, breast, echo) as DICOM files."""
    from dicom_node.demo import write_demo_studies

    files = write_demo_studies(args.out_dir, args.kinds, seed=args.seed, images=args.images)
    for path in files:
        print(path)
    return 0


def cmd_job_rerun(args: argparse.Namespace) -> int:
    """Queue a finished or failed job again."""
    if not _index(args).requeue_job(args.job_id):
        print(f"job {args.job_id} cannot be re-run (missing or running)", file=sys.stderr)
        return 1
    LOGGER.info("job_requeued", job_id=args.job_id, via="cli", user=_user())
    print(f"job {args.job_id} queued again")
    return 0


def _config_and_file(args: argparse.Namespace) -> tuple[NodeConfig, Path]:
    return build_config(args), config_file(args)


def _log_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--log-json`` and ``--log-level``: with their defaults on the main parser; on a
    sub-command without (SUPPRESS), so that they are taken on either side of it and one
    given before the sub-command is kept."""
    parser.add_argument("--log-json", action="store_true",
                        default=False if defaults else argparse.SUPPRESS, help="JSON log lines")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        default="INFO" if defaults else argparse.SUPPRESS)


def _common(parser: argparse.ArgumentParser) -> None:
    _log_options(parser, defaults=False)
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument("--data-dir", type=Path, help="spool and index folder (default ./var)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV) or None,
        help=f"SQLAlchemy URL of the index (env {DATABASE_URL_ENV})",
    )


def _listening(parser: argparse.ArgumentParser) -> None:
    """Where the node listens, over its configuration."""
    parser.add_argument("--host", help="listening address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="DICOM port (default 11112)")
    parser.add_argument("--api-host", help="admin API address (default 127.0.0.1)")
    parser.add_argument("--api-port", type=int, help="admin API port (default 8080, 0: off)")


def make_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="dicom-node", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dicom-node {__version__}")
    _log_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the node")
    _common(serve)
    serve.add_argument("--ae-title", help="AE title (default DICOM_NODE)")
    _listening(serve)
    serve.add_argument("--archive", type=parse_address, help="AET@HOST:PORT to send results to")
    serve.add_argument("--quiet-seconds", type=float,
                       help="quiet period of the pipeline on the node's AE title (default 30)")
    serve.add_argument("--check", action="store_true",
                       help="check the configuration and flags, print what would run, and exit "
                            "(0: valid; 2: the problem, named)")
    serve.set_defaults(func=cmd_serve)

    health = sub.add_parser("health", help="check that the configured node answers (exit 0)")
    _common(health)
    _listening(health)
    health.add_argument("--ready", action="store_true",
                        help="ask whether it takes studies now (/readyz), not only whether it runs")
    health.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    health.set_defaults(func=cmd_health)

    for name, func, help_text in (
        ("echo", cmd_echo, "C-ECHO a remote node"),
        ("send", cmd_send, "C-STORE files to a remote node"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("address", type=parse_address, help="AET@HOST:PORT")
        cmd.add_argument("--calling-ae", type=validate_ae_title,
                         help="calling AE title (default: the node's configured ae_title)")
        _common(cmd)
        if name == "send":
            cmd.add_argument("files", nargs="+", help="files or folders")
        cmd.set_defaults(func=func)

    study = sub.add_parser("study", help="operate on studies")
    study_sub = study.add_subparsers(dest="action", required=True)
    complete = study_sub.add_parser("complete", help="force a study complete now")
    complete.add_argument("study_uid")
    _common(complete)
    complete.set_defaults(func=cmd_study_complete)

    for what in ("studies", "jobs", "exports", "associations"):
        group = sub.add_parser(what, help=f"list or operate on {what}")
        group_sub = group.add_subparsers(dest="action", required=True)
        listing = group_sub.add_parser("list", help=f"list {what}")
        _common(listing)
        listing.add_argument("--limit", type=int, default=50)
        states = {"studies": STUDY_STATES, "jobs": [s.value for s in JobState],
                  "exports": [s.value for s in ExportState]}
        if what in states:
            listing.add_argument("--state", choices=states[what], help="filter by state")
        if what == "associations":
            listing.add_argument("--calling-ae", help="filter by calling AE")
            listing.add_argument("--called-ae", help="filter by called AE")
            listing.add_argument("--accepted", choices=("yes", "no"), help="filter by outcome")
            listing.add_argument(
                "--since", type=datetime.fromisoformat, help="ISO time (UTC unless a zone)"
            )
        listing.set_defaults(func=cmd_list, what=what)
        if what == "exports":
            helps = {"retry": "send a failed or pending export again now",
                     "discard": "give up on a failed export"}
            for action, help_text in helps.items():
                act = group_sub.add_parser(action, help=help_text)
                act.add_argument("export_id", type=int, nargs="?" if action == "retry" else None)
                if action == "retry":
                    act.add_argument("--destination",
                                     help="every failed or pending export of this destination")
                _common(act)
                act.set_defaults(func=cmd_export_action, destination=None)
        if what == "jobs":
            rerun = group_sub.add_parser("rerun", help="queue a job again")
            rerun.add_argument("job_id", type=int)
            _common(rerun)
            rerun.set_defaults(func=cmd_job_rerun)
    add_admin_commands(sub, _common, _config_and_file, parse_address)

    demo = sub.add_parser("demo-study", help="write phantom US studies to try the node with")
    demo.add_argument("out_dir", type=Path)
    demo.add_argument("--kinds", nargs="+", choices=("liver", "breast", "echo"),
                      default=["liver", "breast", "echo"])
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--images", type=int, default=2, help="stills per liver/breast study")
    demo.set_defaults(func=cmd_demo_study)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dicom-node``."""
    parser = make_parser()
    args = parser.parse_args(argv)
    configure_logging(json=args.log_json, level=args.log_level.upper())
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
