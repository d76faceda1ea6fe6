"""Statistical display-space B-mode phantom: Nakagami speckle on a tissue label map.

This generator does not simulate wave propagation.  It follows the statistical
display-space models of speckle-tracking and segmentation research: every
tissue is a region of a label map with a local echo-amplitude statistic, and
the artefacts of a B-mode scanner are applied as explicit gain maps.

Model
-----
1. **Probe and screen.**  A probe kind is drawn (liver: convex 70 %, sector
   15 %, linear 15 %; breast: linear 82 %, convex 10 %, sector 8 %).  The field
   of view (FOV) is placed on a black screen with random margins (top 5-13 %,
   bottom 2-7 %, left and right 3-22 % of the screen), so the image is often
   off-centre; in 12 % of images a read zoom of 1.25-1.8 crops the FOV by the
   image area, and 25 % of sector images are a narrow (30-50 degree) sector.
2. **Beam grid.**  All tissue is modelled on the display's own depth x lateral
   grid (depth from the probe surface x beam angle for convex and sector
   probes, x position for linear probes), sampled at 0.9 display pixel.  Each
   grid sample knows its physical position in mm, so anatomy is drawn with
   physical shapes and artefacts run along the beam lines (grid columns).
3. **Label map and anatomy.**  Layers are smooth random curves (sums of
   low-frequency sinusoids); organs, vessels and lesions are random
   Fourier-descriptor contours ``r(phi) = R (1 + sum_k a_k cos(k phi + p_k))``,
   with added narrow radial spikes for spiculated margins.  Liver: skin,
   subcutaneous fat, muscle, capsule, parenchyma (normal 55 %, attenuation
   0.45-0.6 dB/cm/MHz; fatty 25 %, +4 to +10 dB, attenuation 0.7-1.0 of which
   the TGC compensates only 75-90 %; coarse/cirrhotic 20 %,
   Nakagami m 0.4-0.75 with 2-5 mm nodular modulation), portal veins (bright
   walls) and hepatic veins along the plane, vessel cross-sections, the
   diaphragm (bright, angle-dependent curved line with a mirror image or lung
   behind it), a gallbladder (20 %), rib shadows (45 % of convex/sector views)
   and bowel-gas shadows with ring-down (25 %).  Breast: double skin line,
   subcutaneous fat lobules separated by Cooper's ligaments (zero crossings of
   a smooth random field), glandular layer with fibrous streaks and fat
   islands, retromammary fat, striated pectoral muscle, ribs (bone with full
   shadow or cartilage with weak shadow) and the pleura with A-line
   reverberations.
4. **Echo statistics.**  Each tissue sets a mean echo power Omega (dB), a
   Nakagami shape m (0.3-1.5: pre-Rayleigh clustered to post-Rayleigh) and an
   attenuation coefficient.  Omega and m vary slowly in space (correlated
   Gaussian fields, 1-8 mm).  The speckle is complex Gaussian noise filtered
   in the Fourier domain with an anisotropic Gaussian kernel per depth band
   (4 bands blended with exact variance normalisation); the kernel's
   full-width-at-half-maximum is the speckle grain: axially
   ``0.6-1.0 x 1.54/f`` mm clipped to 0.2-0.8 mm, laterally
   ``lambda F# (0.9-1.3)`` at the focus, growing away from it with the depth
   of field ``7 lambda F#^2`` and clipped to 0.5-2.5 mm.  The intensity of the
   filtered field, exponential with mean 1, is mapped through the exact
   Gamma quantile (a lookup table) to a Nakagami amplitude of shape m.
5. **Artefacts.**  Attenuation is integrated along every beam line (round
   trip, ``2 f sum alpha dz``), blurred laterally by the beam width at that
   depth, and compensated by a TGC that assumes the organ's attenuation
   (liver parenchyma, breast 0.9 dB/cm/MHz; 0.85-1.1 of it) and has 8
   sliders with +-1.5 dB errors and, in 40 % of images, one slider off by
   3-8 dB: this yields posterior enhancement behind
   fluid, shadowing behind carcinomas, ribs and gas, deep darkening of fatty
   livers and TGC bands.  Lateral refraction shadows (4-15 dB, 0.5-1.5 mm
   wide) run down the beam lines tangent to curved lesion walls.  Specular
   walls are bright where the beam meets them at right angles.  Reverberation
   (A-lines, gas ring-down, comet tails) adds bands of decaying intensity
   behind strong reflectors; side-lobe clutter (-40 to -28 dB of the laterally
   averaged echo) fills anechoic areas a little; near-field haze (-18 to
   -8 dB, decay 1.5-12 mm) and a focal-zone gain (0-2.5 dB) are added;
   electronic noise sits 15-35 dB under the signal at full depth and grows
   with the TGC.
6. **Display.**  Log compression with dynamic range 40-80 dB, overall gain
   -6 to +6 dB and a tissue level of 0.5-0.72 of the range, then one of five
   vendor-like grey maps (linear, gamma 0.6-1.5, S-curve, logarithmic knee,
   dark floor), black level 0-10, white 225-255; speckle reduction (a Lee
   filter, 35 %) and edge enhancement (unsharp mask, 30 %); scan conversion
   by bilinear interpolation and the black mask of the FOV.

Acquisition ranges: convex radius 40-70 mm (breast 20-50), opening 50-75
degrees, depth 120-240 mm for liver (breast 50-90), 2-6 MHz (breast 4-9);
sector opening 60-90 degrees (narrow 30-50), depth 140-240 mm for liver
(breast 50-90), 2-4.5 MHz (breast 3-7); linear footprint 36-52 mm, depth
40-80 mm for liver (5-10 MHz) and 30-60 mm for breast (8-15 MHz, lower when
deeper); focus at 0.3-0.75 of the depth, F-number 1.5-3.

Lesions
-------
About 20 % of images get no lesion; otherwise a primary class is drawn
uniformly, metastases come in groups of 2-6 (65 %), HCC gets a satellite
(15 %), benign lesions repeat (30 %) and 15 % of images add another class.
Diameters are log-uniform over 5-40 mm (metastases 5-25 mm, breast 5-30 mm
with 10 % 30-40 mm).  Appearances (echo levels relative to liver parenchyma
or breast gland; each lesion's attenuation is set so that the beam through
its centre gains or loses a drawn posterior change, enhancement positive):

- liver cyst: -45 to -35 dB, round to oval, thin bright specular wall,
  posterior enhancement +4 to +12 dB, lateral edge shadows (80 %);
- hemangioma: +5 to +14 dB, homogeneous (m 1.1-1.4), sharp margin, mildly
  lobulated, enhancement 0 to +4 dB, 20 % of those over 20 mm with a
  hypoechoic centre;
- HCC: hypoechoic (-12 to -5 dB), mosaic (3-6 sub-nodules from -10 to +4 dB)
  or nodule-in-nodule (outer -6 to +2 dB, inner +-5 to 9 dB from it); thin
  hypoechoic halo (85 %, -20 to -14 dB, 0.8-2 mm)
  lateral shadows (60 %), enhancement 0 to +4 dB;
- metastasis: target/bull's-eye (iso- to hyperechoic centre, -14 to -8 dB
  halo over the outer 30-55 %), hypoechoic (-14 to -6 dB) or hyperechoic
  with a thin dark rim; central necrosis in 20 %; posterior change -3 to
  +2 dB;
- breast carcinoma: -22 to -14 dB (below fat), heterogeneous, irregular
  (a_k up to 0.15), 6-16 spicules or angular, taller-than-wide in 50 %
  (aspect 1.05-1.6), echogenic halo (70 %, +3 to +7 dB, 1-3 mm), posterior
  shadowing (80 %, -25 to -8 dB; otherwise -3 to 0 dB),
  microcalcifications (40 %);
- fibroadenoma: fat level -4 to +1 dB, oval wider-than-tall (aspect
  0.45-0.8), gentle lobulations, thin capsule (50 %), enhancement 0 to
  +5 dB, edge shadows (40 %);
- simple cyst: as the liver cyst;
- other: lipoma-like (60 %: fat level 0 to +5 dB, oval in fat, thin
  striations, posterior change -1 to +1 dB) or complicated cyst (low-level
  echoes -26 to -18 dB, a fluid-debris level in 35 % of them, enhancement
  +3 to +8 dB).

Visibility test
---------------
A placed lesion counts as a truth on the frame only when all hold, measured
on the rendered frame before any annotation is burned in:

1. its *visible part* - the pixels of the lesion inside the FOV and not under
   a rib, gas or lung shadow deeper than 10 dB - spans at least 3 mm in both
   directions and covers at least 7 mm2;
2. on the frame smoothed by a Gaussian of 0.5 mm (normalised inside the FOV),
   the mean of the lesion's interior (the visible part eroded by 0.4 mm) or of
   its rim band (0.4 mm to 0.4 mm + 0.3 R inside) differs from the median of a
   ring around it (0.5 mm to 0.5 mm + max(2 mm, 0.4 R) outside, other lesions
   and shadows excluded) by at least 15 grey levels, and by at least twice the
   ring's speckle-scale noise (the robust standard deviation, 1.4826 x MAD, of
   the smoothed ring minus its own 2 mm-scale trend): a contrast-to-noise test
   at the speckle scale that structures beside the lesion do not inflate.

Each truth's box is the bounding box of the visible part, and ``area_px`` its
pixel count.  ``labels`` lists every placed lesion, visible or not.

Annotations are drawn from their own random stream, so switching them on or
off changes neither the image under them nor the truths.  On 85 % of images
(unless forced) text, a grey bar, a depth scale, a focus marker, a
probe-orientation mark and a body marker are burned in outside the FOV; on
40 % of those, calipers with dotted lines, a measurement readout, depth dots
or the body marker are drawn inside it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy import ndimage, special
from scipy.spatial import cKDTree

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, BoundingBox
from inference.phantoms.generator import LesionTruth, Organ, PhantomSample

PROBE_CODES: dict[str, float] = {"linear": 0.0, "convex": 1.0, "sector": 2.0}
"""How ``params["probe_kind"]`` codes the probe."""

# Tissue labels of the label map.
_NONE, _SKIN, _FAT, _MUSCLE, _LIVER, _VESSEL, _DIAPHRAGM, _BEYOND = range(8)
_GALLBLADDER, _BONE, _GAS, _GLAND, _LIGAMENT, _PLEURA, _LUNG, _LESION = range(8, 16)

_COARSE = 4
_NAKA_M = np.linspace(0.25, 1.6, 28)
_NAKA_S = np.linspace(0.0, 5.0, 401)


# --------------------------------------------------------------------------- settings


@dataclass
class _Settings:
    """Acquisition and display settings of one image."""

    organ: str
    kind: str
    depth: float
    freq: float
    radius: float
    half_angle: float
    half_width: float
    focus: float
    f_number: float
    axial_factor: float
    lateral_factor: float
    dyn_range: float
    gain: float
    level: float
    tgc_ref: float
    tgc_comp: float
    tgc_sliders: np.ndarray
    focal_gain: float
    haze_db: float
    haze_mm: float
    clutter_db: float
    noise_margin: float
    grey_map: int
    grey_shape: float
    black: float
    white: float
    smoothing: float
    edge_gain: float
    zoom: float


def _pick(rng: np.random.Generator, options: tuple[tuple[str, float], ...]) -> str:
    names = [name for name, _ in options]
    weights = np.array([w for _, w in options])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _draw_probe(rng: np.random.Generator, organ: str) -> dict[str, float | str]:
    """Probe kind, geometry, depth and frequency fitting the organ."""
    if organ == "liver":
        kind = _pick(rng, (("convex", 0.7), ("sector", 0.15), ("linear", 0.15)))
    else:
        kind = _pick(rng, (("linear", 0.82), ("convex", 0.1), ("sector", 0.08)))
    liver = organ == "liver"
    out: dict[str, float | str] = {"kind": kind, "radius": 0.0, "half_angle": 0.0}
    out["half_width"] = 0.0
    if kind == "linear":
        out["half_width"] = rng.uniform(18.0, 26.0)
        depth = rng.uniform(40.0, 80.0) if liver else rng.uniform(30.0, 60.0)
        lo, hi = (5.0, 10.0) if liver else (8.0, 15.0)
        ref = 50.0 if liver else 35.0
    elif kind == "convex":
        out["radius"] = rng.uniform(40.0, 70.0) if liver else rng.uniform(20.0, 50.0)
        out["half_angle"] = math.radians(rng.uniform(25.0, 37.5))
        depth = rng.uniform(120.0, 240.0) if liver else rng.uniform(50.0, 90.0)
        lo, hi = (2.0, 6.0) if liver else (4.0, 9.0)
        ref = 150.0 if liver else 60.0
    else:
        narrow = rng.random() < 0.25
        half = rng.uniform(15.0, 25.0) if narrow else rng.uniform(30.0, 45.0)
        out["half_angle"] = math.radians(half)
        depth = rng.uniform(140.0, 240.0) if liver else rng.uniform(50.0, 90.0)
        lo, hi = (2.0, 4.5) if liver else (3.0, 7.0)
        ref = 160.0 if liver else 60.0
    freq = rng.uniform(lo, hi) * math.sqrt(ref / depth)
    out["depth"] = depth
    out["freq"] = float(np.clip(freq, lo, hi))
    return out


def _draw_settings(rng: np.random.Generator, organ: str) -> _Settings:
    """Every acquisition and display setting, drawn at random."""
    probe = _draw_probe(rng, organ)
    depth = float(probe["depth"])
    sliders = rng.normal(0.0, 1.5, 8)
    if rng.random() < 0.4:
        sliders[rng.integers(8)] += rng.choice([-1.0, 1.0]) * rng.uniform(3.0, 8.0)
    grey_map = int(rng.integers(5))
    grey_shape = {0: 1.0, 1: rng.uniform(0.6, 1.5), 2: rng.uniform(0.4, 1.0),
                  3: rng.uniform(1.0, 6.0), 4: rng.uniform(0.05, 0.15)}[grey_map]
    return _Settings(
        organ=organ,
        kind=str(probe["kind"]),
        depth=depth,
        freq=float(probe["freq"]),
        radius=float(probe["radius"]),
        half_angle=float(probe["half_angle"]),
        half_width=float(probe["half_width"]),
        focus=depth * rng.uniform(0.3, 0.75),
        f_number=rng.uniform(1.5, 3.0),
        axial_factor=rng.uniform(0.6, 1.0),
        lateral_factor=rng.uniform(0.9, 1.3),
        dyn_range=rng.uniform(40.0, 80.0),
        gain=rng.uniform(-6.0, 6.0),
        level=rng.uniform(0.5, 0.72),
        tgc_ref=0.9,
        tgc_comp=rng.uniform(0.85, 1.1),
        tgc_sliders=sliders,
        focal_gain=rng.uniform(0.0, 2.5),
        haze_db=rng.uniform(-18.0, -8.0),
        haze_mm=rng.uniform(4.0, 12.0) if organ == "liver" else rng.uniform(1.5, 4.0),
        clutter_db=rng.uniform(-40.0, -28.0),
        noise_margin=rng.uniform(15.0, 35.0),
        grey_map=grey_map,
        grey_shape=float(grey_shape),
        black=rng.uniform(0.0, 10.0),
        white=rng.uniform(225.0, 255.0),
        smoothing=rng.uniform(0.3, 0.8) if rng.random() < 0.35 else 0.0,
        edge_gain=rng.uniform(0.3, 1.0) if rng.random() < 0.3 else 0.0,
        zoom=rng.uniform(1.25, 1.8) if rng.random() < 0.12 else 1.0,
    )


# --------------------------------------------------------------------------- geometry


@dataclass
class _Geometry:
    """Where the FOV sits on the screen and how pixels map to the beam."""

    pixel_mm: float
    origin: tuple[float, float]
    area: tuple[int, int, int, int]
    fov: np.ndarray
    pixel_d: np.ndarray
    pixel_u: np.ndarray


@dataclass
class _Grid:
    """The depth x lateral beam grid and the physical position of its samples."""

    kind: str
    radius: float
    d: np.ndarray
    u: np.ndarray
    dd: float
    du: float
    x: np.ndarray
    z: np.ndarray
    layer: np.ndarray
    line_mm: np.ndarray
    coarse_rows: np.ndarray
    coarse_cols: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(depth samples, beam lines)``."""
        return (self.d.size, self.u.size)


