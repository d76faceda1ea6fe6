"""Convolution-model B-mode phantoms: scatterer maps imaged through a depth-variant PSF.

Model
-----
Each image is built on the *beam grid* of its probe (depth along the beam x lateral position
for a linear array, radius x steering angle for convex and sector probes).  A scene of tissue
classes is painted on that grid; every tissue has a mean backscatter level (dB), a scatterer
clustering shape ``m`` (the cell intensity is Gamma(m, 1/m) distributed, so the speckle
envelope after the PSF is K-distributed: pre-Rayleigh for small ``m``, Rayleigh for large),
a density of resolvable bright point scatterers, an attenuation coefficient (dB/cm/MHz) and an
acoustic impedance.  Specular interfaces come from the impedance gradient projected on the beam
direction (so walls parallel to the beam drop out), refraction loss at grazing boundaries from
the gradient across the beam (lateral edge shadows; accumulated along the ray and saturating
at 9 dB).  Diffuse amplitudes are scaled by the square root of the PSF size in grid samples,
so the speckle level does not depend on the beam-grid spacing.

The complex baseband (I/Q) echo field is ``scatterers x two-way attenuation``, where the
attenuation is accumulated down every beam line at the local centre frequency; the centre
frequency falls with the attenuation met so far (Gaussian-spectrum downshift,
``fc = f0 - 2 sigma_f^2 * integral(alpha)``, floored at 0.55 f0), so shadowing behind
calcified or scirrhous tissue and enhancement behind fluid arise from the physics, not from
painting.  The field is convolved with a spatially variant PSF: axially a Gaussian-enveloped
pulse at the local centre frequency (envelope width from the fractional bandwidth, applied in
eight depth bands with the downshift as a phase ramp), laterally a Gaussian beam whose width
follows the receive F-number, the wavelength and the distance from the transmit focus (applied
row by row in the lateral Fourier domain, with a low side-lobe pedestal).  Receiver noise is
added before time-gain compensation (TGC), so the deep image turns grainy.  The envelope is
log-compressed.

The scanner's display chain is drawn per image: spatial compounding (average of 3-9 steered
looks, each with its own speckle realisation, its own specular angle and slanted attenuation
paths, which smooths speckle and softens shadows and enhancement), tissue harmonic imaging
(narrower beam, fewer side lobes, less near-field clutter, more attenuation, higher noise),
edge-preserving speckle reduction, unsharp-mask edge enhancement, persistence-like lateral
smoothing and one grey map (S-curve, gamma or piecewise linear), then scan conversion to the
convex, linear or sector geometry on a black background, and burned-in annotations.

Parameter ranges
----------------
Probes.  Liver: convex 75 % (radius 40-60 mm, field 55-75 deg, depth 120-240 mm, 2.0-5.0
MHz), sector 15 % (virtual apex 1-3 mm, 65-90 deg, 120-220 mm, 1.8-4.0 MHz), linear 10 %
(width 38-50 mm, 60-100 mm, 5-9 MHz).  Breast: linear 85 % (width 38-50 mm, depth 30-60 mm,
7-15 MHz), convex 10 % (radius 10-20 mm, 60-80 deg, 40-80 mm, 4-8 MHz), sector 5 % (65-90 deg,
40-80 mm, 3.5-6 MHz).  Fractional bandwidth 0.45-0.8; transmit focus at 25-75 % of the depth;
active aperture 10-40 mm; receive F-number at least 1.2-2.0; defocus spread 0.010-0.025 mm/mm.
Beam grid: about 1.1 samples per displayed pixel in depth (200-720), lines at 2.2 per beam
width (96-320, at most half the image columns).

Display chain.  Compounding: none 35 %, else 3, 5, 7 or 9 looks steered up to 6-18 deg, with
speckle correlation 0.45 between looks.  Harmonic imaging 45 % (liver) / 30 % (breast): beam
x 0.7, side-lobe pedestal 1 % instead of 3 % (three times the beam width), no near-field
clutter (else 0.003-0.015 of the tissue amplitude, decaying over 1-3 cm), attenuation x 1.3,
noise +6 dB.  Receiver noise floor 72-95 dB below tissue.  TGC compensates 0.35-0.6 (liver)
or 0.5-0.85 (breast) dB/cm/MHz (with the same downshift), plus a slider error of up to +-5 dB
and a near-field dip of 0-6 dB.
Dynamic range 40-75 dB; headroom (inverse gain) 18-32 dB above the median of the 5-60 %
depth range.  Speckle reduction 55 % (strength 0.3-0.85), edge enhancement 45 % (amount
0.1-0.5), persistence 40 % (0.2-0.6).  Grey map: S-curve (slope 4-9), gamma 0.6-1.6 or
piecewise linear (two knots in 0.2-0.8 lifted by -0.12..+0.12), one third each.

Anatomy.  Liver: skin, subcutaneous fat 5-25 mm, muscle 5-15 mm (halved on linear probes),
bright capsule; parenchyma normal 60 %, coarse/cirrhotic 20 % (nodular texture, fibrous
septa, m 0.8-2, 0.55-0.75 dB/cm/MHz) or bright fatty 20 % (+5..+10 dB, 0.8-1.2 dB/cm/MHz);
1-2 portal veins with echogenic walls and 0-2 hepatic veins along the plane (radius 1.5-5.5
mm, length 15-45 mm), 1-5 round or oval vessel cross-sections (radius 1.5-7 mm); diaphragm
70 % of convex/sector images (bright curve, mirror-image lung beyond); rib shadows 40 % of
convex and 15 % of linear images (none on sector probes, which image between ribs); bowel-gas
dirty shadow 25 %; gallbladder 10 %.  Breast: skin 1.5-2.5 mm, subcutaneous fat 3-15 mm of
hypoechoic lobules framed by septa, 2-6 Cooper's ligaments (25 % casting thin shadows),
fibroglandular layer 8-25 mm with fat islands and 0-2 ducts, retromammary fat, pectoral
muscle 5-15 mm with striations and fascia, and below it 0-2 ribs (bone with shadow, or
hypoechoic oval cartilage) and the pleura with reverberation lines, when deep enough.

Lesions.  Diameter log-uniform 5-40 mm (metastases 5-30, breast 5-35 and at most 0.6 of the
depth).  No lesion placed on 8 % (liver) / 6 % (breast) of images.  Liver: one class per
image, metastases single 35 % else 2-5, other classes 1 (75 %) or 2, plus 12 % an extra cyst
or hemangioma.  Breast: 1 lesion, 15 % a second of any class.  Liver cyst: anechoic,
0.02 dB/cm/MHz, thin bright wall, sometimes a septum.  Hemangioma: +4..+10 dB, homogeneous,
finely lobulated margin, 0.3-0.45 dB/cm/MHz, a hypoechoic centre in 35 % of large ones.  HCC:
hypoechoic -4..-10 dB when small, mosaic of 3-8 sub-nodules when 20 mm or more, hypoechoic
halo 1-2.5 mm (65 %), nodule-in-nodule (30 %).  Metastasis (one appearance per image): target
50 % (+2..+9 dB centre, -8..-15 dB rim of 25-45 % of the radius), hypoechoic 35 %,
hyperechoic with a halo 15 %, necrotic core in 15 %.  Breast carcinoma: 5-14 spicules (65 %)
or an angular margin, taller than wide 70 % (height/width 1.0-1.6), 16-23 dB below gland,
1.8-3.0 dB/cm/MHz (posterior shadow, 75 %), echogenic halo 1-3 mm (60 %),
microcalcifications (30 %).  Fibroadenoma: oval, height/width 0.5-0.8, 2-3 gentle lobes,
hypo- to isoechoic to fat, homogeneous, thin capsule (50 %).  Simple cyst: anechoic oval
(height/width 0.55-1), thin wall.  Other: lipoma-like oval in the fat (height/width 0.35-0.6,
iso to slightly hyperechoic, thin capsule, internal lines) or complicated cyst (low-level
echoes, half of them with a fluid-debris level).

Visibility (ground truth)
-------------------------
A placed lesion is listed in ``truths`` only if, on the rendered frame before annotations,
(1) its visible part -- lesion pixels inside the field of view and not behind a non-lesion
shadow (ribs, gas, lung, shadowing ligaments: more than 12 dB of excess two-way attenuation
above the pixel) -- spans at least 3 mm in both directions and 7 mm^2; and (2) for at least
one pair among {visible part vs ring, core vs ring, core vs rim} (the core exists for target,
haloed and capsule-bounded lesions; the ring is 0.3 radius, at least 2 mm, wide around the
lesion, other lesions and shadows excluded) the grey-level contrast ``C`` is at least 12,
the contrast-to-noise ratio ``CNR = C / sigma_ring`` at least 0.6 and the Rose index
``CNR * sqrt(N / n_speckle)`` at least 6, with ``N`` the smaller region's pixel count and
``n_speckle`` the speckle cell area in pixels at the lesion's depth.  The box is the bounding
box of the visible part; ``labels`` lists every placed lesion.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, BoundingBox
from inference.phantoms.generator import LesionTruth, Organ, PhantomSample

SOUND_SPEED = 1.54
"""Speed of sound in mm/us."""

PROBE_CODES: dict[str, float] = {"linear": 0.0, "convex": 1.0, "sector": 2.0}
"""Numeric code of the probe kind in ``PhantomSample.params``."""

GREY_MAP_CODES: dict[str, float] = {"s_curve": 0.0, "gamma": 1.0, "piecewise": 2.0}
"""Numeric code of the grey map in ``PhantomSample.params``."""

SHADOW_DB = 12.0
MIN_EXTENT_MM = 3.0
MIN_AREA_MM2 = 7.0
MIN_CNR = 0.6
MIN_ROSE = 6.0
MIN_CONTRAST = 12.0
LN_LIVER = math.log(1.65)
EDGE_CAP_DB = 9.0
LOOK_CORRELATION = math.sqrt(0.45)
LOOK_INDEPENDENCE = math.sqrt(0.55)


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Probe:
    kind: str
    radius: float
    half: float
    depth: float
    freq: float
    bandwidth: float
    focus: float
    aperture: float
    f_number: float
    spread: float

    def lateral_extent(self, d: float) -> float:
        """Lateral width of the field (mm) at beam depth ``d``."""
        if self.kind == "linear":
            return 2.0 * self.half
        return 2.0 * (self.radius + d) * math.sin(self.half)


@dataclass
class _Grid:
    probe: _Probe
    nz: int
    nx: int
    d: np.ndarray
    lat: np.ndarray
    x: np.ndarray
    z: np.ndarray
    spacing: np.ndarray
    s: np.ndarray

    @property
    def dz(self) -> float:
        return float(self.d[1] - self.d[0])

    def window(self, x0: float, x1: float, z0: float, z1: float) -> tuple[slice, slice] | None:
        """Beam-grid rows and columns that cover the Cartesian box, or None."""
        p = self.probe
        if p.kind == "linear":
            r0, r1, a0, a1 = z0, z1, x0, x1
        else:
            zc0, zc1 = max(z0, -p.radius + 0.5), max(z1, -p.radius + 0.5)
            px = min(max(0.0, x0), x1)
            pz = min(max(-p.radius, zc0), zc1) + p.radius
            r0 = math.hypot(px, pz) - p.radius
            corners = [(cx, cz + p.radius) for cx in (x0, x1) for cz in (zc0, zc1)]
            r1 = max(math.hypot(a, b) for a, b in corners) - p.radius
            angles = [math.atan2(a, b) for a, b in corners]
            a0, a1 = min(angles), max(angles)
        step_d = self.dz
        step_l = float(self.lat[1] - self.lat[0])
        i0 = max(0, int((r0 - self.d[0]) / step_d) - 1)
        i1 = min(self.nz, int((r1 - self.d[0]) / step_d) + 2)
        j0 = max(0, int((a0 - self.lat[0]) / step_l) - 1)
        j1 = min(self.nx, int((a1 - self.lat[0]) / step_l) + 2)
        if i1 <= i0 or j1 <= j0:
            return None
        return slice(i0, i1), slice(j0, j1)


@dataclass(frozen=True)
class _Layout:
    rows: int
    cols: int
    pixel_mm: float
    cx: float
    top: float
    z_top: float

    def to_mm(self, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cartesian (x, z) in mm of pixel centres."""
        x = (c + 0.5 - self.cx) * self.pixel_mm
        z = self.z_top + (r + 0.5 - self.top) * self.pixel_mm
        return x, z

    def to_px(self, x: float, z: float) -> tuple[float, float]:
        """Pixel (column, row) coordinates of a Cartesian point."""
        return x / self.pixel_mm + self.cx, (z - self.z_top) / self.pixel_mm + self.top


