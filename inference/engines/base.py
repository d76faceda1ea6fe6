"""The engine interface the node dispatches to.

An engine takes one decoded image (all frames of a cine) with its geometry
and returns plain findings.  Engines never touch the network or write DICOM.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from inference.findings import AlgorithmInfo, AnatomyValues, ImageResult
from inference.geometry import ImageGeometry


@dataclass
class ImageInput:
    """One source image, decoded and converted to grayscale.

    Parameters
    ----------
    sop_instance_uid:
        SOP Instance UID of the source image.
    frames:
        ``uint8`` array ``(frames, rows, columns)``; single-frame images have
        one frame.
    geometry:
        Regions and pixel size from the Sequence of Ultrasound Regions.
    frame_time_ms:
        Time between frames of a cine, when known.
    heart_rate_bpm:
        Heart Rate (0018,1088) of a cine, when the device recorded it.
    body_part:
        BodyPartExamined (or an equivalent tag), upper case, when present.
    tag_anatomy:
        The anatomy the tags suggest, when they suggest one.
    color_fraction:
        Fraction of the visible pixels that carried colour before the
        grayscale conversion (colour Doppler, coloured overlays); 0 for
        monochrome sources.
    """

    sop_instance_uid: str
    frames: np.ndarray
    geometry: ImageGeometry
    frame_time_ms: float | None = None
    heart_rate_bpm: float | None = None
    body_part: str | None = None
    tag_anatomy: AnatomyValues | None = None
    color_fraction: float = 0.0
    _scan_mask: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    """The scan-area mask, once :func:`inference.preprocessing.image_scan_mask` made it."""

    @property
    def number_of_frames(self) -> int:
        """Number of frames."""
        return int(self.frames.shape[0])


@runtime_checkable
class Engine(Protocol):
    """What the dispatcher needs of an engine."""

    name: str
    """Registry name used by routing rules (``liver``, ``breast``, ``cardiac``)."""

    anatomy: AnatomyValues
    """The anatomy or view the engine analyses."""

    @property
    def algorithm(self) -> AlgorithmInfo:
        """Identity of the model(s) behind the engine."""
        ...

    def run(self, image: ImageInput) -> ImageResult:
        """Analyse one image and return its findings."""
        ...


def tracking_uid(sop_instance_uid: str, algorithm: AlgorithmInfo, finding: str) -> str:
    """A Tracking UID stable for one finding of one image and one model: a job run again
    (after a crash, say) writes result objects of the same SOP Instance UIDs with the same
    content, so an archive that keeps the first copy keeps the right one."""
    key = f"{sop_instance_uid}|{algorithm.device_uid}|{finding}".encode()
    digest = hashlib.sha256(key).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))
