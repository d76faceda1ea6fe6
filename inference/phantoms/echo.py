"""Apical four-chamber echo phantom with a beating left ventricle of known volume.

The heart is drawn in a *heart frame* whose origin is the endocardial apex of
the left ventricle (LV), ``u`` running along the long axis from the apex to
the middle of the mitral annulus and ``v`` across it towards the lateral
wall.  At relative position ``s = u / L`` the LV cavity spans
``-w_sept(s) <= v <= w_lat(s)``; its diameter ``d(s) = w_sept + w_lat`` is a
bullet profile scaled so that the single-plane method of discs

``V = pi / 4 * sum_i d(s_i)^2 * L / 20`` with ``s_i = (i - 1/2) / 20``

gives exactly the volume the cardiac cycle asks for at each instant: the
ground-truth volumes *are* that formula, applied to the analytic cavity.
The length ``L`` shortens in systole (longitudinal function) and the
diameters follow from the volume.

Around the LV cavity: myocardium (thickening in systole), the right
ventricle beside the septum, both atria below the atrioventricular plane,
mitral and tricuspid leaflets opening in diastole, pericardium, apical
near-field clutter, wall dropout and a smoke-like blood signal.  The scene is
imaged by a sector (phased-array) probe with the acoustic core of
:mod:`inference.phantoms.acoustics`: speckle that decorrelates from frame to
frame, breathing and probe motion, and burned-in text and ECG trace.

Public API: :class:`HeartParameters`, :class:`EchoSpec`, :func:`random_echo_spec`,
:class:`EchoCine`, :func:`render_echo`, :func:`disc_volume_ml`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import structlog
from scipy import ndimage

from inference.phantoms import acoustics as ac
from inference.phantoms.scene import TextureField

logger = structlog.get_logger(__name__)

N_DISCS = 20
"""Discs of the single-plane method of discs."""

_S = (np.arange(N_DISCS) + 0.5) / N_DISCS
"""Relative disc centres along the long axis (apex = 0, base = 1)."""


def disc_volume_ml(diameters_mm: np.ndarray, length_mm: float) -> float:
    """Single-plane method of discs: ``pi / 4 * sum d_i^2 * L / n`` in ml.

    Parameters
    ----------
    diameters_mm:
        Disc diameters (mm), one per disc.
    length_mm:
        Long-axis length (mm).

    Returns
    -------
    float
        Volume in ml (1 ml = 1000 mm^3).
    """
    d = np.asarray(diameters_mm, dtype=np.float64)
    return float(np.pi / 4.0 * np.sum(d * d) * length_mm / len(d) / 1000.0)


@dataclass(frozen=True)
class HeartParameters:
    """Anatomy and function of the phantom heart (all lengths in mm).

    Parameters
    ----------
    edv_ml, ef_percent:
        End-diastolic volume and ejection fraction of the LV.
    length_ed_mm:
        LV long-axis length at end-diastole.
    long_shortening:
        Fractional shortening of the long axis at end-systole.
    roundness:
        Exponent of the apical cap (< 1 pointed, > 1 blunt).
    base_narrowing:
        How much the cavity narrows towards the mitral annulus.
    asymmetry:
        Share of the diameter on the lateral side minus 0.5.
    wall_mm:
        End-diastolic myocardial thickness.
    rv_width_mm, rv_start:
        Right-ventricular width at its base and where it starts (fraction of
        the LV length from the apex).
    la_size_mm, ra_size_mm:
        ``(length, width)`` of the atria.
    heart_rate_bpm:
        Heart rate.
    """

    edv_ml: float
    ef_percent: float
    length_ed_mm: float
    long_shortening: float
    roundness: float
    base_narrowing: float
    asymmetry: float
    wall_mm: float
    rv_width_mm: float
    rv_start: float
    la_size_mm: tuple[float, float]
    ra_size_mm: tuple[float, float]
    heart_rate_bpm: float

    @property
    def esv_ml(self) -> float:
        """End-systolic volume."""
        return self.edv_ml * (1.0 - self.ef_percent / 100.0)

    @property
    def period_s(self) -> float:
        """Duration of one heart beat."""
        return 60.0 / self.heart_rate_bpm

    def profile(self, s: np.ndarray) -> np.ndarray:
        """Relative cavity diameter at ``s`` (bullet shape, unscaled)."""
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0)
        cap = np.sqrt(np.clip(1.0 - (1.0 - s) ** 2, 0.0, 1.0)) ** self.roundness
        return cap * (1.0 - self.base_narrowing * s**4)

    def length_mm(self, phase: float) -> float:
        """Long-axis length at systolic phase ``phase`` (0 = ED, 1 = ES)."""
        return self.length_ed_mm * (1.0 - self.long_shortening * phase)

    def volume_ml(self, phase: float) -> float:
        """LV volume at systolic phase ``phase``."""
        return self.edv_ml + (self.esv_ml - self.edv_ml) * phase

    def diameter_scale_mm(self, phase: float) -> float:
        """Scale of :meth:`profile` that gives :meth:`volume_ml` by the disc formula."""
        unit = disc_volume_ml(self.profile(_S), self.length_mm(phase))
        return float(np.sqrt(self.volume_ml(phase) / unit))

    def timing(self) -> tuple[float, float, float]:
        """Isovolumic contraction, ejection and isovolumic relaxation durations (s)."""
        root = float(np.sqrt(self.period_s))
        return 0.04, 0.27 * root, 0.07 * root

    def phase(self, t_s: float | np.ndarray) -> np.ndarray:
        """Systolic phase over time: 0 at end-diastole, 1 at end-systole.

        Isovolumic contraction (40 ms, volume constant), ejection as a half
        cosine over ``0.27 sqrt(T)`` s, isovolumic relaxation (``0.07 sqrt(T)``
        s, volume constant), then rapid filling to 25 %, a slow diastasis to
        18 % and the atrial kick.
        """
        period = self.period_s
        ivc, ejection, ivr = self.timing()
        tau = np.mod(np.asarray(t_s, dtype=np.float64), period)
        rest = period - ivc - ejection - ivr
        rapid, atrial = 0.28 * rest, 0.22 * rest
        out = np.zeros_like(tau)
        ej = (tau >= ivc) & (tau < ivc + ejection)
        out[ej] = 0.5 - 0.5 * np.cos(np.pi * (tau[ej] - ivc) / ejection)
        out[(tau >= ivc + ejection) & (tau < ivc + ejection + ivr)] = 1.0
        t_d = tau - (ivc + ejection + ivr)
        fill = (t_d >= 0.0) & (t_d < rapid)
        out[fill] = 0.25 + 0.75 * (0.5 + 0.5 * np.cos(np.pi * t_d[fill] / rapid))
        dias = (t_d >= rapid) & (t_d < rest - atrial)
        out[dias] = 0.25 - 0.07 * (t_d[dias] - rapid) / max(rest - atrial - rapid, 1e-6)
        kick = t_d >= rest - atrial
        t_a = (t_d[kick] - (rest - atrial)) / atrial
        out[kick] = 0.18 * (0.5 + 0.5 * np.cos(np.pi * t_a))
        return out

    def mitral_opening(self, t_s: float | np.ndarray) -> np.ndarray:
        """How far the atrioventricular valves are open (0 closed, 1 open)."""
        period = self.period_s
        ivc, ejection, ivr = self.timing()
        tau = np.mod(np.asarray(t_s, dtype=np.float64), period)
        rest = period - ivc - ejection - ivr
        t_d = (tau - (ivc + ejection + ivr)) / max(rest - 0.02, 1e-6)
        # Wide open in early filling and at the atrial kick, half open in between.
        shape = 0.55 + 0.45 * np.cos(2.0 * np.pi * np.clip(t_d, 0.0, 1.0)) ** 2
        return np.where((t_d > 0.0) & (t_d < 1.0), shape, 0.0)


def random_heart(rng: np.random.Generator, ef_range: tuple[float, float] = (15.0, 75.0)
                 ) -> HeartParameters:
    """Draw a heart: EF uniform in ``ef_range``, dilated when the EF is low."""
    ef = float(rng.uniform(*ef_range))
    edv = float(rng.uniform(70.0, 150.0) + max(0.0, 50.0 - ef) * rng.uniform(0.0, 4.0))
    length = float(rng.uniform(72.0, 92.0) * (edv / 120.0) ** (1.0 / 3.0))
    return HeartParameters(
        edv_ml=edv,
        ef_percent=ef,
        length_ed_mm=length,
        long_shortening=float(rng.uniform(0.05, 0.2) * ef / 60.0),
        roundness=float(rng.uniform(0.7, 1.4)),
        base_narrowing=float(rng.uniform(0.0, 0.25)),
        asymmetry=float(rng.uniform(-0.08, 0.08)),
        wall_mm=float(rng.uniform(7.0, 13.0)),
        rv_width_mm=float(rng.uniform(22.0, 38.0)),
        rv_start=float(rng.uniform(0.2, 0.45)),
        la_size_mm=(float(rng.uniform(38.0, 58.0)), float(rng.uniform(32.0, 48.0))),
        ra_size_mm=(float(rng.uniform(36.0, 55.0)), float(rng.uniform(30.0, 45.0))),
        heart_rate_bpm=float(rng.uniform(50.0, 120.0)),
    )


@dataclass(frozen=True)
class EchoSpec:
    """Everything that defines one phantom echo cine.

    Parameters
    ----------
    heart:
        Anatomy and function.
    probe:
        Sector probe field of view.
    settings:
        Scanner settings.
    rows, cols:
        Image size.
    n_frames, frame_time_ms, start_s:
        Cine length, frame interval and the time in the heart cycle of the
        first frame.
    apex_mm:
        ``(x, z)`` of the endocardial apex at rest.
    tilt_deg:
        Angle of the long axis from the image vertical (base to the lateral
        side for positive values).
    mirrored:
        Mayo-style display (LV on the left of the screen).
    breathing_mm, breathing_period_s, drift_mm:
        Respiratory displacement amplitude and period, and linear probe drift
        over the clip.
    decorrelation:
        Fraction of speckle renewed per frame.
    blood, clutter, dropout:
        Blood echogenicity, apical clutter level and wall dropout strength.
    seed:
        Seed of everything random inside the rendering.
    """

    heart: HeartParameters
    probe: ac.ProbeGeometry
    settings: ac.ScannerSettings
    rows: int
    cols: int
    n_frames: int
    frame_time_ms: float
    start_s: float
    apex_mm: tuple[float, float]
    tilt_deg: float
    mirrored: bool
    breathing_mm: float
    breathing_period_s: float
    drift_mm: tuple[float, float]
    decorrelation: float
    blood: float
    clutter: float
    dropout: float
    seed: int


def _lv_in_view(heart: HeartParameters, probe: ac.ProbeGeometry, apex: tuple[float, float],
                tilt_deg: float, margin_deg: float = 4.0, margin_mm: float = 8.0) -> bool:
    """Whether the end-diastolic LV and its walls (plus breathing room) fit the sector."""
    tilt = np.deg2rad(tilt_deg)
    e_u = np.array([np.sin(tilt), np.cos(tilt)])
    e_v = np.array([np.cos(tilt), -np.sin(tilt)])
    s = np.linspace(0.0, 1.0, 21)
    half = 0.5 * heart.diameter_scale_mm(0.0) * heart.profile(s) + heart.wall_mm + margin_mm
    u = s * heart.length_ed_mm
    points = [np.array(apex) + np.outer(u, e_u) + side * np.outer(half, e_v)
              for side in (-1.0, 1.0)]
    pts = np.concatenate(points)
    angle = np.degrees(np.abs(np.arctan2(pts[:, 0], pts[:, 1] + probe.radius_mm)))
    depth = np.hypot(pts[:, 0], pts[:, 1] + probe.radius_mm) - probe.radius_mm
    return bool(np.all(angle < probe.angle_deg / 2.0 - margin_deg)
                and np.all(depth < probe.depth_mm - margin_mm))


def random_echo_spec(
    rng: np.random.Generator,
    *,
    size: tuple[int, int] | None = None,
    n_frames: int | None = None,
    ef_range: tuple[float, float] = (15.0, 75.0),
) -> EchoSpec:
    """Draw a widely varied echo cine.

    Parameters
    ----------
    rng:
        Random generator.
    size:
        ``(rows, cols)``; random between 300x400 and 600x800 when ``None``.
    n_frames:
        Frames; 1.2-2 heart beats (at most 90 frames) when ``None``.
    ef_range:
        Range of the uniform ejection fraction.

    Returns
    -------
    EchoSpec
        The specification, rendered by :func:`render_echo`.
    """
    ef = float(rng.uniform(*ef_range))
    heart = random_heart(rng, (ef, ef))
    probe = ac.ProbeGeometry("sector", 0.0)
    apex_z = tilt = apex_x = 0.0
    for attempt in range(500):
        if attempt % 25 == 24:
            # This heart does not fit this kind of view: draw another with the same EF.
            heart = random_heart(rng, (ef, ef))
        apex_z = float(rng.uniform(18.0, 42.0))
        tilt = float(rng.uniform(-5.0, 25.0))
        apex_x = float(rng.uniform(-12.0, 12.0))
        reach = apex_z + (heart.length_ed_mm + max(heart.la_size_mm[0], heart.ra_size_mm[0]))
        depth = float(np.clip(reach * np.cos(np.deg2rad(tilt)) + rng.uniform(-5.0, 45.0),
                              120.0, 240.0))
        probe = ac.ProbeGeometry("sector", depth, angle_deg=float(rng.uniform(60.0, 90.0)),
                                 radius_mm=float(rng.uniform(0.0, 3.0)))
        if _lv_in_view(heart, probe, (apex_x, apex_z), tilt):
            break
    else:
        raise RuntimeError("Could not fit the left ventricle in the sector.")
    if size is None:
        rows = int(rng.integers(300, 601))
        size = (rows, int(rows * rng.uniform(1.2, 1.45)))
    frame_time = float(1000.0 / rng.uniform(25.0, 60.0))
    if n_frames is None:
        beats = float(rng.uniform(1.2, 2.0))
        n_frames = int(min(90, max(12, beats * heart.period_s * 1000.0 / frame_time)))
    return EchoSpec(
        heart=heart,
        probe=probe,
        settings=ac.random_settings(rng, (1.6, 3.6)),
        rows=size[0],
        cols=size[1],
        n_frames=n_frames,
        frame_time_ms=frame_time,
        start_s=float(rng.uniform(0.0, heart.period_s)),
        apex_mm=(apex_x, apex_z),
        tilt_deg=tilt,
        mirrored=bool(rng.random() < 0.2),
        breathing_mm=float(rng.uniform(0.0, 6.0)),
        breathing_period_s=float(rng.uniform(3.0, 6.0)),
        drift_mm=(float(rng.uniform(-3.0, 3.0)), float(rng.uniform(-3.0, 3.0))),
        decorrelation=float(rng.uniform(0.05, 0.35)),
        blood=float(np.exp(rng.uniform(np.log(0.004), np.log(0.05)))),
        clutter=float(rng.uniform(0.0, 1.0) ** 2 * 1.2),
        dropout=float(rng.uniform(0.0, 0.8)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


@dataclass
class EchoCine:
    """A rendered phantom cine and its ground truth.

    Attributes
    ----------
    frames:
        ``uint8`` ``(n, rows, cols)``.
    lv_masks:
        Boolean ``(n, rows, cols)`` LV cavity (closed at the mitral annulus).
    volumes_ml:
        Ground-truth LV volume of every frame (method of discs, analytic).
    frame_indices:
        Cine frame index (0-based) of each rendered frame.
    pixel_mm:
        Size of a (square) pixel.
    scan_box:
        ``(x0, y0, x1, y1)`` pixel box (exclusive end) of the sector.
    frame_time_ms:
        Interval between frames.
    spec:
        The specification (``None`` for cines of the second generator,
        :mod:`inference.phantoms.imagedomain_echo`).
    """

    frames: np.ndarray
    lv_masks: np.ndarray
    volumes_ml: np.ndarray
    frame_indices: np.ndarray
    pixel_mm: float
    scan_box: tuple[int, int, int, int]
    frame_time_ms: float
    spec: EchoSpec | None = None

    @property
    def ed_index(self) -> int:
        """Position (in ``frames``) of the largest volume: end-diastole."""
        return int(np.argmax(self.volumes_ml))

    @property
    def es_index(self) -> int:
        """Position (in ``frames``) of the smallest volume: end-systole."""
        return int(np.argmin(self.volumes_ml))

    @property
    def ejection_fraction(self) -> float:
        """EF (%) from the largest and smallest volumes of the rendered frames."""
        edv, esv = float(self.volumes_ml.max()), float(self.volumes_ml.min())
        return 100.0 * (edv - esv) / edv


@dataclass(frozen=True)
class _Frame:
    """Heart geometry at one instant, in image mm."""

    apex: np.ndarray
    e_u: np.ndarray
    e_v: np.ndarray
    length: float
    scale: float
    wall: float
    rv_scale: float
    la_scale: float
    opening: float


def _segment_distance(px: np.ndarray, pz: np.ndarray, a: np.ndarray, b: np.ndarray
                      ) -> np.ndarray:
    ab = b - a
    t = ((px - a[0]) * ab[0] + (pz - a[1]) * ab[1]) / max(float(ab @ ab), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(px - (a[0] + t * ab[0]), pz - (a[1] + t * ab[1]))


def _superellipse(u: np.ndarray, v: np.ndarray, centre: tuple[float, float],
                  half: tuple[float, float], power: float = 2.6) -> np.ndarray:
    """Normalised superellipse radius (< 1 inside) in heart coordinates."""
    du = np.abs(u - centre[0]) / half[0]
    dv = np.abs(v - centre[1]) / half[1]
    return (du**power + dv**power) ** (1.0 / power)


class _Scene:
    """Paints the echogenicity and attenuation maps of one spec."""

    def __init__(self, spec: EchoSpec, layout: ac.ScanLayout, rng: np.random.Generator) -> None:
        self.spec = spec
        self.heart = spec.heart
        self.layout = layout
        x, z = layout.grid_mm()
        self.x = -x if spec.mirrored else x
        self.z = z
        extent = (-150.0, 150.0, -10.0, spec.probe.depth_mm + 10.0)
        self.background_texture = TextureField(rng, extent, (12.0, 8.0))
        self.wall_texture = TextureField(rng, extent, (6.0, 4.0))
        self.dropout_texture = TextureField(rng, extent, (20.0, 20.0))
        self.smoke_texture = TextureField(rng, extent, (3.0, 3.0))
        self.background_level = float(rng.uniform(0.1, 0.6))
        self.myocardium_level = float(rng.uniform(0.5, 1.3))
        self.pericardium_level = float(rng.uniform(1.8, 3.5))
        self.valve_level = float(rng.uniform(1.2, 2.8))
        self.clutter_length = float(rng.uniform(8.0, 20.0))
        self.smoke = float(rng.uniform(0.0, 0.5)) if self.heart.ef_percent < 35 else 0.0

    def geometry(self, t_s: float) -> _Frame:
        """Heart pose and size at time ``t_s`` from the clip start."""
        spec, heart = self.spec, self.heart
        phase = float(heart.phase(spec.start_s + t_s))
        breath = float(ac.breathing_offset_mm(t_s, spec.breathing_period_s, spec.breathing_mm))
        clip_s = spec.n_frames * spec.frame_time_ms / 1000.0
        drift = np.array(spec.drift_mm) * t_s / max(clip_s, 1e-6)
        apex = np.array(spec.apex_mm) + drift + np.array([0.3 * breath, breath])
        tilt = np.deg2rad(spec.tilt_deg + 1.5 * np.sin(2.0 * np.pi * t_s / heart.period_s))
        e_u = np.array([np.sin(tilt), np.cos(tilt)])
        e_v = np.array([np.cos(tilt), -np.sin(tilt)])
        length = heart.length_mm(phase)
        # The apex moves little; the base descends towards it in systole.
        apex = apex + e_u * 0.15 * (heart.length_ed_mm - length)
        return _Frame(
            apex=apex, e_u=e_u, e_v=e_v, length=length,
            scale=heart.diameter_scale_mm(phase),
            wall=heart.wall_mm * (1.0 + 0.5 * phase * heart.ef_percent / 60.0),
            rv_scale=1.0 - 0.25 * phase,
            la_scale=1.0 + 0.12 * phase,
            opening=float(heart.mitral_opening(spec.start_s + t_s)),
        )

    def heart_coordinates(self, g: _Frame) -> tuple[np.ndarray, np.ndarray]:
        """``(u, v)`` mm of every pixel."""
        dx, dz = self.x - g.apex[0], self.z - g.apex[1]
        return dx * g.e_u[0] + dz * g.e_u[1], dx * g.e_v[0] + dz * g.e_v[1]

    def lv_mask(self, g: _Frame, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """LV cavity closed by the mitral annulus line."""
        half = 0.5 * g.scale * self.heart.profile(u / g.length)
        share = 0.5 + self.heart.asymmetry
        inside = (u >= 0.0) & (u <= g.length)
        return inside & (v >= -2.0 * (1.0 - share) * half) & (v <= 2.0 * share * half)

    def paint(self, g: _Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Echogenicity, attenuation and LV mask at pose ``g``."""
        heart = self.heart
        u, v = self.heart_coordinates(g)
        length, wall = g.length, g.wall
        share = 0.5 + heart.asymmetry
        half = 0.5 * g.scale * heart.profile(u / length)
        sept, lat = 2.0 * (1.0 - share) * half, 2.0 * share * half
        lv = (u >= 0.0) & (u <= length) & (v >= -sept) & (v <= lat)

        outer_len = length + wall
        outer_half = (0.5 * g.scale + wall) * heart.profile((u + wall) / outer_len)
        lv_wall = (u >= -wall) & (u <= length) & (np.abs(v - (lat - sept) / 2.0) <= outer_half)
        base_half = 0.5 * g.scale * heart.profile(np.ones(1))[0]
        sept_base, lat_base = 2.0 * (1.0 - share) * base_half, 2.0 * share * base_half

        rv_start = heart.rv_start * length
        rel = np.clip((u - rv_start) / max(length - rv_start, 1e-6), 0.0, 1.0)
        rv_w = heart.rv_width_mm * g.rv_scale * np.sqrt(rel) * (1.0 - 0.15 * rel**4)
        septum_out = -(sept_base + wall) * np.ones_like(u)
        septum_out = np.minimum(septum_out, -outer_half + (lat - sept) / 2.0)
        rv = (u >= rv_start) & (u <= length) & (v < septum_out) & (v > septum_out - rv_w)
        rv_wall_mm = 0.45 * wall
        rv_free = ((u >= rv_start - rv_wall_mm) & (u <= length)
                   & (v <= septum_out) & (v > septum_out - rv_w - rv_wall_mm - 1.0))

        la_len, la_wid = heart.la_size_mm[0] * g.la_scale, heart.la_size_mm[1] * g.la_scale
        la_half_w = max(la_wid / 2.0, (sept_base + lat_base) / 2.0)
        la_c = (length + 1.5 + la_len / 2.0, (lat_base - sept_base) / 2.0)
        la_r = _superellipse(u, v, la_c, (la_len / 2.0, la_half_w))
        ra_len, ra_wid = heart.ra_size_mm
        ra_half_w = ra_wid / 2.0
        ra_c = (length + 1.5 + ra_len / 2.0,
                la_c[1] - la_half_w - 4.0 - ra_half_w)
        ra_r = _superellipse(u, v, ra_c, (ra_len / 2.0, ra_half_w))
        atrial_wall = 2.5
        la, ra = la_r < 1.0, ra_r < 1.0
        la_wall = la_r < 1.0 + atrial_wall / la_half_w
        ra_wall = ra_r < 1.0 + atrial_wall / ra_half_w

        tissue = lv_wall | rv_free | la_wall | ra_wall
        cavity = lv | rv | la | ra
        # Pericardium: a bright band around the whole heart.
        shell = tissue | cavity
        dist = ndimage.distance_transform_edt(~shell, sampling=self.layout.pixel_mm)
        pericardium = (dist > 0) & (dist < 2.5)

        echo = self.background_level * np.clip(
            1.0 + 0.35 * self.background_texture(self.x, self.z), 0.2, None)
        # Lung at the far sides: dark.
        lateral = np.abs(np.arctan2(self.x, self.z + 1.0))
        echo *= np.clip(1.2 - 1.5 * (lateral / np.deg2rad(45.0)) ** 4, 0.15, 1.0)
        echo = np.where(pericardium, self.pericardium_level, echo)
        myo = self.myocardium_level * np.clip(1.0 + 0.3 * self.wall_texture(self.x, self.z),
                                              0.3, None)
        drop = 1.0 - self.spec.dropout * np.clip(self.dropout_texture(self.x, self.z), 0.0, 1.0)
        echo = np.where(tissue, myo * drop, echo)
        blood = self.spec.blood * (1.0 + self.smoke * np.abs(self.smoke_texture(self.x, self.z)))
        echo = np.where(cavity, blood, echo)

        outer_base = (0.5 * g.scale + wall) * heart.profile(np.ones(1))[0]
        septum_base = min(-(sept_base + wall), -outer_base + (lat_base - sept_base) / 2.0)
        rv_base = heart.rv_width_mm * g.rv_scale * 0.85
        valves = ((-sept_base, lat_base, 0.62, 0.45),
                  (septum_base - rv_base, septum_base, 0.5, 0.5))
        self._valves(g, echo, u, v, valves)
        clutter = self.spec.clutter * np.exp(-np.clip(self.z, 0.0, None) / self.clutter_length)
        echo = echo + clutter
        atten = np.where(cavity, 0.18, 0.5).astype(np.float32)
        return echo.astype(np.float32), atten, lv

    def _valves(self, g: _Frame, echo: np.ndarray, u: np.ndarray, v: np.ndarray,
                valves: Sequence[tuple[float, float, float, float]]) -> None:
        """Paint atrioventricular leaflets and annuli into ``echo``.

        Each valve is ``(v0, v1, front, back)``: the annulus spans ``v0..v1``
        at the base and the leaflets are ``front`` and ``back`` times as long
        as the annulus is wide.
        """
        length = g.length
        for v0, v1, front, back in valves:
            width = v1 - v0
            hinge_a, hinge_b = np.array([length, v0]), np.array([length, v1])
            closed = np.array([length + 0.08 * width, v0 + front / (front + back) * width])
            open_a = hinge_a + front * width * np.array([-0.93, 0.25])
            open_b = hinge_b + back * width * np.array([-0.93, -0.25])
            tips = ((1.0 - g.opening) * closed + g.opening * open_a,
                    (1.0 - g.opening) * closed + g.opening * open_b)
            for hinge, tip in zip((hinge_a, hinge_b), tips, strict=True):
                near = _segment_distance(u, v, hinge, tip) < 1.1
                echo[near] = self.valve_level
                echo[np.hypot(u - hinge[0], v - hinge[1]) < 2.2] = self.valve_level * 1.3