def _draw_probe(organ: Organ, rng: np.random.Generator) -> _Probe:
    u = rng.random()
    if organ == "liver":
        kind = "convex" if u < 0.75 else ("sector" if u < 0.90 else "linear")
        table = {
            "convex": ((40, 60), (55, 75), (120, 240), (2.0, 5.0)),
            "sector": ((1, 3), (65, 90), (120, 220), (1.8, 4.0)),
            "linear": ((0, 0), (38, 50), (60, 100), (5.0, 9.0)),
        }
    else:
        kind = "linear" if u < 0.85 else ("convex" if u < 0.95 else "sector")
        table = {
            "convex": ((10, 20), (60, 80), (40, 80), (4.0, 8.0)),
            "sector": ((1, 3), (65, 90), (40, 80), (3.5, 6.0)),
            "linear": ((0, 0), (38, 50), (30, 60), (7.0, 15.0)),
        }
    rad, span, depth, freq = (rng.uniform(*r) for r in table[kind])
    half = span / 2.0 if kind == "linear" else math.radians(span) / 2.0
    aperture = float(np.clip(rng.uniform(0.25, 0.45) * depth, 10.0, 40.0))
    return _Probe(
        kind=kind,
        radius=rad,
        half=half,
        depth=depth,
        freq=freq,
        bandwidth=rng.uniform(0.45, 0.8),
        focus=rng.uniform(0.25, 0.75) * depth,
        aperture=aperture,
        f_number=rng.uniform(1.2, 2.0),
        spread=rng.uniform(0.010, 0.025),
    )


def _extent(p: _Probe) -> tuple[float, float, float]:
    """Cartesian (width, z_min, z_max) of the field of view."""
    width = p.lateral_extent(p.depth)
    z_min = 0.0 if p.kind == "linear" else p.radius * (math.cos(p.half) - 1.0)
    return width, z_min, p.depth


def _layout(p: _Probe, rows: int, cols: int, rng: np.random.Generator) -> _Layout:
    width, z_min, z_max = _extent(p)
    top = rows * rng.uniform(0.05, 0.12)
    h_frac = rng.uniform(0.80, 0.95) * (rows - top - 2) / rows
    w_frac = rng.uniform(0.62, 0.9)
    pixel_mm = max((z_max - z_min) / (rows * h_frac), width / (cols * w_frac))
    half_px = width / pixel_mm / 2.0
    shift = rng.uniform(-1.0, 1.0) * max(0.0, cols / 2.0 - half_px - 4) * 0.35
    return _Layout(rows, cols, float(pixel_mm), cols / 2.0 + shift, top, z_min)


def _lateral_width(p: _Probe, d: np.ndarray, fc: np.ndarray, harmonic: bool) -> np.ndarray:
    """Two-way lateral FWHM (mm) of the beam at depths ``d`` and centre frequencies ``fc``."""
    lam = SOUND_SPEED / fc
    diffraction = 0.8 * lam * np.maximum(p.f_number, np.maximum(d, 1.0) / p.aperture)
    defocus = p.spread * np.abs(d - p.focus)
    width = np.hypot(diffraction, defocus)
    return width * (0.7 if harmonic else 1.0)


def _axial_sigma(p: _Probe, fc: np.ndarray | float) -> np.ndarray:
    """Standard deviation (mm) of the pulse envelope along range."""
    sigma_f = p.bandwidth * np.asarray(fc) / 2.355
    return SOUND_SPEED / (4.0 * math.pi * sigma_f)