def _to_beam(
    kind: str, radius: float, x: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Physical ``(x, z)`` in mm to beam coordinates ``(depth, lateral)``."""
    if kind == "linear":
        return z, x
    zz = z + radius
    return np.hypot(x, zz) - radius, np.arctan2(x, zz)


def _fov_extent(s: _Settings) -> tuple[float, float, float, float]:
    """Physical bounding box ``(x0, x1, z0, z1)`` of the whole FOV."""
    if s.kind == "linear":
        return -s.half_width, s.half_width, 0.0, s.depth
    reach = s.radius + s.depth
    half = reach * math.sin(s.half_angle)
    return -half, half, s.radius * (math.cos(s.half_angle) - 1.0), s.depth


def _layout(rng: np.random.Generator, s: _Settings, rows: int, cols: int) -> _Geometry:
    """Place the FOV on the screen and compute each FOV pixel's beam position."""
    top = int(rows * rng.uniform(0.05, 0.13))
    bottom = rows - int(rows * rng.uniform(0.02, 0.07))
    left = int(cols * rng.uniform(0.03, 0.22))
    right = cols - int(cols * rng.uniform(0.03, 0.22))
    x0, x1, z0, z1 = _fov_extent(s)
    aw, ah = right - left, bottom - top
    pixel_mm = max((x1 - x0) / aw, (z1 - z0) / ah) / s.zoom
    wp, hp = (x1 - x0) / pixel_mm, (z1 - z0) / pixel_mm
    col0 = left + (aw - wp) * rng.uniform(0.0, 1.0)
    row0 = top + min(0.0, ah - hp) * rng.uniform(0.0, 0.6)
    origin = (row0 - z0 / pixel_mm, col0 - x0 / pixel_mm)
    rr, cc = np.mgrid[top:bottom, left:right]
    x = (cc + 0.5 - origin[1]) * pixel_mm
    z = (rr + 0.5 - origin[0]) * pixel_mm
    d, u = _to_beam(s.kind, s.radius, x, z)
    limit = s.half_width if s.kind == "linear" else s.half_angle
    inside = (d >= 0.0) & (d <= s.depth) & (np.abs(u) <= limit)
    fov = np.zeros((rows, cols), dtype=bool)
    fov[top:bottom, left:right] = inside
    return _Geometry(pixel_mm, origin, (top, bottom, left, right), fov, d[inside], u[inside])


def _interp_index(n: int, coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos = np.interp(np.arange(n), coarse, np.arange(coarse.size))
    i0 = np.minimum(pos.astype(int), coarse.size - 2)
    return i0, (pos - i0).astype(np.float32)


def _beam_grid(geom: _Geometry, s: _Settings) -> _Grid:
    """The beam grid covering the visible FOV at 0.9 display pixel."""
    step = 0.9 * geom.pixel_mm
    d_lo = max(0.0, float(geom.pixel_d.min()) - step)
    d_hi = min(s.depth, float(geom.pixel_d.max()) + step)
    n_r = math.ceil((d_hi - d_lo) / step) + 2
    d = d_lo + step * np.arange(n_r)
    du = step if s.kind == "linear" else step / (s.radius + d_hi)
    u_lo = float(geom.pixel_u.min()) - du
    n_l = math.ceil((float(geom.pixel_u.max()) + du - u_lo) / du) + 2
    u = u_lo + du * np.arange(n_l)
    if s.kind == "linear":
        x = np.broadcast_to(u[None, :], (n_r, n_l))
        z = np.broadcast_to(d[:, None], (n_r, n_l))
        line_mm = np.full(n_r, du)
    else:
        r = (s.radius + d)[:, None]
        x = r * np.sin(u)[None, :]
        z = r * np.cos(u)[None, :] - s.radius
        line_mm = (s.radius + np.maximum(d, 10.0)) * du
    x = np.ascontiguousarray(x, dtype=np.float32)
    z = np.ascontiguousarray(z, dtype=np.float32)
    layer = z if s.kind == "sector" else np.ascontiguousarray(
        np.broadcast_to(d[:, None], (n_r, n_l)), dtype=np.float32)
    coarse_rows = np.unique(np.append(np.arange(0, n_r, _COARSE), n_r - 1))
    coarse_cols = np.unique(np.append(np.arange(0, n_l, _COARSE), n_l - 1))
    return _Grid(s.kind, s.radius, d, u, step, du, x, z, layer, line_mm,
                 coarse_rows, coarse_cols)


def _window(grid: _Grid, x0: float, x1: float, z0: float, z1: float
            ) -> tuple[slice, slice] | None:
    """Grid index window covering the physical box, or None when outside the grid."""
    xs = np.array([x0, x1, x1, x0])
    zs = np.array([z0, z0, z1, z1])
    d, u = _to_beam(grid.kind, grid.radius, xs, zs)
    if grid.kind == "linear":
        d_min, u_min, u_max = float(d.min()), float(u.min()), float(u.max())
    else:
        near_x = min(max(0.0, x0), x1)
        near_z = min(max(-grid.radius, z0), z1)
        d_min = math.hypot(near_x, near_z + grid.radius) - grid.radius
        u_min, u_max = float(u.min()), float(u.max())
        if x0 <= 0.0 <= x1 and z0 <= -grid.radius <= z1:
            u_min, u_max = -math.pi, math.pi
    i0 = max(0, int((d_min - grid.d[0]) / grid.dd) - 1)
    i1 = min(grid.d.size, int((float(d.max()) - grid.d[0]) / grid.dd) + 2)
    j0 = max(0, int((u_min - grid.u[0]) / grid.du) - 1)
    j1 = min(grid.u.size, int((u_max - grid.u[0]) / grid.du) + 2)
    if i1 <= i0 or j1 <= j0:
        return None
    return slice(i0, i1), slice(j0, j1)


def _beam_direction(grid: _Grid, sl: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    """Unit vector of the beam at each sample of the window."""
    x = grid.x[sl]
    if grid.kind == "linear":
        return np.zeros_like(x), np.ones_like(x)
    zz = grid.z[sl] + grid.radius
    norm = np.hypot(x, zz) + 1e-6
    return x / norm, zz / norm


# --------------------------------------------------------------------------- fields


def _upsample(grid: _Grid, coarse: np.ndarray) -> np.ndarray:
    """Bilinear upsampling of a field sampled on the coarse grid."""
    i0, wi = _interp_index(grid.d.size, grid.coarse_rows)
    j0, wj = _interp_index(grid.u.size, grid.coarse_cols)
    rows = coarse[i0] * (1.0 - wi)[:, None] + coarse[i0 + 1] * wi[:, None]
    return (rows[:, j0] * (1.0 - wj) + rows[:, j0 + 1] * wj).astype(np.float32)


def _smooth_field(rng: np.random.Generator, grid: _Grid, corr_x: float, corr_z: float
                  ) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian field with physical correlation lengths (mm)."""
    xs = grid.x[np.ix_(grid.coarse_rows, grid.coarse_cols)]
    zs = grid.z[np.ix_(grid.coarse_rows, grid.coarse_cols)]
    x0, z0 = float(xs.min()), float(zs.min())
    sx, sz = corr_x / 2.5, corr_z / 2.5
    nx = (float(xs.max()) - x0) / sx + 4
    nz = (float(zs.max()) - z0) / sz + 4
    scale = max(1.0, math.sqrt(nx * nz / 160_000.0))
    sx, sz = sx * scale, sz * scale
    lattice = rng.standard_normal((int(nz * 1.0 / scale) + 4, int(nx * 1.0 / scale) + 4))
    lattice = ndimage.gaussian_filter(lattice, 1.0 / scale, mode="wrap")
    vals = ndimage.map_coordinates(lattice, [(zs - z0) / sz + 1.0, (xs - x0) / sx + 1.0],
                                   order=3, mode="nearest")
    vals = (vals - vals.mean()) / (vals.std() + 1e-9)
    return _upsample(grid, vals)


def _local_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-variance smooth noise on a small window (sigma in samples)."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape), max(sigma, 0.5))
    return (field_ / (field_.std() + 1e-9)).astype(np.float32)


def _wave(rng: np.random.Generator, x: np.ndarray, amp: float, wavelengths: tuple[float, float]
          ) -> np.ndarray:
    """Sum of three random sinusoids of the lateral position (a smooth boundary)."""
    out = np.zeros_like(x)
    for _ in range(3):
        lam = rng.uniform(*wavelengths)
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * x / lam + rng.uniform(0, 2 * np.pi))
    return (amp / 2.0) * out


# --------------------------------------------------------------------------- maps


@dataclass
class _Maps:
    """Per-sample tissue parameters on the beam grid."""

    eco: np.ndarray
    m: np.ndarray
    alpha: np.ndarray
    obstruct: np.ndarray
    label: np.ndarray
    lesion: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> _Maps:
        """Maps filled with a neutral soft tissue."""
        return cls(np.zeros(shape, np.float32), np.ones(shape, np.float32),
                   np.full(shape, 0.5, np.float32), np.zeros(shape, np.float32),
                   np.zeros(shape, np.uint8), np.full(shape, -1, np.int16))

    def paint(self, where: np.ndarray, eco: float | np.ndarray, m: float | np.ndarray,
              alpha: float, label: int) -> None:
        """Set a tissue wherever the boolean mask holds."""
        self.eco[where] = eco[where] if isinstance(eco, np.ndarray) else eco
        self.m[where] = m[where] if isinstance(m, np.ndarray) else m
        self.alpha[where] = alpha
        self.label[where] = label


def _blend(arr: np.ndarray, weight: np.ndarray, value: float | np.ndarray) -> None:
    """In-place soft overwrite ``arr += weight (value - arr)``."""
    arr += weight * (value - arr)


@dataclass
class _Reverb:
    """Bands of decaying intensity behind a reflector along some beam lines."""

    cols: np.ndarray
    depth: np.ndarray
    amp: np.ndarray
    spacing: float
    decay: float
    width: float
    count: int


@dataclass
class _Scene:
    """Artefact sources collected while the anatomy and lesions are drawn."""

    reverbs: list[_Reverb] = field(default_factory=list)
    edge_db: np.ndarray | None = None


def _specular(dx: np.ndarray, dz: np.ndarray, bx: np.ndarray, bz: np.ndarray) -> np.ndarray:
    """Squared cosine between a surface normal ``(dx, dz)`` and the beam."""
    norm = np.hypot(dx, dz) + 1e-6
    return ((dx * bx + dz * bz) / norm) ** 2


# --------------------------------------------------------------------------- liver anatomy


def _liver_layers(rng: np.random.Generator, grid: _Grid, maps: _Maps, params: dict[str, float]
                  ) -> None:
    """Skin, fat, muscle, capsule and the parenchyma with its texture."""
    x, layer = grid.x, grid.layer
    kind = _pick(rng, (("normal", 0.55), ("fatty", 0.25), ("coarse", 0.2)))
    params["parenchyma"] = {"normal": 0.0, "fatty": 1.0, "coarse": 2.0}[kind]
    skin = rng.uniform(1.2, 2.5)
    fat_b = skin + rng.uniform(4.0, 22.0) + _wave(rng, x, rng.uniform(1, 4), (30, 120))
    mus_b = fat_b + rng.uniform(4.0, 14.0) + _wave(rng, x, rng.uniform(1, 3), (20, 90))
    tex = _smooth_field(rng, grid, rng.uniform(3, 8), rng.uniform(2, 6))
    m_tex = _smooth_field(rng, grid, 10.0, 10.0)
    if kind == "fatty":
        base, m0, alpha, amp = rng.uniform(4, 10), rng.uniform(0.9, 1.3), rng.uniform(0.7, 1.0), 1.0
    elif kind == "coarse":
        base, m0, alpha = rng.uniform(0, 3), rng.uniform(0.4, 0.75), rng.uniform(0.55, 0.8)
        tex = _smooth_field(rng, grid, rng.uniform(2, 5), rng.uniform(2, 5))
        amp = rng.uniform(3.0, 5.0)
        mus_b = mus_b + np.abs(_wave(rng, x, 2.0, (4, 10)))
    else:
        base, m0, alpha, amp = 0.0, rng.uniform(0.8, 1.2), rng.uniform(0.45, 0.6), 1.5
    shortfall = rng.uniform(0.75, 0.9) if kind == "fatty" else 1.0
    params.update(liver_eco_db=base, liver_m=m0, liver_alpha=alpha, liver_texture_db=amp,
                  tgc_shortfall=shortfall)
    maps.paint(np.ones(grid.shape, bool), base + amp * tex,
               np.clip(m0 + 0.12 * m_tex, 0.3, 1.5), alpha, _LIVER)
    maps.alpha[:] = alpha
    muscle_eco = rng.uniform(-10.0, -6.0) + 5.0 * np.maximum(
        0, np.sin(2 * np.pi * layer / rng.uniform(1.0, 2.0))) ** 3
    maps.paint(layer < mus_b, muscle_eco, 0.8, 1.0, _MUSCLE)
    maps.paint(layer < fat_b, rng.uniform(-12.0, -8.0) + 1.5 * tex, 1.0, 0.6, _FAT)
    maps.paint(layer < skin, 8.0, 1.0, 1.5, _SKIN)
    _blend(maps.eco, 0.7 * np.exp(-0.5 * ((layer - fat_b) / 0.4) ** 2), 6.0)
    capsule = np.exp(-0.5 * ((layer - mus_b) / rng.uniform(0.4, 0.7)) ** 2)
    _blend(maps.eco, capsule, 9.0)


def _diaphragm(rng: np.random.Generator, grid: _Grid, maps: _Maps, s: _Settings,
               scene: _Scene, params: dict[str, float]) -> None:
    """Bright curved diaphragm with a mirror image or aerated lung behind it."""
    z0 = s.depth * rng.uniform(0.55, 1.15)
    x0 = rng.uniform(-40, 40)
    k = rng.uniform(-1.0, 1.0) * 0.004
    curve = z0 + k * (grid.x - x0) ** 2 + _wave(rng, grid.x, rng.uniform(1, 5), (40, 150))
    slope = 2 * k * (grid.x - x0)
    thick = rng.uniform(1.5, 3.5)
    bx, bz = _beam_direction(grid, (slice(None), slice(None)))
    spec = _specular(-slope, np.ones_like(slope), bx, bz)
    below = grid.z > curve + thick / 2
    lung = rng.random() < 0.35
    params.update(diaphragm_depth_mm=z0, diaphragm_lung=float(lung))
    if lung:
        maps.paint(below, -18.0, 0.7, 0.5, _LUNG)
        maps.obstruct[below] = 3.0
    else:
        maps.eco[below] = maps.eco[below] - rng.uniform(0.0, 5.0)
        maps.label[below] = _BEYOND
    band = np.exp(-0.5 * ((grid.z - curve) / (thick / 2)) ** 2)
    _blend(maps.eco, band * (0.45 + 0.55 * spec), rng.uniform(12.0, 16.0))
    maps.label[band > 0.5] = _DIAPHRAGM
    if lung:
        rows = np.argmax(grid.z > curve, axis=0)
        cols = np.flatnonzero(rows > 0)
        if cols.size:
            d0 = grid.d[rows[cols]]
            scene.reverbs.append(_Reverb(cols, d0, np.full(cols.size, 10 ** -0.5),
                                         rng.uniform(8.0, 16.0), 0.5, 0.4, 2))


def _tube(grid: _Grid, points: np.ndarray, radius: np.ndarray, margin: float
          ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray] | None:
    """Distance (mm) from the window samples to a polyline tube, and the tube radius there."""
    pad = float(radius.max()) + margin
    sl = _window(grid, points[:, 0].min() - pad, points[:, 0].max() + pad,
                 points[:, 1].min() - pad, points[:, 1].max() + pad)
    if sl is None:
        return None
    x, z = grid.x[sl], grid.z[sl]
    tree = cKDTree(points)
    dist, idx = tree.query(np.column_stack([x.ravel(), z.ravel()]), distance_upper_bound=pad)
    idx = np.minimum(idx, len(points) - 1)
    near = points[idx]
    dist = dist.reshape(x.shape)
    return sl, dist, radius[idx].reshape(x.shape), np.stack(
        [x - near[:, 0].reshape(x.shape), z - near[:, 1].reshape(x.shape)])


def _vessel_along(rng: np.random.Generator, grid: _Grid, maps: _Maps, start: np.ndarray,
                  portal: bool, r0: float) -> np.ndarray:
    """One anechoic vessel running along the plane; returns its centre line."""
    ang = rng.uniform(-0.6, 0.6) + (0.0 if rng.random() < 0.5 else np.pi)
    if not portal:
        ang = rng.uniform(-2.4, -0.7)
    length = rng.uniform(30.0, 120.0)
    end = start + length * np.array([math.cos(ang), math.sin(ang)])
    ctrl = (start + end) / 2 + rng.normal(0, length * 0.15, 2)
    t = np.linspace(0.0, 1.0, max(8, int(length / 0.3)))[:, None]
    pts = (1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl + t**2 * end
    radius = r0 * (1.0 - rng.uniform(0.3, 0.7) * t[:, 0])
    wall = rng.uniform(0.6, 1.2) if portal else 0.0
    tube = _tube(grid, pts, radius, wall + 1.0)
    if tube is None:
        return pts
    sl, dist, rad, normal = tube
    eco, m, alpha, label = maps.eco[sl], maps.m[sl], maps.alpha[sl], maps.label[sl]
    host = np.isin(label, (_LIVER, _VESSEL))
    inside = np.clip((rad - dist) / 0.7 + 0.5, 0.0, 1.0) * host
    if portal:
        bx, bz = _beam_direction(grid, sl)
        spec = _specular(normal[0], normal[1], bx, bz)
        ring = np.exp(-0.5 * ((dist - rad - wall / 2) / (wall / 2)) ** 2) * host
        _blend(eco, ring * (0.5 + 0.5 * spec), eco + rng.uniform(6.0, 11.0))
    _blend(eco, inside, rng.uniform(-38.0, -30.0))
    _blend(m, inside, 1.0)
    _blend(alpha, inside, 0.18)
    label[inside > 0.5] = _VESSEL
    return pts


def _liver_vessels(rng: np.random.Generator, grid: _Grid, maps: _Maps,
                   params: dict[str, float]) -> None:
    """Portal and hepatic veins along the plane, and vessel cross-sections."""
    liver = np.flatnonzero(maps.label.ravel() == _LIVER)
    if liver.size == 0:
        return
    xs, zs = grid.x.ravel()[liver], grid.z.ravel()[liver]
    n_along = int(rng.integers(0, 4))
    n_cross = int(rng.integers(1, 5))
    params.update(vessels_along=float(n_along), vessels_cross=float(n_cross))
    for _ in range(n_along):
        i = rng.integers(liver.size)
        portal = rng.random() < 0.6
        pts = _vessel_along(rng, grid, maps, np.array([xs[i], zs[i]]), portal,
                            rng.uniform(1.5, 6.0))
        if rng.random() < 0.4:
            _vessel_along(rng, grid, maps, pts[rng.integers(len(pts))], portal,
                          rng.uniform(1.0, 3.0))
    for _ in range(n_cross):
        i = rng.integers(liver.size)
        pts = np.array([[xs[i], zs[i]], [xs[i] + 1e-3, zs[i]]])
        r = rng.uniform(1.5, 6.0)
        tube = _tube(grid, pts, np.array([r, r]), 2.0)
        if tube is None:
            continue
        sl, dist, rad, normal = tube
        host = np.isin(maps.label[sl], (_LIVER, _VESSEL))
        inside = np.clip((rad - dist) / 0.6 + 0.5, 0.0, 1.0) * host
        if rng.random() < 0.5:
            bx, bz = _beam_direction(grid, sl)
            ring = np.exp(-0.5 * ((dist - rad - 0.4) / 0.4) ** 2) * host
            _blend(maps.eco[sl], ring * (0.4 + 0.6 * _specular(normal[0], normal[1], bx, bz)),
                   maps.eco[sl] + 9.0)
        _blend(maps.eco[sl], inside, -38.0)
        _blend(maps.alpha[sl], inside, 0.18)
        maps.label[sl][inside > 0.5] = _VESSEL


def _gallbladder(rng: np.random.Generator, grid: _Grid, maps: _Maps, s: _Settings) -> None:
    """An anechoic pear-shaped gallbladder with a bright wall (a lesion-like negative)."""
    cx = rng.uniform(-0.4, 0.4) * s.depth
    cz = s.depth * rng.uniform(0.45, 0.85)
    a, b = rng.uniform(12.0, 30.0), rng.uniform(7.0, 15.0)
    ang = rng.uniform(-0.7, 0.7)
    ext = a + 3
    sl = _window(grid, cx - ext, cx + ext, cz - ext, cz + ext)
    if sl is None:
        return
    dx, dz = grid.x[sl] - cx, grid.z[sl] - cz
    p = (dx * math.cos(ang) + dz * math.sin(ang)) / a
    q = (-dx * math.sin(ang) + dz * math.cos(ang)) / (b * (1.0 + 0.25 * np.clip(p, -1, 1)))
    sd = (1.0 - np.hypot(p, q)) * b
    bx, bz = _beam_direction(grid, sl)
    inside = np.clip(sd / 0.5 + 0.5, 0, 1)
    spec = _specular(dx, dz, bx, bz)
    wall = np.exp(-0.5 * (sd / rng.uniform(0.7, 1.2)) ** 2) * (0.4 + 0.6 * spec)
    _blend(maps.eco[sl], wall, 10.0)
    _blend(maps.eco[sl], inside, -40.0)
    _blend(maps.alpha[sl], inside, 0.05)
    maps.label[sl][inside > 0.5] = _GALLBLADDER


def _rib(rng: np.random.Generator, grid: _Grid, maps: _Maps, cx: float, cz: float,
         cartilage: bool) -> None:
    """A rib cross-section: bright curved cortex and a shadow (weak for cartilage)."""
    w, h = rng.uniform(9.0, 15.0) / 2, rng.uniform(5.0, 8.0) / 2
    sl = _window(grid, cx - w - 2, cx + w + 2, cz - h - 2, cz + h + 2)
    if sl is None:
        return
    dx, dz = grid.x[sl] - cx, grid.z[sl] - cz
    rho = np.hypot(dx / w, dz / h)
    inside = np.clip((1.0 - rho) * h / 0.4 + 0.5, 0, 1)
    cortex = np.exp(-0.5 * (((rho - 1.0) * h) / 0.5) ** 2) * (dz < 0.3 * h)
    bx, bz = _beam_direction(grid, sl)
    cortex = cortex * (0.5 + 0.5 * _specular(dx / w, dz / h, bx, bz))
    if cartilage:
        _blend(maps.eco[sl], inside, -14.0)
        _blend(maps.eco[sl], cortex * 0.6, 6.0)
        maps.obstruct[sl] += inside * 2.5
    else:
        _blend(maps.eco[sl], inside, -20.0)
        _blend(maps.eco[sl], cortex, 18.0)
        maps.obstruct[sl] += np.maximum(inside, (cortex > 0.3) & (dz > -h)) * 60.0
    maps.label[sl][inside > 0.5] = _BONE


def _bowel_gas(rng: np.random.Generator, grid: _Grid, maps: _Maps, s: _Settings,
               scene: _Scene) -> None:
    """A bright gas interface with a dirty shadow and ring-down behind it."""
    side = rng.choice([-1.0, 1.0])
    cz = s.depth * rng.uniform(0.45, 0.9)
    x_lo, x_hi = float(grid.x.min()), float(grid.x.max())
    cx = side * rng.uniform(0.3, 0.9) * max(abs(x_lo), abs(x_hi))
    half = rng.uniform(8.0, 20.0)
    curve = cz + 0.02 * (grid.x - cx) ** 2 + _wave(rng, grid.x, 1.5, (5, 15))
    under = (np.abs(grid.x - cx) < half) & (grid.z > curve)
    band = np.exp(-0.5 * ((grid.z - curve) / 0.9) ** 2) * (np.abs(grid.x - cx) < half)
    _blend(maps.eco, band, 16.0)
    maps.obstruct[under] += rng.uniform(6.0, 20.0)
    maps.label[under] = _GAS
    rows = np.argmax(under, axis=0)
    cols = np.flatnonzero(under.any(axis=0))
    if cols.size:
        amp = 10 ** rng.uniform(-1.0, -0.3) * rng.uniform(0.2, 1.0, cols.size)
        amp = ndimage.gaussian_filter1d(amp, 2.0)
        scene.reverbs.append(_Reverb(cols, grid.d[rows[cols]], amp, rng.uniform(2.0, 5.0),
                                     rng.uniform(0.5, 0.7), 0.5, 6))


def _comet(rng: np.random.Generator, grid: _Grid, maps: _Maps, scene: _Scene) -> None:
    """A tiny strong reflector with a comet-tail reverberation."""
    i, j = rng.integers(grid.shape[0] // 4, grid.shape[0]), rng.integers(grid.shape[1])
    width = 0.8 / max(float(grid.line_mm[i]), 1e-3)
    cols = np.arange(max(0, int(j - 3 * width)), min(grid.shape[1], int(j + 3 * width) + 1))
    amp = 10 ** 1.2 * np.exp(-0.5 * ((cols - j) / width) ** 2)
    scene.reverbs.append(_Reverb(cols, np.full(cols.size, grid.d[i]), amp,
                                 rng.uniform(0.4, 1.0), rng.uniform(0.6, 0.8), 0.25, 12))
    maps.eco[i, cols] += 14.0 * np.exp(-0.5 * ((cols - j) / width) ** 2)


def _liver_anatomy(rng: np.random.Generator, grid: _Grid, maps: _Maps, s: _Settings,
                   scene: _Scene, params: dict[str, float]) -> None:
    """All normal liver-view structures."""
    _liver_layers(rng, grid, maps, params)
    _diaphragm(rng, grid, maps, s, scene, params)
    _liver_vessels(rng, grid, maps, params)
    flags = {"gallbladder": rng.random() < 0.2, "gas": rng.random() < 0.25,
             "comet": rng.random() < 0.1,
             "ribs": rng.random() < (0.2 if s.kind == "linear" else 0.45)}
    params.update({f"has_{k}": float(v) for k, v in flags.items()})
    if flags["gallbladder"]:
        _gallbladder(rng, grid, maps, s)
    if flags["gas"]:
        _bowel_gas(rng, grid, maps, s, scene)
    if flags["comet"]:
        _comet(rng, grid, maps, scene)
    if flags["ribs"]:
        shallow = grid.layer < 30.0
        top = float(np.median(grid.z[shallow & (maps.label == _MUSCLE)])) if np.any(
            shallow & (maps.label == _MUSCLE)) else 12.0
        x_lo, x_hi = float(grid.x.min()), float(grid.x.max())
        for _ in range(int(rng.integers(1, 3))):
            _rib(rng, grid, maps, rng.uniform(x_lo, x_hi) * 0.8, top, cartilage=False)


# --------------------------------------------------------------------------- breast anatomy


def _breast_anatomy(rng: np.random.Generator, grid: _Grid, maps: _Maps, s: _Settings,
                    scene: _Scene, params: dict[str, float]) -> None:
    """Skin, fat lobules, Cooper's ligaments, gland, pectoral muscle, ribs and pleura."""
    x, layer = grid.x, grid.layer
    fat_eco = rng.uniform(-12.0, -7.0)
    skin = rng.uniform(1.2, 2.2)
    fat_b = skin + rng.uniform(3.0, 15.0) + _wave(rng, x, rng.uniform(1, 4), (10, 30))
    peaks = rng.uniform(1.0, 4.0) * np.maximum(0, np.sin(2 * np.pi * x / rng.uniform(6, 14)
                                                       + rng.uniform(0, 6))) ** 2
    fat_b = fat_b - peaks
    gland_b = fat_b + peaks + rng.uniform(6.0, 25.0) + _wave(rng, x, rng.uniform(1, 3), (30, 90))
    retro_b = gland_b + rng.uniform(1.0, 5.0)
    pec_b = retro_b + rng.uniform(4.0, 14.0) + _wave(rng, x, 1.0, (40, 120))
    params.update(breast_fat_eco_db=fat_eco, breast_fat_mm=float(np.median(fat_b)),
                  breast_gland_mm=float(np.median(gland_b - fat_b)))
    corr = rng.uniform(6.0, 12.0)
    lob = _smooth_field(rng, grid, corr, corr * 0.5)
    streak = _smooth_field(rng, grid, rng.uniform(2.0, 5.0), rng.uniform(0.6, 1.5))
    islands = _smooth_field(rng, grid, rng.uniform(3.0, 8.0), rng.uniform(2.0, 4.0))
    gland_eco = rng.uniform(2.5, 4.0) * streak
    maps.paint(np.ones(grid.shape, bool), -30.0, 0.8, 1.2, _LUNG)
    maps.paint(layer < pec_b + 12.0, -12.0, 0.9, 1.0, _MUSCLE)
    period = rng.uniform(1.0, 2.5)
    beta = math.radians(rng.uniform(-15.0, 15.0))
    fibres = np.maximum(0, np.cos(2 * np.pi * (grid.z * math.cos(beta) - x * math.sin(beta))
                                  / period)) ** 3
    maps.paint(layer < pec_b, -8.0 + 5.0 * fibres, 0.9, 1.0, _MUSCLE)
    maps.paint(layer < retro_b, fat_eco + 1.0 * lob, 1.0, 0.6, _FAT)
    gland = layer < gland_b
    maps.paint(gland, gland_eco, np.clip(0.8 + 0.15 * streak, 0.3, 1.5), 0.9, _GLAND)
    fat_island = gland & (islands > rng.uniform(0.9, 1.6))
    maps.paint(fat_island, fat_eco, 1.0, 0.6, _FAT)
    lobule = np.where(lob > 0, fat_eco - 1.5, fat_eco + 0.5)
    maps.paint(layer < fat_b, lobule, 1.1, 0.6, _FAT)
    broken = _smooth_field(rng, grid, corr, corr)
    septa = (layer < fat_b) & (np.abs(lob) < rng.uniform(0.2, 0.4) / corr * 2.5) & (broken > -0.3)
    maps.paint(septa, rng.uniform(1.0, 5.0), 1.0, 0.8, _LIGAMENT)
    for bound in (fat_b, retro_b, pec_b):
        _blend(maps.eco, np.exp(-0.5 * ((layer - bound) / 0.3) ** 2) * 0.6, 4.0)
    maps.paint(layer < skin, 3.0, 1.0, 1.5, _SKIN)
    for edge in (0.25, skin):
        _blend(maps.eco, np.exp(-0.5 * ((layer - edge) / 0.25) ** 2), 10.0)
    _chest_wall(rng, grid, maps, scene, float(np.median(pec_b)), params)


def _chest_wall(rng: np.random.Generator, grid: _Grid, maps: _Maps, scene: _Scene,
                pec: float, params: dict[str, float]) -> None:
    """Ribs below the pectoral muscle, the pleura and lung reverberations."""
    pleura = pec + rng.uniform(8.0, 14.0)
    rib_z = pec + rng.uniform(3.0, 6.0)
    spacing = rng.uniform(20.0, 30.0)
    cartilage = rng.random() < 0.5
    params.update(pleura_mm=pleura, rib_spacing_mm=spacing, rib_cartilage=float(cartilage))
    band = np.exp(-0.5 * ((grid.layer - pleura) / rng.uniform(0.4, 0.7)) ** 2)
    _blend(maps.eco, band, 14.0)
    maps.label[band > 0.5] = _PLEURA
    x_lo, x_hi = float(grid.x.min()), float(grid.x.max())
    cx = x_lo + rng.uniform(0, spacing)
    while cx < x_hi + spacing:
        _rib(rng, grid, maps, cx, rib_z, cartilage)
        cx += spacing
    rows = np.argmax(grid.layer > pleura, axis=0)
    cols = np.flatnonzero(rows > 0)
    if cols.size:
        d0 = grid.d[rows[cols]]
        scene.reverbs.append(_Reverb(cols, d0, np.full(cols.size, 10 ** rng.uniform(0.2, 0.8)),
                                     float(np.median(d0)), 0.5, 0.4, 3))


# --------------------------------------------------------------------------- lesions


@dataclass
class _Lesion:
    """One placed lesion: class, style, shape and echo parameters."""

    label: str
    style: str
    cx: float
    cz: float
    radius: float
    aspect: float
    angle: float
    harm: np.ndarray
    spikes: np.ndarray
    edge: float
    values: dict[str, float]

    @property
    def extent(self) -> float:
        """Radius (mm) of a circle surely containing the lesion and its halo."""
        stretch = max(math.sqrt(self.aspect), 1.0 / math.sqrt(self.aspect))
        bump = float(np.abs(self.harm[:, 0]).sum()) + float(self.spikes[:, 1].max(initial=0.0))
        return self.radius * stretch * (1.0 + bump) + self.values.get("halo_mm", 0.0) + 1.0


def _shape(rng: np.random.Generator, roughness: float, n_spikes: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Random Fourier-descriptor harmonics (k = 2..7) and radial spikes."""
    k = np.arange(2, 8)
    amp = rng.normal(0.0, roughness, k.size) / (k - 1) ** 0.8
    harm = np.column_stack([amp, rng.uniform(0, 2 * np.pi, k.size)])
    spikes = np.column_stack([rng.uniform(-np.pi, np.pi, n_spikes),
                              rng.uniform(0.1, 0.35, n_spikes),
                              rng.uniform(0.025, 0.06, n_spikes)])
    return harm, spikes


def _lesion_coords(les: _Lesion, x: np.ndarray, z: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Signed distance to the contour (mm, positive inside), radial fraction, offsets."""
    dx, dz = x - les.cx, z - les.cz
    c, s = math.cos(les.angle), math.sin(les.angle)
    hw, hh = les.radius / math.sqrt(les.aspect), les.radius * math.sqrt(les.aspect)
    p = (dx * c + dz * s) / hw
    q = (-dx * s + dz * c) / hh
    rho = np.hypot(p, q)
    phi = np.arctan2(q, p)
    rb = np.ones_like(rho)
    for k, (a, ph) in enumerate(les.harm, start=2):
        rb += a * np.cos(k * phi + ph)
    for ang, length, width in les.spikes:
        diff = (phi - ang + np.pi) % (2 * np.pi) - np.pi
        near = np.abs(diff) < 4 * width
        rb[near] += length * np.exp(-0.5 * (diff[near] / width) ** 2)
    return (rb - rho) * les.radius, rho / rb, dx, dz


def _diameter(rng: np.random.Generator, label: str, organ: str) -> float:
    if label == "metastasis":
        return math.exp(rng.uniform(math.log(5.0), math.log(25.0)))
    if organ == "breast":
        if rng.random() < 0.1:
            return rng.uniform(30.0, 40.0)
        return math.exp(rng.uniform(math.log(5.0), math.log(30.0)))
    return math.exp(rng.uniform(math.log(5.0), math.log(40.0)))


@dataclass
class _Design:
    """Class-specific part of a lesion design, before the shape is drawn."""

    values: dict[str, float]
    style: str = "plain"
    rough: float = 0.03
    spikes: int = 0
    aspect: float | None = None
    angle: float | None = None
    edge: float | None = None


def _design_cyst(rng: np.random.Generator, fat_eco: float) -> _Design:
    return _Design({"eco": rng.uniform(-45, -35), "post_db": rng.uniform(4, 12),
                    "wall_mm": rng.uniform(0.25, 0.6), "wall_db": rng.uniform(6, 12),
                    "edge_db": rng.uniform(5, 15) * (rng.random() < 0.8)},
                   aspect=rng.uniform(0.7, 1.0), angle=rng.uniform(-0.4, 0.4))


def _design_hemangioma(rng: np.random.Generator, fat_eco: float) -> _Design:
    style = "hypo_centre" if rng.random() < 0.2 else "plain"
    return _Design({"eco": rng.uniform(5, 14), "m": rng.uniform(1.1, 1.4),
                    "post_db": rng.uniform(0, 4),
                    "rim_db": rng.uniform(2, 5) * (rng.random() < 0.3)},
                   style=style, rough=0.07)


def _design_hcc(rng: np.random.Generator, fat_eco: float) -> _Design:
    style = _pick(rng, (("hypo", 0.5), ("mosaic", 0.3), ("nodule", 0.2)))
    return _Design({"eco": rng.uniform(-12, -5) if style == "hypo" else rng.uniform(-6, 2),
                    "inner_db": rng.choice([-1.0, 1.0]) * rng.uniform(5, 9),
                    "inner_size": rng.uniform(0.3, 0.5),
                    "halo_db": rng.uniform(-20, -14),
                    "halo_mm": rng.uniform(0.8, 2.0) * (rng.random() < 0.85),
                    "post_db": rng.uniform(0, 4),
                    "edge_db": rng.uniform(6, 14) * (rng.random() < 0.6)},
                   style=style, rough=0.04)


def _design_metastasis(rng: np.random.Generator, fat_eco: float) -> _Design:
    style = _pick(rng, (("target", 0.5), ("hypo", 0.35), ("hyper", 0.15)))
    return _Design({"centre_db": rng.uniform(0, 8), "halo_db": rng.uniform(-14, -8),
                    "core": rng.uniform(0.45, 0.7), "eco": rng.uniform(-14, -6),
                    "hyper_db": rng.uniform(4, 9), "post_db": rng.uniform(-3, 2),
                    "necrosis": float(rng.random() < 0.2)}, style=style, rough=0.08)


def _design_carcinoma(rng: np.random.Generator, fat_eco: float) -> _Design:
    shadow = rng.random() < 0.8
    spikes = int(rng.integers(8, 21)) if rng.random() < 0.6 else 0
    tall = rng.random() < 0.5
    return _Design({"eco": rng.uniform(-22, -14), "m": rng.uniform(0.55, 0.85),
                    "post_db": -rng.uniform(8, 25) if shadow else rng.uniform(-3, 0),
                    "halo_mm": rng.uniform(1.0, 3.0) * (rng.random() < 0.7),
                    "halo_db": rng.uniform(3, 7),
                    "calcs": float(rng.integers(1, 9) * (rng.random() < 0.4))},
                   style="spiculated" if spikes else "angular",
                   rough=rng.uniform(0.08, 0.15) if spikes else rng.uniform(0.15, 0.22),
                   spikes=spikes, edge=rng.uniform(0.2, 0.4),
                   aspect=rng.uniform(1.05, 1.6) if tall else rng.uniform(0.7, 1.05),
                   angle=rng.uniform(-0.3, 0.3))


def _design_fibroadenoma(rng: np.random.Generator, fat_eco: float) -> _Design:
    return _Design({"eco": fat_eco + rng.uniform(-4, 1), "m": rng.uniform(1.0, 1.2),
                    "post_db": rng.uniform(0, 5), "wall_mm": 0.3,
                    "wall_db": rng.uniform(4, 6) * (rng.random() < 0.5),
                    "edge_db": rng.uniform(4, 10) * (rng.random() < 0.4)},
                   rough=rng.uniform(0.05, 0.12), aspect=rng.uniform(0.45, 0.8),
                   angle=rng.uniform(-0.25, 0.25))


def _design_other(rng: np.random.Generator, fat_eco: float) -> _Design:
    if rng.random() < 0.6:
        return _Design({"eco": fat_eco + rng.uniform(0, 5), "wall_db": rng.uniform(3, 6),
                        "wall_mm": 0.3, "post_db": rng.uniform(-1, 1)},
                       style="lipoma", aspect=rng.uniform(0.4, 0.7), angle=rng.uniform(-0.2, 0.2))
    style = "fluid_level" if rng.random() < 0.35 else "complicated"
    return _Design({"eco": rng.uniform(-26, -18), "level": rng.uniform(-0.3, 0.4),
                    "debris_db": rng.uniform(-14, -8), "wall_db": rng.uniform(3, 6),
                    "wall_mm": 0.3, "post_db": rng.uniform(3, 8)},
                   style=style, aspect=rng.uniform(0.6, 0.95), angle=rng.uniform(-0.2, 0.2))


_DESIGNERS = {
    "cyst": _design_cyst, "simple_cyst": _design_cyst, "hemangioma": _design_hemangioma,
    "hcc": _design_hcc, "metastasis": _design_metastasis, "carcinoma": _design_carcinoma,
    "fibroadenoma": _design_fibroadenoma, "other": _design_other,
}


def _design(rng: np.random.Generator, label: str, organ: str, fat_eco: float) -> _Lesion:
    """Class-specific shape and echo parameters of a new lesion (position set later)."""
    radius = _diameter(rng, label, organ) / 2.0
    aspect, angle, edge = rng.uniform(0.75, 1.3), rng.uniform(-np.pi, np.pi), rng.uniform(0.3, 0.6)
    d = _DESIGNERS[label](rng, fat_eco)
    harm, spikes = _shape(rng, d.rough, d.spikes)
    return _Lesion(label, d.style, 0.0, 0.0, radius,
                   aspect if d.aspect is None else d.aspect,
                   angle if d.angle is None else d.angle, harm, spikes,
                   edge if d.edge is None else d.edge, d.values)


def _lesion_plan(rng: np.random.Generator, organ: str) -> list[str]:
    """Classes of the lesions of one image (empty in about 20 % of images)."""
    classes = LIVER_CLASSES if organ == "liver" else BREAST_CLASSES
    if rng.random() < 0.2:
        return []
    primary = classes[int(rng.integers(len(classes)))]
    count = 1
    if primary == "metastasis" and rng.random() < 0.65:
        count = int(rng.integers(2, 7))
    elif primary == "hcc" and rng.random() < 0.15:
        count = 2
    elif primary in ("cyst", "hemangioma", "simple_cyst", "fibroadenoma") and rng.random() < 0.3:
        count = int(rng.integers(2, 4))
    plan = [primary] * count
    if rng.random() < 0.15:
        plan.append(classes[int(rng.integers(len(classes)))])
    return plan


def _label_at(grid: _Grid, maps: _Maps, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Tissue label at physical points (``_NONE`` outside the grid)."""
    d, u = _to_beam(grid.kind, grid.radius, x, z)
    i = np.rint((d - grid.d[0]) / grid.dd).astype(int)
    j = np.rint((u - grid.u[0]) / grid.du).astype(int)
    ok = (i >= 0) & (i < grid.shape[0]) & (j >= 0) & (j < grid.shape[1])
    out = np.full(x.shape, _NONE, np.uint8)
    out[ok] = maps.label[i[ok], j[ok]]
    return out


def _hosts(label: str, style: str, rng: np.random.Generator) -> tuple[int, ...]:
    if label in LIVER_CLASSES:
        return (_LIVER, _VESSEL)
    if style == "lipoma":
        return (_FAT, _LIGAMENT)
    return (_GLAND, _FAT) if rng.random() < 0.2 else (_GLAND,)


def _place_lesions(rng: np.random.Generator, organ: str, grid: _Grid, maps: _Maps,
                   fat_eco: float) -> list[_Lesion]:
    """Design the planned lesions and put each at a free spot in its host tissue."""
    placed: list[_Lesion] = []
    ring = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    for label in _lesion_plan(rng, organ):
        les = _design(rng, label, organ, fat_eco)
        hosts = _hosts(label, les.style, rng)
        candidates = np.flatnonzero(np.isin(maps.label.ravel(), hosts))
        if candidates.size == 0:
            continue
        for _ in range(40):
            k = candidates[rng.integers(candidates.size)]
            cx, cz = float(grid.x.ravel()[k]), float(grid.z.ravel()[k])
            if any(math.hypot(cx - o.cx, cz - o.cz) < 1.05 * (o.extent + les.extent)
                   for o in placed):
                continue
            labels = _label_at(grid, maps, cx + 0.7 * les.radius * np.cos(ring),
                               cz + 0.7 * les.radius * np.sin(ring))
            if np.mean(np.isin(labels, (*hosts, _NONE))) >= 0.7:
                les.cx, les.cz = cx, cz
                placed.append(les)
                break
    return placed


def _paint_cyst(les: _Lesion, ctx: _LesionContext) -> None:
    v = les.values
    _blend(ctx.eco, ctx.inside, v["eco"])
    _blend(ctx.m, ctx.inside, 1.0)
    wall = np.exp(-0.5 * (ctx.sd / v["wall_mm"]) ** 2) * (0.3 + 0.7 * ctx.spec)
    _blend(ctx.eco, 0.9 * wall, ctx.base + v["wall_db"])


def _paint_hemangioma(les: _Lesion, ctx: _LesionContext) -> None:
    v = les.values
    eco = ctx.base + v["eco"] + 0.8 * ctx.noise
    if les.style == "hypo_centre" and les.radius > 10.0:
        eco = eco - 10.0 * np.clip(1.0 - ctx.frac / 0.45, 0.0, 1.0)
    _blend(ctx.eco, ctx.inside, eco)
    _blend(ctx.m, ctx.inside, v["m"])
    if v["rim_db"]:
        rim = np.exp(-0.5 * (ctx.sd / 0.4) ** 2)
        _blend(ctx.eco, rim, ctx.base + v["eco"] + v["rim_db"])


def _paint_hcc(les: _Lesion, ctx: _LesionContext) -> None:
    v = les.values
    eco = ctx.base + v["eco"] + 1.5 * ctx.noise
    if les.style == "mosaic":
        seeds = ctx.rng.normal(0, 0.5, (int(ctx.rng.integers(3, 7)), 2)) * les.radius
        levels = ctx.rng.uniform(-10, 4, len(seeds))
        dist = np.hypot(ctx.dx[..., None] - seeds[:, 0], ctx.dz[..., None] - seeds[:, 1])
        eco = ctx.base + levels[np.argmin(dist, axis=-1)] + 1.5 * ctx.noise
    elif les.style == "nodule":
        off = ctx.rng.normal(0, 0.2, 2) * les.radius
        inner = np.hypot(ctx.dx - off[0], ctx.dz - off[1]) / (les.radius * v["inner_size"])
        eco = eco + v["inner_db"] * np.clip((1.0 - inner) / 0.15 + 0.5, 0, 1)
    _blend(ctx.eco, ctx.inside, eco)
    _blend(ctx.m, ctx.inside, 0.8)
    if v["halo_mm"]:
        halo = np.clip(ctx.sd / 0.3 + 0.5, 0, 1) * np.clip((v["halo_mm"] - ctx.sd) / 0.3, 0, 1)
        _blend(ctx.eco, halo, ctx.base + v["halo_db"])


def _paint_metastasis(les: _Lesion, ctx: _LesionContext) -> None:
    v = les.values
    if les.style == "target":
        centre = np.clip((v["core"] - ctx.frac) / 0.08 + 0.5, 0, 1)
        eco = ctx.base + v["halo_db"] + centre * (v["centre_db"] - v["halo_db"])
    elif les.style == "hyper":
        rim = np.clip((ctx.sd - 1.0) / 0.3 + 0.5, 0, 1)
        eco = ctx.base + v["halo_db"] + rim * (v["hyper_db"] - v["halo_db"])
    else:
        eco = ctx.base + v["eco"]
    eco = eco + 1.5 * ctx.noise
    if v["necrosis"]:
        eco = np.where(ctx.frac + 0.1 * ctx.noise < 0.25, -30.0, eco)
    _blend(ctx.eco, ctx.inside, eco)
    _blend(ctx.m, ctx.inside, 0.85)


def _paint_carcinoma(les: _Lesion, ctx: _LesionContext) -> None:
    v = les.values
    if v["halo_mm"]:
        halo = np.exp(-0.5 * (np.minimum(ctx.sd, 0.0) / (v["halo_mm"] / 2)) ** 2)
        _blend(ctx.eco, halo * (ctx.sd > -2 * v["halo_mm"]) * 0.8, ctx.base + v["halo_db"])
    eco = ctx.base + v["eco"] + 2.5 * ctx.noise
    _blend(ctx.eco, ctx.inside, eco)
    _blend(ctx.m, ctx.inside, v["m"])
    for _ in range(int(v["calcs"])):
        px, pz = ctx.rng.normal(0, 0.35, 2) * les.radius
        spot = np.exp(-0.5 * (np.hypot(ctx.dx - px, ctx.dz - pz) / 0.25) ** 2)
        _blend(ctx.eco, spot * ctx.inside, ctx.base + 12.0)


def _paint_fibroadenoma(les: _Lesion, ctx: _LesionContext) -> None:
    v = les.values
    _blend(ctx.eco, ctx.inside, v["eco"] + 1.0 * ctx.noise)
    _blend(ctx.m, ctx.inside, v["m"])
    if v["wall_db"]:
        wall = np.exp(-0.5 * (ctx.sd / v["wall_mm"]) ** 2) * (0.4 + 0.6 * ctx.spec)
        _blend(ctx.eco, wall, ctx.base + v["wall_db"] - 6.0)


def _paint_other(les: _Lesion, ctx: _LesionContext) -> None:
    v = les.values
    if les.style == "lipoma":
        c, s = math.cos(les.angle), math.sin(les.angle)
        b = -ctx.dx * s + ctx.dz * c
        stria = np.maximum(0, np.cos(2 * np.pi * b / 1.8 + ctx.noise)) ** 8
        _blend(ctx.eco, ctx.inside, v["eco"] + 4.0 * stria)
        _blend(ctx.m, ctx.inside, 1.0)
        wall = np.exp(-0.5 * (ctx.sd / v["wall_mm"]) ** 2) * (0.3 + 0.7 * ctx.spec)
        _blend(ctx.eco, wall * 0.6, ctx.base - 4.0 + v["wall_db"])
        return
    eco = np.full(ctx.sd.shape, v["eco"], np.float32)
    if les.style == "fluid_level":
        level = v["level"] * les.radius
        eco = np.where(ctx.dz > level, ctx.base + v["debris_db"], eco)
        eco = eco + 6.0 * np.exp(-0.5 * ((ctx.dz - level) / 0.3) ** 2)
    _blend(ctx.eco, ctx.inside, eco)
    _blend(ctx.m, ctx.inside, 1.3)
    wall = np.exp(-0.5 * (ctx.sd / v["wall_mm"]) ** 2) * (0.3 + 0.7 * ctx.spec)
    _blend(ctx.eco, wall * 0.8, ctx.base + v["wall_db"])


@dataclass
class _LesionContext:
    """Views of the maps on a lesion's window and its geometry there."""

    rng: np.random.Generator
    eco: np.ndarray
    m: np.ndarray
    sd: np.ndarray
    frac: np.ndarray
    dx: np.ndarray
    dz: np.ndarray
    inside: np.ndarray
    spec: np.ndarray
    noise: np.ndarray
    base: float


_PAINTERS = {
    "cyst": _paint_cyst, "simple_cyst": _paint_cyst, "hemangioma": _paint_hemangioma,
    "hcc": _paint_hcc, "metastasis": _paint_metastasis, "carcinoma": _paint_carcinoma,
    "fibroadenoma": _paint_fibroadenoma, "other": _paint_other,
}


def _paint_lesion(rng: np.random.Generator, grid: _Grid, maps: _Maps, les: _Lesion,
                  index: int, base: float, freq: float, scene: _Scene) -> None:
    """Paint one lesion into the maps and record its lateral edge shadows."""
    ext = les.extent + 2.0
    sl = _window(grid, les.cx - ext, les.cx + ext, les.cz - ext, les.cz + ext)
    if sl is None:
        return
    sd, frac, dx, dz = _lesion_coords(les, grid.x[sl], grid.z[sl])
    bx, bz = _beam_direction(grid, sl)
    spacing = float(grid.line_mm[sl[0]].mean())
    host_alpha = float(np.median(maps.alpha[sl]))
    ctx = _LesionContext(rng, maps.eco[sl], maps.m[sl], sd, frac, dx, dz,
                         np.clip(0.5 + sd / les.edge, 0.0, 1.0), _specular(dx, dz, bx, bz),
                         _local_noise(rng, sd.shape, 1.5 / max(spacing, grid.dd)), base)
    _PAINTERS[les.label](les, ctx)
    height_cm = 0.2 * les.radius * math.sqrt(les.aspect)
    alpha = max(0.0, host_alpha - les.values["post_db"] / (2.0 * freq * height_cm))
    _blend(maps.alpha[sl], ctx.inside, alpha)
    halo_mm = les.values.get("halo_mm", 0.0) if les.label == "carcinoma" else 0.0
    mask = sd > -halo_mm
    maps.lesion[sl][mask] = index
    maps.label[sl][mask] = _LESION
    strength = les.values.get("edge_db", 0.0)
    if strength and mask.any():
        _edge_shadows(grid, scene, mask, sl, strength, rng)


def _edge_shadows(grid: _Grid, scene: _Scene, mask: np.ndarray, sl: tuple[slice, slice],
                  strength: float, rng: np.random.Generator) -> None:
    """Refraction shadows down the beam lines tangent to the lesion's lateral walls."""
    if scene.edge_db is None:
        scene.edge_db = np.zeros(grid.shape, np.float32)
    cols = np.flatnonzero(mask.any(axis=0))
    width_mm, fade = rng.uniform(0.5, 1.5), rng.uniform(20.0, 60.0)
    rows_all = np.arange(grid.shape[0])
    for col, side in ((cols[0], -1), (cols[-1], 1)):
        row = int(np.flatnonzero(mask[:, col]).mean()) + sl[0].start
        width = width_mm / max(float(grid.line_mm[row]), 1e-3)
        centre = col + sl[1].start + side * 0.5 * width
        j = np.arange(max(0, int(centre - 3 * width) - 1),
                      min(grid.shape[1], int(centre + 3 * width) + 2))
        lateral = np.exp(-0.5 * ((j - centre) / width) ** 2)
        depth = (rows_all - row) * grid.dd
        along = np.where(depth > 0, np.exp(-np.maximum(depth, 0) / fade), 0.0)
        scene.edge_db[:, j] -= strength * along[:, None] * lateral[None, :]


# --------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=1)
def _nakagami_table() -> np.ndarray:
    """Gamma(m, 1/m) quantiles of the probability ``1 - exp(-s^2)`` on an (m, s) lattice."""
    u = np.clip(-np.expm1(-(_NAKA_S**2)), 0.0, 1.0 - 1e-12)
    table = special.gammaincinv(_NAKA_M[:, None], u[None, :]) / _NAKA_M[:, None]
    return table.astype(np.float32)


def _nakagami_power(intensity: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Map exponential(1) intensities to Gamma(m, 1/m) powers (squared Nakagami amplitudes)."""
    table = _nakagami_table()
    mi = (np.clip(m, _NAKA_M[0], _NAKA_M[-1]) - _NAKA_M[0]) / (_NAKA_M[1] - _NAKA_M[0])
    si = np.clip(np.sqrt(intensity), 0.0, _NAKA_S[-1]) / (_NAKA_S[1] - _NAKA_S[0])
    i0 = np.minimum(mi.astype(np.int32), _NAKA_M.size - 2)
    j0 = np.minimum(si.astype(np.int32), _NAKA_S.size - 2)
    wi, wj = mi - i0, si - j0
    top = table[i0, j0] * (1 - wj) + table[i0, j0 + 1] * wj
    low = table[i0 + 1, j0] * (1 - wj) + table[i0 + 1, j0 + 1] * wj
    return top * (1 - wi) + low * wi


def _lateral_grain(s: _Settings, depth: np.ndarray) -> np.ndarray:
    """Lateral speckle size (FWHM, mm) at each depth."""
    lam = 1.54 / s.freq
    focal = lam * s.f_number * s.lateral_factor
    rayleigh = 7.0 * lam * s.f_number**2
    return np.clip(focal * np.sqrt(1.0 + ((depth - s.focus) / rayleigh) ** 2), 0.5, 2.5)


def _axial_grain(s: _Settings, depth: np.ndarray) -> np.ndarray:
    """Axial speckle size (FWHM, mm) at each depth."""
    base = s.axial_factor * 1.54 / s.freq
    return np.clip(base * (1.0 + 0.15 * depth / s.depth), 0.2, 0.8)


def _speckle(rng: np.random.Generator, grid: _Grid, s: _Settings, bands: int = 4
             ) -> np.ndarray:
    """Exponential(1) intensity of correlated complex Gaussian speckle, grain set per band."""
    n_r, n_l = grid.shape
    pr, pl = sfft.next_fast_len(n_r + 8), sfft.next_fast_len(n_l + 8)
    noise = rng.standard_normal((pr, pl)) + 1j * rng.standard_normal((pr, pl))
    spectrum = sfft.fft2(noise)
    kr = sfft.fftfreq(pr)[:, None]
    kl = sfft.fftfreq(pl)[None, :]
    centres = np.linspace(grid.d[0], grid.d[-1], bands)
    filters, fields = [], []
    for depth in centres:
        row = min(int((depth - grid.d[0]) / grid.dd), n_r - 1)
        sig_r = float(_axial_grain(s, np.array(depth))) / 2.355 / grid.dd
        sig_l = float(_lateral_grain(s, np.array(depth))) / 2.355 / max(grid.line_mm[row], 1e-3)
        h_r = np.exp(-2 * np.pi**2 * sig_r**2 * kr**2)
        h_l = np.exp(-2 * np.pi**2 * sig_l**2 * kl**2)
        h_r /= math.sqrt(float(np.mean(h_r**2)))
        h_l /= math.sqrt(float(np.mean(h_l**2)))
        filters.append((h_r, h_l))
        fields.append(sfft.ifft2(spectrum * h_r * h_l)[:n_r, :n_l])
    pos = np.interp(grid.d, centres, np.arange(bands))
    b0 = np.minimum(pos.astype(int), bands - 2)
    w1 = (pos - b0)[:, None]
    out = np.empty((n_r, n_l), np.float32)
    for b in range(bands - 1):
        rows = b0 == b
        rho = float(np.mean(filters[b][0] * filters[b + 1][0])) * float(
            np.mean(filters[b][1] * filters[b + 1][1]))
        w = w1[rows]
        mixed = (1 - w) * fields[b][rows] + w * fields[b + 1][rows]
        var = (1 - w) ** 2 + w**2 + 2 * w * (1 - w) * rho
        out[rows] = (np.abs(mixed) ** 2 / (2.0 * var)).astype(np.float32)
    return out


def _tgc(grid: _Grid, s: _Settings) -> np.ndarray:
    """Time-gain compensation (dB) per depth sample: nominal slope plus slider errors."""
    slope = s.tgc_comp * 2.0 * s.tgc_ref * s.freq * grid.d / 10.0
    knots = np.linspace(0.0, s.depth, s.tgc_sliders.size)
    sliders = np.interp(grid.d, knots, s.tgc_sliders)
    sliders = ndimage.gaussian_filter1d(sliders, max(1.0, 0.04 * s.depth / grid.dd))
    return slope + sliders


def _beam_blur(grid: _Grid, s: _Settings, loss: np.ndarray) -> np.ndarray:
    """Blur a map laterally by the beam width, which varies with depth."""
    bands = 3
    centres = np.linspace(grid.d[0], grid.d[-1], bands)
    pos = np.interp(grid.d, centres, np.arange(float(bands)))
    out = np.zeros_like(loss)
    for b, depth in enumerate(centres):
        weight = np.clip(1.0 - np.abs(pos - b), 0.0, 1.0)
        rows = np.flatnonzero(weight > 0)
        row = min(int((depth - grid.d[0]) / grid.dd), grid.shape[0] - 1)
        sigma = 1.5 * float(_lateral_grain(s, np.array(depth))) / 2.355 / max(
            grid.line_mm[row], 1e-3)
        part = ndimage.gaussian_filter1d(loss[rows[0]:rows[-1] + 1], sigma, axis=1,
                                         mode="nearest", truncate=3.0)
        out[rows[0]:rows[-1] + 1] += weight[rows[0]:rows[-1] + 1, None] * part
    return out


def _reverb_intensity(grid: _Grid, reverbs: list[_Reverb]) -> np.ndarray:
    """Linear intensity of all reverberation bands."""
    out = np.zeros(grid.shape, np.float32)
    for rev in reverbs:
        delta = grid.d[:, None] - rev.depth[None, :]
        k = delta / rev.spacing
        kn = np.rint(k)
        valid = (kn >= 1) & (kn <= rev.count)
        band = np.exp(-0.5 * ((k - kn) * rev.spacing / rev.width) ** 2)
        out[:, rev.cols] += (valid * band * rev.decay**kn * rev.amp[None, :]).astype(np.float32)
    return out


def _grey_map(v: np.ndarray, s: _Settings) -> np.ndarray:
    """One of five vendor-like grey maps on ``[0, 1]``."""
    if s.grey_map == 1:
        out = v**s.grey_shape
    elif s.grey_map == 2:
        out = (1 - s.grey_shape) * v + s.grey_shape * v * v * (3 - 2 * v)
    elif s.grey_map == 3:
        out = np.log1p(s.grey_shape * v) / math.log1p(s.grey_shape)
    elif s.grey_map == 4:
        out = np.clip((v - s.grey_shape) / (1 - s.grey_shape), 0, 1)
    else:
        out = v
    return s.black + (s.white - s.black) * out


def _render_beam(rng: np.random.Generator, grid: _Grid, maps: _Maps, s: _Settings,
                 scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels on the beam grid, and the rib/gas/lung shadow depth (dB)."""
    step = 2.0 * s.freq * grid.dd / 10.0
    loss = _beam_blur(grid, s, step * np.cumsum(maps.alpha + maps.obstruct, axis=0))
    hidden = step * np.cumsum(maps.obstruct, axis=0)
    tgc = _tgc(grid, s)
    focal = s.focal_gain * np.exp(-0.5 * ((grid.d - s.focus) / (0.15 * s.depth)) ** 2)
    gain = np.maximum(tgc[:, None] - loss, -70.0) + focal[:, None]
    if scene.edge_db is not None:
        gain += scene.edge_db
    omega = np.power(10.0, (maps.eco + gain) / 10.0, dtype=np.float32)
    mid = grid.shape[0] // 2
    coarse = omega[np.ix_(grid.coarse_rows, grid.coarse_cols)]
    sigma = (2.0 / grid.dd / _COARSE, 4.0 / max(grid.line_mm[mid], 1e-3) / _COARSE)
    clutter = _upsample(grid, ndimage.gaussian_filter(coarse, sigma, mode="nearest"))
    haze = 10 ** (s.haze_db / 10) * np.exp(-grid.d / s.haze_mm)
    mean = omega + 10 ** (s.clutter_db / 10) * clutter + haze[:, None]
    mean += _reverb_intensity(grid, scene.reverbs)
    power = mean * _nakagami_power(_speckle(rng, grid, s), maps.m)
    noise_db = tgc - tgc[-1] - s.noise_margin
    power += (10 ** (noise_db / 10))[:, None] * rng.exponential(1.0, grid.shape)
    level_db = 10.0 * np.log10(power + 1e-12)
    v = np.clip((level_db + s.gain) / s.dyn_range + s.level, 0.0, 1.0)
    return _grey_map(v, s).astype(np.float32), hidden.astype(np.float32)


def _scan_convert(geom: _Geometry, grid: _Grid, beam: np.ndarray, order: int) -> np.ndarray:
    """Resample a beam-grid map onto the display pixels of the FOV (0 elsewhere)."""
    i = (geom.pixel_d - grid.d[0]) / grid.dd
    j = (geom.pixel_u - grid.u[0]) / grid.du
    vals = ndimage.map_coordinates(beam, [i, j], order=order, mode="nearest")
    out = np.zeros(geom.fov.shape, np.float32)
    top, bottom, left, right = geom.area
    sub = out[top:bottom, left:right]
    sub[geom.fov[top:bottom, left:right]] = vals
    return out


def _postprocess(img: np.ndarray, s: _Settings) -> np.ndarray:
    """Optional speckle reduction (Lee filter) and edge enhancement (unsharp mask)."""
    if s.smoothing:
        mean = ndimage.gaussian_filter(img, 1.5)
        var = np.maximum(ndimage.gaussian_filter(img * img, 1.5) - mean * mean, 0.0)
        noise = float(np.median(var[var > 0])) if np.any(var > 0) else 1.0
        keep = np.clip(1.0 - s.smoothing * noise / (var + 1e-6), 0.0, 1.0)
        img = mean + keep * (img - mean)
    if s.edge_gain:
        img = img + s.edge_gain * (img - ndimage.gaussian_filter(img, 1.5))
    return img


# --------------------------------------------------------------------------- visibility


def _visible_truths(frame: np.ndarray, geom: _Geometry, lesion_px: np.ndarray,
                    hidden: np.ndarray, lesions: list[_Lesion]) -> list[LesionTruth]:
    """Apply the visibility test of the module docstring to every placed lesion."""
    open_ = geom.fov & (hidden < 10.0)
    image = frame.astype(np.float32)
    truths = []
    for k, les in enumerate(lesions):
        mask = (lesion_px == k) & open_
        if _visible(mask, image, geom.fov, open_ & (lesion_px < 0), geom.pixel_mm, les.radius):
            truths.append(LesionTruth(k, les.label, BoundingBox.of_mask(mask), int(mask.sum())))
    return truths


def _normalised_blur(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``values`` normalised by the blurred ``weight`` (the FOV)."""
    return ndimage.gaussian_filter(values, sigma) / np.maximum(
        ndimage.gaussian_filter(weight, sigma), 1e-3)


def _visible(mask: np.ndarray, image: np.ndarray, fov: np.ndarray, background: np.ndarray,
             p: float, radius: float) -> bool:
    """Size and contrast-to-noise part of the visibility test for one lesion."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return False
    if min(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) * p < 3.0 or mask.sum() * p * p < 7.0:
        return False
    gap, width = 0.5, max(2.0, 0.4 * radius)
    sigma = max(0.7, 0.5 / p)
    pad = int((gap + width) / p + 3 * sigma) + 2
    r0, r1 = max(0, rows[0] - pad), min(mask.shape[0], rows[-1] + pad + 1)
    c0, c1 = max(0, cols[0] - pad), min(mask.shape[1], cols[-1] + pad + 1)
    win = mask[r0:r1, c0:c1]
    inside_fov = fov[r0:r1, c0:c1].astype(np.float32)
    vals = _normalised_blur(image[r0:r1, c0:c1] * inside_fov, inside_fov, sigma)
    texture = vals - _normalised_blur(vals * inside_fov, inside_fov, 4 * sigma)
    outside = ndimage.distance_transform_edt(~win) * p
    inside = ndimage.distance_transform_edt(win) * p
    ring = (outside > gap) & (outside <= gap + width) & background[r0:r1, c0:c1]
    if ring.sum() < 10:
        return False
    core = inside > 0.4
    if core.sum() < 0.3 * win.sum():
        core = win
    rim = (inside > 0.4) & (inside <= 0.4 + 0.3 * radius)
    ring_mean = float(np.median(vals[ring]))
    ring_texture = texture[ring]
    ring_sd = 1.4826 * float(np.median(np.abs(ring_texture - np.median(ring_texture))))
    contrast = abs(float(vals[core].mean()) - ring_mean)
    if rim.sum() >= 5:
        contrast = max(contrast, abs(float(vals[rim].mean()) - ring_mean))
    return contrast >= 15.0 and contrast >= 2.0 * ring_sd


# --------------------------------------------------------------------------- annotations

_FONT: dict[str, tuple[int, ...]] = {
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14),
    "2": (14, 17, 1, 2, 4, 8, 31), "3": (31, 2, 4, 2, 1, 17, 14),
    "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8),
    "8": (14, 17, 17, 14, 17, 17, 14), "9": (14, 17, 17, 15, 1, 2, 12),
    "A": (14, 17, 17, 17, 31, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30),
    "C": (14, 17, 16, 16, 16, 17, 14), "D": (28, 18, 17, 17, 17, 18, 28),
    "E": (31, 16, 16, 30, 16, 16, 31), "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17),
    "I": (14, 4, 4, 4, 4, 4, 14), "J": (7, 2, 2, 2, 2, 18, 12),
    "K": (17, 18, 20, 24, 20, 18, 17), "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14), "P": (30, 17, 17, 30, 16, 16, 16),
    "Q": (14, 17, 17, 17, 21, 18, 13), "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4),
    "U": (17, 17, 17, 17, 17, 17, 14), "V": (17, 17, 17, 17, 17, 10, 4),
    "W": (17, 17, 17, 21, 21, 21, 10), "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 17, 10, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31),
    ".": (0, 0, 0, 0, 0, 12, 12), ":": (0, 12, 12, 0, 12, 12, 0),
    "/": (0, 1, 2, 4, 8, 16, 0), "-": (0, 0, 0, 31, 0, 0, 0),
    "+": (0, 4, 4, 31, 4, 4, 0), "%": (24, 25, 2, 4, 8, 19, 3),
    "*": (0, 4, 21, 14, 21, 4, 0), " ": (0, 0, 0, 0, 0, 0, 0),
}


def _glyphs(text: str, scale: int) -> np.ndarray:
    """Boolean bitmap of a text line in the 5x7 font."""
    cols = []
    for ch in text.upper():
        rows = _FONT.get(ch, _FONT[" "])
        bits = np.array([[(r >> (4 - b)) & 1 for b in range(5)] for r in rows], bool)
        cols.extend([bits, np.zeros((7, 1), bool)])
    bitmap = np.concatenate(cols, axis=1) if cols else np.zeros((7, 1), bool)
    return np.kron(bitmap, np.ones((scale, scale), bool))


class _Canvas:
    """Burns annotations into a frame, optionally keeping them out of the FOV."""

    def __init__(self, frame: np.ndarray, fov: np.ndarray) -> None:
        self.frame = frame
        self.fov = fov

    def put(self, rr: np.ndarray, cc: np.ndarray, value: int, outside: bool) -> None:
        """Set pixels ``(rr, cc)`` that lie on the screen (and off the FOV when asked)."""
        rr, cc = np.asarray(rr, int).ravel(), np.asarray(cc, int).ravel()
        ok = (rr >= 0) & (rr < self.frame.shape[0]) & (cc >= 0) & (cc < self.frame.shape[1])
        rr, cc = rr[ok], cc[ok]
        if outside:
            keep = ~self.fov[rr, cc]
            rr, cc = rr[keep], cc[keep]
        self.frame[rr, cc] = value

    def text(self, row: int, col: int, text: str, scale: int, value: int, outside: bool) -> int:
        """Write a text line; returns its width in pixels."""
        rr, cc = np.nonzero(_glyphs(text, scale))
        self.put(rr + row, cc + col, value, outside)
        return 6 * scale * len(text)

    def line(self, p0: tuple[float, float], p1: tuple[float, float], value: int,
             outside: bool, dash: int = 0) -> None:
        """A one-pixel line from ``p0`` to ``p1`` (row, col), dotted when ``dash`` > 0."""
        n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
        t = np.linspace(0.0, 1.0, n)
        if dash:
            t = t[(np.arange(n) // dash) % 2 == 0]
        self.put(np.rint(p0[0] + t * (p1[0] - p0[0])), np.rint(p0[1] + t * (p1[1] - p0[1])),
                 value, outside)

    def cross(self, row: float, col: float, size: int, value: int, diagonal: bool) -> None:
        """A caliper mark: ``+`` or ``x``."""
        k = np.arange(-size, size + 1)
        if diagonal:
            self.put(row + k, col + k, value, False)
            self.put(row + k, col - k, value, False)
        else:
            self.put(row + k, np.full(k.size, col), value, False)
            self.put(np.full(k.size, row), col + k, value, False)


_PROBE_NAMES = {"linear": ("L12-5", "L15-7", "11L", "14L5", "L9-3"),
                "convex": ("C5-1", "C6-2", "4C", "C3-7", "C1-5"),
                "sector": ("S5-1", "P4-2", "3S", "M5S")}


def _header_lines(rng: np.random.Generator, s: _Settings, organ: str) -> list[str]:
    date = f"20{rng.integers(15, 26)}/{rng.integers(1, 13):02d}/{rng.integers(1, 29):02d}"
    clock = f"{rng.integers(7, 20):02d}:{rng.integers(60):02d}:{rng.integers(60):02d}"
    probe = _PROBE_NAMES[s.kind][int(rng.integers(len(_PROBE_NAMES[s.kind])))]
    site = ("LIVER", "ABD", "ABDOMEN", "RT LOBE") if organ == "liver" else (
        "BREAST", "R BREAST", "L BREAST", "SMALL PARTS")
    return [
        f"ID ******  {date} {clock}",
        f"{probe} {s.freq:.1f}MHZ  {site[int(rng.integers(len(site)))]}",
        f"MI {rng.uniform(0.4, 1.4):.1f} TIS {rng.uniform(0.1, 1.0):.1f}  "
        f"FR {rng.integers(8, 40)}HZ",
    ]


def _side_lines(rng: np.random.Generator, s: _Settings) -> list[str]:
    return [f"GN {int(50 + 5 * s.gain)}", f"DR {int(s.dyn_range)}", f"D {s.depth / 10:.1f}CM",
            f"FA {rng.integers(1, 5)}", f"P {rng.integers(60, 100)}%"]


def _body_marker(canvas: _Canvas, rng: np.random.Generator, organ: str, row: int, col: int,
                 size: int, outside: bool) -> None:
    """A small pictogram: breast circle or torso outline, with a probe bar."""
    t = np.linspace(0, 2 * np.pi, 8 * size)
    value = int(rng.integers(170, 256))
    if organ == "breast":
        canvas.put(row + size * np.sin(t), col + size * np.cos(t), value, outside)
        canvas.put(row + np.array([0, 0, 1, 1]), col + np.array([0, 1, 0, 1]), value, outside)
    else:
        for a, b in (((-1, -0.6), (-1, 0.6)), ((-1, 0.6), (1, 0.8)), ((1, 0.8), (1, -0.8)),
                     ((1, -0.8), (-1, -0.6))):
            canvas.line((row + a[0] * size, col + a[1] * size),
                        (row + b[0] * size, col + b[1] * size), value, outside)
    ang = rng.uniform(0, np.pi)
    pr, pc = row + rng.uniform(-0.5, 0.5) * size, col + rng.uniform(-0.5, 0.5) * size
    dr, dc = 0.45 * size * math.sin(ang), 0.45 * size * math.cos(ang)
    for off in (0, 1):
        canvas.line((pr - dr + off, pc - dc), (pr + dr + off, pc + dc), 255, outside)


def _annotate(rng: np.random.Generator, frame: np.ndarray, geom: _Geometry, s: _Settings,
              organ: str, truths: list[LesionTruth]) -> None:
    """Burn text and marks around (and sometimes inside) the FOV."""
    rows, cols = frame.shape
    canvas = _Canvas(frame, geom.fov)
    scale = 1 if rows < 560 else 2
    value = int(rng.integers(180, 256))
    box = BoundingBox.of_mask(geom.fov)
    row = 2
    for line in _header_lines(rng, s, organ):
        canvas.text(row, int(rng.integers(2, max(3, cols // 8))), line, scale, value, True)
        row += 9 * scale
    left = int(rng.integers(2, 6))
    for k, line in enumerate(_side_lines(rng, s)):
        canvas.text(int(box.y0) + 10 + k * 10 * scale, left, line, scale, value, True)
    right = int(min(cols - 14, box.x1 + 4))
    _depth_scale(canvas, geom, s, right, scale, value)
    bar_col = int(rng.integers(max(0, cols - 14), max(1, cols - 8)))
    bar = np.arange(int(rows * 0.25))
    for c in range(bar_col, min(cols, bar_col + 6)):
        frame_rows = int(rows * 0.3) + bar
        keep = ~geom.fov[np.clip(frame_rows, 0, rows - 1), c]
        frame[frame_rows[keep], c] = (255 * (1 - bar[keep] / max(1, bar.size - 1))).astype(np.uint8)
    canvas.put(np.array([box.y0 + 2, box.y0 + 2, box.y0 + 3, box.y0 + 3]),
               np.array([box.x0 - 6, box.x0 - 5, box.x0 - 6, box.x0 - 5]), 255, True)
    size = int(rng.integers(8, 14)) * scale
    if rng.random() < 0.4:
        _inside_marks(canvas, rng, geom, s, organ, truths, scale, size)
    else:
        _body_marker(canvas, rng, organ, rows - size - 4, left + size + 2, size, True)


def _depth_scale(canvas: _Canvas, geom: _Geometry, s: _Settings, col: int, scale: int,
                 value: int) -> None:
    """Centimetre ticks and labels beside the FOV, with a focus marker."""
    for cm in range(int(s.depth // 10) + 1):
        row = geom.origin[0] + cm * 10.0 / geom.pixel_mm
        if row >= canvas.frame.shape[0]:
            break
        length = 5 if cm % 5 == 0 else 3
        canvas.line((row, col), (row, col + length), value, True)
        if cm % 5 == 0 or s.depth < 80:
            canvas.text(int(row) - 3, col + 7, str(cm), scale, value, True)
    focus = geom.origin[0] + s.focus / geom.pixel_mm
    for k in range(4):
        canvas.line((focus - k, col - 4 + k), (focus + k, col - 4 + k), value, True)


def _inside_marks(canvas: _Canvas, rng: np.random.Generator, geom: _Geometry, s: _Settings,
                  organ: str, truths: list[LesionTruth], scale: int, size: int) -> None:
    """Calipers with a dotted line, a readout, depth dots and a body marker in the FOV."""
    box = BoundingBox.of_mask(geom.fov)
    value = int(rng.integers(200, 256))
    if truths and rng.random() < 0.7:
        t = truths[int(rng.integers(len(truths)))].box
        near, far = rng.uniform(-0.1, 0.15, 2)
        p0 = (t.y0 + t.height / 2, t.x0 + near * t.width)
        p1 = (t.y0 + t.height / 2, t.x1 - far * t.width)
        if rng.random() < 0.5:
            p0, p1 = (t.y0 + near * t.height, t.x0 + t.width / 2), (t.y1 - far * t.height,
                                                                     t.x0 + t.width / 2)
    else:
        p0 = (rng.uniform(box.y0, box.y1), rng.uniform(box.x0, box.x1))
        p1 = (p0[0] + rng.uniform(-60, 60), p0[1] + rng.uniform(-60, 60))
    diagonal = bool(rng.random() < 0.5)
    for p in (p0, p1):
        canvas.cross(p[0], p[1], 3 * scale, value, diagonal)
    canvas.line(p0, p1, value, False, dash=2)
    length = math.hypot(p1[0] - p0[0], p1[1] - p0[1]) * geom.pixel_mm
    canvas.text(int(box.y1) - 12 * scale, int(box.x0 + 0.3 * box.width),
                f"D1 {length:.1f}MM", scale, value, False)
    if rng.random() < 0.5:
        for cm in range(1, int(s.depth // 10) + 1):
            row = geom.origin[0] + cm * 10.0 / geom.pixel_mm
            canvas.put(np.array([row, row + 1]), np.array([geom.origin[1]] * 2), value, False)
    if rng.random() < 0.6:
        _body_marker(canvas, rng, organ, int(box.y1) - size - 6, int(box.x1) - size - 6,
                     size, False)


# --------------------------------------------------------------------------- entry point


def _settings_params(s: _Settings, geom: _Geometry) -> dict[str, float]:
    sliders = {f"tgc_slider_{k}_db": float(v) for k, v in enumerate(s.tgc_sliders)}
    return {
        "probe_kind": PROBE_CODES[s.kind], "depth_mm": s.depth, "freq_mhz": s.freq,
        "radius_mm": s.radius, "half_angle_deg": math.degrees(s.half_angle),
        "half_width_mm": s.half_width, "focus_mm": s.focus, "f_number": s.f_number,
        "axial_factor": s.axial_factor, "lateral_factor": s.lateral_factor,
        "dynamic_range_db": s.dyn_range, "gain_db": s.gain, "tissue_level": s.level,
        "tgc_comp": s.tgc_comp, "tgc_ref": s.tgc_ref, "focal_gain_db": s.focal_gain,
        "haze_db": s.haze_db, "haze_mm": s.haze_mm, "clutter_db": s.clutter_db,
        "noise_margin_db": s.noise_margin, "grey_map": float(s.grey_map),
        "grey_shape": s.grey_shape, "black_level": s.black, "white_level": s.white,
        "speckle_reduction": s.smoothing, "edge_enhancement": s.edge_gain, "zoom": s.zoom,
        "pixel_mm": geom.pixel_mm, "origin_row": geom.origin[0], "origin_col": geom.origin[1],
        **sliders,
    }


def generate_statistical(
    organ: Organ,
    seed: int,
    rows: int = 480,
    cols: int = 640,
    *,
    annotations: bool | None = None,
) -> PhantomSample:
    """Render one statistical display-space B-mode still of a liver or breast.

    Parameters
    ----------
    organ:
        ``"liver"`` or ``"breast"``.
    seed:
        Seed of everything drawn; the same seed gives the same image.
    rows, cols:
        Screen size in pixels (e.g. 384x512 up to 768x1024).
    annotations:
        Burn in text and marks; ``None`` draws it (85 % of images).  Annotations
        have their own random stream and never change the image under them or
        the truths.

    Returns
    -------
    PhantomSample
        One frame ``(1, rows, cols)`` of ``uint8``, the visible lesions per the
        visibility test of the module docstring, the class of every placed
        lesion, the FOV's bounding box, the pixel size and every drawn
        parameter in ``params``.
    """
    if organ not in ("liver", "breast"):
        raise ValueError(f"Unknown organ {organ!r}.")
    scene_seq, annot_seq = np.random.SeedSequence([int(seed), 0x57A7]).spawn(2)
    rng = np.random.default_rng(scene_seq)
    arng = np.random.default_rng(annot_seq)
    draw_annotations = bool(arng.random() < 0.85)
    annotate = draw_annotations if annotations is None else bool(annotations)
    s = _draw_settings(rng, organ)
    geom = _layout(rng, s, rows, cols)
    grid = _beam_grid(geom, s)
    maps = _Maps.empty(grid.shape)
    scene = _Scene()
    params = _settings_params(s, geom)
    if organ == "liver":
        _liver_anatomy(rng, grid, maps, s, scene, params)
        base, fat_eco = params["liver_eco_db"], -7.0
        s.tgc_ref = params["liver_alpha"] * params["tgc_shortfall"]
        params["tgc_ref"] = s.tgc_ref
    else:
        _breast_anatomy(rng, grid, maps, s, scene, params)
        base, fat_eco = 0.0, params["breast_fat_eco_db"]
    lesions = _place_lesions(rng, organ, grid, maps, fat_eco)
    for k, les in enumerate(lesions):
        _paint_lesion(rng, grid, maps, les, k, base, s.freq, scene)
    beam, hidden = _render_beam(rng, grid, maps, s, scene)
    image = _postprocess(_scan_convert(geom, grid, beam, 1), s)
    frame = np.where(geom.fov, np.clip(np.rint(image), 0, 255), 0).astype(np.uint8)
    lesion_px = np.where(geom.fov, _scan_convert(geom, grid, maps.lesion.astype(np.float32), 0),
                         -1).astype(np.int16)
    hidden_px = _scan_convert(geom, grid, hidden, 1)
    truths = _visible_truths(frame, geom, lesion_px, hidden_px, lesions)
    if annotate:
        _annotate(arng, frame, geom, s, organ, truths)
    params.update(n_lesions=float(len(lesions)), n_visible=float(len(truths)),
                  annotations=float(annotate))
    for k, les in enumerate(lesions):
        params.update({f"lesion{k}_diameter_mm": 2 * les.radius, f"lesion{k}_x_mm": les.cx,
                       f"lesion{k}_z_mm": les.cz, f"lesion{k}_aspect": les.aspect})
    return PhantomSample(
        organ=organ,
        seed=seed,
        frames=frame[None],
        truths=[truths],
        labels=[les.label for les in lesions],
        scan_box=BoundingBox.of_mask(geom.fov),
        pixel_mm=geom.pixel_mm,
        params=params,
    )
