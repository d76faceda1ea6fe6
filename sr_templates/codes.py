"""Every coded concept the result objects use, in one place.

This module is the only one in the project that defines code triplets
``(value, scheme designator, meaning)``.  Standard codes come from SNOMED CT
(``SCT``), DICOM (``DCM``), LOINC (``LN``) and UCUM.  Their meanings were
checked against the DICOM PS3.16 tables bundled with pydicom (the test
``tests/sr_templates/test_codes.py`` re-checks them); the few codes absent
from PS3.16 are listed in :data:`NOT_IN_PS3_16` with their SNOMED CT / UCUM
source.

Private scheme ``99USAI``
-------------------------
Where no standard code exists, the private coding scheme designator
``99USAI`` ("US AI DICOM node local codes", declared in every SR's Coding
Scheme Identification Sequence by :data:`PRIVATE_CODING_SCHEME`) is used:

``USAI-CLASS``
    "Lesion class by AI": name of the CODE evaluation whose value is the
    winning class (a SNOMED CT code).
``USAI-OUTCOME`` = ``USAI-NO-RESULT``
    "Algorithm outcome" = "No finding or measurement": an analysed image
    outside liver and breast (where SCT "Mass" = "Absent" is used) gave no
    result.
``PROB-<CLASS>``
    "Probability of <class meaning>": the model's softmax output for one
    lesion class, a NUM with UCUM unit ``1`` (values in
    :data:`_PROBABILITY_VALUES`, at most 16 characters).
``USAI-NA-REASON``
    "Reason not assessed": name of the CODE evaluation that says why an
    image was not analysed.
``NA-<REASON>``
    The reasons themselves, one per
    :class:`inference.findings.NotAssessedReasonValues` member.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydicom.sr.coding import Code

from inference.findings import (
    BREAST_CLASSES,
    LIVER_CLASSES,
    AnatomyValues,
    NotAssessedReasonValues,
)

PRIVATE_SCHEME = "99USAI"
"""Coding scheme designator of the node's local codes."""

PRIVATE_SCHEME_NAME = "US AI DICOM node local codes"
"""Human-readable name of :data:`PRIVATE_SCHEME`."""

# --- Document level ---------------------------------------------------------
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
"""Procedure reported (CID 100); PixelMed's TID 1500 check accepts it.  CID 100 has no
ultrasound procedure, and PixelMed reports SCT 45036003 "Ultrasonography of abdomen" there
as an error (tried 2026-11-28), though the context group is extensible."""

QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
"""Container of the report's document-level evaluations (TID 1500 row 12)."""
COMMENT = Code("121106", "DCM", "Comment")
"""TEXT evaluation: how the analyzer settled an image's anatomy, when in doubt."""
SOURCE = Code("260753009", "SCT", "Source")
"""Concept name of the image a comment was inferred from."""

OBSERVER_TYPE_DEVICE = Code("121007", "DCM", "Device")
"""Observer type of the SR's device observer context (CID 270)."""
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")
"""Algorithm family (CID 7162) of every segment's algorithm identification."""
PROCESSING_EQUIPMENT = Code("109102", "DCM", "Processing Equipment")
"""Purpose of reference of the node and algorithms in Contributing Equipment."""

# --- Findings ---------------------------------------------------------------
MASS = Code("4147007", "SCT", "Mass")
"""Finding type of a lesion (CID 6102 family)."""
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code(
    "49755003", "SCT", "Morphologically Abnormal Structure"
)
"""Finding category / segmented property category of a lesion."""
ABSENT = Code("2667000", "SCT", "Absent")
"""Value of "Mass" when an analysed image showed no lesion."""
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
"""Segmented property category of a cardiac cavity."""
LEFT_VENTRICLE = Code("87878005", "SCT", "Left ventricle")
"""Finding type / segmented property type of the echo LV measurements."""

BOUNDED_BY = Code("75958009", "SCT", "Bounded by")
"""Geometric purpose (CID 219) of a lesion's bounding-box region."""
OUTLINE = Code("111041", "DCM", "Outline")
"""Geometric purpose (CID 219) of a lesion's contour region."""

LIVER = Code("10200004", "SCT", "Liver")
BREAST = Code("76752008", "SCT", "Breast")
HEART = Code("80891009", "SCT", "Heart")