def _beam_grid(p: _Probe, layout: _Layout, harmonic: bool) -> _Grid:
    nz = int(np.clip(round(p.depth / layout.pixel_mm * 1.1), 200, 720))
    d = np.linspace(0.0, p.depth, nz)
    fmid = np.full_like(d, p.freq * 0.8)
    min_width = float(_lateral_width(p, d, fmid, harmonic).min())
    max_lines = int(np.clip(layout.cols // 2, 96, 320))
    if p.kind == "linear":
        nx = int(np.clip(math.ceil(2 * p.half / (min_width / 2.2)), 96, max_lines))
        lat = np.linspace(-p.half, p.half, nx)
        x = np.broadcast_to(lat, (nz, nx)).copy()
        z = np.broadcast_to(d[:, None], (nz, nx)).copy()
        spacing = np.full(nz, lat[1] - lat[0])
        s = x[0]
    else:
        arc = 2 * p.half * (p.radius + p.focus)
        nx = int(np.clip(math.ceil(arc / (min_width / 2.2)), 96, max_lines))
        lat = np.linspace(-p.half, p.half, nx)
        r = p.radius + d
        x = r[:, None] * np.sin(lat)[None, :]
        z = r[:, None] * np.cos(lat)[None, :] - p.radius
        spacing = r * (lat[1] - lat[0])
        s = lat * (p.radius + 20.0)
    return _Grid(p, nz, nx, d, lat, x, z, spacing, np.asarray(s, dtype=float))


# ----------------------------------------------------------------------------- scene


@dataclass
class _Blob:
    """Star-shaped region: ellipse with lobulation harmonics and spicules."""

    cx: float
    cz: float
    a: float
    b: float
    rot: float = 0.0
    harmonics: tuple[tuple[int, float, float], ...] = ()
    spikes: tuple[tuple[float, float], ...] = ()
    spike_width: float = 0.08

    @property
    def radius(self) -> float:
        return math.sqrt(self.a * self.b)

    def reach(self) -> float:
        extra = sum(abs(h[1]) for h in self.harmonics) + sum(s[1] for s in self.spikes)
        return max(self.a, self.b) * (1.0 + extra)

    def box(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        r = self.reach() + margin
        return self.cx - r, self.cx + r, self.cz - r, self.cz + r

    def rho(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Normalised radius: below 1 inside the boundary."""
        dx, dz = x - self.cx, z - self.cz
        c, s = math.cos(self.rot), math.sin(self.rot)
        u, v = (dx * c + dz * s) / self.a, (-dx * s + dz * c) / self.b
        q = np.hypot(u, v)
        phi = np.arctan2(v, u)
        r = np.ones_like(q)
        for k, amp, phase in self.harmonics:
            r += amp * np.cos(k * phi + phase)
        for angle, amp in self.spikes:
            delta = np.angle(np.exp(1j * (phi - angle)))
            r += amp * np.exp(-((delta / self.spike_width) ** 2))
        return q / np.maximum(r, 0.2)

    def weight(self, x: np.ndarray, z: np.ndarray, edge: float, scale: float = 1.0) -> np.ndarray:
        """Soft inside weight of the blob shrunk by ``scale`` with an edge of ``edge`` mm."""
        rho = self.rho(x, z) / scale
        return np.clip(0.5 + (1.0 - rho) * self.radius * scale / edge, 0.0, 1.0)


@dataclass
class _Lesion:
    label: str
    blob: _Blob
    core: float = 1.0


MAPS = ("echo", "m", "atten", "lnz", "points", "shadow", "reverb")
POINT_DENSITY = 0.01
"""Resolvable bright point scatterers per mm2 of tissue (portal triads, fibrous strands); 0 in
fluid."""


class _Scene:
    """Tissue parameter maps on the beam grid."""

    def __init__(self, grid: _Grid) -> None:
        self.grid = grid
        shape = (grid.nz, grid.nx)
        base = {"echo": 0.0, "m": 4.0, "atten": 0.5, "lnz": LN_LIVER, "points": POINT_DENSITY}
        self.maps = {k: np.full(shape, base.get(k, 0.0), dtype=np.float32) for k in MAPS}

    def paint(self, win: tuple[slice, slice], w: np.ndarray, **values: float | np.ndarray) -> None:
        """Blend ``values`` into the maps inside ``win`` with weight ``w``."""
        for key, value in values.items():
            m = self.maps[key][win]
            m += w * (value - m)

    def paint_blob(
        self, blob: _Blob, edge: float = 0.3, scale: float = 1.0, **values: float | np.ndarray
    ) -> None:
        win = self.grid.window(*blob.box(edge))
        if win is None:
            return
        w = blob.weight(self.grid.x[win], self.grid.z[win], edge, scale)
        if isinstance(values.get("echo"), np.ndarray):
            values["echo"] = values["echo"][win]
        self.paint(win, w, **values)

    def paint_tube(
        self, points: np.ndarray, radius: float, edge: float = 0.3, **values: float
    ) -> None:
        lo, hi = points.min(axis=0) - radius - edge, points.max(axis=0) + radius + edge
        win = self.grid.window(lo[0], hi[0], lo[1], hi[1])
        if win is None:
            return
        dist = _polyline_distance(self.grid.x[win], self.grid.z[win], points)
        w = np.clip(0.5 + (radius - dist) / edge, 0.0, 1.0)
        self.paint(win, w, **values)


def _polyline_distance(x: np.ndarray, z: np.ndarray, pts: np.ndarray) -> np.ndarray:
    best = np.full(x.shape, np.inf)
    for (ax, az), (bx, bz) in itertools.pairwise(pts):
        vx, vz = bx - ax, bz - az
        t = np.clip(((x - ax) * vx + (z - az) * vz) / max(vx * vx + vz * vz, 1e-9), 0.0, 1.0)
        best = np.minimum(best, np.hypot(x - ax - t * vx, z - az - t * vz))
    return best


def _curve(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, bend: float) -> np.ndarray:
    """Gently bent polyline (8 points) from ``start`` to ``end``."""
    t = np.linspace(0.0, 1.0, 8)[:, None]
    normal = np.array([-(end - start)[1], (end - start)[0]])
    offset = bend * np.sin(np.pi * t) * normal / max(np.linalg.norm(normal), 1e-9)
    return start + t * (end - start) + offset * rng.uniform(-1, 1)


def _noise_field(rng: np.random.Generator, grid: _Grid, scale: float) -> np.ndarray:
    """Smooth unit-variance random field with correlation length about ``scale`` mm.

    Drawn on a coarse beam-grid lattice (cell ``scale / 2`` at mid depth) and interpolated
    bilinearly with two small matrix products.
    """
    cell = scale / 2.0
    nzc = int(grid.probe.depth / cell) + 4
    nxc = int(grid.spacing[grid.nz // 2] * grid.nx / cell) + 4
    raw = ndimage.gaussian_filter(rng.standard_normal((nzc, nxc)), 1.2, mode="wrap")
    raw /= raw.std() + 1e-9
    rows = _interp_matrix(grid.nz, nzc)
    cols = _interp_matrix(grid.nx, nxc)
    return (rows @ raw @ cols.T).astype(np.float32)


def _interp_matrix(n: int, m: int) -> np.ndarray:
    """Linear interpolation weights from ``m`` lattice points (1..m-2 used) to ``n`` samples."""
    pos = 1.0 + np.linspace(0.0, 1.0, n) * (m - 3)
    lo = np.floor(pos).astype(int)
    w = np.zeros((n, m))
    w[np.arange(n), lo] = 1.0 - (pos - lo)
    w[np.arange(n), np.minimum(lo + 1, m - 1)] += pos - lo
    return w


def _profile(rng: np.random.Generator, s: np.ndarray, base: float, amp: float) -> np.ndarray:
    """Smooth lateral profile ``base + amp * wiggle(s)``."""
    k = rng.uniform(0.02, 0.09, 3)
    ph = rng.uniform(0, 2 * np.pi, 3)
    wiggle = sum(np.sin(ki * s + pi) for ki, pi in zip(k, ph, strict=True)) / 3.0
    return base + amp * wiggle


def _paint_layers(
    scene: _Scene, bounds: list[np.ndarray], tissues: list[dict[str, float]], edge: float
) -> None:
    """Paint layers below each boundary (beam depth per column) with the given tissues."""
    d = scene.grid.d[:, None]
    full = (slice(None), slice(None))
    for bound, tissue in zip(bounds, tissues, strict=True):
        w = np.clip(0.5 + (d - bound[None, :]) / edge, 0.0, 1.0)
        scene.paint(full, w, **tissue)


def _pick_center(
    rng: np.random.Generator, grid: _Grid, d_lo: float, d_hi: float, edge_frac: float = 1.08
) -> tuple[float, float]:
    p = grid.probe
    d = rng.uniform(d_lo, max(d_lo + 1.0, d_hi))
    u = rng.uniform(-edge_frac, edge_frac)
    if p.kind == "linear":
        return u * p.half, d
    theta = u * p.half
    r = p.radius + d
    return r * math.sin(theta), r * math.cos(theta) - p.radius


def _overlaps(blob: _Blob, others: list[_Lesion], gap: float = 2.0) -> bool:
    return any(
        math.hypot(blob.cx - o.blob.cx, blob.cz - o.blob.cz) < blob.reach() + o.blob.reach() + gap
        for o in others
    )


# ----------------------------------------------------------------------------- liver


def _liver_body(scene: _Scene, rng: np.random.Generator, params: dict[str, float]) -> float:
    """Body wall and parenchyma; returns the mean depth of the liver capsule."""
    g = scene.grid
    fat = rng.uniform(5, 25) * (0.5 if g.probe.kind == "linear" else 1.0)
    muscle = rng.uniform(5, 15) * (0.6 if g.probe.kind == "linear" else 1.0)
    b_skin = _profile(rng, g.s, 2.0, 0.3)
    b_fat = b_skin + _profile(rng, g.s, fat, 2.0)
    b_liver = b_fat + _profile(rng, g.s, muscle, 2.0)
    kind = rng.choice(3, p=[0.6, 0.2, 0.2])
    tex = _noise_field(rng, g, rng.uniform(2.5, 6))
    liver = {"echo": 0.0 + 1.3 * tex, "m": rng.uniform(3, 8), "atten": rng.uniform(0.45, 0.6)}
    if kind == 1:
        nod = _noise_field(rng, g, rng.uniform(4, 9))
        septa = np.exp(-((nod / 0.25) ** 2))
        liver["echo"] = 1.5 * tex + 4 * septa - 2.0 * (nod > 0)
        liver["m"] = rng.uniform(0.8, 2.0)
        liver["atten"] = rng.uniform(0.55, 0.75)
    elif kind == 2:
        liver["echo"] = rng.uniform(5, 10) + 1.0 * tex
        liver["atten"] = rng.uniform(0.8, 1.2)
    stripes = np.cos(2 * np.pi * (g.z / rng.uniform(1.5, 3) + 0.3 * _noise_field(rng, g, 4)))
    stripes *= np.clip(0.6 + 0.5 * _noise_field(rng, g, 6), 0, 1)
    tissues = [
        {"echo": 2.0 + 3 * _noise_field(rng, g, 3), "m": 2.0, "atten": 0.6, "lnz": math.log(1.6)},
        {"echo": -8.0 + 6 * stripes**8, "m": 1.5, "atten": 0.6, "lnz": math.log(1.42)},
        {"echo": -6.0 + 9 * stripes**12, "m": 2.0, "atten": 0.9, "lnz": math.log(1.70)},
        {**liver, "lnz": LN_LIVER},
    ]
    _paint_layers(scene, [np.full(g.nx, -1.0), b_skin, b_fat, b_liver], tissues, 0.4)
    capsule = np.clip(1.0 - np.abs(g.d[:, None] - b_liver[None, :]) / 0.6, 0, 1)
    scene.paint((slice(None), slice(None)), capsule, echo=12.0)
    params.update(liver_texture=float(kind), fat_mm=fat, muscle_mm=muscle)
    return float(b_liver.mean())


def _liver_diaphragm(
    scene: _Scene, rng: np.random.Generator, params: dict[str, float]
) -> Callable[[float], float]:
    """Diaphragm curve; returns the depth of the liver's deep boundary at lateral x."""
    p = scene.grid.probe
    present = rng.random() < 0.7 and p.kind != "linear"
    z0 = rng.uniform(0.6, 0.95) * p.depth
    tilt = rng.uniform(-0.35, 0.35)
    curv = rng.uniform(-0.004, 0.003)
    params.update(diaphragm=float(present), diaphragm_mm=z0 if present else 0.0)
    if not present:
        return lambda x: p.depth + 30.0

    def deep(x: float | np.ndarray) -> float | np.ndarray:
        return z0 + tilt * x + curv * x**2

    g = scene.grid
    zd = deep(g.x)
    beyond = np.clip(0.5 + (g.z - zd) / 0.5, 0, 1)
    full = (slice(None), slice(None))
    scene.paint(full, beyond, echo=scene.maps["echo"] - rng.uniform(3, 8), lnz=LN_LIVER)
    band = np.clip(1.0 - np.abs(g.z - zd) / rng.uniform(1.2, 2.2), 0, 1)
    scene.paint(full, band, echo=rng.uniform(14, 20), m=6.0, lnz=LN_LIVER + 0.6)
    return deep


def _liver_vessels(
    scene: _Scene, rng: np.random.Generator, top: float, deep: Callable, params: dict[str, float]
) -> None:
    p = scene.grid.probe
    width = p.lateral_extent(p.depth * 0.6)
    blood = {"echo": -38.0, "m": 1.0, "atten": 0.18, "lnz": math.log(1.61)}
    n_portal, n_hepatic, n_cross = rng.integers(1, 3), rng.integers(0, 3), rng.integers(1, 6)
    z_lo, z_hi = top + 8, min(deep(0.0) - 8, p.depth * 0.9)
    for i in range(n_portal + n_hepatic):
        portal = i < n_portal
        a = np.array([rng.uniform(-0.5, 0.5) * width, rng.uniform(z_lo, max(z_lo + 1, z_hi))])
        ang = rng.uniform(-0.5, 0.5) + (0.0 if portal else rng.choice([-1.0, 1.0]) * 0.7)
        length = rng.uniform(15, 45)
        b = a + length * np.array([math.cos(ang), math.sin(ang)])
        pts = _curve(rng, a, b, rng.uniform(0, 0.25))
        pts[:, 1] = np.clip(pts[:, 1], z_lo, max(z_lo + 1, z_hi))
        radius = rng.uniform(2.0, 5.5) if portal else rng.uniform(1.5, 4.5)
        if portal:
            scene.paint_tube(
                pts,
                radius + rng.uniform(0.7, 1.3),
                echo=rng.uniform(9, 15),
                m=4.0,
                lnz=LN_LIVER + 0.05,
            )
        scene.paint_tube(pts, radius, **blood)
    for _ in range(n_cross):
        cx, cz = _pick_center(rng, scene.grid, top + 8, min(deep(0.0), p.depth) - 8, 0.9)
        r = rng.uniform(1.5, 7.0)
        blob = _Blob(cx, cz, r * rng.uniform(1.0, 1.5), r, rng.uniform(0, np.pi))
        if rng.random() < 0.5:
            wall = _Blob(cx, cz, blob.a + 1.0, blob.b + 1.0, blob.rot)
            scene.paint_blob(wall, echo=rng.uniform(8, 14), lnz=LN_LIVER + 0.05)
        scene.paint_blob(blob, **blood)
    params.update(
        portal_veins=float(n_portal), hepatic_veins=float(n_hepatic), vessel_sections=float(n_cross)
    )


def _liver_extras(
    scene: _Scene,
    rng: np.random.Generator,
    top: float,
    lesions: list[_Lesion],
    params: dict[str, float],
) -> None:
    g, p = scene.grid, scene.grid.probe
    rib_rate = {"linear": 0.15, "convex": 0.4, "sector": 0.0}[p.kind]
    n_ribs = int(rng.random() < rib_rate) * rng.integers(1, 3)
    for _ in range(n_ribs):
        cx, cz = _pick_center(rng, g, top * 0.5, top * 0.9, 0.95)
        rib = _Blob(cx, cz, rng.uniform(5, 8), rng.uniform(3, 5), rng.uniform(-0.2, 0.2))
        scene.paint_blob(
            rib, echo=rng.uniform(14, 20), atten=25.0, shadow=25.0, lnz=LN_LIVER + 1.5, m=5.0
        )
    gas = rng.random() < 0.25
    if gas:
        cx, cz = _pick_center(rng, g, top + 0.4 * p.depth, top + 0.7 * p.depth, 1.0)
        bowel = _Blob(
            cx,
            cz,
            rng.uniform(8, 20),
            rng.uniform(4, 8),
            rng.uniform(-0.4, 0.4),
            harmonics=((3, 0.1, rng.uniform(0, 6)),),
        )
        gas = not _overlaps(bowel, lesions)
        if gas:
            _add_gas(scene, rng, bowel)
    gallbladder = rng.random() < 0.10
    if gallbladder:
        cx, cz = _pick_center(rng, g, top + 20, top + 60, 0.7)
        gb = _Blob(
            cx,
            cz,
            rng.uniform(14, 22),
            rng.uniform(7, 11),
            rng.uniform(-0.6, 0.6),
            harmonics=((1, 0.12, 0.0),),
        )
        gallbladder = not _overlaps(gb, lesions)
    if gallbladder:
        scene.paint_blob(
            _Blob(gb.cx, gb.cz, gb.a + 1.2, gb.b + 1.2, gb.rot, gb.harmonics),
            echo=10.0,
            lnz=LN_LIVER + 0.04,
        )
        scene.paint_blob(gb, echo=-40.0, atten=0.02, m=1.0, lnz=math.log(1.52))
    params.update(ribs=float(n_ribs), bowel_gas=float(gas), gallbladder=float(gallbladder))


def _add_gas(scene: _Scene, rng: np.random.Generator, blob: _Blob) -> None:
    """Gas: bright surface, opaque, dirty reverberant shadow below."""
    g = scene.grid
    scene.paint_blob(blob, echo=22.0, atten=12.0, shadow=12.0, lnz=LN_LIVER - 3.0, m=5.0)
    win = g.window(blob.cx - blob.a, blob.cx + blob.a, blob.cz, g.probe.depth + 5)
    if win is None:
        return
    inside = blob.rho(g.x[win], g.z[win]) < 1.0
    column = np.maximum.accumulate(inside, axis=0)
    depth = np.cumsum(column, axis=0) * g.dz
    period = rng.uniform(2.5, 5.0)
    bands = 0.5 + 0.5 * np.cos(2 * np.pi * depth / period)
    lateral = np.clip(1.0 - np.abs(g.x[win] - blob.cx) / blob.a, 0, 1)
    scene.maps["reverb"][win] += column * lateral * np.exp(-depth / 25.0) * (0.2 + bands) * 0.6


def _harmonics(rng: np.random.Generator, ks: range, amp: float) -> tuple:
    return tuple((k, rng.uniform(0, amp), rng.uniform(0, 2 * np.pi)) for k in ks)


def _lesion_size(rng: np.random.Generator, lo: float = 5.0, hi: float = 40.0) -> float:
    """Diameter in mm, log-uniform so that small lesions are common."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _paint_wall(scene: _Scene, blob: _Blob, thickness: float, **values: float) -> None:
    scale = (blob.radius + thickness) / blob.radius
    outer = _Blob(
        blob.cx,
        blob.cz,
        blob.a * scale,
        blob.b * scale,
        blob.rot,
        blob.harmonics,
        blob.spikes,
        blob.spike_width,
    )
    scene.paint_blob(outer, edge=0.25, **values)


def _liver_cyst(scene: _Scene, rng: np.random.Generator, blob: _Blob) -> _Lesion:
    _paint_wall(scene, blob, rng.uniform(0.4, 0.8), echo=rng.uniform(6, 12), m=6.0)
    scene.paint_blob(blob, edge=0.2, echo=-42.0, m=1.0, atten=0.02, lnz=math.log(1.52), points=0)
    if rng.random() < 0.1:
        pts = np.array([[blob.cx - blob.a, blob.cz], [blob.cx + blob.a, blob.cz]])
        scene.paint_tube(_rotate(pts, blob), 0.3, echo=8.0)
        scene.paint_blob(blob, edge=0.2, scale=0.97, atten=0.02)
    return _Lesion("cyst", blob)


def _rotate(pts: np.ndarray, blob: _Blob) -> np.ndarray:
    c, s = math.cos(blob.rot), math.sin(blob.rot)
    d = pts - [blob.cx, blob.cz]
    return np.stack([blob.cx + d[:, 0] * c - d[:, 1] * s, blob.cz + d[:, 0] * s + d[:, 1] * c], 1)


def _hemangioma(scene: _Scene, rng: np.random.Generator, blob: _Blob) -> _Lesion:
    blob.harmonics = _harmonics(rng, range(3, 7), 0.06)
    scene.paint_blob(
        blob,
        edge=0.3,
        echo=rng.uniform(4, 10),
        m=rng.uniform(5, 12),
        atten=rng.uniform(0.3, 0.45),
        lnz=LN_LIVER + 0.03,
    )
    if blob.radius > 11 and rng.random() < 0.35:
        inner = _Blob(
            blob.cx,
            blob.cz,
            blob.a * 0.4,
            blob.b * 0.4,
            rng.uniform(0, 3),
            _harmonics(rng, range(2, 5), 0.2),
        )
        scene.paint_blob(inner, edge=1.0, echo=rng.uniform(-6, 0))
    return _Lesion("hemangioma", blob)


def _hcc(scene: _Scene, rng: np.random.Generator, blob: _Blob) -> _Lesion:
    blob.harmonics = _harmonics(rng, range(2, 5), 0.05)
    halo = rng.random() < 0.65
    if halo:
        scene.paint_blob(blob, edge=0.3, echo=rng.uniform(-16, -10), m=2.0, lnz=LN_LIVER + 0.06)
        body = rng.uniform(1.0, 2.5)
        core = max(0.3, 1.0 - body / blob.radius)
    else:
        core = 1.0
    base = rng.uniform(-10, -4) if blob.radius < 10 or rng.random() < 0.3 else rng.uniform(-3, 3)
    scene.paint_blob(
        blob,
        edge=0.3,
        scale=core,
        echo=base,
        m=rng.uniform(1.5, 4),
        atten=rng.uniform(0.3, 0.45),
        lnz=LN_LIVER + 0.02,
    )
    if blob.radius >= 10:
        for _ in range(rng.integers(3, 9)):
            ang, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.6) * blob.radius * core
            sub = _Blob(
                blob.cx + rr * math.cos(ang),
                blob.cz + rr * math.sin(ang),
                *(rng.uniform(0.15, 0.35, 2) * blob.radius),
                rng.uniform(0, 3),
            )
            scene.paint_blob(sub, edge=0.8, echo=base + rng.uniform(-6, 7))
    if rng.random() < 0.3:
        nin = _Blob(
            blob.cx + rng.uniform(-0.2, 0.2) * blob.a,
            blob.cz,
            blob.a * 0.45,
            blob.b * 0.45,
            blob.rot,
        )
        scene.paint_blob(nin, edge=0.4, echo=base + rng.choice([-7.0, 7.0]))
    return _Lesion("hcc", blob, core)


@dataclass(frozen=True)
class _MetaStyle:
    centre: float
    rim: float
    rim_frac: float
    necrosis: bool


def _meta_style(rng: np.random.Generator) -> _MetaStyle:
    kind = rng.choice(3, p=[0.5, 0.35, 0.15])
    if kind == 0:
        centre, rim, frac = rng.uniform(2, 9), rng.uniform(-15, -8), rng.uniform(0.25, 0.45)
    elif kind == 1:
        centre, rim, frac = rng.uniform(-12, -6), rng.uniform(-14, -8), rng.uniform(0, 0.2)
    else:
        centre, rim, frac = rng.uniform(5, 9), rng.uniform(-12, -6), rng.uniform(0.1, 0.25)
    return _MetaStyle(centre, rim, frac, bool(rng.random() < 0.15))


def _metastasis(scene: _Scene, rng: np.random.Generator, blob: _Blob, style: _MetaStyle) -> _Lesion:
    blob.harmonics = _harmonics(rng, range(2, 7), 0.07)
    scene.paint_blob(
        blob, edge=0.5, echo=style.rim, m=2.0, atten=rng.uniform(0.5, 0.7), lnz=LN_LIVER + 0.02
    )
    core = 1.0 - style.rim_frac
    if style.rim_frac > 0:
        scene.paint_blob(blob, edge=0.7, scale=core, echo=style.centre, m=rng.uniform(2, 5))
    if style.necrosis and blob.radius > 8:
        scene.paint_blob(blob, edge=1.0, scale=0.3, echo=-30.0, atten=0.1)
    return _Lesion("metastasis", blob, core if style.rim_frac >= 0.1 else 1.0)


_Painter = Callable[[_Scene, np.random.Generator, _Blob], _Lesion]

_LIVER_PAINTERS: dict[str, _Painter] = {"cyst": _liver_cyst, "hemangioma": _hemangioma, "hcc": _hcc}
"""Liver lesion painters by class; metastases also take the image's shared style."""


def _liver_lesions(
    scene: _Scene, rng: np.random.Generator, top: float, deep: Callable, params: dict[str, float]
) -> list[_Lesion]:
    p = scene.grid.probe
    classes: list[str] = []
    if rng.random() >= 0.08:
        main = LIVER_CLASSES[rng.integers(4)]
        if main == "metastasis":
            n = 1 if rng.random() < 0.35 else int(rng.integers(2, 6))
        else:
            n = 1 if rng.random() < 0.75 else 2
        classes = [main] * n
        if rng.random() < 0.12:
            classes.append(("cyst", "hemangioma")[rng.integers(2)])
    style = _meta_style(rng)
    lesions: list[_Lesion] = []
    for label in classes:
        size = _lesion_size(rng, 5, 30 if label == "metastasis" else 40)
        for _ in range(30):
            lo = top + size * 0.3
            hi = min(deep(0.0), p.depth) - size * 0.3
            cx, cz = _pick_center(rng, scene.grid, lo, hi)
            if cz > deep(cx) - size * 0.3:
                continue
            ratio = rng.uniform(1.0, 1.35)
            blob = _Blob(
                cx,
                cz,
                size / 2 * math.sqrt(ratio),
                size / 2 / math.sqrt(ratio),
                rng.uniform(0, np.pi),
            )
            if not _overlaps(blob, lesions):
                break
        else:
            continue
        if label == "metastasis":
            lesions.append(_metastasis(scene, rng, blob, style))
        else:
            lesions.append(_LIVER_PAINTERS[label](scene, rng, blob))
    params.update(meta_centre_db=style.centre, meta_rim_db=style.rim)
    return lesions


def _paint_liver(
    scene: _Scene, rng: np.random.Generator, params: dict[str, float]
) -> list[_Lesion]:
    top = _liver_body(scene, rng, params)
    deep = _liver_diaphragm(scene, rng, params)
    _liver_vessels(scene, rng, top, deep, params)
    lesions = _liver_lesions(scene, rng, top, deep, params)
    _liver_extras(scene, rng, top, lesions, params)
    return lesions


# ----------------------------------------------------------------------------- breast

FAT = {"echo": -10.0, "m": 1.5, "atten": 0.7, "lnz": math.log(1.40)}
GLAND = {"echo": 5.0, "m": 3.0, "atten": 0.85, "lnz": math.log(1.60)}


def _grid_point(grid: _Grid, d: float, frac: float) -> np.ndarray:
    """Cartesian point at beam depth ``d`` and lateral fraction ``frac`` in [-1, 1]."""
    p = grid.probe
    if p.kind == "linear":
        return np.array([frac * p.half, d])
    theta, r = frac * p.half, p.radius + d
    return np.array([r * math.sin(theta), r * math.cos(theta) - p.radius])


def _breast_layers(
    scene: _Scene, rng: np.random.Generator, params: dict[str, float]
) -> dict[str, np.ndarray]:
    g = scene.grid
    skin = _profile(rng, g.s, rng.uniform(1.5, 2.5), 0.2)
    gland_top = skin + _profile(rng, g.s, rng.uniform(3, 15), 3.0).clip(2.0)
    retro = gland_top + _profile(rng, g.s, rng.uniform(8, 25), 4.0).clip(3.0)
    muscle = retro + _profile(rng, g.s, rng.uniform(1, 6), 1.0).clip(0.5)
    chest = muscle + _profile(rng, g.s, rng.uniform(5, 15), 1.5).clip(3.0)
    septa = np.exp(-((_noise_field(rng, g, rng.uniform(5, 9)) / 0.18) ** 2))
    islands = _noise_field(rng, g, rng.uniform(3, 7))
    gland_echo = GLAND["echo"] + 2 * _noise_field(rng, g, 1.5) - 15 * (islands > 0.9)
    ang = rng.uniform(0.05, 0.35) * rng.choice([-1, 1])
    stripes = np.cos(2 * np.pi * (g.z * math.cos(ang) + g.x * math.sin(ang)) / rng.uniform(1.5, 3))
    tissues = [
        {"echo": 4.0, "m": 4.0, "atten": 1.0, "lnz": math.log(1.65)},
        {**FAT, "echo": FAT["echo"] + 12 * septa},
        {**GLAND, "echo": gland_echo},
        {**FAT, "echo": FAT["echo"] + 3 * septa},
        {
            "echo": -6.0 + 6 * np.clip(stripes, 0, 1) ** 10,
            "m": 2.0,
            "atten": 1.0,
            "lnz": math.log(1.70),
        },
        {"echo": -12.0, "m": 1.5, "atten": 1.0, "lnz": math.log(1.68)},
    ]
    _paint_layers(scene, [np.full(g.nx, -1.0), skin, gland_top, retro, muscle, chest], tissues, 0.3)
    full = (slice(None), slice(None))
    for bound, echo in ((skin, 10.0), (muscle, 8.0), (chest, 8.0)):
        line = np.clip(1.0 - np.abs(g.d[:, None] - bound[None, :]) / 0.35, 0, 1)
        scene.paint(full, line, echo=echo)
    params.update(gland_mm=float((retro - gland_top).mean()), fat_mm=float(gland_top.mean()))
    return {"skin": skin, "gland": gland_top, "retro": retro, "muscle": muscle, "chest": chest}


def _breast_structures(
    scene: _Scene,
    rng: np.random.Generator,
    layers: dict[str, np.ndarray],
    params: dict[str, float],
) -> None:
    g = scene.grid
    n_lig = int(rng.integers(2, 7))
    for _ in range(n_lig):
        frac = rng.uniform(-1, 1)
        j = int((frac + 1) / 2 * (g.nx - 1))
        start = _grid_point(g, float(layers["gland"][j]) + 1.0, frac)
        end = _grid_point(g, float(layers["skin"][j]) + 2.0, frac + rng.uniform(-0.25, 0.25))
        pts = _curve(rng, start, end, rng.uniform(0.1, 0.4))
        shadow = float(rng.random() < 0.25) * rng.uniform(2, 4)
        scene.paint_tube(
            pts,
            rng.uniform(0.2, 0.35),
            echo=rng.uniform(6, 10),
            m=5.0,
            atten=0.8 + shadow,
            shadow=shadow,
            lnz=math.log(1.66),
        )
    for _ in range(int(rng.integers(0, 3))):
        frac = rng.uniform(-0.9, 0.9)
        j = int((frac + 1) / 2 * (g.nx - 1))
        d = rng.uniform(layers["gland"][j] + 2, max(layers["gland"][j] + 3, layers["retro"][j] - 2))
        a = _grid_point(g, float(d), frac)
        b = a + rng.uniform(6, 15) * np.array([rng.choice([-1, 1]), rng.uniform(-0.3, 0.3)])
        scene.paint_tube(
            _curve(rng, a, b, 0.15),
            rng.uniform(0.5, 1.2),
            echo=-35.0,
            m=1.0,
            atten=0.1,
            lnz=math.log(1.55),
        )
    ribs = 0
    for _ in range(int(rng.integers(0, 3))):
        frac = rng.uniform(-0.9, 0.9)
        j = int((frac + 1) / 2 * (g.nx - 1))
        d = float(layers["chest"][j]) + rng.uniform(4, 8)
        if d > g.probe.depth - 3:
            continue
        c = _grid_point(g, d, frac)
        rib = _Blob(c[0], c[1], rng.uniform(5, 9), rng.uniform(3, 5), rng.uniform(-0.2, 0.2))
        ribs += 1
        if rng.random() < 0.5:
            scene.paint_blob(
                rib,
                echo=rng.uniform(13, 18),
                atten=25.0,
                shadow=25.0,
                lnz=math.log(1.68) + 1.5,
                m=5.0,
            )
        else:
            scene.paint_blob(rib, edge=0.5, echo=-20.0, atten=1.2, m=1.0, lnz=math.log(1.75))
    _breast_pleura(scene, rng, layers)
    params.update(ligaments=float(n_lig), breast_ribs=float(ribs))


def _breast_pleura(scene: _Scene, rng: np.random.Generator, layers: dict[str, np.ndarray]) -> None:
    g = scene.grid
    pleura = layers["chest"] + rng.uniform(7, 12)
    if float(pleura.min()) > g.probe.depth - 2:
        return
    d = g.d[:, None]
    full = (slice(None), slice(None))
    lung = np.clip(0.5 + (d - pleura[None, :]) / 0.3, 0, 1)
    scene.paint(full, lung, echo=-25.0, atten=8.0, shadow=8.0, lnz=math.log(1.68) - 2.0, m=1.0)
    line = np.clip(1.0 - np.abs(d - pleura[None, :]) / 0.5, 0, 1)
    scene.paint(full, line, echo=18.0, m=6.0)
    depth = np.clip(d - pleura[None, :], 0, None)
    period = float(pleura.mean()) * rng.uniform(0.5, 1.0)
    bands = np.exp(-((((depth + period / 2) % period - period / 2) / 0.6) ** 2))
    scene.maps["reverb"] += (depth > 0) * np.exp(-depth / 12.0) * (0.15 + bands) * 0.5


def _carcinoma(scene: _Scene, rng: np.random.Generator, blob: _Blob) -> _Lesion:
    if rng.random() < 0.65:
        n = int(rng.integers(5, 15))
        blob.spikes = tuple((rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.6)) for _ in range(n))
        blob.spike_width = rng.uniform(0.05, 0.1)
        blob.harmonics = _harmonics(rng, range(2, 5), 0.08)
    else:
        blob.harmonics = _harmonics(rng, range(3, 8), 0.14)
    halo = rng.random() < 0.6
    core = 1.0
    if halo:
        t = rng.uniform(1.0, 3.0)
        core = blob.radius / (blob.radius + t)
        _paint_wall(scene, blob, t, echo=rng.uniform(9, 13), m=3.0)
    shadow = rng.random() < 0.75
    tex = _noise_field(rng, scene.grid, 1.5)
    scene.paint_blob(
        blob,
        edge=0.25,
        echo=rng.uniform(-18, -11) + 2.5 * tex,
        m=rng.uniform(1.0, 2.0),
        lnz=math.log(1.66),
        atten=rng.uniform(1.8, 3.0) if shadow else rng.uniform(0.8, 1.2),
    )
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(3, 12))):
            ang, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.7) * blob.radius
            c = np.array([blob.cx + rr * math.cos(ang), blob.cz + rr * math.sin(ang)])
            scene.paint_tube(np.stack([c, c + 0.1]), rng.uniform(0.15, 0.3), echo=22.0)
    full = _Blob(
        blob.cx,
        blob.cz,
        blob.a / core,
        blob.b / core,
        blob.rot,
        blob.harmonics,
        blob.spikes,
        blob.spike_width,
    )
    return _Lesion("carcinoma", full, core)


