"""Apical four-chamber cines of the second, image-domain generator.

The cardiac engine will be judged on echo cines from a generator it never saw, as the
lesion engines will on their images.  :mod:`inference.phantoms.echo` renders its
heart through a beam grid with scatterers and an acoustic model; this module draws
the same published view another way and shares no code with it:

* the heart is drawn on the display grid: an LV cavity whose half-width follows an
  elliptical apical cap joined to a tapering base (its widest point 45-65 % of the
  way to the annulus, septal and lateral halves unequal), a myocardial band that
  thickens in systole, the right ventricle, both atria, mitral and tricuspid
  leaflets that open in diastole, pericardium, lateral-wall dropout and apical
  clutter;
* the volume follows a cycle of ejection, isovolumic relaxation, rapid filling,
  diastasis and atrial contraction; the long axis shortens and the width follows
  from the volume;
* speckle is complex Gaussian noise filtered by a Gaussian point spread function on
  the display grid, renewed in part from frame to frame (blood faster than tissue);
* log compression, gain, imperfect depth gain, electronic noise, burned-in text and
  an ECG trace are drawn in their own way.

Ground truth is the single-plane method of discs applied to the analytic cavity
(20 discs across the long axis from the apex to the middle of the mitral annulus),
as the first generator defines it, so EF figures of the two sets compare.

Public API: :func:`generate_image_domain_echo`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from inference.phantoms.echo import N_DISCS, EchoCine

_S = (np.arange(N_DISCS) + 0.5) / N_DISCS
"""Disc centres along the long axis (apex 0, annulus 1)."""

PLACEMENT_ATTEMPTS = 200
"""Sectors tried (a new heart every fourth) before a cine is given up as impossible."""


@dataclass(frozen=True)
class _Heart:
    """Shape and function of one drawn heart (lengths in mm, volumes in ml)."""

    edv_ml: float
    esv_ml: float
    length_ed_mm: float
    shortening: float
    widest: float
    taper: float
    asymmetry: float
    wall_ed_mm: float
    thickening: float
    period_s: float
    systole: float
    start: float

    def profile(self, s: np.ndarray) -> np.ndarray:
        """Cavity diameter relative to its widest, at relative positions ``s``."""
        cap = np.sqrt(np.clip(1.0 - ((s - self.widest) / self.widest) ** 2, 0.0, 1.0))
        base = 1.0 - self.taper * ((s - self.widest) / (1.0 - self.widest)) ** 2
        return np.where(s < self.widest, cap, base)

    def volume_ml(self, t_s: float) -> float:
        """LV volume at time ``t_s`` of the cycle."""
        p = (t_s / self.period_s + self.start) % 1.0
        stroke = self.edv_ml - self.esv_ml
        ts = self.systole
        if p < ts:  # ejection
            return self.edv_ml - stroke * (1 - np.cos(np.pi * p / ts)) / 2
        if p < ts + 0.06:  # isovolumic relaxation
            return self.esv_ml
        if p < ts + 0.31:  # rapid filling
            return self.esv_ml + 0.75 * stroke * (1 - np.cos(np.pi * (p - ts - 0.06) / 0.25)) / 2
        if p < 0.85:  # diastasis
            return self.esv_ml + 0.75 * stroke
        return self.esv_ml + stroke * (0.75 + 0.25 * (1 - np.cos(np.pi * (p - 0.85) / 0.15)) / 2)

    def filling(self, t_s: float) -> bool:
        """Whether the mitral valve is open (diastole after isovolumic relaxation)."""
        p = (t_s / self.period_s + self.start) % 1.0
        return p >= self.systole + 0.06

    def shape(self, t_s: float | None = None) -> tuple[float, float, float]:
        """Long-axis length and widest diameter (mm), and wall thickness (mm) at ``t_s``
        (end-diastole when ``None``)."""
        volume = self.edv_ml if t_s is None else self.volume_ml(t_s)
        squeeze = (self.edv_ml - volume) / max(self.edv_ml - self.esv_ml, 1e-6)
        length = self.length_ed_mm * (1 - self.shortening * squeeze)
        mean_square = float(np.mean(self.profile(_S) ** 2))
        diameter = np.sqrt(volume * 1000.0 / (np.pi / 4 * mean_square * length))
        return length, float(diameter), self.wall_ed_mm * (1 + self.thickening * squeeze)


def _heart(rng: np.random.Generator) -> _Heart:
    """A random heart: EDV 70-230 ml, EF 15-75 %, 50-110 beats per minute."""
    edv = rng.uniform(70, 230)
    ef = rng.uniform(15, 75)
    ratio = rng.uniform(0.45, 0.68)
    widest = rng.uniform(0.45, 0.65)
    taper = rng.uniform(0.12, 0.32)
    heart = _Heart(edv, edv * (1 - ef / 100), 1.0, rng.uniform(0.06, 0.18), widest, taper,
                   rng.uniform(-0.12, 0.12), rng.uniform(7, 11), rng.uniform(0.25, 0.6),
                   60.0 / rng.uniform(50, 110), rng.uniform(0.30, 0.40), rng.uniform(0, 1))
    mean_square = float(np.mean(heart.profile(_S) ** 2))
    length = (edv * 1000.0 / (np.pi / 4 * ratio**2 * mean_square)) ** (1 / 3)
    return replace(heart, length_ed_mm=float(length))


@dataclass(frozen=True)
class _Sector:
    """A phased-array sector on the display grid."""

    inside: np.ndarray
    x_mm: np.ndarray
    z_mm: np.ndarray
    depth_mm: np.ndarray
    pixel_mm: float
    max_depth_mm: float
    half_angle: float
    box: tuple[int, int, int, int]


def _sector(rng: np.random.Generator, rows: int, cols: int, depth_mm: float) -> _Sector:
    """The sector, apex near the top centre, as deep as ``depth_mm``."""
    top = rows * rng.uniform(0.03, 0.08)
    bottom = rows - rows * rng.uniform(0.03, 0.1)
    pixel = depth_mm / (bottom - top)
    half = np.deg2rad(rng.uniform(36, 45))
    half = min(half, np.arctan2(cols / 2 - 4, (bottom - top) * np.cos(half)))
    cx = cols / 2 + rng.uniform(-0.03, 0.03) * cols
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    x_mm = (xx - cx) * pixel
    z_mm = (yy - top) * pixel
    depth = np.hypot(x_mm, z_mm)
    inside = (depth <= depth_mm) & (np.abs(np.arctan2(x_mm, z_mm)) <= half) & (z_mm >= 0)
    ys, xs = np.nonzero(inside)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return _Sector(inside, x_mm, z_mm, depth, pixel, depth_mm, float(half), box)


@dataclass(frozen=True)
class _View:
    """Where the heart lies: its apex, axes and the side the LV is shown on."""

    apex: np.ndarray
    e_u: np.ndarray
    e_v: np.ndarray


def _view(rng: np.random.Generator, sector: _Sector, heart: _Heart) -> _View | None:
    """Place the heart so the LV cavity fits the sector with 4 mm to spare (breathing), or
    ``None``; its walls may leave the sector near the apex, as they do on real views."""
    tilt = np.deg2rad(rng.uniform(-12, 12))
    side = -1.0 if rng.random() < 0.2 else 1.0  # Mayo-style display: LV on the left
    e_u = np.array([np.sin(tilt), np.cos(tilt)])
    e_v = side * np.array([np.cos(tilt), -np.sin(tilt)])
    apex = np.array([rng.uniform(-8, 8), rng.uniform(18, 40)])
    s = np.linspace(0, 1, 21)
    margin = 4.0
    reach = 0.5 * heart.profile(s) * heart.shape()[1] * (1 + abs(heart.asymmetry)) + margin
    points = np.concatenate([apex + np.outer(s * heart.length_ed_mm, e_u) + sign * np.outer(
        reach, e_v) for sign in (-1, 1)])
    angle = np.abs(np.arctan2(points[:, 0], points[:, 1]))
    depth = np.hypot(points[:, 0], points[:, 1])
    fits = (np.all(angle < sector.half_angle - np.deg2rad(3))
            and np.all(depth < sector.max_depth_mm - 35))
    return _View(apex, e_u, e_v) if fits else None


def _segment_distance(u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (mm) of each point from the segment ``a``-``b`` in heart coordinates."""
    ab = b - a
    t = np.clip(((u - a[0]) * ab[0] + (v - a[1]) * ab[1]) / float(ab @ ab), 0, 1)
    return np.hypot(u - a[0] - t * ab[0], v - a[1] - t * ab[1])