_FINDING_SITES: dict[AnatomyValues, Code] = {
    AnatomyValues.LIVER: LIVER,
    AnatomyValues.BREAST: BREAST,
    AnatomyValues.HEART: HEART,
}

# --- Lesion classes ---------------------------------------------------------
_CLASS_CODES: dict[str, Code] = {
    "hcc": Code("25370001", "SCT", "Hepatocellular carcinoma"),
    "metastasis": Code("14799000", "SCT", "Neoplasm, metastatic"),
    "hemangioma": Code("400210000", "SCT", "Hemangioma"),
    "cyst": Code("367643001", "SCT", "Cyst"),
    "carcinoma": Code("1187425009", "SCT", "Carcinoma"),
    "fibroadenoma": Code("254845004", "SCT", "Fibroadenoma"),
    "simple_cyst": Code("399294002", "SCT", "Cyst of breast"),
    "other": Code("52988006", "SCT", "Lesion"),
}
"""Standard codes of the classes. Breast "other" is the training set's other benign
lesions (lipoma-like, complicated cyst, lymph node): SCT has no code for that group, so
its code is the general "Lesion" and :data:`_CLASS_NAMES` says what it means."""

_CLASS_NAMES: dict[str, str] = {
    "hcc": "Hepatocellular carcinoma",
    "metastasis": "Metastasis",
    "hemangioma": "Hemangioma",
    "cyst": "Cyst",
    "carcinoma": "Carcinoma",
    "fibroadenoma": "Fibroadenoma",
    "simple_cyst": "Simple cyst",
    "other": "Other benign-appearing lesion",
}
"""What a reader is shown for each class (captions, probability names): "Simple cyst"
keeps the word a breast reader needs, which SCT "Cyst of breast" drops."""

_PROBABILITY_VALUES: dict[str, str] = {
    "hcc": "PROB-HCC",
    "metastasis": "PROB-METASTASIS",
    "hemangioma": "PROB-HEMANGIOMA",
    "cyst": "PROB-CYST",
    "carcinoma": "PROB-CARCINOMA",
    "fibroadenoma": "PROB-FIBROADENOM",
    "simple_cyst": "PROB-SIMPLECYST",
    "other": "PROB-OTHER",
}
"""Private code values (at most 16 characters, SH) of the class probabilities."""

# --- Measurements -----------------------------------------------------------
PROBABILITY_OF_CANCER = Code("111047", "DCM", "Probability of cancer")
WIDTH = Code("103355008", "SCT", "Width")
"""Horizontal extent of a lesion's box, in mm (CID 7470)."""
HEIGHT = Code("121207", "DCM", "Height")
"""Vertical (depth) extent of a lesion's box, in mm: with the width it shows a lesion
taller than wide."""
AREA = Code("42798000", "SCT", "Area")
NUMBER_OF_FRAMES = Code("121140", "DCM", "Number of Frames")
"""How many frames of a cine a tracked lesion spans (frames referenced)."""

LVEF_BY_US = Code("18043-0", "LN", "Left Ventricular Ejection Fraction by US")
LV_END_DIASTOLIC_VOLUME = Code("18026-5", "LN", "Left Ventricular End Diastolic Volume")
LV_END_SYSTOLIC_VOLUME = Code("18148-7", "LN", "Left Ventricular End Systolic Volume")
METHOD_OF_DISKS_SINGLE_PLANE = Code("125208", "DCM", "Method of Disks, Single Plane")

# --- Units (UCUM) -----------------------------------------------------------
UNIT_ONE = Code("1", "UCUM", "no units")
UNIT_MM = Code("mm", "UCUM", "mm")
UNIT_MM2 = Code("mm2", "UCUM", "square millimeter")
UNIT_PERCENT = Code("%", "UCUM", "Percent")
UNIT_ML = Code("ml", "UCUM", "milliliter")