def _fibroadenoma(scene: _Scene, rng: np.random.Generator, blob: _Blob) -> _Lesion:
    blob.harmonics = _harmonics(rng, range(2, 4), 0.09)
    if rng.random() < 0.5:
        _paint_wall(scene, blob, rng.uniform(0.4, 0.7), echo=rng.uniform(2, 6), m=4.0)
    scene.paint_blob(
        blob,
        edge=0.25,
        echo=rng.uniform(-15, -7) + _noise_field(rng, scene.grid, 2),
        m=rng.uniform(3, 8),
        atten=rng.uniform(0.45, 0.8),
        lnz=math.log(1.50),
    )
    return _Lesion("fibroadenoma", blob)


def _breast_cyst(scene: _Scene, rng: np.random.Generator, blob: _Blob) -> _Lesion:
    _paint_wall(scene, blob, rng.uniform(0.3, 0.6), echo=rng.uniform(6, 11), m=5.0)
    scene.paint_blob(blob, edge=0.15, echo=-45.0, m=1.0, atten=0.02, lnz=math.log(1.52))
    return _Lesion("simple_cyst", blob)


def _other_benign(scene: _Scene, rng: np.random.Generator, blob: _Blob, lipoma: bool) -> _Lesion:
    _paint_wall(scene, blob, rng.uniform(0.3, 0.6), echo=rng.uniform(0, 6), m=4.0)
    if lipoma:
        scene.paint_blob(
            blob,
            edge=0.3,
            echo=rng.uniform(-8, -2),
            m=rng.uniform(2, 5),
            atten=0.7,
            lnz=math.log(1.41),
        )
        for _ in range(int(rng.integers(2, 5))):
            off = rng.uniform(-0.6, 0.6) * blob.b
            pts = np.array(
                [
                    [blob.cx - 0.7 * blob.a, blob.cz + off],
                    [blob.cx + 0.7 * blob.a, blob.cz + off * 0.8],
                ]
            )
            scene.paint_tube(_rotate(pts, blob), 0.2, echo=rng.uniform(0, 4))
        return _Lesion("other", blob)
    scene.paint_blob(
        blob, edge=0.2, echo=rng.uniform(-22, -16), m=3.0, atten=0.1, lnz=math.log(1.53)
    )
    if rng.random() < 0.5:
        win = scene.grid.window(*blob.box(0.3))
        if win is not None:
            level = blob.cz + rng.uniform(-0.2, 0.4) * blob.b
            x, z = scene.grid.x[win], scene.grid.z[win]
            w = blob.weight(x, z, 0.2) * np.clip(0.5 + (z - level) / 0.2, 0, 1)
            top = blob.weight(x, z, 0.2) * np.clip(0.5 - (z - level) / 0.2, 0, 1)
            scene.paint(win, top, echo=-42.0)
            scene.paint(win, w, echo=rng.uniform(-14, -9))
    return _Lesion("other", blob)


