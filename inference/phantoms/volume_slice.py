"""Evaluation-only phantoms: a slice through a 3-D tissue volume.

This generator is independent of the training generators and is meant only to
measure how the engines generalise.  Its route:

1. **Volume.**  Anatomy and lesions are 3-D objects in millimetres: ``x``
   lateral, ``z`` depth, ``y`` elevation (across the image plane).  Layers
   (skin, fat, muscle, gland, pectoralis) are sheets; vessels and ducts are
   cylinders running in any 3-D direction; organs, lesions and lobules are
   ellipsoids whose in-plane radius is modulated by harmonics (lobulation,
   irregular or spiculated margins) and by a noise field (ill-defined margins).
2. **Slice with a finite elevational beam.**  The image plane is ``y = 0``
   and the elevational beam profile at depth ``r`` is a Gaussian whose width
   follows a focused lens.  Each object's weight at a point of the plane is
   the beam-weighted length of the elevational line that lies inside it,
   computed analytically (erf of the chord ends).  So small lesions and
   vessels are partial-volume blurred and lose contrast, and a lesion cut off
   centre looks smaller and fainter.
3. **Acoustic properties and ray casting.**  Every object paints backscatter
   strength, attenuation (dB/cm/MHz), log impedance and log sound speed on a
   beam grid (one row per scan line).  Along each line: frequency-dependent
   attenuation, transmission losses ``1 - R^2`` at impedance steps (bone and
   gas shadow cleanly), specular echoes ``R cos^p(incidence)`` at interfaces
   (diaphragm, capsules, fascia, walls), and refraction losses where the beam
   meets a smooth interface beyond the critical angle of its speed step
   (edge shadows beside cysts and capsules).  Time-gain compensation assumes an
   average attenuation, so a fluid lesion leaves posterior enhancement and a
   strongly attenuating carcinoma a shadow.  Gas gives reverberation (A-lines
   beneath the pleura, ring-down below bowel gas) and the diaphragm a mirror
   image of the liver.
4. **Echo texture.**  Multiplicative speckle: the intensity is a mean of
   squared correlated Gaussian fields (order = compounding/persistence), whose
   lateral and axial correlation lengths follow the beam's resolution at each
   depth (narrow at the focus, wider away from it, coarser at depth), times a
   tissue structure field (fine for liver, coarse and nodular for cirrhosis,
   layered for glandular tissue).
5. **Scanner.**  Log compression with a drawn dynamic range and gain, TGC
   slider wiggles, electronic noise rising with depth, scan conversion to the
   display, a grey map curve, edge enhancement or speckle reduction of random
   strength, then burned-in annotations (text, depth scale, focus marker, body
   marker, calipers) some of the time.

Ground truth: a placed lesion is in ``truths`` only when visible on the final
``uint8`` frame (before overlays), see :func:`lesion_visibility`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from scipy.special import erf

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, BoundingBox
from inference.phantoms.generator import LesionTruth, Organ, PhantomSample

MIN_VISIBLE_MM = 3.0
"""Equivalent diameter (mm) a lesion must show inside the scan area."""

MIN_ROSE = 7.0
"""Rose index (contrast over speckle noise, times the root of the number of
speckle cells) a lesion needs to be ground truth.  The Rose criterion for a known
target in white noise is about 3-5; speckle texture, anatomy and an unknown
position make it higher in practice."""

MIN_CONTRAST_GREY = 8.0
"""Smallest grey-level difference (lesion or its core against the surroundings or its
margin) an observer can see on a display, whatever the Rose index."""

MIN_RING_GREY = 14.0
"""Mean grey level of the surroundings below which a lesion counts as hidden in a
shadow or below the noise floor."""

_SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------- geometry
@dataclass
class _Probe:
    kind: str  # "convex", "sector", "linear"
    depth: float  # mm
    freq: float  # MHz
    radius: float  # mm, curvature (convex/sector), 0 for linear
    half_angle: float  # rad (convex/sector)
    width: float  # mm (linear)
    focus: float  # mm, lateral transmit focus
    elev_focus: float  # mm
    elev_sigma: float  # mm, elevational beam sigma at its focus


@dataclass
class _Grid:
    """Beam grid: axis 0 = scan line, axis 1 = depth sample along the line."""

    x: np.ndarray
    z: np.ndarray
    r: np.ndarray  # depth along the beam (mm), shape (1, ns)
    lat_step: np.ndarray  # mm between lines at each sample, shape (1, ns)
    dr: float
    sig_e: np.ndarray  # elevational sigma at each sample, shape (1, ns)
    noise: np.ndarray = field(default_factory=lambda: np.zeros((1, 1)))

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape


def _resolution(p: _Probe, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lateral and axial FWHM (mm) of the focused beam at depths ``r``."""
    lam = 1.54 / p.freq
    # the received spectrum shifts down with depth, so resolution coarsens
    f_eff = 1.0 / (1.0 + 0.35 * r / max(p.depth, 1.0))
    lat0 = lam * 1.9
    rayleigh = max(p.focus * 0.45, 6.0)
    lat = lat0 * np.sqrt(1.0 + ((r - p.focus) / rayleigh) ** 2) / f_eff
    ax = 0.6 * lam * 2.0 / f_eff
    return lat, ax + 0.0 * r


def _elev_sigma(p: _Probe, r: np.ndarray) -> np.ndarray:
    rayleigh = max(p.elev_focus * 0.6, 8.0)
    return p.elev_sigma * np.sqrt(1.0 + ((r - p.elev_focus) / rayleigh) ** 2)


def _beam_grid(p: _Probe, pixel_mm: float) -> _Grid:
    dr = pixel_mm * 0.9
    ns = math.ceil(p.depth / dr) + 1
    r = (np.arange(ns) * dr)[None, :]
    if p.kind == "linear":
        nl = min(math.ceil(p.width / pixel_mm) + 1, 700)
        xl = np.linspace(-p.width / 2, p.width / 2, nl)[:, None]
        x = np.broadcast_to(xl, (nl, ns)).copy()
        z = np.broadcast_to(r, (nl, ns)).copy()
        lat_step = np.full((1, ns), p.width / (nl - 1))
    else:
        arc = 2 * p.half_angle * (p.radius + p.depth)
        nl = min(math.ceil(arc / (1.2 * pixel_mm)) + 1, 640)
        th = np.linspace(-p.half_angle, p.half_angle, nl)[:, None]
        rr = p.radius + r
        x = rr * np.sin(th)
        z = rr * np.cos(th) - p.radius
        lat_step = rr * (2 * p.half_angle / (nl - 1))
    return _Grid(x=x, z=z, r=r, lat_step=lat_step, dr=dr, sig_e=_elev_sigma(p, r))


# ----------------------------------------------------------------------------- fields
def _tissue_field(rng: np.random.Generator, g: _Grid, corr_x: float, corr_z: float,
                  angle: float = 0.0) -> np.ndarray:
    """Unit-variance Gaussian random field fixed in tissue (mm) coordinates,
    with correlation lengths ``corr_x``/``corr_z`` along axes rotated by ``angle``."""
    step = max(min(corr_x, corr_z) / 2.0, 0.15)
    x0, x1 = float(g.x.min()) - 2, float(g.x.max()) + 2
    z0, z1 = float(g.z.min()) - 2, float(g.z.max()) + 2
    nx = int((x1 - x0) / step) + 2
    nz = int((z1 - z0) / step) + 2
    if nx * nz > 900_000:
        step *= math.sqrt(nx * nz / 900_000)
        nx, nz = int((x1 - x0) / step) + 2, int((z1 - z0) / step) + 2
    f = rng.standard_normal((nz, nx))
    f = ndimage.gaussian_filter(f, (corr_z / step / 2.0, corr_x / step / 2.0), mode="wrap")
    f /= f.std() + 1e-12
    ca, sa = math.cos(angle), math.sin(angle)
    xc, zc = (x0 + x1) / 2, (z0 + z1) / 2
    xr = xc + (g.x - xc) * ca - (g.z - zc) * sa
    zr = zc + (g.x - xc) * sa + (g.z - zc) * ca
    return ndimage.map_coordinates(f, [(zr - z0) / step, (xr - x0) / step], order=1,
                                   mode="mirror")


