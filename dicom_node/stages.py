"""The real analysis stages the dispatcher uses: decoding, engines, result builders.

They are imported lazily, so that the receiver starts fast and the network
code never imports torch; the engines are loaded once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import structlog
from pydicom import Dataset

from dicom_node import __version__
from dicom_node.config import ENGINE_NAMES
from dicom_node.dispatch import BuildRequest
from inference.engines.base import ImageInput
from inference.findings import ImageResult

LOGGER = structlog.get_logger(__name__)


def decode(ds: Dataset) -> ImageInput:
    """Decode ``ds`` to grayscale frames with its geometry."""
    from inference.preprocessing import image_input_from_dataset

    return image_input_from_dataset(ds)


class LazyAnalyzer:
    """Loads every engine on first use (once per process), then analyses images."""

    def __init__(self, engine_names: Sequence[str] = ENGINE_NAMES, threads: int = 1) -> None:
        self.engine_names = tuple(engine_names)
        self.threads = threads
        self._analyzer: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the engines now (idempotent)."""
        with self._lock:
            if self._analyzer is None:
                from inference.analyzer import Analyzer

                self._analyzer = Analyzer.load(self.engine_names, threads=self.threads)
                LOGGER.info("engines_loaded", engines=list(self.engine_names))

    def __call__(self, image: ImageInput, engines: Sequence[str]) -> ImageResult:
        """Analyse one image with the routed engines."""
        self.load()
        return self._analyzer.analyze(image, engines)


def build(request: BuildRequest) -> list[Dataset]:
    """Build the SR, SEG and presentation objects of a job."""
    from sr_templates import ResultOptions, build_result_objects

    results = request.pipeline.results
    options = ResultOptions(
        job_sequence=request.job_sequence,
        manufacturer=request.config.manufacturer,
        software_version=__version__,
        institution_name=request.config.institution_name,
        include_segmentation=results.segmentation,
        include_presentation_state=results.presentation_state,
        include_overlay_capture=request.overlay_capture,
        report_not_assessed=results.report_not_assessed,
        report_when_nothing_found=results.report_nothing_found,
        uid_seed=request.uid_seed,
    )
    return build_result_objects(request.sources, request.result, options)