_BREAST_PAINTERS: dict[str, _Painter] = {
    "carcinoma": _carcinoma,
    "fibroadenoma": _fibroadenoma,
    "simple_cyst": _breast_cyst,
}
"""Breast lesion painters by class; "other" lesions also take whether they are lipoma-like."""


def _breast_lesions(
    scene: _Scene,
    rng: np.random.Generator,
    layers: dict[str, np.ndarray],
    params: dict[str, float],
) -> list[_Lesion]:
    g = scene.grid
    classes: list[str] = []
    if rng.random() >= 0.06:
        classes = [BREAST_CLASSES[rng.integers(4)]]
        if rng.random() < 0.15:
            classes.append(BREAST_CLASSES[rng.integers(4)])
    lesions: list[_Lesion] = []
    for label in classes:
        lipoma = label == "other" and rng.random() < 0.5
        size = min(_lesion_size(rng, 5 if label != "other" else 8, 35), 0.6 * g.probe.depth)
        if label == "carcinoma":
            ratio = rng.uniform(1.0, 1.6) if rng.random() < 0.7 else rng.uniform(0.75, 1.0)
        elif label == "fibroadenoma" or lipoma:
            ratio = rng.uniform(0.5, 0.8) if not lipoma else rng.uniform(0.35, 0.6)
        else:
            ratio = rng.uniform(0.55, 1.0)
        a, b = size / 2 / math.sqrt(ratio), size / 2 * math.sqrt(ratio)
        for _ in range(30):
            frac = rng.uniform(-1.05, 1.05)
            j = int(np.clip((frac + 1) / 2 * (g.nx - 1), 0, g.nx - 1))
            if lipoma:
                lo, hi = layers["skin"][j] + b * 0.8, layers["gland"][j] + b * 0.3
            else:
                lo, hi = layers["gland"][j] + b * 0.2, layers["retro"][j] + b * 0.2
            hi = min(hi, g.probe.depth - b * 0.5)
            c = _grid_point(g, float(rng.uniform(lo, max(lo + 0.5, hi))), frac)
            blob = _Blob(c[0], c[1], a, b, rng.uniform(-0.25, 0.25))
            if not _overlaps(blob, lesions):
                break
        else:
            continue
        if label == "other":
            lesions.append(_other_benign(scene, rng, blob, lipoma))
        else:
            lesions.append(_BREAST_PAINTERS[label](scene, rng, blob))
    return lesions


