"""Plain findings: what the engines return and the result builders consume.

Nothing here imports torch or writes DICOM.  Coordinates are in image pixel
space with the origin at the top-left corner of the top-left pixel (the DICOM
SCOORD convention): a pixel centre is at ``(column + 0.5, row + 0.5)``.
Frame numbers are 1-based, as in DICOM.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

LIVER_CLASSES: tuple[str, ...] = ("hcc", "metastasis", "hemangioma", "cyst")
"""Liver lesion classes, in model output order."""

BREAST_CLASSES: tuple[str, ...] = ("carcinoma", "fibroadenoma", "simple_cyst", "other")
"""Breast lesion classes, in model output order."""

MALIGNANT_CLASSES: frozenset[str] = frozenset({"hcc", "metastasis", "carcinoma"})
"""Classes counted as malignant for the benign/malignant call."""


class AnatomyValues(enum.Enum):
    """Anatomy or view an image shows."""

    LIVER = "liver"
    BREAST = "breast"
    HEART = "heart"
    OTHER = "other"


class NotAssessedReasonValues(enum.Enum):
    """Why an image was not turned into findings."""

    NO_ENGINE = "no_engine"
    """No routed engine fits the anatomy or view of the image."""
    IMAGE_QUALITY = "image_quality"
    """Blank, frozen, too little scan area or otherwise unusable."""
    NON_BMODE = "non_bmode"
    """Doppler/colour flow or a measurement screen, not a B-mode image."""
    UNDECODABLE = "undecodable"
    """The pixel data could not be decoded."""
    ENGINE_ERROR = "engine_error"
    """The engine failed on this image."""


@dataclass(frozen=True)
class BoundingBox:
    """Axis-aligned box in pixel space (``x`` = column, ``y`` = row).

    ``(x0, y0)`` is the top-left corner and ``(x1, y1)`` the bottom-right
    corner, both in the SCOORD convention (pixel edges, not centres).
    """

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise ValueError(f"Degenerate bounding box {self}.")

    @classmethod
    def of_mask(cls, mask: np.ndarray) -> BoundingBox:
        """The box around the true pixels of a 2-D mask; ``ValueError`` when none is."""
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            raise ValueError("Empty mask: no bounding box.")
        return cls(float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))

    @property
    def width(self) -> float:
        """Width in pixels."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """Height in pixels."""
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        """Centre ``(x, y)``."""
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    def iou(self, other: BoundingBox) -> float:
        """Intersection over union with ``other``."""
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0

    def polyline(self) -> np.ndarray:
        """Closed 5-point polyline ``(x, y)`` as float32, first point repeated."""
        return np.array(
            [
                [self.x0, self.y0],
                [self.x1, self.y0],
                [self.x1, self.y1],
                [self.x0, self.y1],
                [self.x0, self.y0],
            ],
            dtype=np.float32,
        )


@dataclass(frozen=True)
class AlgorithmInfo:
    """Identity of a model, for TID 4019 and Contributing Equipment.

    Parameters
    ----------
    name:
        Algorithm name, e.g. ``"us-liver-lesion"``.
    version:
        Software version of the engine.
    weights_sha256:
        SHA-256 of the weights file(s); a retrained model changes it and so
        its device UID.
    parameters:
        Parameters that shaped the result (thresholds, voting rule...).
    """

    name: str
    version: str
    weights_sha256: str
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def device_uid(self) -> str:
        """A UID that changes whenever the name, version or weights change."""
        digest = hashlib.sha256(
            f"{self.name}|{self.version}|{self.weights_sha256}".encode()
        ).digest()
        return "2.25." + str(int.from_bytes(digest[:16], "big"))


@dataclass(frozen=True)
class LesionObservation:
    """A lesion as seen on one frame.

    Parameters
    ----------
    frame_number:
        1-based frame number (1 for single-frame images).
    box:
        Bounding box on that frame.
    score:
        Detection confidence in ``[0, 1]``.
    contour:
        Optional closed contour ``(N, 2)`` of ``(x, y)`` points.
    """

    frame_number: int
    box: BoundingBox
    score: float
    contour: np.ndarray | None = None


@dataclass
class LesionFinding:
    """A lesion (liver or breast), tracked through the frames where it shows.

    Parameters
    ----------
    tracking_id:
        Human-readable identifier, unique in the report (e.g. ``"Lesion 1"``).
    tracking_uid:
        UID shared by the SR measurement group and the SEG segment.
    anatomy:
        ``AnatomyValues.LIVER`` or ``AnatomyValues.BREAST``.
    label:
        Winning class (one of :data:`LIVER_CLASSES` / :data:`BREAST_CLASSES`).
    probabilities:
        Probability of every class of the anatomy, summing to about 1.
    malignancy_probability:
        Probability that the lesion is malignant.
    source_sop_instance_uid:
        The image the lesion was found on.
    observations:
        The lesion on each frame it spans, ordered by frame number; the
        first-best (highest score) one is the key observation.
    mask:
        Optional boolean mask ``(rows, columns)`` on the key frame.
    heatmap:
        Optional Grad-CAM map ``(rows, columns)`` in ``[0, 1]`` on the key
        frame, at the full image size.
    """

    tracking_id: str
    tracking_uid: str
    anatomy: AnatomyValues
    label: str
    probabilities: Mapping[str, float]
    malignancy_probability: float
    source_sop_instance_uid: str
    observations: Sequence[LesionObservation]
    mask: np.ndarray | None = None
    heatmap: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.observations:
            raise ValueError("A lesion finding needs at least one observation.")
        if self.label not in self.probabilities:
            raise ValueError(f"Label {self.label!r} has no probability.")

    @property
    def key_observation(self) -> LesionObservation:
        """The observation with the highest detection score."""
        return max(self.observations, key=lambda o: o.score)

    @property
    def frame_numbers(self) -> list[int]:
        """Frame numbers the lesion spans."""
        return [o.frame_number for o in self.observations]

    @property
    def is_malignant(self) -> bool:
        """Whether the winning class is a malignant one."""
        return self.label in MALIGNANT_CLASSES


@dataclass
class CardiacFinding:
    """Left-ventricular function from an apical four-chamber cine.

    Volumes are by the single-plane method of discs.  Masks are boolean
    ``(rows, columns)`` arrays of the left-ventricular cavity on the
    end-diastolic and end-systolic frames.
    """

    tracking_id: str
    tracking_uid: str
    source_sop_instance_uid: str
    ejection_fraction_percent: float
    end_diastolic_volume_ml: float
    end_systolic_volume_ml: float
    end_diastolic_frame: int
    end_systolic_frame: int
    end_diastolic_mask: np.ndarray | None = None
    end_systolic_mask: np.ndarray | None = None
    end_diastolic_contour: np.ndarray | None = None
    end_systolic_contour: np.ndarray | None = None
    volumes_calibrated: bool = True
    """False when the image has no spatial calibration (no Sequence of
    Ultrasound Regions with physical units): the EF, a ratio, is still valid,
    but both volumes are NaN and must not be reported."""


@dataclass(frozen=True)
class NotAssessed:
    """An image the engines did not (or could not) analyse, and why."""

    source_sop_instance_uid: str
    reason: NotAssessedReasonValues
    detail: str


@dataclass
class ImageResult:
    """What the engines made of one image (single-frame or cine).

    Exactly one of ``not_assessed`` or an engine run is recorded; an image
    that was analysed and showed nothing has an empty ``lesions`` list.
    """

    source_sop_instance_uid: str
    anatomy: AnatomyValues
    algorithm: AlgorithmInfo | None = None
    lesions: list[LesionFinding] = field(default_factory=list)
    cardiac: list[CardiacFinding] = field(default_factory=list)
    not_assessed: NotAssessed | None = None
    anatomy_note: str | None = None
    """Set when the tags and the image disagree about the anatomy."""


@dataclass
class StudyResult:
    """All image results of one job, in the order of the source images."""

    study_instance_uid: str
    images: list[ImageResult] = field(default_factory=list)

    def number_findings(self) -> None:
        """Name the findings uniquely in the study: engines number the lesions of each
        image from 1, so the study's lesions become "Lesion 1" to "Lesion N" in image
        order, and the left ventricles of several cines "Left ventricle 1" to "N"."""
        for number, lesion in enumerate(self.lesions, start=1):
            lesion.tracking_id = f"Lesion {number}"
        ventricles = self.cardiac
        if len(ventricles) > 1:
            for number, finding in enumerate(ventricles, start=1):
                finding.tracking_id = f"{finding.tracking_id} {number}"

    @property
    def algorithms(self) -> list[AlgorithmInfo]:
        """Distinct algorithms that produced the results, in first-use order."""
        seen: dict[str, AlgorithmInfo] = {}
        for image in self.images:
            if image.algorithm is not None:
                seen.setdefault(image.algorithm.device_uid, image.algorithm)
        return list(seen.values())

    @property
    def lesions(self) -> list[LesionFinding]:
        """Every lesion finding of the study."""
        return [lesion for image in self.images for lesion in image.lesions]

    @property
    def cardiac(self) -> list[CardiacFinding]:
        """Every cardiac finding of the study."""
        return [finding for image in self.images for finding in image.cardiac]

    @property
    def not_assessed(self) -> list[NotAssessed]:
        """Every image that was not assessed."""
        return [i.not_assessed for i in self.images if i.not_assessed is not None]
