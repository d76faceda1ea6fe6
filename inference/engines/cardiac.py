"""Cardiac engine: LV ejection fraction from an apical four-chamber cine.

Every frame is segmented (:mod:`inference.engines.lv_segmentation`), the LV
volume of every frame is measured by the single-plane method of 20 discs
(:mod:`inference.engines.lv_volume`) on the original pixel grid, the volume
curve goes through a 3-frame running median (one-frame segmentation glitches
go, the flat isovolumic end-diastole and end-systole stay), and end-diastole /
end-systole are the frames of the largest / smallest filtered volume.
``EF = (EDV - ESV) / EDV``.

Calibration: the EF is a ratio and needs no physical calibration.  Volumes in
ml need the pixel size from the Sequence of Ultrasound Regions; without it
the engine still reports the EF (assuming square pixels), sets both volumes
to NaN and ``CardiacFinding.volumes_calibrated`` to ``False``, so the result
builders report the EF only.

The explanation of a cardiac result is its masks and contours on the ED and
ES frames, not a heat map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import structlog
import torch
from scipy import ndimage

from inference.engines.base import ImageInput, tracking_uid
from inference.engines.lv_segmentation import (
    LVUNet,
    masks_on_image,
    predict_probabilities,
    prepare_frames,
)
from inference.engines.lv_volume import measure_discs
from inference.engines.model_card import load_model
from inference.findings import (
    AlgorithmInfo,
    AnatomyValues,
    BoundingBox,
    CardiacFinding,
    ImageResult,
    NotAssessed,
    NotAssessedReasonValues,
)
from inference.geometry import spatial_region_for
from inference.models.runtime import make_runner
from inference.preprocessing import scan_area

logger = structlog.get_logger(__name__)

ENGINE_VERSION = "1.0.0"
"""Version of the engine code (with the weights SHA-256, it makes the device UID)."""

WEIGHTS_NAME = "cardiac_lv_unet.pt"
"""Shipped segmentation weights in ``inference/weights``."""

ALGORITHM_NAME = "us-cardiac-lv-ef"
"""Algorithm name reported in the SR."""

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
"""Where the shipped weights live."""

MIN_FRAMES = 8
"""Fewer frames than this cannot hold a heart cycle."""

MIN_CLIP_MS = 600.0
"""A timed cine shorter than this cannot hold a heart cycle at the heart rates of an
echo at rest (a cycle lasts 600 ms at 100 beats per minute) when the device recorded
no Heart Rate; with one, the clip must last a cycle of that rate."""

CYCLE_TOLERANCE = 0.9
"""Share of the cycle a clip must last: a one-beat loop runs for about one cycle, and the
recorded Heart Rate is an average over beats that vary."""

HEART_RATES_BPM = (30.0, 220.0)
"""Heart rates taken at their word; a value outside is a device's placeholder."""

MAX_FRAMES = 128
"""Longer cines are sampled evenly down to this many frames."""

MEDIAN_FRAMES = 3
"""Length of the running median over the volume curve (tuned on validation cines:
Gaussian smoothing flattens the end-systolic minimum and biases the EF low)."""

MIN_SEGMENTED_SHARE = 0.8
"""Share of frames that must show an LV for the cine to be measured."""

CONTOUR_POINTS = 96
"""Points of the ED/ES contours."""