def _paint_breast(
    scene: _Scene, rng: np.random.Generator, params: dict[str, float]
) -> list[_Lesion]:
    layers = _breast_layers(scene, rng, params)
    _breast_structures(scene, rng, layers, params)
    return _breast_lesions(scene, rng, layers, params)


# ----------------------------------------------------------------------------- imaging


@dataclass(frozen=True)
class _Chain:
    looks: int
    steer: float
    harmonic: bool
    noise_db: float
    tgc_alpha: float
    tgc_knots: tuple[float, ...]
    near_dip: float
    dynamic_range: float
    headroom: float
    speckle_reduction: float
    edge: float
    persistence: float
    grey: str
    grey_param: float
    grey_knots: tuple[float, ...] = field(default=())


def _draw_chain(organ: Organ, rng: np.random.Generator) -> _Chain:
    looks = 1 if rng.random() < 0.35 else int(rng.choice([3, 5, 7, 9]))
    grey = ("s_curve", "gamma", "piecewise")[rng.integers(3)]
    if grey == "s_curve":
        grey_param = rng.uniform(4, 9)
    elif grey == "gamma":
        grey_param = rng.uniform(0.6, 1.6)
    else:
        grey_param = rng.uniform(-0.12, 0.12)
    harmonic = bool(rng.random() < (0.45 if organ == "liver" else 0.3))
    return _Chain(
        looks=looks,
        steer=rng.uniform(6, 18) if looks > 1 else 0.0,
        harmonic=harmonic,
        noise_db=rng.uniform(72, 95) - (6.0 if harmonic else 0.0),
        tgc_alpha=rng.uniform(0.35, 0.6) if organ == "liver" else rng.uniform(0.5, 0.85),
        tgc_knots=tuple(rng.uniform(-1, 1, 8) * rng.uniform(0, 5)),
        near_dip=rng.uniform(0, 6),
        dynamic_range=rng.uniform(40, 75),
        headroom=rng.uniform(18, 32),
        speckle_reduction=rng.uniform(0.3, 0.85) if rng.random() < 0.55 else 0.0,
        edge=rng.uniform(0.1, 0.5) if rng.random() < 0.45 else 0.0,
        persistence=rng.uniform(0.2, 0.6) if rng.random() < 0.4 else 0.0,
        grey=grey,
        grey_param=grey_param,
        grey_knots=tuple(np.sort(rng.uniform(0.2, 0.8, 2))),
    )


@dataclass
class _Acoustics:
    """Per-image quantities shared by all compounded looks."""

    fc: np.ndarray
    loss: np.ndarray
    shadow_db: np.ndarray
    demod: np.ndarray
    axial_sigma: np.ndarray
    lateral_h: np.ndarray
    pad: int
    tgc: np.ndarray
    nominal: np.ndarray
    noise: float
    unit: np.ndarray


def _exclusive_cumsum(a: np.ndarray) -> np.ndarray:
    out = np.cumsum(a, axis=0)
    out[1:] = out[:-1]
    out[0] = 0.0
    return out


def _acoustics(scene: _Scene, chain: _Chain) -> _Acoustics:
    g, p = scene.grid, scene.grid.probe
    dz_cm = g.dz / 10.0
    factor = 1.3 if chain.harmonic else 1.0
    alpha = scene.maps["atten"] * factor
    sigma_f = p.bandwidth * p.freq / 2.355
    np_per_mhz = _exclusive_cumsum(alpha * dz_cm) / 8.686
    fc = np.maximum(0.55 * p.freq, p.freq - 2.0 * sigma_f**2 * np_per_mhz).astype(np.float32)
    loss = (2.0 * alpha * fc * dz_cm).astype(np.float32)
    shadow_db = _exclusive_cumsum(2.0 * scene.maps["shadow"] * factor * fc * dz_cm)
    phase = _exclusive_cumsum(4.0 * np.pi * (fc - p.freq) * g.dz / SOUND_SPEED)
    fc_row = fc.mean(axis=1)
    axial = np.maximum(_axial_sigma(p, fc_row) / g.dz, 0.9)
    width = _lateral_width(p, g.d, fc_row, chain.harmonic)
    sig = np.clip(width / 2.355 / g.spacing, 1.0, g.nx / 4.0)
    pad = g.nx // 4
    nu = np.fft.fftfreq(g.nx + 2 * pad)[None, :]
    side = 0.01 if chain.harmonic else 0.03
    core = np.exp(-2 * (np.pi * sig[:, None] * nu) ** 2)
    lobes = np.exp(-2 * (np.pi * 3 * sig[:, None] * nu) ** 2)
    lateral_h = ((1 - side) * core + side * lobes).astype(np.complex64)
    ref = chain.tgc_alpha * factor
    fc_ref = np.maximum(0.55 * p.freq, p.freq - 2.0 * sigma_f**2 * ref * g.d / 10.0 / 8.686)
    nominal = np.cumsum(2.0 * ref * fc_ref * dz_cm)
    knots = np.interp(np.linspace(0, 1, g.nz), np.linspace(0, 1, 8), chain.tgc_knots)
    dip = -chain.near_dip * np.exp(-g.d / (0.15 * p.depth))
    return _Acoustics(
        fc=fc,
        loss=loss,
        shadow_db=shadow_db,
        demod=np.exp(-1j * phase).astype(np.complex64),
        axial_sigma=axial,
        lateral_h=lateral_h,
        pad=pad,
        tgc=(10 ** ((nominal + knots + dip) / 20.0)).astype(np.float32),
        nominal=(10 ** (-nominal / 20.0)).astype(np.float32),
        noise=10 ** (-chain.noise_db / 20.0),
        unit=np.sqrt(4 * math.pi * axial * sig).astype(np.float32),
    )