@dataclass(frozen=True)
class _Look:
    """Echogenicities and artefacts of one cine, drawn once."""

    tissue: float
    blood: float
    pericardium: float
    myocardium_texture: np.ndarray
    background_texture: np.ndarray
    dropout: tuple[float, float, float]
    clutter: float
    rv_width_mm: float
    la_radius_mm: float
    ra_radius_mm: float
    leaflet_mm: float


def _look(rng: np.random.Generator, shape: tuple[int, int], pixel_mm: float) -> _Look:
    """Draw the echogenicities, textures and artefacts of a cine."""
    def texture(scale_mm: float, amount: float) -> np.ndarray:
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), scale_mm / pixel_mm)
        return (1 + amount * noise / (noise.std() + 1e-9)).astype(np.float32)

    dropout = (rng.uniform(0.3, 0.8), rng.uniform(0.15, 0.35), rng.uniform(0.1, 0.5)
               ) if rng.random() < 0.5 else (0.0, 0.0, 1.0)
    return _Look(
        tissue=rng.uniform(0.12, 0.6), blood=rng.uniform(0.0004, 0.006),
        pericardium=rng.uniform(3, 8),
        myocardium_texture=np.clip(texture(rng.uniform(2, 5), rng.uniform(0.1, 0.3)), 0.2, None),
        background_texture=np.clip(texture(rng.uniform(4, 10), rng.uniform(0.3, 0.7)), 0.05, None),
        dropout=dropout, clutter=rng.uniform(0.0, 0.35) if rng.random() < 0.6 else 0.0,
        rv_width_mm=rng.uniform(22, 38), la_radius_mm=rng.uniform(17, 26),
        ra_radius_mm=rng.uniform(15, 23), leaflet_mm=rng.uniform(0.35, 0.5),
    )


