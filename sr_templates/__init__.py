"""DICOM result objects (TID 1500 SR, SEG, presentation states, overlays).

Turns plain findings (:class:`inference.findings.StudyResult`) plus the
source datasets into DICOM objects with highdicom.  Knows nothing of torch
or of the node's networking.

Usage::

    from sr_templates import ResultOptions, build_result_objects

    objects = build_result_objects(
        sources, result, ResultOptions(job_sequence=0, include_overlay_capture=True)
    )

``objects`` holds, in this order: the Comprehensive 3D SR (:mod:`.sr`), one
BINARY SEG per annotated source frame (:mod:`.seg`), Grayscale / Color
Softcopy Presentation States (:mod:`.presentation`) and, when asked for,
secondary-capture AI overlays (:mod:`.capture`).  Every coded concept is in
:mod:`.codes`.
"""

from sr_templates.builder import build_result_objects
from sr_templates.options import ObjectKindValues, ResultOptions

__all__ = ["ObjectKindValues", "ResultOptions", "build_result_objects"]