def _cgauss(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    z = rng.standard_normal((2, *shape), dtype=np.float32)
    return (z[0] + 1j * z[1]).astype(np.complex64) * np.float32(math.sqrt(0.5))


def _slanted_cumsum(loss: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum along steered rays that move ``shifts[i]`` columns at row i."""
    nx = loss.shape[1]
    cols = np.arange(nx)[None, :]
    along = np.take_along_axis(loss, np.clip(cols + shifts[:, None], 0, nx - 1), axis=1)
    total = _exclusive_cumsum(along)
    return np.take_along_axis(total, np.clip(cols - shifts[:, None], 0, nx - 1), axis=1)


def _psf(field_: np.ndarray, ac: _Acoustics) -> np.ndarray:
    """Depth-variant PSF: banded axial pulse with downshift, then per-row lateral beam."""
    nz = field_.shape[0]
    demod = field_ * ac.demod
    out = np.empty_like(demod)
    edges = np.linspace(0, nz, 9).astype(int)
    for a, b in itertools.pairwise(edges):
        sigma = float(ac.axial_sigma[(a + b) // 2])
        m = int(4 * sigma) + 2
        lo, hi = max(0, a - m), min(nz, b + m)
        part = demod[lo:hi]
        re = ndimage.gaussian_filter1d(part.real, sigma, axis=0, mode="constant")
        im = ndimage.gaussian_filter1d(part.imag, sigma, axis=0, mode="constant")
        out[a:b] = (re + 1j * im)[a - lo : b - lo]
    out *= np.conj(ac.demod)
    padded = np.pad(out, ((0, 0), (ac.pad, ac.pad)))
    spec = sp_fft.fft(padded, axis=1, overwrite_x=True) * ac.lateral_h
    return sp_fft.ifft(spec, axis=1, overwrite_x=True)[:, ac.pad : ac.pad + field_.shape[1]]


def _render(
    scene: _Scene, chain: _Chain, rng: np.random.Generator
) -> tuple[np.ndarray, _Acoustics]:
    """Log-compressed, normalised beam-grid image (0..1) and the shared acoustics."""
    g, p, maps = scene.grid, scene.grid.probe, scene.maps
    ac = _acoustics(scene, chain)
    amp = (10 ** (maps["echo"] / 20.0) * ac.unit[:, None]).astype(np.float32)
    diffuse = amp * np.sqrt(rng.gamma(maps["m"], 1.0 / maps["m"])).astype(np.float32)
    cell = g.dz * g.spacing[:, None]
    hits = rng.random(amp.shape) < maps["points"] * cell
    points = (hits * amp * 10 ** (rng.uniform(10, 20, amp.shape) / 20)).astype(np.float32)
    points = points * _cgauss(rng, amp.shape)
    gz = np.gradient(maps["lnz"], axis=0)
    gx = np.gradient(maps["lnz"], axis=1) * (g.dz / g.spacing[:, None]).astype(np.float32)
    spec_phase = np.exp(-4j * np.pi * p.freq * g.d / SOUND_SPEED)[:, None].astype(np.complex64)
    depth_cm = g.d / 10.0
    level = 0.0 if chain.harmonic else rng.uniform(0.003, 0.015)
    clutter = level * np.exp(-depth_cm / rng.uniform(1, 3))
    extra = (maps["reverb"] + clutter[:, None]) * (ac.nominal * ac.unit)[:, None]
    extra = extra.astype(np.float32)
    angles = np.radians(np.linspace(-chain.steer, chain.steer, chain.looks))
    total = np.zeros(amp.shape, dtype=np.float32)
    common = _cgauss(rng, amp.shape)
    for phi in angles:
        along = gz * math.cos(phi) + gx * math.sin(phi)
        across = np.abs(-gz * math.sin(phi) + gx * math.cos(phi))
        spec = 60.0 * np.clip(along / 2.0, -0.25, 0.25) * spec_phase
        shifts = np.round(g.d * math.tan(phi) / g.spacing).astype(int)
        edge_db = _slanted_cumsum(6.0 * np.minimum(across, 0.3), shifts)
        loss_db = _slanted_cumsum(ac.loss, shifts) + EDGE_CAP_DB * (
            1 - np.exp(-edge_db / EDGE_CAP_DB)
        )
        atten = 10 ** (-loss_db / 20.0)
        speckle = LOOK_CORRELATION * common + LOOK_INDEPENDENCE * _cgauss(rng, amp.shape)
        echo = (diffuse * speckle + points + spec) * atten.astype(np.float32) + extra * speckle
        rf = _psf(echo, ac) + np.float32(ac.noise) * _cgauss(rng, amp.shape)
        total += np.abs(rf) * ac.tgc[:, None]
    env_db = 20 * np.log10(total / chain.looks + 1e-12)
    near = (g.d > 0.05 * p.depth) & (g.d < 0.6 * p.depth)
    white = float(np.median(env_db[near])) + chain.headroom
    return np.clip(1.0 + (env_db - white) / chain.dynamic_range, 0.0, 1.0), ac


def _pixel_to_beam(grid: _Grid, layout: _Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractional beam indices (i, j) of every pixel and the field-of-view mask."""
    p = grid.probe
    rr, cc = np.mgrid[0 : layout.rows, 0 : layout.cols].astype(np.float32)
    x, z = layout.to_mm(rr, cc)
    if p.kind == "linear":
        depth, lat = z, x
    else:
        depth = np.hypot(x, z + p.radius) - p.radius
        lat = np.arctan2(x, z + p.radius)
    i = depth / grid.dz
    j = (lat - grid.lat[0]) / (grid.lat[1] - grid.lat[0])
    fov = (i >= 0) & (i <= grid.nz - 1) & (j >= 0) & (j <= grid.nx - 1)
    return i, j, fov


def _scan_convert(beam: np.ndarray, i: np.ndarray, j: np.ndarray, fov: np.ndarray) -> np.ndarray:
    out = np.zeros(fov.shape, dtype=np.float32)
    out[fov] = ndimage.map_coordinates(beam, [i[fov], j[fov]], order=1, mode="nearest")
    return out


def _grey_map(v: np.ndarray, chain: _Chain) -> np.ndarray:
    if chain.grey == "s_curve":
        k = chain.grey_param
        lo, hi = 1 / (1 + math.exp(k * 0.5)), 1 / (1 + math.exp(-k * 0.5))
        return (1 / (1 + np.exp(-k * (v - 0.5))) - lo) / (hi - lo)
    if chain.grey == "gamma":
        return v**chain.grey_param
    xk = (0.0, *chain.grey_knots, 1.0)
    yk = (
        0.0,
        chain.grey_knots[0] + chain.grey_param,
        chain.grey_knots[1] + chain.grey_param / 2,
        1.0,
    )
    return np.interp(v, xk, np.maximum.accumulate(np.clip(yk, 0, 1)))


def _display(image: np.ndarray, fov: np.ndarray, chain: _Chain) -> np.ndarray:
    """Image-domain display chain to uint8 with black outside the field of view."""
    v = image
    if chain.speckle_reduction > 0:
        smooth = ndimage.gaussian_filter(v, 1.4)
        grad = ndimage.gaussian_gradient_magnitude(v, 1.0)
        w = chain.speckle_reduction * np.exp(-grad / 0.06)
        v = v + w * (smooth - v)
    if chain.persistence > 0:
        v = v + chain.persistence * (ndimage.gaussian_filter(v, (0.6, 1.8)) - v)
    if chain.edge > 0:
        v = v + chain.edge * (v - ndimage.gaussian_filter(v, 1.5))
    grey = _grey_map(np.clip(v, 0.0, 1.0), chain)
    return np.where(fov, np.clip(grey * 255.0 + 0.5, 0, 255), 0).astype(np.uint8)


# ----------------------------------------------------------------------------- ground truth


def _lesion_rho(lesion: _Lesion, layout: _Layout, margin: float) -> tuple[tuple, np.ndarray]:
    """Pixel window around the lesion and its normalised radius there."""
    x0, x1, z0, z1 = lesion.blob.box(margin)
    c0, r0 = layout.to_px(x0, z0)
    c1, r1 = layout.to_px(x1, z1)
    rs = slice(max(0, int(r0) - 1), min(layout.rows, int(r1) + 2))
    cs = slice(max(0, int(c0) - 1), min(layout.cols, int(c1) + 2))
    rr, cc = np.mgrid[rs, cs].astype(np.float32)
    x, z = layout.to_mm(rr, cc)
    return (rs, cs), lesion.blob.rho(x, z)


def _speckle_px(grid: _Grid, ac: _Acoustics, chain: _Chain, depth: float, pixel_mm: float) -> float:
    i = int(np.clip(depth / grid.dz, 0, grid.nz - 1))
    fc = float(ac.fc[i].mean())
    axial = 2.355 * float(_axial_sigma(grid.probe, fc))
    lateral = float(
        _lateral_width(grid.probe, np.array([depth]), np.array([fc]), chain.harmonic)[0]
    )
    return max(1.0, axial * lateral / pixel_mm**2)


def _detectable(
    img: np.ndarray, parts: list[np.ndarray], ring: np.ndarray, n_speckle: float
) -> bool:
    """Contrast-to-noise and Rose-index test of each part against the ring or the other part."""
    if ring.sum() < 10:
        return False
    sigma = float(img[ring].std()) + 1.0
    pairs = [(part, ring) for part in parts]
    if len(parts) == 2:
        pairs.append((parts[1], parts[0] & ~parts[1]))
    for a, b in pairs:
        n = min(int(a.sum()), int(b.sum()))
        if n < 4:
            continue
        cnr = abs(float(img[a].mean()) - float(img[b].mean())) / sigma
        contrast = abs(float(img[a].mean()) - float(img[b].mean()))
        if contrast < MIN_CONTRAST:
            continue
        if cnr >= MIN_CNR and cnr * math.sqrt(n / n_speckle) >= MIN_ROSE:
            return True
    return False


def _visible_truths(
    frame: np.ndarray,
    fov: np.ndarray,
    shadow_px: np.ndarray,
    lesions: list[_Lesion],
    layout: _Layout,
    grid: _Grid,
    ac: _Acoustics,
    chain: _Chain,
) -> list[LesionTruth]:
    pm = layout.pixel_mm
    img = frame.astype(np.float32)
    union = np.zeros(fov.shape, dtype=bool)
    windows = []
    for lesion in lesions:
        ring_mm = max(2.0, 0.3 * lesion.blob.radius)
        win, rho = _lesion_rho(lesion, layout, ring_mm + 1.0)
        union[win] |= rho < 1.0
        windows.append((win, rho, ring_mm))
    clear = fov & (shadow_px < SHADOW_DB)
    truths = []
    for index, (lesion, (win, rho, ring_mm)) in enumerate(zip(lesions, windows, strict=True)):
        vis = (rho < 1.0) & clear[win]
        if vis.sum() * pm**2 < MIN_AREA_MM2:
            continue
        box = BoundingBox.of_mask(vis)
        if min(box.width, box.height) * pm < MIN_EXTENT_MM:
            continue
        ring = (rho < 1.0 + ring_mm / lesion.blob.radius) & ~union[win] & clear[win]
        parts = [vis]
        if lesion.core < 0.95:
            parts.append(vis & (rho < lesion.core))
        depth = lesion.blob.cz
        if grid.probe.kind != "linear":
            depth = float(np.hypot(lesion.blob.cx, depth + grid.probe.radius)) - grid.probe.radius
        n_speckle = _speckle_px(grid, ac, chain, depth, pm)
        if not _detectable(img[win], parts, ring, n_speckle):
            continue
        full = BoundingBox(
            box.x0 + win[1].start,
            box.y0 + win[0].start,
            box.x1 + win[1].start,
            box.y1 + win[0].start,
        )
        truths.append(LesionTruth(index, lesion.label, full, int(vis.sum())))
    return truths


# ----------------------------------------------------------------------------- annotations

_FONT_ROWS = {
    "0": "0E1113151911 0E",
    "1": "040C0404040 40E",
    "2": "0E1101020408 1F",
    "3": "1F0204020111 0E",
    "4": "02060A121F02 02",
    "5": "1F101E010111 0E",
    "6": "0608101E1111 0E",
    "7": "1F0102040808 08",
    "8": "0E11110E1111 0E",
    "9": "0E11110F0102 0C",
    "A": "0E11111F1111 11",
    "B": "1E11111E1111 1E",
    "C": "0E1110101011 0E",
    "D": "1C1211111112 1C",
    "E": "1F10101E1010 1F",
    "F": "1F10101E1010 10",
    "G": "0E1110171111 0F",
    "H": "1111111F1111 11",
    "I": "0E0404040404 0E",
    "J": "070202020212 0C",
    "K": "111214181412 11",
    "L": "101010101010 1F",
    "M": "111B15151111 11",
    "N": "111119151311 11",
    "O": "0E1111111111 0E",
    "P": "1E11111E1010 10",
    "Q": "0E1111111512 0D",
    "R": "1E11111E1412 11",
    "S": "0F10100E0101 1E",
    "T": "1F0404040404 04",
    "U": "111111111111 0E",
    "V": "11111111110A 04",
    "W": "111111151515 0A",
    "X": "11110A040A11 11",
    "Y": "1111110A0404 04",
    "Z": "1F0102040810 1F",
    ".": "00000000000C 0C",
    ":": "000C0C000C0C 00",
    "/": "000102040810 00",
    "-": "0000001F0000 00",
    "%": "181902040813 03",
    "+": "0004041F0404 00",
    "*": "0004150E1504 00",
    " ": "000000000000 00",
}


def _glyph(ch: str) -> np.ndarray:
    code = _FONT_ROWS.get(ch, _FONT_ROWS[" "]).replace(" ", "")
    rows = [int(code[k : k + 2], 16) for k in range(0, 14, 2)]
    return np.array([[(r >> (4 - b)) & 1 for b in range(5)] for r in rows], dtype=bool)


def _text(frame: np.ndarray, text: str, row: int, col: int, scale: int, value: int) -> None:
    """Burn ``text`` (5x7 font) into ``frame`` with its top-left corner at (row, col)."""
    for k, ch in enumerate(text.upper()):
        g = np.kron(_glyph(ch), np.ones((scale, scale), dtype=bool))
        r0, c0 = row, col + k * 6 * scale
        rs, cs = (
            slice(max(r0, 0), min(r0 + g.shape[0], frame.shape[0])),
            slice(max(c0, 0), min(c0 + g.shape[1], frame.shape[1])),
        )
        if rs.stop <= rs.start or cs.stop <= cs.start:
            continue
        sub = g[rs.start - r0 : rs.stop - r0, cs.start - c0 : cs.stop - c0]
        frame[rs, cs][sub] = value


def _cross(frame: np.ndarray, row: int, col: int, half: int, value: int) -> None:
    rows, cols = frame.shape
    frame[max(row - half, 0) : min(row + half + 1, rows), min(max(col, 0), cols - 1)] = value
    frame[min(max(row, 0), rows - 1), max(col - half, 0) : min(col + half + 1, cols)] = value


def _dotted(frame: np.ndarray, a: tuple[float, float], b: tuple[float, float], value: int) -> None:
    n = int(max(abs(b[0] - a[0]), abs(b[1] - a[1])) / 4) + 1
    t = np.linspace(0, 1, n)
    r = np.clip(np.round(a[0] + t * (b[0] - a[0])).astype(int), 0, frame.shape[0] - 1)
    c = np.clip(np.round(a[1] + t * (b[1] - a[1])).astype(int), 0, frame.shape[1] - 1)
    frame[r, c] = value


def _body_marker(
    frame: np.ndarray, organ: Organ, row: int, col: int, size: int, value: int
) -> None:
    t = np.linspace(0, 2 * np.pi, 120)
    if organ == "liver":
        rr = row + size * (0.5 + 0.3 * np.sin(t) * (1 + 0.3 * np.cos(t)))
        cc = col + size * (0.5 + 0.45 * np.cos(t))
    else:
        rr, cc = row + size * (0.5 + 0.45 * np.sin(t)), col + size * (0.5 + 0.45 * np.cos(t))
    h, w = frame.shape
    frame[np.clip(rr.astype(int), 0, h - 1), np.clip(cc.astype(int), 0, w - 1)] = value
    ang = t[int(np.random.default_rng(row * 7 + col).integers(120))]
    for k in range(-size // 4, size // 4 + 1):
        r = int(row + size / 2 + 0.4 * size * math.sin(ang) + k * math.cos(ang))
        c = int(col + size / 2 + 0.4 * size * math.cos(ang) - k * math.sin(ang))
        frame[min(max(r, 0), h - 1), min(max(c, 0), w - 1)] = value


def _annotate(
    frame: np.ndarray,
    fov: np.ndarray,
    organ: Organ,
    probe: _Probe,
    chain: _Chain,
    layout: _Layout,
    lesions: list[_Lesion],
    rng: np.random.Generator,
) -> None:
    """Burn vendor-like text, depth scale, focus mark, body marker and calipers into ``frame``."""
    rows, cols = frame.shape
    scale = 1 if cols < 700 else 2
    value = int(rng.integers(180, 256))
    step = 9 * scale
    code = {"convex": "C", "linear": "L", "sector": "P"}[probe.kind]
    name = f"{code}{int(probe.freq + 2)}-{max(1, int(probe.freq - 2))}"
    mode = "THI" if chain.harmonic else "F"
    left = [
        "ANON HOSPITAL",
        f"ID {'*' * int(rng.integers(6, 10))}",
        f"20{rng.integers(15, 25)}/{rng.integers(1, 13):02d}/{rng.integers(1, 29):02d}",
        f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}",
    ]
    right = [
        name,
        "ABDOMEN" if organ == "liver" else "BREAST",
        f"{mode} {probe.freq:.1f}MHZ",
        f"D {probe.depth / 10:.1f}CM",
        f"G {rng.integers(30, 80)} DR {int(chain.dynamic_range)}",
        f"FR {rng.integers(12, 60)}HZ",
        f"MI {rng.uniform(0.4, 1.4):.1f}",
    ]
    if chain.looks > 1:
        right.append(f"CMP {chain.looks}")
    for k, line in enumerate(left[: int(rng.integers(1, 5))]):
        _text(frame, line, 3 + k * step, 4, scale, value)
    for k, line in enumerate(right[: int(rng.integers(2, len(right) + 1))]):
        _text(frame, line, 3 + k * step, cols - 4 - len(line) * 6 * scale, scale, value)
    fov_cols = np.flatnonzero(fov.any(axis=0))
    edge = int(min(fov_cols[-1] + 6, cols - 12))
    unit = 10.0 if probe.depth < 100 else 50.0
    for k in range(int(probe.depth // 10) + 1):
        _, r = layout.to_px(0.0, k * 10.0)
        size = 6 if (k * 10) % unit == 0 else 3
        frame[int(min(r, rows - 1)), edge : min(edge + size, cols)] = value
        if size == 6 and rng.random() < 0.8:
            _text(frame, str(k), int(r) - 3, edge + 8, scale, value)
    _, rf = layout.to_px(0.0, probe.focus)
    for k in range(4):
        frame[int(min(rf, rows - 5)) - k : int(min(rf, rows - 5)) + k + 1, max(edge - 4 - k, 0)] = (
            value
        )
    if rng.random() < 0.7:
        size = int(min(rows, cols) * rng.uniform(0.07, 0.1))
        corner = int(rng.integers(2))
        _body_marker(
            frame, organ, rows - size - 6, 6 if corner == 0 else cols - size - 6, size, value
        )
    if rng.random() < 0.35:
        _calipers(frame, fov, layout, lesions, rng, scale, value)
    if rng.random() < 0.25:
        fr = np.flatnonzero(fov.any(axis=1))
        fc = np.flatnonzero(fov[fr[0] + rows // 6])
        label = ("RT LOBE", "LT LOBE", "SEG 8", "RT 10:00 3CM", "LT 2:00 FN")[rng.integers(5)]
        _text(frame, label, int(fr[0] + rows // 6), int(fc[0] + 6), scale, value)


def _calipers(
    frame: np.ndarray,
    fov: np.ndarray,
    layout: _Layout,
    lesions: list[_Lesion],
    rng: np.random.Generator,
    scale: int,
    value: int,
) -> None:
    rows_in, cols_in = np.nonzero(fov)
    if lesions:
        blob = lesions[int(rng.integers(len(lesions)))].blob
        ang = rng.uniform(0, np.pi)
        a = layout.to_px(blob.cx - blob.a * math.cos(ang), blob.cz - blob.a * math.sin(ang))
        b = layout.to_px(blob.cx + blob.a * math.cos(ang), blob.cz + blob.a * math.sin(ang))
    else:
        k = rng.integers(len(rows_in), size=2)
        a, b = (cols_in[k[0]], rows_in[k[0]]), (cols_in[k[1]], rows_in[k[1]])
    half = 4 * scale
    _cross(frame, int(a[1]), int(a[0]), half, value)
    _cross(frame, int(b[1]), int(b[0]), half, value)
    if rng.random() < 0.7:
        _dotted(frame, (a[1], a[0]), (b[1], b[0]), value)
    length = math.hypot(b[0] - a[0], b[1] - a[1]) * layout.pixel_mm
    _text(
        frame,
        f"D1 {length:.1f}MM",
        int(rows_in.max()) - 12 * scale,
        int(np.median(cols_in)),
        scale,
        value,
    )


# ----------------------------------------------------------------------------- public


def generate_convolution(
    organ: Organ, seed: int, rows: int = 480, cols: int = 640, *, annotations: bool | None = None
) -> PhantomSample:
    """Render one B-mode still of ``organ`` with the convolution model.

    Parameters
    ----------
    organ:
        ``"liver"`` or ``"breast"``.
    seed:
        Seed of every random draw; the same seed gives the same image.
    rows, cols:
        Frame size in pixels.
    annotations:
        Burn in text, scale, markers and calipers: always (True), never (False) or on 85 % of
        seeds (None).  Annotations never change the scene or the ground truth.

    Returns
    -------
    PhantomSample
        One frame (shape ``(1, rows, cols)``, uint8), the visible lesions, the class of every
        placed lesion, the field-of-view box, the pixel size and every drawn parameter.
    """
    if organ not in ("liver", "breast"):
        raise ValueError(f"Unknown organ {organ!r}.")
    scene_seq, speckle_seq, annot_seq = np.random.SeedSequence(seed).spawn(3)
    rng = np.random.default_rng(scene_seq)
    probe = _draw_probe(organ, rng)
    chain = _draw_chain(organ, rng)
    layout = _layout(probe, rows, cols, rng)
    grid = _beam_grid(probe, layout, chain.harmonic)
    scene = _Scene(grid)
    params: dict[str, float] = {}
    painter = _paint_liver if organ == "liver" else _paint_breast
    lesions = painter(scene, rng, params)
    beam, ac = _render(scene, chain, np.random.default_rng(speckle_seq))
    i, j, fov = _pixel_to_beam(grid, layout)
    frame = _display(_scan_convert(beam, i, j, fov), fov, chain)
    shadow_px = _scan_convert(ac.shadow_db.astype(np.float32), i, j, fov)
    truths = _visible_truths(frame, fov, shadow_px, lesions, layout, grid, ac, chain)
    annot_rng = np.random.default_rng(annot_seq)
    draw = bool(annot_rng.random() < 0.85) if annotations is None else annotations
    if draw:
        _annotate(frame, fov, organ, probe, chain, layout, lesions, annot_rng)
    params.update(_probe_params(probe, chain, layout, grid, len(lesions), draw))
    return PhantomSample(
        organ=organ,
        seed=seed,
        frames=frame[None],
        truths=[truths],
        labels=[lesion.label for lesion in lesions],
        scan_box=BoundingBox.of_mask(fov),
        pixel_mm=layout.pixel_mm,
        params=params,
    )


def _probe_params(
    probe: _Probe, chain: _Chain, layout: _Layout, grid: _Grid, n_lesions: int, draw: bool
) -> dict[str, float]:
    return {
        "probe_kind": PROBE_CODES[probe.kind],
        "radius_mm": probe.radius,
        "field_half": probe.half,
        "depth_mm": probe.depth,
        "frequency_mhz": probe.freq,
        "bandwidth": probe.bandwidth,
        "focus_mm": probe.focus,
        "aperture_mm": probe.aperture,
        "f_number": probe.f_number,
        "defocus_spread": probe.spread,
        "looks": float(chain.looks),
        "steer_deg": chain.steer,
        "harmonic": float(chain.harmonic),
        "noise_db": chain.noise_db,
        "tgc_alpha": chain.tgc_alpha,
        "tgc_error_db": float(np.max(np.abs(chain.tgc_knots))),
        "near_dip_db": chain.near_dip,
        "dynamic_range_db": chain.dynamic_range,
        "headroom_db": chain.headroom,
        "speckle_reduction": chain.speckle_reduction,
        "edge_enhancement": chain.edge,
        "persistence": chain.persistence,
        "grey_map": GREY_MAP_CODES[chain.grey],
        "grey_param": chain.grey_param,
        "pixel_mm": layout.pixel_mm,
        "beam_samples": float(grid.nz),
        "beam_lines": float(grid.nx),
        "lesions_placed": float(n_lesions),
        "annotations": float(draw),
    }
