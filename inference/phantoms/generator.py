"""Phantom images and cine clips with exact ground truth.

:func:`generate` draws a probe, scanner settings and a liver or breast scene
from one seed, renders one frame or a cine clip (probe slide, elevational
sweep, breathing, speckle decorrelation) and burns annotations in.  The
ground truth is one :class:`LesionTruth` per visible lesion per frame,
with the same ``lesion_index`` on every frame the lesion spans.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import structlog
from scipy import ndimage

from inference.findings import BoundingBox
from inference.phantoms import acoustics as ac
from inference.phantoms.anatomy import SceneConfig, breast_scene, liver_scene
from inference.phantoms.scene import Grid, Scene

logger = structlog.get_logger(__name__)

Organ = Literal["liver", "breast"]

MIN_VISIBLE_MM = 3.0
"""A lesion counts on a frame when its visible part is at least this wide (equivalent
diameter); smaller slivers at the edge of a sweep are not ground truth."""

MIN_ROSE_INDEX = 4.0
"""A lesion counts only when its Rose index (see :func:`rose_index`) reaches this: the
Rose criterion for what an observer can detect is about 3-5.  Lesions inside a rib
shadow or a blown-out region, or too faint for their size, are not ground truth."""


@dataclass(frozen=True)
class LesionTruth:
    """A lesion on one frame."""

    lesion_index: int
    label: str
    box: BoundingBox
    area_px: int


@dataclass
class PhantomSample:
    """A rendered phantom image or clip and its ground truth.

    Attributes
    ----------
    frames:
        ``uint8`` ``(n, rows, cols)`` with black background and annotations.
    truths:
        Per frame, the visible lesions.
    labels:
        Class of each lesion, by ``lesion_index``.
    scan_box:
        Bounding box of the field of view (as the Ultrasound Region).
    pixel_mm:
        Pixel size in mm (square pixels).
    probe, settings:
        The probe and scanner settings drawn (``None`` from the image-domain
        generator, :mod:`inference.phantoms.imagedomain`).
    """

    organ: Organ
    seed: int
    frames: np.ndarray
    truths: list[list[LesionTruth]]
    labels: list[str]
    scan_box: BoundingBox
    pixel_mm: float
    probe: ac.ProbeGeometry | None = None
    settings: ac.ScannerSettings | None = None
    frame_time_ms: float | None = None
    params: dict[str, float] = field(default_factory=dict)


Renderer = Callable[[Organ, int, int, int], PhantomSample]
"""A phantom generator: ``(organ, seed, rows, cols)`` to a sample."""


PROBES: dict[Organ, list[tuple[ac.ProbeKind, float, tuple[float, float], tuple[float, float]]]] = {
    "liver": [("convex", 0.7, (90.0, 200.0), (2.0, 6.0)),
              ("sector", 0.15, (100.0, 180.0), (1.8, 4.5)),
              ("linear", 0.15, (40.0, 80.0), (4.0, 9.0))],
    "breast": [("linear", 0.85, (25.0, 60.0), (6.0, 15.0)),
               ("convex", 0.15, (40.0, 70.0), (4.0, 8.0))],
}
"""Per organ: probe kind, probability, depth range (mm), frequency range (MHz)."""


def _draw_probe(organ: Organ, rng: np.random.Generator
                ) -> tuple[ac.ProbeGeometry, ac.ScannerSettings]:
    options = PROBES[organ]
    pick = options[int(rng.choice(len(options), p=[o[1] for o in options]))]
    probe = ac.random_probe(pick[0], rng, pick[2])
    if organ == "breast" and probe.kind == "convex":
        probe = ac.ProbeGeometry("convex", probe.depth_mm, angle_deg=probe.angle_deg,
                                 radius_mm=probe.radius_mm + 40.0)
    return probe, ac.random_settings(rng, pick[3])


def rose_index(frame: np.ndarray, empty: np.ndarray, lesion: np.ndarray, scan: np.ndarray,
               cell_px: float) -> float:
    """How visible a lesion is on a rendered frame.

    The lesion is split into its rim (the outer third of its radius: wall, halo,
    capsule) and its core.  Each part is compared twice: with the tissue ring
    around the lesion, and with the same pixels of ``empty``, the frame rendered
    without the lesions and with the same speckle.  The smaller of the two
    contrast-to-noise ratios, times the square root of the resolution cells the
    part covers, is the part's Rose index, and the larger part's is returned.  A
    target lesion whose bright core and dark halo average out is still seen by its
    halo; a lesion under a rib shadow changes nothing on the frame, however dark
    the shadow is against the tissue beside it.

    Parameters
    ----------
    frame:
        The rendered frame (``uint8``).
    empty:
        The same frame rendered without the lesions (``uint8``).
    lesion:
        The lesion's pixels inside the field of view.
    scan:
        The field of view.
    cell_px:
        Area of a speckle resolution cell in pixels.
    """
    depth = ndimage.distance_transform_edt(lesion)
    radius = float(np.sqrt(lesion.sum() / np.pi))
    outer = ndimage.binary_dilation(lesion, iterations=max(int(radius * 0.6), 3))
    ring = frame[outer & ~ndimage.binary_dilation(lesion, iterations=2) & scan].astype(np.float64)
    if ring.size < 3:
        return 0.0
    best = 0.0
    for part in (lesion & (depth <= radius / 3.0), lesion & (depth > radius / 3.0)):
        values = frame[part].astype(np.float64)
        if values.size < 3:
            continue
        cnr = min(_cnr(values, ring), _cnr(values, empty[part].astype(np.float64)))
        best = max(best, cnr * float(np.sqrt(values.size / max(cell_px, 1e-6))))
    return best


def _cnr(a: np.ndarray, b: np.ndarray) -> float:
    """Contrast-to-noise ratio of two sets of grey levels."""
    sd = float(np.sqrt((a.var() + b.var()) / 2.0)) + 1.0
    return abs(float(a.mean()) - float(b.mean())) / sd


def _truths(scene: Scene, masks: list[np.ndarray | None], layout: ac.ScanLayout,
            frame: np.ndarray, empty: np.ndarray, frequency_mhz: float) -> list[LesionTruth]:
    out = []
    min_area = np.pi * (MIN_VISIBLE_MM / 2.0 / layout.pixel_mm) ** 2
    axial, lateral = ac.resolution_mm(frequency_mhz)
    cell_px = axial * lateral / layout.pixel_mm**2
    for index, (lesion, mask) in enumerate(zip(scene.lesions, masks, strict=True)):
        if mask is None:
            continue
        visible = mask & layout.mask
        area = int(visible.sum())
        if area < min_area:
            continue
        if rose_index(frame, empty, visible, layout.mask, cell_px) < MIN_ROSE_INDEX:
            continue
        out.append(LesionTruth(index, lesion.label, BoundingBox.of_mask(visible), area))
    return out


@dataclass(frozen=True)
class Motion:
    """Cine motion parameters (per second, mm)."""

    slide_mm_s: float
    sweep_mm_s: float
    sweep_start_mm: float
    breathing_mm: float
    breathing_period_s: float
    breathing_angle: float
    breathing_phase: float
    decorrelation: float

    def offset(self, t_s: float) -> tuple[float, float, float]:
        """Tissue displacement ``(dx, dz, y)`` at time ``t_s``."""
        b = float(ac.breathing_offset_mm(t_s, self.breathing_period_s, self.breathing_mm,
                                         self.breathing_phase))
        dx = self.slide_mm_s * t_s + b * np.sin(self.breathing_angle)
        dz = b * np.cos(self.breathing_angle)
        return dx, dz, self.sweep_start_mm + self.sweep_mm_s * t_s


def _motion(organ: Organ, rng: np.random.Generator, scene: Scene, duration_s: float) -> Motion:
    radii = [lesion.blob.elevation_mm for lesion in scene.lesions] or [10.0]
    sweep = 0.9 * min(radii) / duration_s * float(rng.uniform(0.0, 1.0))
    return Motion(
        slide_mm_s=float(rng.uniform(-6.0, 6.0)),
        sweep_mm_s=float(sweep * rng.choice([-1.0, 1.0])),
        sweep_start_mm=0.0,
        breathing_mm=float(rng.uniform(3.0, 12.0)) if organ == "liver" else 0.0,
        breathing_period_s=float(rng.uniform(3.0, 5.0)),
        breathing_angle=float(rng.uniform(-np.pi / 2, np.pi / 2)),
        breathing_phase=float(rng.uniform(0, np.pi)),
        decorrelation=float(rng.uniform(0.02, 0.15)),
    )


def generate(organ: Organ, seed: int, rows: int = 480, cols: int = 640, n_frames: int = 1,
             config: SceneConfig | None = None, text: bool = True) -> PhantomSample:
    """Render a phantom image (``n_frames == 1``) or cine clip.

    Parameters
    ----------
    organ:
        ``"liver"`` or ``"breast"``.
    seed:
        Seed of everything random: the same seed gives the same sample.
    rows, cols:
        Image size.
    n_frames:
        Number of frames; more than one renders a clip.
    config:
        Scene sampling knobs (lesion sizes, counts, classes).
    text:
        Burn annotations into the frames.

    Returns
    -------
    PhantomSample
        Frames and ground truth.
    """
    rng = np.random.default_rng(seed)
    probe, settings = _draw_probe(organ, rng)
    layout = ac.layout_scan(probe, rows, cols, rng)
    scene = (liver_scene if organ == "liver" else breast_scene)(rng, probe, config)
    # The operator sets the TGC for the organ in view.
    settings = replace(settings, assumed_attenuation=scene.background_atten
                       + float(rng.uniform(-0.12, 0.08)))
    base = Grid(layout.x_mm, layout.z_mm, 0.0)
    frame_time = float(rng.uniform(0.033, 0.066))
    motion = _motion(organ, rng, scene, max(n_frames - 1, 1) * frame_time)
    overlay = (ac.burn_in_text(np.zeros((rows, cols), np.uint8), rng,
                               inside_probability=0.15, layout=layout) if text else None)
    scatterers = ac.make_scatterers(layout.beam_shape, rng)
    frames, truths = [], []
    previous = (0.0, 0.0)
    for i in range(n_frames):
        dx, dz, y = motion.offset(i * frame_time) if n_frames > 1 else (0.0, 0.0, 0.0)
        if i:
            shift = layout.beam_shift(dx - previous[0], dz - previous[1])
            scatterers = ac.decorrelate(ac.shift_scatterers(scatterers, *shift, rng),
                                        motion.decorrelation, rng)
            previous = (previous[0] + shift[1] * layout.lateral_step_mm,
                        previous[1] + shift[0] * layout.axial_step_mm)
        grid = base.moved(dx, dz, y)
        layers = scene.paint_layers(grid)
        same_noise = copy.deepcopy(rng)
        frame = ac.render(layout, layers.echo, layers.atten, settings, rng, scatterers=scatterers)
        if any(mask is not None for mask in layers.masks):
            empty = ac.render(layout, layers.empty_echo, layers.empty_atten, settings,
                              same_noise, scatterers=scatterers)
            truths.append(_truths(scene, layers.masks, layout, frame, empty,
                                  settings.frequency_mhz))
        else:
            truths.append([])
        if overlay is not None:
            frame = np.where(overlay > 0, overlay, frame)
        frames.append(frame)
    x0, y0, x1, y1 = layout.bbox
    return PhantomSample(
        organ=organ, seed=seed, frames=np.stack(frames), truths=truths,
        labels=[lesion.label for lesion in scene.lesions],
        scan_box=BoundingBox(x0, y0, x1, y1), pixel_mm=layout.pixel_mm, probe=probe,
        settings=settings, frame_time_ms=frame_time * 1000.0 if n_frames > 1 else None,
        params={"frequency_mhz": settings.frequency_mhz, "depth_mm": probe.depth_mm,
                "gain_db": settings.gain_db, "dynamic_range_db": settings.dynamic_range_db},
    )
