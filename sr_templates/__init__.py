"""DICOM result objects (TID 1500 SR, SEG, presentation states, overlays).

Turns plain findings (:class:`inference.findings.StudyResult`) plus the
source datasets into DICOM objects with highdicom.  Knows nothing of torch
or of the node's networking.
"""

from sr_templates.builder import build_result_objects
from sr_templates.options import ObjectKindValues, ResultOptions

__all__ = ["ObjectKindValues", "ResultOptions", "build_result_objects"]