def _ecg_and_text(spec: EchoSpec, layout: ac.ScanLayout, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Static burned-in overlay (text, depth scale) and an ECG trace row band."""
    overlay = ac.burn_in_text(np.zeros((spec.rows, spec.cols), np.uint8), rng,
                              inside_probability=0.03, layout=layout)
    trace = np.zeros((spec.cols,), dtype=np.float64)
    period_px = spec.heart.period_s * 1000.0 / spec.frame_time_ms * 4.0
    pos = (np.arange(spec.cols) % max(period_px, 8.0)) / max(period_px, 8.0)
    trace += 12.0 * np.exp(-0.5 * ((pos - 0.05) / 0.008) ** 2)
    trace += 3.0 * np.exp(-0.5 * ((pos - 0.35) / 0.04) ** 2)
    baseline = spec.rows - 0.5 * (spec.rows - layout.bbox[3]) - 2.0
    return overlay, baseline - trace, float(rng.uniform(150.0, 230.0))


def render_echo(spec: EchoSpec, frame_indices: Sequence[int] | None = None,
                *, text: bool = True) -> EchoCine:
    """Render the frames of an echo cine with their LV masks and volumes.

    Parameters
    ----------
    spec:
        The cine to render.
    frame_indices:
        0-based frames to render (all when ``None``); speckle evolves
        between the rendered frames as it would over the whole cine.
    text:
        Burn in annotations and an ECG trace.

    Returns
    -------
    EchoCine
        Frames, masks, volumes and geometry.
    """
    rng = np.random.default_rng(spec.seed)
    indices = np.arange(spec.n_frames) if frame_indices is None else np.asarray(frame_indices)
    layout = ac.layout_scan(spec.probe, spec.rows, spec.cols, rng)
    scene = _Scene(spec, layout, rng)
    overlay, ecg_rows, ecg_level = _ecg_and_text(spec, layout, rng)
    scatterers = ac.make_scatterers(layout.beam_shape, rng)
    frames = np.zeros((len(indices), spec.rows, spec.cols), dtype=np.uint8)
    masks = np.zeros((len(indices), spec.rows, spec.cols), dtype=bool)
    volumes = np.zeros(len(indices), dtype=np.float64)
    previous: np.ndarray | None = None
    previous_index = 0
    for k, index in enumerate(indices):
        t_s = float(index) * spec.frame_time_ms / 1000.0
        g = scene.geometry(t_s)
        if previous is not None:
            move = (g.apex - previous) * (-1.0 if spec.mirrored else 1.0)
            shift = layout.beam_shift(float(move[0]), float(move[1]))
            scatterers = ac.shift_scatterers(scatterers, shift[0], shift[1], rng)
        steps = max(int(index) - previous_index, 1)
        scatterers = ac.decorrelate(scatterers, 1.0 - (1.0 - spec.decorrelation) ** steps, rng)
        previous, previous_index = g.apex, int(index)
        echo, atten, lv = scene.paint(g)
        frame = ac.render(layout, echo, atten, spec.settings, rng, scatterers=scatterers)
        if text:
            frame = np.where(overlay > 0, overlay, frame)
            cursor = int((t_s * 1000.0 / spec.frame_time_ms * 4.0) % spec.cols)
            cols = np.arange(spec.cols)
            rows = np.clip(np.rint(ecg_rows).astype(int), 0, spec.rows - 1)
            keep = np.abs(cols - cursor) > 3
            frame[rows[keep], cols[keep]] = np.uint8(ecg_level)
        frames[k] = frame
        masks[k] = lv & layout.mask
        volumes[k] = spec.heart.volume_ml(float(spec.heart.phase(spec.start_s + t_s)))
    return EchoCine(
        frames=frames,
        lv_masks=masks,
        volumes_ml=volumes,
        frame_indices=indices,
        pixel_mm=layout.pixel_mm,
        scan_box=layout.bbox,
        frame_time_ms=spec.frame_time_ms,
        spec=spec,
    )