def _paint(heart: _Heart, view: _View, look: _Look, sector: _Sector, t_s: float,
           offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Echogenicity map and LV cavity mask at ``t_s``; the heart shifted by ``offset`` mm."""
    length, diameter, wall = heart.shape(t_s)
    dx = sector.x_mm - (view.apex[0] + offset[0])
    dz = sector.z_mm - (view.apex[1] + offset[1])
    u = dx * view.e_u[0] + dz * view.e_u[1]
    v = dx * view.e_v[0] + dz * view.e_v[1]
    s = u / length
    half = 0.5 * diameter * heart.profile(np.clip(s, 0, 1))
    septal, lateral = half * (1 - heart.asymmetry), half * (1 + heart.asymmetry)
    lv = (s >= 0) & (s <= 1) & (v >= -septal) & (v <= lateral)
    base_sep = 0.5 * diameter * heart.profile(np.ones(1))[0] * (1 - heart.asymmetry)
    base_lat = 0.5 * diameter * heart.profile(np.ones(1))[0] * (1 + heart.asymmetry)
    rv_centre_v = -(0.5 * diameter * (1 - heart.asymmetry) + wall + look.rv_width_mm / 2)
    rv = (((u - 0.58 * length) / (0.45 * length)) ** 2
          + ((v - rv_centre_v) / (look.rv_width_mm / 2)) ** 2 <= 1) & (u <= length)
    la_r, ra_r = look.la_radius_mm, look.ra_radius_mm
    la = ((u - length - 2 - 0.95 * la_r) / la_r) ** 2 + ((v - 0.15 * diameter) / (0.9 * la_r)
                                                          ) ** 2 <= 1
    ra = ((u - length - 2 - ra_r) / ra_r) ** 2 + ((v - rv_centre_v * 0.85) / (0.9 * ra_r)
                                                   ) ** 2 <= 1
    blood = lv | rv | la | ra
    outside_mm = ndimage.distance_transform_edt(~blood) * sector.pixel_mm
    near_lv = ndimage.distance_transform_edt(~lv) * sector.pixel_mm
    myocardium = ((near_lv <= wall) & (u <= length + 1)) | ((outside_mm <= 3.5) & ~lv & (
        (near_lv > wall) | (u > length)))
    heart_region = outside_mm <= wall + 5
    echo = look.tissue * look.background_texture
    shell = (outside_mm > wall + 1) & (outside_mm <= wall + 3.5)
    echo = np.where(shell, look.pericardium * look.background_texture, echo)
    echo = np.where(heart_region & ~shell, 0.6 * look.tissue, echo)
    echo = np.where(myocardium, look.myocardium_texture, echo)
    start, width, strength = look.dropout
    lateral_wall = (v > 0) & (s > start) & (s < start + width) & myocardium
    echo = np.where(lateral_wall, echo * strength, echo)
    echo = np.where(blood, look.blood, echo)
    if look.clutter > 0:
        echo = echo + look.clutter * np.exp(-np.clip(sector.depth_mm - view.apex[1], 0, None)
                                            / 12.0) * blood
    leaflet = look.leaflet_mm * (base_sep + base_lat)
    open_valve = heart.filling(t_s)
    for hinge_v, sign in ((-base_sep, 1.0), (base_lat, -1.0)):
        hinge = np.array([length, hinge_v])
        tip = hinge + (np.array([-leaflet, 0.15 * sign * leaflet]) if open_valve
                       else np.array([0.15 * leaflet, sign * leaflet * 0.95]))
        echo = np.where(_segment_distance(u, v, hinge, tip) <= 1.0, 2.5, echo)
    return echo.astype(np.float32), lv & sector.inside


def _display(rng: np.random.Generator, sector: _Sector, echo: np.ndarray, noise: np.ndarray,
             settings: dict[str, float]) -> np.ndarray:
    """Grey levels (0-255) of an echogenicity map with the speckle ``noise``."""
    amplitude = np.sqrt(echo)
    psf = (settings["axial"], settings["lateral"])
    real = ndimage.gaussian_filter(noise[0] * amplitude, psf)
    imag = ndimage.gaussian_filter(noise[1] * amplitude, psf)
    envelope = np.hypot(real, imag)
    envelope /= np.sqrt(np.mean(envelope[sector.inside] ** 2)) + 1e-12
    envelope *= 10 ** (settings["tgc_slope"] * sector.depth_mm / 10 / 20)
    envelope += rng.rayleigh(settings["noise"], echo.shape)
    level = (20 * np.log10(envelope + 1e-9) + settings["gain"]) / settings["range"]
    grey = np.clip(level + settings["offset"], 0, 1) * 255
    grey[~sector.inside] = 0
    return grey


def _overlay(rng: np.random.Generator, rows: int, cols: int, sector: _Sector,
             rate_bpm: float) -> tuple[np.ndarray, np.ndarray]:
    """Burned-in text and the ECG trace's rows (one per column)."""
    image = Image.new("L", (cols, rows), 0)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((6, 4), f"ECHO A4C {rng.uniform(1.7, 3.5):.1f}MHz", fill=230, font=font)
    draw.text((cols - 110, 4), f"{sector.max_depth_mm / 10:.0f}cm HR {rate_bpm:.0f}",
              fill=210, font=font)
    draw.text((6, 18), "CARDIAC", fill=190, font=font)
    baseline = rows - rng.uniform(10, 22)
    phase = (np.arange(cols) / rng.uniform(90, 160)) % 1.0
    ecg = baseline - 14 * np.exp(-((phase - 0.3) / 0.012) ** 2) + 3 * np.exp(
        -((phase - 0.55) / 0.05) ** 2)
    return np.asarray(image), ecg


def generate_image_domain_echo(seed: int, rows: int | None = None, cols: int | None = None,
                               beats: tuple[float, float] = (1.2, 2.0),
                               max_frames: int = 90) -> EchoCine:
    """Render one apical four-chamber cine of the second generator from ``seed``.

    Parameters
    ----------
    seed:
        Same seed, same cine.
    rows, cols:
        Image size; random (420-600 by 560-800) when ``None``.
    beats:
        Range of the number of heart beats the cine spans.
    max_frames:
        Upper limit of the number of frames.

    Returns
    -------
    EchoCine
        Frames (``uint8``), LV cavity masks and the analytic volume of every frame.
    """
    rng = np.random.default_rng([seed, 0xEC])
    rows = rows or int(rng.integers(420, 601))
    cols = cols or int(rng.integers(max(560, rows), 801))
    for attempt in range(PLACEMENT_ATTEMPTS):
        if attempt % 4 == 0:
            heart = _heart(rng)
        sector = _sector(rng, rows, cols, rng.uniform(140, 200))
        view = _view(rng, sector, heart)
        if view is not None:
            break
    else:
        raise RuntimeError(f"no heart of seed {seed} fits a {rows}x{cols} image")
    look = _look(rng, (rows, cols), sector.pixel_mm)
    frequency = rng.uniform(1.7, 3.5)
    wavelength = 1.54 / frequency
    settings = {
        "axial": max(0.7, rng.uniform(0.4, 0.7) * wavelength / sector.pixel_mm),
        "lateral": max(1.2, rng.uniform(1.0, 1.8) * wavelength / sector.pixel_mm * 1.4),
        "tgc_slope": rng.uniform(-0.05, 0.03) * frequency,
        "noise": 10 ** rng.uniform(-3.5, -2.5), "gain": rng.uniform(-5, 5),
        "range": rng.uniform(45, 65), "offset": rng.uniform(0.45, 0.62),
    }
    frame_ms = 1000.0 / rng.uniform(25, 60)
    n_frames = min(max_frames, int(np.ceil(rng.uniform(*beats) * heart.period_s * 1000
                                           / frame_ms)))
    keep = rng.uniform(0.6, 0.92)
    breathing = rng.uniform(0, 4), rng.uniform(3, 6), rng.uniform(0, 2 * np.pi)
    overlay, ecg = _overlay(rng, rows, cols, sector, 60.0 / heart.period_s)
    noise = rng.standard_normal((2, rows, cols)).astype(np.float32)
    frames = np.zeros((n_frames, rows, cols), np.uint8)
    masks = np.zeros((n_frames, rows, cols), bool)
    volumes = np.zeros(n_frames)
    for k in range(n_frames):
        t_s = k * frame_ms / 1000.0
        offset = breathing[0] * np.sin(2 * np.pi * t_s / breathing[1] + breathing[2]) * view.e_u
        echo, lv = _paint(heart, view, look, sector, t_s, offset)
        fresh = rng.standard_normal((2, rows, cols)).astype(np.float32)
        noise = keep * noise + np.sqrt(1 - keep**2) * fresh
        blood_noise = np.where(echo <= look.blood * 1.01, fresh, noise)
        grey = _display(rng, sector, echo, blood_noise, settings)
        grey = np.where(overlay > 0, overlay, grey)
        cursor = int(k * 4 % cols)
        columns = np.arange(cols)
        trace = np.abs(columns - cursor) > 3
        grey[np.clip(np.rint(ecg[trace]).astype(int), 0, rows - 1), columns[trace]] = 200
        frames[k] = grey.astype(np.uint8)
        masks[k] = lv
        volumes[k] = heart.volume_ml(t_s)
    return EchoCine(frames=frames, lv_masks=masks, volumes_ml=volumes,
                    frame_indices=np.arange(n_frames), pixel_mm=sector.pixel_mm,
                    scan_box=sector.box, frame_time_ms=frame_ms, spec=None)