# --- Private codes ----------------------------------------------------------
LESION_CLASS = Code("USAI-CLASS", PRIVATE_SCHEME, "Lesion class by AI")
"""Name of the CODE evaluation that carries the winning class.

Not DCM 121071 "Finding": TID 1410 already uses that name for the finding
type (Mass), and readers (OHIF, highdicom) take the first item of that name.
"""
ALGORITHM_OUTCOME = Code("USAI-OUTCOME", PRIVATE_SCHEME, "Algorithm outcome")
"""Name of the CODE evaluation stating an analysed image gave no result."""
NO_RESULT = Code("USAI-NO-RESULT", PRIVATE_SCHEME, "No finding or measurement")
"""An engine analysed the image (echo, other views) and reported nothing."""
REASON_NOT_ASSESSED = Code("USAI-NA-REASON", PRIVATE_SCHEME, "Reason not assessed")

_NOT_ASSESSED_MEANINGS: dict[NotAssessedReasonValues, str] = {
    NotAssessedReasonValues.NO_ENGINE: "No algorithm for the anatomy or view",
    NotAssessedReasonValues.IMAGE_QUALITY: "Image quality too low for analysis",
    NotAssessedReasonValues.NON_BMODE: "Not a B-mode image",
    NotAssessedReasonValues.UNDECODABLE: "Pixel data could not be decoded",
    NotAssessedReasonValues.ENGINE_ERROR: "Algorithm failed on the image",
}

NOT_IN_PS3_16: frozenset[tuple[str, str]] = frozenset(
    {
        ("SCT", "25370001"),  # SNOMED CT: Hepatocellular carcinoma (morphologic abnormality)
        ("SCT", "2667000"),  # SNOMED CT: Absent (qualifier value)
        ("UCUM", "ml"),  # UCUM: milliliter
        ("UMLS", "C0034375"),  # TID 1500 row 12's concept; in no context group
    }
)
"""Standard codes not in pydicom's PS3.16 tables, with their source."""


_Value = TypeVar("_Value")


def _lookup(table: Mapping[Any, _Value], key: object, message: str) -> _Value:
    try:
        return table[key]
    except KeyError:
        raise ValueError(f"{message} {key!r}.") from None


LATERALITY: dict[str, Code] = {
    "R": Code("24028007", "SCT", "Right"),
    "L": Code("7771000", "SCT", "Left"),
}
"""Laterality of a finding site (CID 244), by the source's Laterality value."""


def finding_site(anatomy: AnatomyValues) -> Code:
    """Finding site code of an anatomy.

    Parameters
    ----------
    anatomy:
        Anatomy of the image.

    Returns
    -------
    pydicom.sr.coding.Code
        SCT Liver, Breast or Heart.

    Raises
    ------
    ValueError
        For ``AnatomyValues.OTHER``, which has no finding site.
    """
    return _lookup(_FINDING_SITES, AnatomyValues(anatomy), "No finding site for anatomy")


def lesion_class(label: str) -> Code:
    """Code of a lesion class label.

    Raises
    ------
    ValueError
        If ``label`` is not one of the liver or breast classes.
    """
    return _lookup(_CLASS_CODES, label, "Unknown lesion class")


def class_probability(label: str) -> Code:
    """Private code naming the probability of one lesion class.

    Raises
    ------
    ValueError
        If ``label`` is not one of the liver or breast classes.
    """
    return Code(_PROBABILITY_VALUES[label], PRIVATE_SCHEME,
                f"Probability of {class_name(label).lower()}")


def class_name(label: str) -> str:
    """The name a reader is shown for a lesion class (``ValueError`` for another label)."""
    return _lookup(_CLASS_NAMES, label, "Unknown lesion class")


def not_assessed_reason(reason: NotAssessedReasonValues) -> Code:
    """Private code of a not-assessed reason."""
    reason = NotAssessedReasonValues(reason)
    value = "NA-" + reason.value.upper().replace("_", "-")
    return Code(value, PRIVATE_SCHEME, _NOT_ASSESSED_MEANINGS[reason])


def all_codes() -> list[Code]:
    """Every code this module defines (for checks and conformance docs)."""
    fixed = [v for v in globals().values() if isinstance(v, Code)]
    classes = [*LIVER_CLASSES, *BREAST_CLASSES]
    return [
        *fixed,
        *(lesion_class(c) for c in classes),
        *(class_probability(c) for c in classes),
        *(not_assessed_reason(r) for r in NotAssessedReasonValues),
    ]