def _phi(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return 0.5 * erf(y / (s * _SQRT2))


@dataclass
class _Blob:
    """Ellipsoid with a harmonically modulated in-plane radius."""

    cx: float
    cy: float
    cz: float
    a: float  # lateral semi-axis (mm)
    b: float  # axial semi-axis
    c: float  # elevational semi-axis
    angle: float = 0.0
    harm: tuple[tuple[int, float, float], ...] = ()
    rough: float = 0.0

    def scaled(self, s: float, **kw: float) -> _Blob:
        out = _Blob(self.cx, self.cy, self.cz, self.a * s, self.b * s, self.c * s,
                    self.angle, self.harm, self.rough)
        for k, v in kw.items():
            setattr(out, k, v)
        return out

    @property
    def extent(self) -> float:
        amp = sum(abs(h[1]) for h in self.harm)
        return max(self.a, self.b) * (1.0 + amp + 2 * self.rough) + 1.0


def _select(g: _Grid, x0: float, x1: float, z0: float, z1: float) -> tuple[np.ndarray, ...]:
    return np.nonzero((g.x >= x0) & (g.x <= x1) & (g.z >= z0) & (g.z <= z1))


def blob_fraction(g: _Grid, blob: _Blob) -> np.ndarray:
    """Beam-weighted elevational fraction of ``blob`` at every beam-grid point."""
    e = blob.extent
    sel = _select(g, blob.cx - e, blob.cx + e, blob.cz - e, blob.cz + e)
    out = np.zeros(g.shape)
    if sel[0].size == 0:
        return out
    dx = g.x[sel] - blob.cx
    dz = g.z[sel] - blob.cz
    ca, sa = math.cos(blob.angle), math.sin(blob.angle)
    u = (dx * ca + dz * sa) / blob.a
    v = (-dx * sa + dz * ca) / blob.b
    rho = np.hypot(u, v)
    if blob.harm:
        ph = np.arctan2(v, u)
        mod = np.ones_like(rho)
        for k, amp, p0 in blob.harm:
            mod += amp * np.cos(k * ph + p0)
        rho = rho / np.maximum(mod, 0.3)
    if blob.rough:  # margin irregularity of a few mm at most, whatever the size
        rho = rho + blob.rough * min(1.0, 8.0 / max(blob.a, blob.b)) * g.noise[sel]
    h = blob.c * np.sqrt(np.clip(1.0 - rho * rho, 0.0, None))
    s = np.broadcast_to(g.sig_e, g.shape)[sel]
    out[sel] = _phi(blob.cy + h, s) - _phi(blob.cy - h, s)
    return out


def tube_fraction(g: _Grid, p0: np.ndarray, d: np.ndarray, radius: float,
                  length: float) -> np.ndarray:
    """Beam-weighted elevational fraction of a cylinder from ``p0`` (x, y, z) along
    unit ``d`` for ``length`` mm."""
    p1 = p0 + d * length
    m = radius + 1.0
    sel = _select(g, min(p0[0], p1[0]) - m, max(p0[0], p1[0]) + m,
                  min(p0[2], p1[2]) - m, max(p0[2], p1[2]) + m)
    out = np.zeros(g.shape)
    if sel[0].size == 0:
        return out
    ux = g.x[sel] - p0[0]
    uy = -p0[1]
    uz = g.z[sel] - p0[2]
    ud = ux * d[0] + uy * d[1] + uz * d[2]
    ax, ay, az = ux - ud * d[0], uy - ud * d[1], uz - ud * d[2]
    bx, by, bz = -d[1] * d[0], 1.0 - d[1] * d[1], -d[1] * d[2]
    bb = bx * bx + by * by + bz * bz
    aa = ax * ax + ay * ay + az * az
    s = np.broadcast_to(g.sig_e, g.shape)[sel]
    if bb < 1e-4:  # along the elevation: full weight inside the cross-section
        f = (aa < radius * radius).astype(float)
        t_mid = ud
    else:
        ab = ax * bx + ay * by + az * bz
        disc = np.clip(ab * ab - bb * (aa - radius * radius), 0.0, None)
        sq = np.sqrt(disc)
        y1, y2 = (-ab - sq) / bb, (-ab + sq) / bb
        f = _phi(y2, s) - _phi(y1, s)
        t_mid = ud + 0.5 * (y1 + y2) * d[1]
    taper = np.clip(np.minimum(t_mid, length - t_mid) / max(radius, 0.5) + 0.5, 0.0, 1.0)
    out[sel] = f * taper
    return out


# ----------------------------------------------------------------------------- medium
class _Tissue(NamedTuple):
    refl: float  # backscatter amplitude relative to normal liver
    alpha: float  # attenuation dB/cm/MHz
    z: float  # acoustic impedance (MRayl)
    c: float  # speed of sound (mm/us)


FLUID = _Tissue(0.012, 0.01, 1.52, 1.52)
BLOOD = _Tissue(0.03, 0.15, 1.66, 1.57)
FAT = _Tissue(0.45, 0.6, 1.38, 1.47)
MUSCLE = _Tissue(0.6, 1.0, 1.70, 1.58)
FIBROUS = _Tissue(1.8, 1.2, 1.78, 1.60)
SKIN = _Tissue(1.3, 1.2, 1.70, 1.60)
BONE = _Tissue(1.5, 25.0, 7.8, 3.5)
GAS = _Tissue(0.3, 40.0, 0.0004, 0.34)
LIVER = _Tissue(1.0, 0.5, 1.65, 1.57)
GLAND = _Tissue(1.8, 1.0, 1.60, 1.55)


class _Medium:
    """Acoustic property maps on the beam grid, painted object by object."""

    def __init__(self, g: _Grid, base: _Tissue) -> None:
        self.g = g
        shape = g.shape
        self.refl = np.full(shape, base.refl)
        self.alpha = np.full(shape, base.alpha)
        self.logz = np.full(shape, math.log(base.z))
        self.logc = np.full(shape, math.log(base.c))
        self.tex = np.ones(shape)
        self.gas_kind = np.zeros(shape, dtype=np.int8)  # 1 lung, 2 bowel

    def paint(self, f: np.ndarray, t: _Tissue, tex: np.ndarray | float = 1.0,
              gas: int = 0) -> None:
        """Mix tissue ``t`` in with weight ``f`` (partial volume)."""
        f = np.broadcast_to(f, self.g.shape)
        sel = f > 1e-3
        if not sel.any():
            return
        w = f[sel]
        keep = 1.0 - w
        self.refl[sel] = self.refl[sel] * keep + t.refl * w
        self.alpha[sel] = self.alpha[sel] * keep + t.alpha * w
        self.logz[sel] = self.logz[sel] * keep + math.log(t.z) * w
        self.logc[sel] = self.logc[sel] * keep + math.log(t.c) * w
        tx = tex[sel] if isinstance(tex, np.ndarray) else tex
        self.tex[sel] = self.tex[sel] * keep + tx * w
        if gas:
            self.gas_kind[sel & (f > 0.5)] = gas


def _layer(g: _Grid, top: np.ndarray | float, bottom: np.ndarray | float,
           soft: float = 0.4) -> np.ndarray:
    """Weight of a sheet between depths ``top`` and ``bottom`` along the beam."""
    a = np.clip((g.r - top) / soft + 0.5, 0.0, 1.0)
    b = np.clip((bottom - g.r) / soft + 0.5, 0.0, 1.0)
    return a * b


def _wavy(rng: np.random.Generator, g: _Grid, base: float, amp: float,
          waves: int = 3) -> np.ndarray:
    """A depth that undulates smoothly with the lateral position."""
    out = np.full(g.x.shape[0], float(base))
    xl = g.x[:, -1] / max(float(np.ptp(g.x)), 1.0)
    for _ in range(waves):
        out += amp * rng.uniform(-1, 1) * np.sin(2 * math.pi * rng.uniform(0.3, 2.5) * xl
                                                  + rng.uniform(0, 6.3))
    return out[:, None]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


def _tube_dir(rng: np.random.Generator, inplane: float, elev: float) -> np.ndarray:
    """Unit 3-D direction: in-plane angle ``inplane`` (0 = lateral), elevation
    component ``elev`` in [-1, 1]."""
    e = float(np.clip(elev, -0.995, 0.995))
    s = math.sqrt(1 - e * e)
    return np.array([s * math.cos(inplane), e, s * math.sin(inplane)])


def _paint_tube(med: _Medium, p0: np.ndarray, d: np.ndarray, radius: float,
                length: float, lumen: _Tissue, wall: _Tissue | None = None,
                wall_mm: float = 0.8) -> None:
    if wall is not None:
        med.paint(tube_fraction(med.g, p0, d, radius + wall_mm, length), wall)
    med.paint(tube_fraction(med.g, p0, d, radius, length), lumen)


# ----------------------------------------------------------------------------- lesions
@dataclass
class _Lesion:
    label: str
    blob: _Blob
    outline: float = 1.0  # scale of the outermost painted shell (halo, capsule)
    diameter: float = 0.0


def _harmonics(rng: np.random.Generator, ks: range, amp: float) -> tuple:
    """Margin harmonics ``(order, amplitude, phase)``; the root-sum-square of the
    amplitudes stays about ``amp`` however many orders there are."""
    scale = amp / math.sqrt(max(len(ks), 1)) * 1.5
    return tuple((k, float(rng.uniform(0.3, 1.0) * scale), float(rng.uniform(0, 6.3)))
                 for k in ks)


def _shell(med: _Medium, blob: _Blob, scale: float, t: _Tissue,
           tex: np.ndarray | float = 1.0) -> np.ndarray:
    f = blob_fraction(med.g, blob.scaled(scale))
    med.paint(f, t, tex)
    return f


def _lesion_tex(rng: np.random.Generator, med: _Medium, corr: float, sigma: float) -> np.ndarray:
    return np.exp(sigma * _tissue_field(rng, med.g, corr, corr) - sigma * sigma / 2)


def _cystic(rng: np.random.Generator, med: _Medium, les: _Lesion, wall: float,
            inner: _Tissue = FLUID) -> None:
    """Fluid lesion with an (optional) echogenic wall ``wall`` mm thick."""
    b = les.blob
    if wall > 0:
        s = 1.0 + wall / max(b.a, b.b)
        _shell(med, b, s, _Tissue(1.6, 1.0, 1.76, 1.60))
        les.outline = s
    _shell(med, b, 1.0, inner)


def _paint_hcc(rng: np.random.Generator, med: _Medium, les: _Lesion) -> None:
    b = les.blob
    halo = 1.0 + rng.uniform(0.6, 1.4) / max(b.a, b.b)
    if rng.random() < 0.8:
        _shell(med, b, halo, _Tissue(0.25, 0.8, 1.74, 1.60))
        les.outline = halo
    alpha = rng.uniform(0.2, 0.6)
    if les.diameter < 20 or rng.random() < 0.2:
        tex = _lesion_tex(rng, med, 2.0, 0.15)
        _shell(med, b, 1.0, _Tissue(rng.uniform(0.4, 0.7), alpha, 1.66, 1.56), tex)
        return
    tex = _lesion_tex(rng, med, max(les.diameter / 6, 2.0), 0.45)
    _shell(med, b, 1.0, _Tissue(rng.uniform(0.6, 1.2), alpha, 1.66, 1.56), tex)
    # mosaic: internal nodules with septa, or one nodule in the nodule
    for _ in range(int(rng.integers(1, 4))):
        off = rng.uniform(-0.35, 0.35, 2)
        sub = _Blob(b.cx + off[0] * b.a, b.cy, b.cz + off[1] * b.b, b.a * rng.uniform(0.3, 0.5),
                    b.b * rng.uniform(0.3, 0.5), b.c * 0.5, rng.uniform(0, 3.1),
                    _harmonics(rng, range(2, 4), 0.1))
        med.paint(blob_fraction(med.g, sub.scaled(1.12)), _Tissue(0.3, 0.8, 1.74, 1.60))
        med.paint(blob_fraction(med.g, sub), _Tissue(rng.uniform(0.4, 1.8), alpha, 1.66, 1.56))


def _paint_metastasis(rng: np.random.Generator, med: _Medium, les: _Lesion) -> None:
    b = les.blob
    kind = rng.choice(["target", "hypo", "hyper"], p=[0.45, 0.35, 0.2])
    tex = _lesion_tex(rng, med, 2.0, 0.3)
    if kind == "target":
        _shell(med, b, 1.0, _Tissue(rng.uniform(0.15, 0.35), 0.7, 1.66, 1.57))
        core = b.scaled(rng.uniform(0.5, 0.72), rough=b.rough * 0.5)
        med.paint(blob_fraction(med.g, core), _Tissue(rng.uniform(1.3, 2.2), 0.7, 1.68, 1.57),
                  tex)
        if les.diameter > 25 and rng.random() < 0.4:  # necrotic centre
            med.paint(blob_fraction(med.g, b.scaled(0.22)), FLUID)
    elif kind == "hypo":
        _shell(med, b, 1.0, _Tissue(rng.uniform(0.3, 0.6), 0.7, 1.66, 1.57), tex)
    else:
        if rng.random() < 0.5:
            s = 1.0 + rng.uniform(1.0, 2.5) / max(b.a, b.b)
            _shell(med, b, s, _Tissue(0.25, 0.7, 1.66, 1.57))
            les.outline = s
        _shell(med, b, 1.0, _Tissue(rng.uniform(1.7, 2.5), 0.7, 1.68, 1.57), tex)


def _paint_hemangioma(rng: np.random.Generator, med: _Medium, les: _Lesion) -> None:
    b = les.blob
    t = _Tissue(rng.uniform(1.8, 2.8), rng.uniform(0.25, 0.4), 1.67, 1.56)
    if les.diameter < 28 or rng.random() < 0.3:
        _shell(med, b, 1.0, t, _lesion_tex(rng, med, 1.5, 0.12))
        return
    _shell(med, b, 1.0, t)  # hyperechoic rim around a heterogeneous centre
    inner = b.scaled(rng.uniform(0.6, 0.8), rough=0.15)
    med.paint(blob_fraction(med.g, inner),
              _Tissue(rng.uniform(0.6, 1.3), 0.3, 1.66, 1.56), _lesion_tex(rng, med, 3.0, 0.6))


def _paint_liver_cyst(rng: np.random.Generator, med: _Medium, les: _Lesion) -> None:
    _cystic(rng, med, les, wall=0.0)


def _paint_carcinoma(rng: np.random.Generator, med: _Medium, les: _Lesion) -> None:
    b = les.blob
    if rng.random() < 0.6:  # echogenic halo, ill-defined
        s = 1.0 + rng.uniform(1.0, 2.5) / max(b.a, b.b)
        _shell(med, b.scaled(1.0, rough=b.rough + 0.04), s, _Tissue(2.6, 1.4, 1.62, 1.56))
        les.outline = s
    shadow = rng.uniform(1.4, 2.3) if rng.random() < 0.7 else rng.uniform(0.9, 1.2)
    body = _Tissue(rng.uniform(0.25, 0.5), shadow, 1.64, 1.57)
    ext = max(b.a, b.b)
    for _ in range(int(rng.integers(0, 9))):  # spicules
        ang = rng.uniform(0, 2 * math.pi)
        d = _tube_dir(rng, ang, rng.uniform(-0.3, 0.3))
        p0 = np.array([b.cx, b.cy, b.cz])
        t = body if rng.random() < 0.6 else _Tissue(2.5, 1.5, 1.70, 1.58)
        med.paint(tube_fraction(med.g, p0, d, rng.uniform(0.2, 0.45),
                                ext * rng.uniform(1.2, 1.8)), t)
    _shell(med, b, 1.0, body, _lesion_tex(rng, med, 1.0, 0.35))
    if rng.random() < 0.35:  # microcalcifications
        for _ in range(int(rng.integers(3, 13))):
            off = rng.uniform(-0.6, 0.6, 3)
            dot = _Blob(b.cx + off[0] * b.a, off[1] * b.c + b.cy, b.cz + off[2] * b.b,
                        0.3, 0.3, 0.3)
            med.paint(blob_fraction(med.g, dot), _Tissue(9.0, 2.0, 2.6, 2.0))


def _paint_fibroadenoma(rng: np.random.Generator, med: _Medium, les: _Lesion) -> None:
    b = les.blob
    s = 1.0 + rng.uniform(0.4, 0.9) / max(b.a, b.b)
    _shell(med, b, s, _Tissue(1.6, 1.0, 1.78, 1.60))
    les.outline = s
    _shell(med, b, 1.0, _Tissue(rng.uniform(0.35, 1.1), rng.uniform(0.4, 0.8), 1.62, 1.55),
           _lesion_tex(rng, med, 1.0, 0.15))


def _paint_simple_cyst(rng: np.random.Generator, med: _Medium, les: _Lesion) -> None:
    _cystic(rng, med, les, wall=rng.uniform(0.3, 0.6))


def _paint_other(rng: np.random.Generator, med: _Medium, les: _Lesion) -> None:
    b = les.blob
    sub = les.label  # "other:<kind>" while painting
    if sub.endswith("complicated"):
        if rng.random() < 0.5:
            _cystic(rng, med, les, 0.4, _Tissue(rng.uniform(0.1, 0.3), 0.2, 1.54, 1.53))
        else:  # fluid-debris level: gravity-dependent part echogenic
            _cystic(rng, med, les, 0.4)
            level = b.cz + rng.uniform(-0.2, 0.5) * b.b
            f = blob_fraction(med.g, b) * np.clip((med.g.z - level) / 0.4 + 0.5, 0, 1)
            med.paint(f, _Tissue(rng.uniform(0.5, 0.9), 0.3, 1.58, 1.54))
    elif sub.endswith("lipoma"):
        s = 1.0 + 0.5 / max(b.a, b.b)
        _shell(med, b, s, _Tissue(1.5, 0.8, 1.72, 1.55))
        les.outline = s
        lines = 1.0 + 0.9 * np.clip(np.sin(med.g.z * rng.uniform(1.0, 2.0)
                                           + 0.8 * med.g.noise), 0, 1) ** 16
        _shell(med, b, 1.0, _Tissue(rng.uniform(0.5, 0.7), 0.6, 1.40, 1.46), lines)
    elif sub.endswith("node"):
        _shell(med, b, 1.0, _Tissue(rng.uniform(0.2, 0.4), 0.8, 1.64, 1.56))
        hil = b.scaled(0.5)
        hil.cx += rng.choice([-1, 1]) * 0.3 * b.a * math.cos(b.angle)
        hil.cz += 0.25 * b.b
        med.paint(blob_fraction(med.g, hil), _Tissue(2.2, 0.7, 1.45, 1.47),
                  _lesion_tex(rng, med, 0.8, 0.3))
    else:  # intraductal papilloma in a dilated duct
        d = _tube_dir(rng, b.angle, rng.uniform(-0.3, 0.3))
        for sign in (-1.0, 1.0):
            p0 = np.array([b.cx, b.cy, b.cz]) + sign * d * b.a * 0.8
            _paint_tube(med, p0, sign * d, rng.uniform(0.6, 1.2), rng.uniform(8, 20), FLUID,
                        _Tissue(1.6, 1.0, 1.76, 1.6), 0.3)
        _cystic(rng, med, les, 0.4)
        nod = b.scaled(rng.uniform(0.45, 0.65), harm=_harmonics(rng, range(3, 6), 0.12))
        nod.cz += (b.b - nod.b) * rng.choice([-1, 1]) * 0.8
        med.paint(blob_fraction(med.g, nod), _Tissue(rng.uniform(0.8, 1.3), 0.9, 1.64, 1.56))


PAINTERS: dict[str, Callable[[np.random.Generator, _Medium, _Lesion], None]] = {
    "hcc": _paint_hcc,
    "metastasis": _paint_metastasis,
    "hemangioma": _paint_hemangioma,
    "cyst": _paint_liver_cyst,
    "carcinoma": _paint_carcinoma,
    "fibroadenoma": _paint_fibroadenoma,
    "simple_cyst": _paint_simple_cyst,
    "other": _paint_other,
}


def _lesion_shape(rng: np.random.Generator, label: str, diam: float) -> dict:
    """Aspect ratio, margin harmonics and roughness per class (published shapes)."""
    r = diam / 2
    if label == "carcinoma":
        tall = rng.random() < 0.55
        asp = rng.uniform(0.65, 0.95) if tall else rng.uniform(1.0, 1.5)  # a/b
        return {"a": r * math.sqrt(asp), "b": r / math.sqrt(asp),
                "harm": _harmonics(rng, range(3, int(rng.integers(6, 11))), 0.12),
                "rough": rng.uniform(0.04, 0.1)}
    if label in ("fibroadenoma", "other"):
        asp = rng.uniform(1.3, 2.3)
        return {"a": r * math.sqrt(asp), "b": r / math.sqrt(asp),
                "harm": _harmonics(rng, range(2, 5), 0.06), "rough": 0.0}
    if label in ("cyst", "simple_cyst"):
        asp = rng.uniform(1.0, 1.6)
        return {"a": r * math.sqrt(asp), "b": r / math.sqrt(asp),
                "harm": _harmonics(rng, range(2, 3), 0.03), "rough": 0.0}
    if label == "hemangioma":
        asp = rng.uniform(1.0, 1.5)
        return {"a": r * math.sqrt(asp), "b": r / math.sqrt(asp),
                "harm": _harmonics(rng, range(3, 7), 0.06), "rough": 0.02}
    if label == "metastasis":
        asp = rng.uniform(0.9, 1.3)
        return {"a": r * math.sqrt(asp), "b": r / math.sqrt(asp),
                "harm": _harmonics(rng, range(2, 5), 0.05), "rough": rng.uniform(0.05, 0.14)}
    asp = rng.uniform(0.9, 1.3)  # hcc
    return {"a": r * math.sqrt(asp), "b": r / math.sqrt(asp),
            "harm": _harmonics(rng, range(2, 4), 0.04), "rough": 0.01}


def _draw_classes(rng: np.random.Generator, organ: Organ) -> list[str]:
    n = int(rng.choice([0, 1, 2, 3], p=[0.14, 0.5, 0.24, 0.12]))
    if organ == "liver":
        first = str(rng.choice(LIVER_CLASSES, p=[0.25, 0.2, 0.28, 0.27]))
        out = [first]
        for _ in range(n - 1):
            met = first == "metastasis" and rng.random() < 0.6
            out.append("metastasis" if met else str(rng.choice(LIVER_CLASSES)))
        return out[:n]
    return [str(rng.choice(BREAST_CLASSES)) for _ in range(n)]


def _find_spot(rng: np.random.Generator, g: _Grid, cand: np.ndarray, fit: np.ndarray,
               shape: dict, diam: float, lesions: list[_Lesion]) -> tuple[float, float] | None:
    """A centre from ``cand`` where the lesion lies (90 %) inside ``fit`` and clear of
    the other lesions, or ``None``."""
    for _ in range(25):
        i = int(cand[rng.integers(cand.size)])
        cx, cz = float(g.x.ravel()[i]), float(g.z.ravel()[i])
        ok = all(math.hypot(cx - o.blob.cx, cz - o.blob.cz) > (diam + o.diameter) * 0.6
                 for o in lesions)
        if ok and cz - shape["b"] > 2.0:
            f = blob_fraction(g, _Blob(cx, 0.0, cz, shape["a"], shape["b"], 5.0))
            if (f * fit).sum() >= 0.9 * f.sum():
                return cx, cz
    return None


def _place_lesions(rng: np.random.Generator, med: _Medium, organ: Organ,
                   region: np.ndarray, fit: np.ndarray,
                   offset: float | None) -> list[_Lesion]:
    """Draw lesions centred in ``region`` and lying inside ``fit`` (beam-grid masks),
    paint them, return them.  A lesion that does not fit is shrunk and retried."""
    g = med.g
    lesions: list[_Lesion] = []
    cand = np.flatnonzero(region.ravel())
    big = min(60.0 if organ == "liver" else 35.0, 0.7 * float(g.r.max()))
    if cand.size == 0:
        return lesions
    for label in _draw_classes(rng, organ):
        diam = float(math.exp(rng.uniform(math.log(5.0), math.log(big))))
        c_rel = rng.uniform(0.8, 1.2)
        cy_rel = rng.uniform(-0.75, 0.75) if offset is None else offset
        for _ in range(3):
            shape = _lesion_shape(rng, label, diam)
            spot = _find_spot(rng, g, cand, fit, shape, diam, lesions)
            if spot is not None:
                break
            diam = max(diam * 0.7, 5.0)
        else:
            continue
        cx, cz = spot
        c = diam / 2 * c_rel
        cy = cy_rel * c
        ang = rng.uniform(-0.25, 0.25) if label not in ("hcc", "metastasis") else \
            rng.uniform(0, math.pi)
        les = _Lesion(label, _Blob(cx, cy, cz, shape["a"], shape["b"], c, ang,
                                   shape["harm"], shape["rough"]), 1.0, diam)
        if label == "other":
            les.label = "other:" + str(rng.choice(["complicated", "lipoma", "node", "papilloma"]))
        PAINTERS[label](rng, med, les)
        les.label = label
        lesions.append(les)
    return lesions


# ----------------------------------------------------------------------------- anatomy
def _abdominal_wall(rng: np.random.Generator, med: _Medium, scale: float) -> np.ndarray:
    """Skin, fat, muscle (thickness times ``scale``); returns the liver capsule depth."""
    g = med.g
    skin = rng.uniform(1.5, 2.5)
    fat_b = _wavy(rng, g, skin + scale * rng.uniform(4, 22), 1.5)
    mus_b = fat_b + _wavy(rng, g, scale * rng.uniform(5, 14), 1.0)
    med.paint(_layer(g, -1, skin), SKIN)
    med.paint(_layer(g, skin, fat_b), FAT, np.exp(0.3 * _tissue_field(rng, g, 2.0, 1.0)))
    stria = 1.0 + 0.8 * np.clip(_tissue_field(rng, g, 6.0, 0.4, rng.uniform(-0.2, 0.2)), 0, None)
    med.paint(_layer(g, fat_b, mus_b), MUSCLE, stria)
    return mus_b


def _ribs(rng: np.random.Generator, med: _Medium, depth: np.ndarray, n: int,
          tissue: _Tissue, edge: bool = False) -> None:
    """Rib cross-sections at ``depth``; at the lateral edges of the field when ``edge``."""
    g = med.g
    nl = g.shape[0]
    for _ in range(n):
        line = int(rng.integers(0, nl))
        if edge:
            line = int(rng.choice([rng.integers(0, nl // 6), rng.integers(nl - nl // 6, nl)]))
        k = min(int(depth[min(line, depth.shape[0] - 1), 0] / g.dr), g.shape[1] - 1)
        rib = _Blob(float(g.x[line, k]), 0.0, float(g.z[line, k]), rng.uniform(5, 7),
                    rng.uniform(3.5, 5), 50.0)
        med.paint(blob_fraction(g, rib), tissue)


def _liver_scene(rng: np.random.Generator, med: _Medium, p: _Probe,
                 params: dict[str, float]) -> np.ndarray:
    """Paint the liver view; returns the mask where lesions may be placed."""
    g = med.g
    fatty = rng.random() < 0.2
    cirrh = (not fatty) and rng.random() < 0.2
    params.update(fatty=float(fatty), cirrhotic=float(cirrh))
    if fatty:  # the sonographer turns the far gain up, but not all the way
        params["tgc_alpha"] += 0.15
    cap = _abdominal_wall(rng, med, 0.5 if p.kind == "linear" else 1.0)
    if p.kind == "convex" and rng.random() < 0.4:  # intercostal view
        _ribs(rng, med, cap - 4, int(rng.choice([1, 1, 2])), BONE, edge=True)
    liv = LIVER._replace(refl=rng.uniform(1.5, 2.2), alpha=rng.uniform(0.7, 0.9)) if fatty \
        else LIVER._replace(alpha=rng.uniform(0.4, 0.6))
    corr, sig = (rng.uniform(3, 6), 0.45) if cirrh else (rng.uniform(0.8, 1.5), 0.12)
    tex = np.exp(sig * _tissue_field(rng, g, corr, corr))
    if cirrh:
        cap = cap + np.abs(_wavy(rng, g, 0, 1.2, 6))
        if rng.random() < 0.4:  # ascites between wall and liver
            asc = _wavy(rng, g, rng.uniform(3, 12), 2.0)
            med.paint(_layer(g, cap, cap + asc), FLUID)
            cap = cap + asc
    liver_f = _layer(g, cap, 1e4, 0.5)
    med.paint(liver_f, liv, tex)
    deep = float(p.depth)
    diaph = rng.uniform(0.6, 1.15) * deep if p.kind != "linear" else 2.0 * deep
    xc = rng.uniform(-0.3, 0.3) * float(np.ptp(g.x))
    zd = diaph + rng.uniform(-0.4, 0.8) * ((g.x - xc) ** 2) / max(deep, 40)
    # vessels: hepatic veins converge toward the IVC, portal veins have walls
    ivc = np.array([rng.choice([-1, 1]) * rng.uniform(0.1, 0.5) * float(np.ptp(g.x)), 0.0,
                    diaph - rng.uniform(5, 25)])
    _paint_tube(med, ivc - np.array([0, 40, 0]), _unit(np.array([0.1, 1.0, -0.2])),
                rng.uniform(7, 11), 80, BLOOD)
    for _ in range(int(rng.integers(2, 5))):
        ang = -math.pi / 2 + rng.uniform(-1.1, 1.1) - 0.4 * np.sign(ivc[0])
        d = _tube_dir(rng, ang, rng.uniform(-0.85, 0.85))
        rad = rng.uniform(2.0, 6.0)
        _paint_tube(med, ivc, d, rad, 250, BLOOD)
        mid = ivc + d * rng.uniform(20, 50)
        _paint_tube(med, mid, _tube_dir(rng, ang + rng.uniform(-0.9, 0.9), rng.uniform(-1, 1)),
                    rad * 0.6, 250, BLOOD)
    wall = _Tissue(2.4, 1.0, 1.80, 1.60)
    for _ in range(int(rng.integers(2, 6))):
        pv = np.array([rng.uniform(-0.4, 0.4) * float(np.ptp(g.x)), rng.uniform(-5, 5),
                       rng.uniform(0.35, 0.8) * min(deep, diaph)])
        d = _tube_dir(rng, rng.uniform(0, math.pi), rng.uniform(-1, 1))
        _paint_tube(med, pv - d * 150, d, rng.uniform(1.5, 7.0), 300, BLOOD, wall,
                    rng.uniform(0.6, 1.2))
    extras = rng.random(3) if p.kind != "linear" else np.ones(3)
    taken = np.zeros(g.shape, dtype=bool)  # other organs: no lesion there
    if extras[0] < 0.3:  # gallbladder, sometimes with a stone
        gb = _Blob(rng.uniform(-0.3, 0.3) * float(np.ptp(g.x)), rng.uniform(-3, 3),
                   rng.uniform(0.3, 0.6) * min(deep, diaph), rng.uniform(14, 25),
                   rng.uniform(7, 14), rng.uniform(10, 16), rng.uniform(-0.5, 0.5))
        med.paint(blob_fraction(g, gb.scaled(1.0 + 2.0 / gb.b)), _Tissue(1.8, 1.0, 1.78, 1.6))
        med.paint(blob_fraction(g, gb), FLUID)
        taken |= blob_fraction(g, gb.scaled(1.2)) > 0.02
        if rng.random() < 0.35:
            st = _Blob(gb.cx + rng.uniform(-0.5, 0.5) * gb.a, 0, gb.cz + 0.6 * gb.b,
                       rng.uniform(2.5, 5), rng.uniform(2, 4), 4)
            med.paint(blob_fraction(g, st), BONE._replace(z=4.0, refl=2.0))
    if extras[1] < 0.3:  # kidney deep and lateral
        kd = _Blob(rng.choice([-1, 1]) * rng.uniform(0.15, 0.4) * float(np.ptp(g.x)), 0.0,
                   rng.uniform(0.6, 0.9) * min(deep, diaph), rng.uniform(35, 50),
                   rng.uniform(18, 25), 25, rng.uniform(-0.4, 0.4))
        med.paint(blob_fraction(g, kd.scaled(1.04)), _Tissue(2.0, 1.0, 1.45, 1.47))
        med.paint(blob_fraction(g, kd), _Tissue(0.55, 0.9, 1.63, 1.56))
        taken |= blob_fraction(g, kd.scaled(1.15)) > 0.02
        med.paint(blob_fraction(g, kd.scaled(0.5, rough=0.2)), _Tissue(1.7, 1.0, 1.45, 1.47),
                  np.exp(0.3 * _tissue_field(rng, g, 3.0, 3.0)))
    if extras[2] < 0.3:  # liver edge with bowel gas beyond it
        side = rng.choice([-1, 1])
        x_edge = side * rng.uniform(0.1, 0.35) * float(np.ptp(g.x))
        bend = rng.uniform(0.005, 0.02) * (g.z - rng.uniform(0.2, 0.6) * deep) ** 2
        edge_f = np.clip((side * (g.x - x_edge) + bend) / 1.0 + 0.5, 0, 1)
        med.paint(edge_f * liver_f, _Tissue(1.4, 0.8, 1.42, 1.47),
                  np.exp(0.5 * _tissue_field(rng, g, 2.0, 2.0)))
        bowel = _Blob(x_edge + side * rng.uniform(10, 25), 0.0, rng.uniform(0.3, 0.6) * deep,
                      rng.uniform(8, 15), rng.uniform(6, 10), 15)
        med.paint(blob_fraction(g, bowel.scaled(1.3)), _Tissue(0.7, 1.0, 1.66, 1.57))
        med.paint(blob_fraction(g, bowel.scaled(0.8, rough=0.04)), GAS, gas=2)
    region = (liver_f > 0.99) & ~taken & (g.z < zd - 10) & (g.r > cap + 5)
    if extras[2] < 0.3:
        region &= edge_f < 0.01
    # diaphragm and lung (the mirror image is added during rendering)
    med.paint(np.clip((g.z - zd) / 0.6 + 0.5, 0, 1), MUSCLE)
    med.paint(np.clip((g.z - zd - rng.uniform(2, 4)) / 0.6 + 0.5, 0, 1), GAS, gas=1)
    return region


def _breast_scene(rng: np.random.Generator, med: _Medium, p: _Probe,
                  params: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Paint the breast view; returns where lesion centres may lie and the breast
    tissue (skin to pectoralis) a lesion must lie in."""
    g = med.g
    skin = rng.uniform(1.4, 2.4)
    med.paint(_layer(g, -1, 0.25, 0.2), _Tissue(0.0, 0.0, 1.50, 1.50))  # gel / probe
    med.paint(_layer(g, 0.25, skin, 0.15), SKIN)
    d = p.depth
    b1 = _wavy(rng, g, skin + rng.uniform(3, 0.25 * d), 1.2)
    b2 = b1 + _wavy(rng, g, rng.uniform(0.25, 0.6) * d, 1.5)
    b3 = b2 + _wavy(rng, g, rng.uniform(1.5, 6), 0.4, 2)
    b4 = b3 + _wavy(rng, g, rng.uniform(5, 12), 0.4, 2)
    params["gland_mm"] = float(np.mean(b2 - b1))
    fat_tex = np.exp(0.25 * _tissue_field(rng, g, 1.5, 1.5))
    med.paint(_layer(g, skin, b1, 0.4), FAT, fat_tex)
    gl = GLAND._replace(refl=rng.uniform(1.5, 2.3))
    gtex = np.exp(0.55 * _tissue_field(rng, g, rng.uniform(2, 4), 0.7, rng.uniform(-0.2, 0.2)))
    med.paint(_layer(g, b1, b2, 0.8), gl, gtex)
    med.paint(_layer(g, b2, b3, 0.5), FAT, fat_tex)
    ang = rng.uniform(-0.35, 0.35)
    stria = 1.0 + 1.5 * np.clip(np.sin((g.z * math.cos(ang) - g.x * math.sin(ang))
                                       * rng.uniform(2.5, 4.0) + 0.6 * g.noise), 0, 1) ** 12
    stria = 1.0 + (stria - 1.0) * np.exp(0.5 * _tissue_field(rng, g, 4.0, 1.0))
    med.paint(_layer(g, b3, b4, 0.4), MUSCLE, stria)
    width = float(np.ptp(g.x))
    # fat lobules (hypo/iso-echoic ovals, NOT lesions) in the fat and the gland
    for _ in range(int(rng.integers(3, 9))):
        line = int(rng.integers(0, g.shape[0]))
        top, bot = float(b1[line, 0]), float(b2[line, 0])
        top = max(top, skin + 2.5)
        zc = rng.uniform(skin + 2, top) if rng.random() < 0.5 else rng.uniform(top, max(bot, top))
        lob = _Blob(float(g.x[line, 0]), rng.uniform(-3, 3), zc, rng.uniform(3, 9),
                    rng.uniform(1.5, 4.5), rng.uniform(3, 8), rng.uniform(-0.3, 0.3),
                    _harmonics(rng, range(2, 4), 0.08))
        med.paint(blob_fraction(g, lob), FAT._replace(refl=rng.uniform(0.35, 0.6)), fat_tex)
    # Cooper's ligaments: thin bright arcs from the gland surface up toward the skin
    for _ in range(int(rng.integers(1, 5))):
        x0 = rng.uniform(-0.5, 0.5) * width
        line = int(np.argmin(np.abs(g.x[:, 0] - x0)))
        top = float(b1[line, 0])
        half = rng.uniform(3, 8)
        apex = rng.uniform(max(skin + 0.5, top - 8), top)
        curve = apex + (top - apex) * ((g.x - x0) / half) ** 2
        lig = np.exp(-(((g.z - curve) / rng.uniform(0.1, 0.2)) ** 2)) * (np.abs(g.x - x0) < half)
        med.paint(0.7 * lig * (g.z < top + 1), FIBROUS._replace(c=1.5))
    # ducts: thin anechoic tubes, mostly in the plane, some cut across
    for _ in range(int(rng.integers(1, 5))):
        line = int(rng.integers(0, g.shape[0]))
        zc = rng.uniform(float(b1[line, 0]), float(b2[line, 0]))
        dd = _tube_dir(rng, rng.uniform(-0.3, 0.3), rng.uniform(-0.9, 0.9))
        ln = rng.uniform(12, 35)
        p0 = np.array([float(g.x[line, 0]), 0.0, zc]) - dd * ln / 2
        _paint_tube(med, p0, dd, rng.uniform(0.3, 0.9), ln, FLUID._replace(refl=0.1),
                    _Tissue(1.9, 1.0, 1.64, 1.56), 0.25)
    # ribs and pleura when deep enough
    if float(np.mean(b4)) + 6 < d:
        if rng.random() < 0.7:
            cart = _Tissue(0.2, 4.0, 1.85, 1.70) if rng.random() < 0.5 else BONE
            _ribs(rng, med, b4 + 5, int(rng.integers(1, 3)), cart)
        pleura = np.mean(b4) + rng.uniform(6, 12) + 0.2 * (b4 - np.mean(b4))
        med.paint(_layer(g, pleura, 1e4, 0.3), GAS, gas=1)
    centres = (g.r > skin + 3) & (g.r < b2)
    return centres, (g.r > skin + 1) & (g.r < b3 + 1)


# ----------------------------------------------------------------------------- rendering
def _speckle(rng: np.random.Generator, g: _Grid, p: _Probe, order: int) -> np.ndarray:
    """Unit mean-square speckle intensity, correlated as the local resolution cell."""
    nodes = np.linspace(0.0, p.depth, 4)
    lat, ax = _resolution(p, nodes)
    ns = g.shape[1]
    rr = g.r[0]
    out = np.zeros(g.shape)
    wsum = np.zeros(ns)
    step = nodes[1] - nodes[0]
    for i, r0 in enumerate(nodes):
        w = np.clip(1.0 - np.abs(rr - r0) / step, 0.0, 1.0)
        k = np.flatnonzero(w > 0)
        lo, hi = max(k[0] - 8, 0), min(k[-1] + 9, ns)
        ls = float(np.interp(r0, rr, g.lat_step[0]))
        sig = (lat[i] / 2.355 / ls, ax[i] / 2.355 / g.dr)
        inten = np.zeros((g.shape[0], hi - lo))
        for _ in range(order):
            f = ndimage.gaussian_filter(rng.standard_normal((g.shape[0], hi - lo)), sig)
            inten += (f / (f.std() + 1e-12)) ** 2
        out[:, lo:hi] += w[None, lo:hi] * inten / order
        wsum[lo:hi] += w[lo:hi]
    return out / np.maximum(wsum, 1e-6)[None, :]


def _psf_blur(g: _Grid, p: _Probe, img: np.ndarray) -> np.ndarray:
    lat, ax = _resolution(p, np.array([p.focus]))
    ls = float(np.interp(p.focus, g.r[0], g.lat_step[0]))
    return ndimage.gaussian_filter(img, (float(lat[0]) / 2.355 / ls, float(ax[0]) / 2.355 / g.dr))


def _propagate(rng: np.random.Generator, med: _Medium, p: _Probe,
               params: dict[str, float]) -> np.ndarray:
    """Echo amplitude on the beam grid after ray casting along every scan line."""
    g = med.g
    dlz = np.diff(med.logz, axis=1, prepend=med.logz[:, :1])
    dlat = np.gradient(med.logz, axis=0) / g.lat_step
    grad_r = dlz / g.dr
    cos_i = np.abs(grad_r) / (np.hypot(grad_r, dlat) + 1e-9)
    refl_coef = np.abs(np.tanh(dlz / 2.0))
    specular = refl_coef * cos_i ** params["spec_power"]
    # refraction: beyond the critical angle of a speed step the beam is lost
    dlc_r = np.gradient(med.logc, axis=1) / g.dr
    dlc_l = np.gradient(med.logc, axis=0) / g.lat_step
    sin_i = np.abs(dlc_l) / (np.hypot(dlc_r, dlc_l) + 1e-9)
    crit = np.clip((sin_i - 0.94) / 0.04, 0.0, 1.0)
    loss = (2 * med.alpha * p.freq * g.dr / 10.0) / 8.686  # round-trip nepers per sample
    loss = loss - 2.0 * np.log(np.clip(1.0 - refl_coef ** 2, 1e-4, 1.0))
    # the speed step actually crossed along the ray, lost where the incidence is
    # beyond the critical angle (a vessel running along the beam casts nothing)
    refr = ndimage.gaussian_filter1d(np.abs(dlc_r) * crit, 1.5, axis=0)
    loss = loss + params["refraction"] * refr * g.dr
    cum = np.cumsum(loss, axis=1) - loss
    trans = np.exp(-cum)
    speck = _speckle(rng, g, p, int(params["speckle_order"]))
    echo = med.refl * med.tex * np.sqrt(speck)
    spec = _psf_blur(g, p, specular) * params["spec_gain"] * (0.5 + 0.5 * np.sqrt(speck))
    amp = (echo + spec) * trans
    amp = _gas_artefacts(med, amp, spec * trans, p)
    # time-gain compensation assumes an average attenuation, with slider wiggles
    r = g.r[0]
    tgc_db = 2 * params["tgc_alpha"] * p.freq * r / 10.0
    tgc_db = tgc_db + np.interp(r, np.linspace(0, p.depth, 8), rng.normal(0, 1.8, 8))
    amp = amp * 10 ** (tgc_db / 20.0)[None, :]
    if p.depth > 60:
        amp = _mirror(med, amp, rng.uniform(0.25, 0.7))
    noise_db = tgc_db - tgc_db.max()
    noise = params["noise"] * 10 ** (noise_db / 20.0)[None, :] * np.sqrt(
        rng.exponential(1.0, g.shape))
    if p.kind != "linear":  # element directivity darkens the fan edges
        th = np.linspace(-1, 1, g.shape[0])[:, None]
        amp = amp * (1.0 - 0.25 * th ** 4)
    return amp + noise


def _first_gas(med: _Medium) -> tuple[np.ndarray, np.ndarray]:
    gas = med.gas_kind > 0
    has = gas.any(axis=1)
    k = np.where(has, np.argmax(gas, axis=1), -1)
    kind = np.where(has, med.gas_kind[np.arange(gas.shape[0]), np.maximum(k, 0)], 0)
    return k, kind


def _mirror(med: _Medium, amp: np.ndarray, gain: float) -> np.ndarray:
    """Mirror image of the liver beyond the diaphragm (a strong specular reflector)."""
    ns = amp.shape[1]
    k, kind = _first_gas(med)
    idx = np.arange(ns)[None, :]
    kk = k[:, None]
    src = 2 * kk - idx
    ok = (kind[:, None] == 1) & (idx > kk + 2) & (src >= 0)
    mirrored = np.take_along_axis(amp, np.clip(src, 0, ns - 1), axis=1)
    fade = np.clip(1.0 - (idx - kk) / (0.8 * np.maximum(kk, 1)), 0.0, 1.0)
    return np.where(ok, amp + gain * mirrored * fade, amp)


def _gas_artefacts(med: _Medium, amp: np.ndarray, spec: np.ndarray, p: _Probe) -> np.ndarray:
    """A-lines below the pleura, ring-down and a dirty shadow below bowel gas."""
    g = med.g
    ns = g.shape[1]
    k, kind = _first_gas(med)
    idx = np.arange(ns)[None, :]
    lines = np.arange(g.shape[0])
    out = amp.copy()
    peak = spec[lines, np.maximum(k, 0)]
    bowel = ((kind == 2) & (k >= 0))[:, None] & (idx > k[:, None])
    haze = 0.12 * peak[:, None] * np.exp(-(idx - k[:, None]) * g.dr / 25.0) * np.exp(g.noise)
    out = np.where(bowel, out + haze, out)
    for n in range(1, 10):
        for code, step, decay in ((1, k, 0.5), (2, np.full_like(k, max(int(1.8 / g.dr), 2)),
                                                0.85)):
            if code == 1 and p.depth > 60:
                continue
            pos = k + n * step
            use = (kind == code) & (k >= 0) & (pos < ns) & (pos > k)
            if code == 1:
                use &= n < 4
            if use.any():
                out[lines[use], pos[use]] += peak[use] * decay ** n * 3.0
    ring = ndimage.gaussian_filter1d(out - amp, 1.2, axis=1) * 1.5
    return amp + ring


def _layout(p: _Probe, rng: np.random.Generator, rows: int, cols: int) -> dict[str, float]:
    """Pixel size and the position of the scan area in the frame."""
    if p.kind == "linear":
        height, width, z_top = p.depth, p.width, 0.0
    else:
        rr = p.radius + p.depth
        z_top = p.radius * math.cos(p.half_angle) - p.radius
        height = p.depth - z_top
        width = 2 * rr * math.sin(p.half_angle)
    fill = rng.uniform(0.72, 0.95)
    top = rng.uniform(0.02, 0.09) * rows
    pmm = max(height / (fill * (rows - top - 2)), width / (rng.uniform(0.6, 0.95) * cols))
    w_px = width / pmm
    left = rng.uniform(0.1, 0.9) * (cols - w_px - 4) + 2
    return {"pixel_mm": pmm, "top": top, "cx": left + w_px / 2, "z_top": z_top}


def _display_coords(p: _Probe, g: _Grid, lay: dict[str, float], rows: int,
                    cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Beam-grid (line, sample) coordinates of every display pixel and the scan mask."""
    pmm = lay["pixel_mm"]
    yy, xx = np.mgrid[0:rows, 0:cols].astype(float)
    x = (xx + 0.5 - lay["cx"]) * pmm
    z = lay["z_top"] + (yy + 0.5 - lay["top"]) * pmm
    nl, ns = g.shape
    if p.kind == "linear":
        li = (x + p.width / 2) / (p.width / (nl - 1))
        sa = z / g.dr
    else:
        rho = np.hypot(x, z + p.radius)
        th = np.arctan2(x, z + p.radius)
        li = (th + p.half_angle) / (2 * p.half_angle / (nl - 1))
        sa = (rho - p.radius) / g.dr
    mask = (li >= 0) & (li <= nl - 1) & (sa >= 0) & (sa <= ns - 1)
    return li, sa, mask


def _to_display(img: np.ndarray, li: np.ndarray, sa: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape)
    out[mask] = ndimage.map_coordinates(img, [li[mask], sa[mask]], order=1, mode="nearest")
    return out


def _postprocess(rng: np.random.Generator, amp: np.ndarray, mask: np.ndarray,
                 params: dict[str, float]) -> np.ndarray:
    """Log compression, grey map, edge enhancement or speckle reduction, quantisation."""
    db = 20 * np.log10(amp + 1e-6)
    dr = params["dynamic_range_db"]
    v = (db + dr * params["tissue_level"]) / dr
    v = np.clip(v, 0.0, 1.0)
    smooth = ndimage.gaussian_filter(v, 1.0)
    mode = params["post_mode"]
    k = params["post_strength"]
    if mode == 0:  # edge enhancement (unsharp mask)
        v = v + k * (v - ndimage.gaussian_filter(v, 2.0))
    elif mode == 1:  # speckle reduction: pull toward a smoothed copy, keep edges
        edge = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
        w = k * np.exp(-edge / 0.25)
        v = v * (1 - w) + ndimage.gaussian_filter(v, 1.6) * w
    else:  # persistence-like mild smoothing
        v = (1 - k) * v + k * smooth
    v = np.clip(v, 0.0, 1.0)
    gam = params["grey_gamma"]
    s_curve = params["grey_s"]
    v = v ** gam
    v = v + s_curve * v * (1 - v) * (2 * v - 1)
    out = np.clip(v * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out[~mask] = 0
    return out


# ----------------------------------------------------------------------------- truth
def _rose(a: np.ndarray, b: np.ndarray, noise: float, cells: float) -> float:
    """Rose index of region ``a`` against ``b`` (medians); 0 under
    :data:`MIN_CONTRAST_GREY`."""
    if a.size < 4 or b.size < 4:
        return 0.0
    diff = abs(float(np.median(a)) - float(np.median(b)))
    if diff < MIN_CONTRAST_GREY:
        return 0.0
    return diff / noise * math.sqrt(max(cells, 1.0))


def lesion_visibility(frame: np.ndarray, mask: np.ndarray, scan: np.ndarray,
                      others: np.ndarray, cell_px: float, pixel_mm: float) -> float:
    """Rose index of a lesion on a ``uint8`` frame; ``0`` when it cannot be seen.

    ``mask`` is the lesion outline on the frame, ``scan`` the scan area, ``others``
    the outlines of the other lesions and ``cell_px`` the speckle cell area in
    pixels at the lesion.  The surroundings are a ring 2-6 mm (and at least half a
    radius) around the lesion inside the scan area, away from other lesions and
    not behind the lesion (its posterior shadow or enhancement is not its
    surroundings).  The index is ``|median_a - median_b| / spread * sqrt(area_a /
    cell_px)`` (spread: 1.4826 x the ring's median absolute deviation, robust to
    anatomy in the ring), the largest of: the whole lesion against the ring; its core
    against its own margin band (a halo or rim on an isoechoic body); a 1 mm band
    just inside its outline against a 1 mm band just outside (a capsule or wall),
    counted at half weight.  A difference under :data:`MIN_CONTRAST_GREY` grey
    levels does not count.  The index is zero when less than
    :data:`MIN_VISIBLE_MM` (equivalent diameter) of the lesion lies in the scan
    area or when the surroundings are dark (shadow, noise floor).
    """
    inside = mask & scan
    area = int(inside.sum())
    if area == 0 or 2 * math.sqrt(area / math.pi) * pixel_mm < MIN_VISIBLE_MM:
        return 0.0
    rad = math.sqrt(area / math.pi)
    gap = 2.0 / pixel_mm
    width = max(4.0 / pixel_mm, rad * 0.5, 2.0)
    rows, cols = np.nonzero(inside)
    pad = int(gap + width) + 2
    r0, r1 = max(rows.min() - pad, 0), rows.max() + pad + 1
    c0, c1 = max(cols.min() - pad, 0), cols.max() + pad + 1
    crop = (slice(r0, r1), slice(c0, c1))
    m, sc, ot = mask[crop], scan[crop], others[crop]
    f = frame[crop].astype(float)
    d_out = ndimage.distance_transform_edt(~m)
    d_in = ndimage.distance_transform_edt(m)
    rr = np.arange(m.shape[0])[:, None] + r0
    cc = np.arange(m.shape[1])[None, :] + c0
    behind = (rr > rows.mean()) & (cc >= cols.min()) & (cc <= cols.max())
    free = sc & ~ot & ~behind
    ring = free & (d_out > gap) & (d_out <= gap + width)
    if ring.sum() < 20:
        return 0.0
    m_in = m & sc
    # robust spread: anatomy in the ring (a vessel, a wall) is not speckle noise
    med_ring = float(np.median(f[ring]))
    s_ring = max(1.4826 * float(np.median(np.abs(f[ring] - med_ring))), 4.0)
    if med_ring < MIN_RING_GREY and float(f[m_in].mean()) < MIN_RING_GREY + 10:
        return 0.0
    cell = max(cell_px, 1.0)
    core = m_in & (d_in > max(rad * 0.35, 1.0))
    band = m_in & ~core
    edge = 1.0 / pixel_mm
    inner = m_in & (d_in <= edge)
    outer = free & (d_out <= edge)
    return max(_rose(f[m_in], f[ring], s_ring, area / cell),
               _rose(f[core], f[band], s_ring, core.sum() / cell),
               0.5 * _rose(f[inner], f[outer], s_ring, inner.sum() / cell))


# ----------------------------------------------------------------------------- annotations
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _annotate(rng: np.random.Generator, frame: np.ndarray, p: _Probe, lay: dict[str, float],
              rows: int, cols: int, boxes: list[BoundingBox], params: dict[str, float]) -> None:
    """Burn in text, depth scale, focus marker, body marker and sometimes calipers."""
    img = Image.fromarray(frame)
    dr_ = ImageDraw.Draw(img)
    fs = int(rng.integers(10, 15))
    font = _font(fs)
    grey = int(rng.integers(170, 256))
    names = {"convex": "C5-1", "sector": "P4-2", "linear": "L12-5"}
    text = [f"{names[p.kind]}  {p.freq:.1f}MHz", f"D {p.depth / 10:.1f}cm",
            f"G {int(params['gain'])}  DR {int(params['dynamic_range_db'])}",
            f"FR {int(rng.integers(12, 40))}Hz"]
    if rng.random() < 0.5:
        text.append(f"MI {rng.uniform(0.6, 1.4):.1f} TIs {rng.uniform(0.1, 1.0):.1f}")
    x0 = 4 if rng.random() < 0.6 else cols - 7 * fs - 4
    for i, t in enumerate(text):
        dr_.text((x0, 4 + i * (fs + 2)), t, fill=grey, font=font)
    pmm, top = lay["pixel_mm"], lay["top"]
    # depth scale beside the scan area with 1 cm ticks
    half_w = (p.width / 2 if p.kind == "linear" else
              (p.radius + p.depth) * math.sin(p.half_angle)) / pmm
    sx = int(min(lay["cx"] + half_w + 8, cols - 12)) if rng.random() < 0.7 else \
        int(max(lay["cx"] - half_w - 10, 12))
    for cm in range(int(p.depth // 10) + 1):
        y = int(top + (cm * 10 - lay["z_top"]) / pmm)
        if y >= rows:
            break
        ln = 6 if cm % 5 == 0 else 3
        dr_.line([(sx, y), (sx + ln, y)], fill=grey)
        if cm % 5 == 0 and cm > 0:
            dr_.text((sx + 8, y - fs // 2), str(cm), fill=grey, font=font)
    fy = int(top + (p.focus - lay["z_top"]) / pmm)
    dr_.polygon([(sx - 6, fy - 4), (sx - 6, fy + 4), (sx - 1, fy)], fill=grey)
    # body marker pictogram
    bx, by = int(rng.uniform(10, 40)), int(rows - rng.uniform(40, 60))
    if params["organ_breast"]:
        dr_.ellipse([bx, by, bx + 30, by + 30], outline=grey)
        dr_.ellipse([bx + 13, by + 13, bx + 17, by + 17], outline=grey)
    else:
        dr_.rounded_rectangle([bx, by, bx + 24, by + 34], radius=8, outline=grey)
    a = rng.uniform(0, math.pi)
    dr_.line([(bx + 15 - 9 * math.cos(a), by + 15 - 9 * math.sin(a)),
              (bx + 15 + 9 * math.cos(a), by + 15 + 9 * math.sin(a))], fill=255, width=2)
    if boxes and rng.random() < 0.5:  # calipers across a lesion with a readout
        b = boxes[int(rng.integers(len(boxes)))]
        yc = (b.y0 + b.y1) / 2
        for xc in (b.x0, b.x1):
            dr_.line([(xc - 4, yc), (xc + 4, yc)], fill=255)
            dr_.line([(xc, yc - 4), (xc, yc + 4)], fill=255)
        dr_.text((x0, rows - fs - 6), f"D1 {b.width * pmm / 10:.2f} cm", fill=grey, font=font)
    frame[:] = np.asarray(img)


# ----------------------------------------------------------------------------- main
def _draw_probe(rng: np.random.Generator, organ: Organ) -> _Probe:
    u = rng.random()
    if organ == "liver":
        kind = "convex" if u < 0.7 else ("sector" if u < 0.85 else "linear")
    else:
        kind = "linear" if u < 0.85 else "convex"
    if kind == "linear":
        depth = rng.uniform(25, 60) if organ == "breast" else rng.uniform(40, 80)
        freq = rng.uniform(7, 15) if organ == "breast" else rng.uniform(5, 9)
        radius, half, width = 0.0, 0.0, rng.uniform(35, 50)
    elif kind == "sector":
        depth, freq = rng.uniform(120, 200), rng.uniform(2.0, 4.0)
        radius, half, width = rng.uniform(1, 4), rng.uniform(0.5, 0.78), 0.0
    elif organ == "liver":
        depth, freq = rng.uniform(120, 220), rng.uniform(2.0, 5.0)
        radius, half, width = rng.uniform(40, 65), rng.uniform(0.5, 0.7), 0.0
    else:
        depth, freq = rng.uniform(35, 65), rng.uniform(5, 9)
        radius, half, width = rng.uniform(15, 40), rng.uniform(0.35, 0.6), 0.0
    focus = rng.uniform(0.3, 0.7) * depth
    elev = rng.uniform(0.8, 1.5) if organ == "liver" and kind != "linear" else \
        rng.uniform(0.35, 0.75)
    return _Probe(kind, depth, freq, radius, half, width, focus,
                  rng.uniform(0.3, 0.6) * depth, elev)


def _draw_settings(rng: np.random.Generator, p: _Probe, organ: Organ) -> dict[str, float]:
    return {
        "depth_mm": p.depth, "freq_mhz": p.freq, "radius_mm": p.radius,
        "probe_kind": float(["convex", "sector", "linear"].index(p.kind)),
        "elev_sigma_mm": p.elev_sigma, "focus_mm": p.focus,
        "dynamic_range_db": rng.uniform(48, 72), "tissue_level": rng.uniform(0.5, 0.66),
        "gain": float(rng.integers(40, 80)),
        "tgc_alpha": rng.uniform(0.45, 0.6) if organ == "liver" else rng.uniform(0.6, 0.85),
        "spec_gain": rng.uniform(10, 18), "spec_power": rng.uniform(2, 5),
        "refraction": rng.uniform(8, 16), "noise": rng.uniform(0.01, 0.04),
        "speckle_order": float(rng.choice([2, 2, 3, 4])),
        "post_mode": float(rng.integers(0, 3)), "post_strength": rng.uniform(0.1, 0.6),
        "grey_gamma": rng.uniform(0.8, 1.3), "grey_s": rng.uniform(0.0, 0.8),
        "organ_breast": float(organ == "breast"),
    }


def generate_volume_slice(organ: Organ, seed: int, rows: int = 480, cols: int = 640, *,
                          annotations: bool | None = None,
                          elevation_offset: float | None = None) -> PhantomSample:
    """Render one B-mode still of a liver or breast tissue volume.

    Parameters
    ----------
    organ:
        ``"liver"`` or ``"breast"``.
    seed:
        Everything is drawn from this seed; the same seed gives the same image.
    rows, cols:
        Frame size in pixels.
    annotations:
        Burn in annotations; ``None`` draws it (about 60 % of images).
    elevation_offset:
        Place every lesion's centre this fraction of its elevational semi-axis
        away from the image plane (``0`` = cut through the centre) instead of the
        drawn offset; the rest of the scene is unchanged.

    Returns
    -------
    PhantomSample
        One frame, the visible lesions' boxes, the labels of all placed lesions.
    """
    if organ not in ("liver", "breast"):
        raise ValueError(f"Unknown organ {organ!r}.")
    rng = np.random.default_rng(seed)
    p = _draw_probe(rng, organ)
    params = _draw_settings(rng, p, organ)
    lay = _layout(p, rng, rows, cols)
    pmm = lay["pixel_mm"]
    g = _beam_grid(p, pmm)
    # anatomy and lesion RNG streams are separate so that forcing the lesion offset
    # does not change the scene
    scene_rng = np.random.default_rng([seed, 1])
    les_rng = np.random.default_rng([seed, 2])
    g.noise = _tissue_field(scene_rng, g, 2.0, 2.0)
    base = LIVER if organ == "liver" else FAT
    med = _Medium(g, base)
    if organ == "liver":
        region = _liver_scene(scene_rng, med, p, params)
        lesions = _place_lesions(les_rng, med, organ, region, region, elevation_offset)
    else:
        centres, fit = _breast_scene(scene_rng, med, p, params)
        lesions = _place_lesions(les_rng, med, organ, centres, fit, elevation_offset)
    amp = _propagate(np.random.default_rng([seed, 3]), med, p, params)
    li, sa, scan = _display_coords(p, g, lay, rows, cols)
    frame = _postprocess(rng, _to_display(amp, li, sa, scan), scan, params)
    outlines = []
    for les in lesions:
        f = _to_display(blob_fraction(g, les.blob.scaled(les.outline)), li, sa, scan)
        peak = float(f.max())
        outlines.append(f > max(0.2, 0.5 * peak) if peak > 0 else f > 1.0)
    truths: list[LesionTruth] = []
    for i, (les, m) in enumerate(zip(lesions, outlines, strict=True)):
        others = np.zeros_like(m)
        for j, o in enumerate(outlines):
            if j != i:
                others |= o
        z = les.blob.cz
        lat, ax = _resolution(p, np.array([z - lay["z_top"]]))
        cell = float(lat[0] * ax[0]) / pmm ** 2
        if lesion_visibility(frame, m, scan, others, cell, pmm) >= MIN_ROSE:
            vis = m & scan
            truths.append(LesionTruth(i, les.label, BoundingBox.of_mask(vis), int(vis.sum())))
    draw = rng.random() < 0.6 if annotations is None else annotations
    if draw:
        _annotate(rng, frame, p, lay, rows, cols, [t.box for t in truths], params)
    ys, xs = np.nonzero(scan)
    scan_box = BoundingBox(float(xs.min()), float(ys.min()), float(xs.max() + 1),
                           float(ys.max() + 1))
    params["annotated"] = float(draw)
    params["n_lesions"] = float(len(lesions))
    for i, les in enumerate(lesions):
        params[f"lesion{i}_mm"] = les.diameter
        params[f"lesion{i}_elev_offset"] = les.blob.cy / les.blob.c
    return PhantomSample(organ=organ, seed=seed, frames=frame[None], truths=[truths],
                         labels=[les.label for les in lesions], scan_box=scan_box,
                         pixel_mm=pmm, params=params)
