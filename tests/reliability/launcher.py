"""Run the node with the test engine in its own process, for kill -9 and hostile-input tests.

``python -m tests.reliability.launcher [--hold-file F] [--metrics-file M] <dicom-node args>``
takes the arguments of ``dicom-node`` (``--log-json serve --port ...``) and
serves exactly like ``dicom-node serve`` until SIGTERM, but with
:class:`~tests.dicom_node.fake_engine.FakeAnalyzer` instead of the trained
engines.  With ``--hold-file`` the engine waits while that file exists, so a
test can kill the node while a job is certainly running.  On SIGTERM the
metrics exposition is written to ``--metrics-file``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import structlog
from prometheus_client import generate_latest

from dicom_node import metrics
from dicom_node.cli import build_config, make_parser
from dicom_node.logs import configure_logging
from dicom_node.service import Node, Stages
from dicom_node.stages import build, decode
from inference.engines.base import ImageInput
from inference.findings import ImageResult
from tests.dicom_node.fake_engine import FakeAnalyzer

LOGGER = structlog.get_logger(__name__)


class HeldAnalyzer(FakeAnalyzer):
    """The fake engine, held back while ``hold_file`` exists."""

    def __init__(self, hold_file: Path | None) -> None:
        super().__init__()
        self.hold_file = hold_file
        self._wake = threading.Event()

    def __call__(self, image: ImageInput, engines: Sequence[str]) -> ImageResult:
        """Wait while the hold file exists, then analyse."""
        if self.hold_file is not None and self.hold_file.exists():
            LOGGER.info("engine_held", sop_instance_uid=image.sop_instance_uid)
            while self.hold_file.exists():
                self._wake.wait(0.05)
        return super().__call__(image, engines)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM; returns the exit code."""
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--hold-file", type=Path)
    own.add_argument("--metrics-file", type=Path)
    extra, rest = own.parse_known_args(argv)
    args = make_parser().parse_args(rest)
    configure_logging(json=args.log_json, level=args.log_level.upper())
    node = Node(
        build_config(args),
        Stages(analyze=HeldAnalyzer(extra.hold_file), decode=decode, build=build),
    )
    signal.signal(signal.SIGTERM, lambda *_: node.request_stop())
    node.start(api=True)
    node.wait()
    node.stop()
    if extra.metrics_file is not None:
        extra.metrics_file.write_bytes(generate_latest(metrics.REGISTRY))
    return 0


if __name__ == "__main__":
    sys.exit(main())
