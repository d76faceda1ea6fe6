"""Entry point: every result object of one job."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import highdicom as hd
import structlog
from pydicom import Dataset

from inference.findings import StudyResult
from sr_templates.capture import build_overlay_captures
from sr_templates.options import ResultOptions
from sr_templates.presentation import build_presentation_states
from sr_templates.seg import build_segmentations
from sr_templates.sources import SourceSet, conformant_view, restore_referenced_classes
from sr_templates.sr import build_measurement_report

LOGGER = structlog.get_logger(__name__)


def build_result_objects(
    sources: Sequence[Dataset], result: StudyResult, options: ResultOptions
) -> list[Dataset]:
    """Build the SR, SEG, presentation states and overlays of one job.

    Parameters
    ----------
    sources:
        The job's source instances; non-image instances are ignored.
    result:
        What the engines made of the images.
    options:
        What to build and how to number it.

    Returns
    -------
    list[pydicom.Dataset]
        SR first, then SEG, presentation states and overlay images.

    Raises
    ------
    TypeError
        For arguments of the wrong type.
    ValueError
        If the sources mix patients or studies, or the result refers to
        images, frames or boxes the sources do not have.

    Notes
    -----
    Without ``options.uid_seed`` a random seed is drawn per call, so all
    instances of one kind share one series and UIDs differ between calls.
    """
    if not isinstance(options, ResultOptions):
        raise TypeError("Argument 'options' must be a ResultOptions.")
    if options.uid_seed is None:
        options = dataclasses.replace(options, uid_seed=str(hd.UID()))
    source_set = SourceSet.from_datasets([conformant_view(ds) for ds in sources], result)
    objects: list[Dataset] = []
    report = build_measurement_report(source_set, result, options)
    if report is not None:
        objects.append(report)
    if options.include_segmentation:
        objects.extend(build_segmentations(source_set, result, options))
    if options.include_presentation_state:
        objects.extend(build_presentation_states(source_set, result, options))
    if options.include_overlay_capture:
        objects.extend(build_overlay_captures(source_set, result, options))
    for obj in objects:
        restore_referenced_classes(obj, sources)
    LOGGER.info("result_objects_built", objects=len(objects), job_sequence=options.job_sequence)
    return objects