class CardiacEngine:
    """LV segmentation and single-plane EF on apical four-chamber cines.

    Parameters
    ----------
    weights_dir:
        Directory holding ``cardiac_lv_unet.pt`` and its card; the shipped
        weights when ``None``.

    Raises
    ------
    FileNotFoundError
        When the weights or their card are missing.
    ValueError
        When the weights do not match their card.
    """

    name = "cardiac"
    anatomy = AnatomyValues.HEART

    def __init__(self, weights_dir: Path | None = None) -> None:
        self._weights = (weights_dir or DEFAULT_WEIGHTS_DIR) / WEIGHTS_NAME
        self._model, card = load_model(self._weights, "Cardiac",
                                       lambda arch: LVUNet(int(arch["base"])))
        digest = str(card["sha256"])
        self._runner = make_runner(self._model, self._weights, digest)
        self._input_size = int(card["architecture"]["input_size"])
        self._algorithm = AlgorithmInfo(
            name=ALGORITHM_NAME,
            version=ENGINE_VERSION,
            weights_sha256=digest,
            parameters={
                "method": "single-plane method of discs (20 discs), apical four-chamber",
                "input_size": str(card["architecture"]["input_size"]),
                "mask_threshold": "0.5",
                "volume_filter": f"running median of {MEDIAN_FRAMES} frames",
                "runtime": self._runner.backend,
            },
        )
        logger.info("cardiac_engine_loaded", sha256=digest[:12])

    @property
    def algorithm(self) -> AlgorithmInfo:
        """Identity of the segmentation model and measurement."""
        return self._algorithm

    def networks(self) -> list[tuple[Path, torch.nn.Module, tuple[int, ...]]]:
        """The network this engine runs: weights file, module and input shape (for export)."""
        return [(self._weights, self._model, (1, 1, self._input_size, self._input_size))]

    def _not_assessed(self, image: ImageInput, reason: NotAssessedReasonValues,
                      detail: str) -> ImageResult:
        return ImageResult(
            source_sop_instance_uid=image.sop_instance_uid,
            anatomy=self.anatomy,
            algorithm=self._algorithm,
            not_assessed=NotAssessed(image.sop_instance_uid, reason, detail),
        )

    def run(self, image: ImageInput) -> ImageResult:
        """Measure the LV EF of one cine.

        Parameters
        ----------
        image:
            The decoded cine (all frames at their original size).

        Returns
        -------
        ImageResult
            One :class:`CardiacFinding`, or a :class:`NotAssessed` for a
            single frame, a cine too short, no scan area, or no LV found.
        """
        if image.number_of_frames < 2:
            return self._not_assessed(image, NotAssessedReasonValues.IMAGE_QUALITY,
                                      "EF needs a cine; this image has a single frame.")
        if image.number_of_frames < MIN_FRAMES:
            return self._not_assessed(
                image, NotAssessedReasonValues.IMAGE_QUALITY,
                f"EF needs a cine of at least {MIN_FRAMES} frames covering a heart cycle; "
                f"this one has {image.number_of_frames}.")
        short = _shorter_than_a_cycle(image)
        if short is not None:
            return self._not_assessed(image, NotAssessedReasonValues.IMAGE_QUALITY, short)
        try:
            box = scan_area(image)
        except ValueError as exc:
            return self._not_assessed(image, NotAssessedReasonValues.IMAGE_QUALITY, str(exc))
        indices = _frame_indices(image.number_of_frames)
        frames = image.frames[indices]
        probabilities = predict_probabilities(self._runner, prepare_frames(frames, box))
        pixel_mm = _pixel_size_mm(image, box)
        calibrated = pixel_mm is not None
        pixel = pixel_mm or (1.0, 1.0)
        shape = frames.shape[1:]
        # One frame at a time: full-size masks of a long cine would not fit in memory.
        measurements = [measure_discs(masks_on_image(p[None], box, shape)[0], pixel)
                        for p in probabilities]
        found = np.array([m is not None for m in measurements])
        if found.mean() < MIN_SEGMENTED_SHARE:
            return self._not_assessed(
                image, NotAssessedReasonValues.IMAGE_QUALITY,
                f"Left ventricle found on {int(found.sum())} of {len(found)} frames only.")
        volumes = np.array([m.volume if m is not None else np.nan for m in measurements])
        smooth = _smooth_curve(volumes)
        ed, es = int(np.nanargmax(smooth)), int(np.nanargmin(smooth))
        ed_mask, es_mask = masks_on_image(probabilities[[ed, es]], box, shape)
        edv, esv = float(smooth[ed]), float(smooth[es])
        ef = 100.0 * (edv - esv) / edv if edv > 0 else float("nan")
        if not np.isfinite(ef):
            return self._not_assessed(image, NotAssessedReasonValues.IMAGE_QUALITY,
                                      "The LV volume curve could not be measured.")
        finding = CardiacFinding(
            tracking_id="Left ventricle",
            tracking_uid=tracking_uid(image.sop_instance_uid, self._algorithm, "LV"),
            source_sop_instance_uid=image.sop_instance_uid,
            ejection_fraction_percent=round(ef, 1),
            end_diastolic_volume_ml=round(edv, 1) if calibrated else float("nan"),
            end_systolic_volume_ml=round(esv, 1) if calibrated else float("nan"),
            end_diastolic_frame=int(indices[ed]) + 1,
            end_systolic_frame=int(indices[es]) + 1,
            end_diastolic_mask=ed_mask,
            end_systolic_mask=es_mask,
            end_diastolic_contour=mask_contour(ed_mask),
            end_systolic_contour=mask_contour(es_mask),
            volumes_calibrated=calibrated,
        )
        logger.info("cardiac_measured", ef=finding.ejection_fraction_percent,
                    frames=len(indices), calibrated=calibrated)
        return ImageResult(
            source_sop_instance_uid=image.sop_instance_uid,
            anatomy=self.anatomy,
            algorithm=self._algorithm,
            cardiac=[finding],
        )


def _pixel_size_mm(image: ImageInput, box: BoundingBox) -> tuple[float, float] | None:
    """Pixel size of the scan area ``box``: its own region's deltas (the smallest spatial
    region around it), else the image's main region's."""
    region = spatial_region_for(image.geometry.regions, box)
    if region is not None and region.delta_x_mm is not None and region.delta_y_mm is not None:
        return region.delta_x_mm, region.delta_y_mm
    return image.geometry.pixel_size_mm


def _shorter_than_a_cycle(image: ImageInput) -> str | None:
    """Why a timed cine is too short to hold a heart cycle, or ``None``.

    End-diastole and end-systole are the largest and smallest volume of the clip,
    so a clip of part of a cycle (a short high-frame-rate loop, a loop cut during
    systole) would report a falsely low EF.  An untimed cine is taken as it is
    (:data:`MIN_FRAMES` only).
    """
    if image.frame_time_ms is None:
        return None
    duration = image.number_of_frames * image.frame_time_ms
    rate = image.heart_rate_bpm
    known = rate is not None and HEART_RATES_BPM[0] <= rate <= HEART_RATES_BPM[1]
    cycle = 60000.0 / rate if known and rate is not None else MIN_CLIP_MS
    if duration >= CYCLE_TOLERANCE * cycle:
        return None
    basis = f"a heart cycle at {rate:.0f} bpm" if known and rate is not None else "a heart cycle"
    return (f"EF needs a cine covering {basis} ({cycle:.0f} ms); this one lasts "
            f"{duration:.0f} ms.")


def _frame_indices(n_frames: int) -> np.ndarray:
    if n_frames <= MAX_FRAMES:
        return np.arange(n_frames)
    return np.unique(np.linspace(0, n_frames - 1, MAX_FRAMES).round().astype(int))


def _smooth_curve(volumes: np.ndarray) -> np.ndarray:
    """Fill frames without an LV by interpolation, then take a running median."""
    valid = np.isfinite(volumes)
    frames = np.arange(len(volumes))
    filled = np.interp(frames, frames[valid], volumes[valid])
    return ndimage.median_filter(filled, size=MEDIAN_FRAMES, mode="nearest")


def mask_contour(mask: np.ndarray, points: int = CONTOUR_POINTS) -> np.ndarray | None:
    """Closed contour ``(points + 1, 2)`` of ``(x, y)`` around a star-shaped mask.

    Rays from the centroid are followed to the last mask pixel, in pixel-edge
    (SCOORD) coordinates; the first point is repeated at the end.

    Parameters
    ----------
    mask:
        Boolean ``(rows, columns)`` mask.
    points:
        Number of rays.

    Returns
    -------
    numpy.ndarray or None
        Float32 contour, or ``None`` for an empty mask.
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    cy, cx = rows.mean() + 0.5, cols.mean() + 0.5
    reach = float(np.hypot(rows.max() - rows.min(), cols.max() - cols.min())) + 2.0
    steps = np.arange(0.0, reach, 0.5)
    angles = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    xs = cx + np.cos(angles)[:, None] * steps[None, :]
    ys = cy + np.sin(angles)[:, None] * steps[None, :]
    r = np.clip(np.floor(ys).astype(int), 0, mask.shape[0] - 1)
    c = np.clip(np.floor(xs).astype(int), 0, mask.shape[1] - 1)
    inside = mask[r, c]
    last = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
    radius = steps[last] + 0.5
    contour = np.stack([cx + np.cos(angles) * radius, cy + np.sin(angles) * radius], axis=1)
    return np.vstack([contour, contour[:1]]).astype(np.float32)
