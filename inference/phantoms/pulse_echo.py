"""Third, independent phantom generator: simulated RF pulse-echo lines.

This generator exists for evaluation only (never for training): it draws the published
sonographic appearances of liver and breast lesions through its own rendering route, so
that the engines can be measured on images from a generator they never saw.

Rendering route
---------------
1. **Probe and beam grid.**  A linear, convex or phased (sector) probe is drawn per organ
   (liver: mostly convex 2.5-5 MHz, 120-200 mm deep; breast: mostly linear 7-14 MHz,
   30-60 mm deep).  Beam lines are laid out in physical coordinates (lateral position or
   steering angle x depth); every grid point has a Cartesian position in mm.
2. **Tissue maps.**  On a coarse beam grid, the anatomy and lesions write three maps:
   backscatter amplitude (echogenicity), attenuation (dB/cm/MHz) and acoustic impedance.
   Shapes are analytic (lobulated/spiculated ellipses, Bezier tubes, layered surfaces),
   so the same outline is evaluated again on the display grid for the ground-truth box.
3. **Scatterers and reflectors.**  Gaussian random scatterers (plus sparse bright point
   targets) weighted by the echogenicity, and specular reflectors from the impedance
   derivative along each beam (so walls and capsules perpendicular to the beam are bright
   and grazing ones fade).  Amplitudes are weighted by the round-trip attenuation
   accumulated along each line, so low-attenuation lesions (fluid) produce posterior
   enhancement and high-attenuation ones posterior shadowing by themselves.  Round smooth
   fluid-filled or encapsulated lesions add loss where their wall is grazed by the beam,
   which gives refraction-like lateral edge shadows.  Electronic noise and near-field
   reverberation haze are added without attenuation.
4. **Pulse and beam.**  Each line is convolved in depth with a Gaussian-modulated RF pulse
   (centre frequency and bandwidth by probe, in the Fourier domain).  Frequency-dependent
   attenuation is modelled by three depth bands whose spectra are down-shifted by the mean
   accumulated attenuation.  The lateral beam profile is a Gaussian convolution across
   neighbouring lines whose width follows a focused-beam law around a drawn focal depth.
5. **Receiver.**  Envelope detection (Hilbert transform), imperfect time-gain
   compensation (attenuation slope mis-set by up to about 25 % plus slider ripple), log
   compression with a random dynamic range and gain, a random grey-map gamma, anti-alias
   filtering and scan conversion to the display grid (black outside the field of view),
   then burned-in annotations some of the time (text lines, depth scale with ticks,
   focus marker, logo, body marker).

Ground-truth visibility
-----------------------
A placed lesion becomes a :class:`LesionTruth` only when, on the final ``uint8`` frame,

* its visible part (outline inside the field of view) has an equivalent diameter of at
  least :data:`MIN_VISIBLE_MM` mm and covers at least :data:`MIN_INSIDE_FRACTION` of the
  outline;
* its surrounding ring (a band 0.7 mm to max(2.5 mm, 0.35 r) outside the outline, inside
  the field of view, with the posterior column excluded) is not dark: fewer than half of
  the ring pixels are below grey 6 (e.g. a rib shadow or the far-field noise floor);
* contrast is sufficient: with ``d = |mean_in - mean_ring|`` and the ring's standard
  deviation ``s``, the Rose index ``d / s * sqrt(area / speckle_cell_area)`` is at least
  :data:`MIN_ROSE` and the contrast-to-noise ratio
  ``d / sqrt((s_in**2 + s**2) / 2)`` is at least :data:`MIN_CNR`.  The lesion interior
  is tested as a whole and, for lesions whose boundary carries the contrast (halo, rim,
  capsule), also its outer band; the better of the two counts.

The box is the bounding box of the lesion outline on the display grid (including a halo,
rim or capsule that belongs to the lesion, never its posterior shadow or enhancement),
clipped to the field of view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import fft as sfft
from scipy import ndimage, signal

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, BoundingBox
from inference.phantoms.generator import LesionTruth, Organ, PhantomSample

MIN_VISIBLE_MM = 3.0
"""Minimum equivalent diameter (mm) of the visible part of a lesion."""

MIN_INSIDE_FRACTION = 0.5
"""Minimum share of the lesion outline that lies inside the field of view."""

MIN_ROSE = 5.0
"""Minimum Rose index (contrast / ring std * sqrt(speckle cells))."""

MIN_CNR = 0.45
"""Minimum contrast-to-noise ratio between lesion and surrounding ring."""

SOUND_MM_US = 1.54
"""Speed of sound, mm per microsecond."""

_DB_NP = 0.1151
"""Nepers per decibel."""


# --------------------------------------------------------------------------- probe grid


@dataclass
class _Probe:
    kind: str
    depth: float
    freq: float
    bandwidth: float
    radius: float
    half_angle: float
    width: float
    focus: float
    f_number: float


def _draw_probe(organ: Organ, rng: np.random.Generator) -> _Probe:
    u = rng.random()
    if organ == "liver":
        if u < 0.75:
            kind, depth, freq = "convex", rng.uniform(120, 200), rng.uniform(2.5, 5.0)
        elif u < 0.9:
            kind, depth, freq = "sector", rng.uniform(120, 180), rng.uniform(2.0, 4.0)
        else:
            kind, depth, freq = "linear", rng.uniform(50, 80), rng.uniform(5.0, 9.0)
    else:
        if u < 0.85:
            kind, depth, freq = "linear", rng.uniform(30, 60), rng.uniform(7.0, 14.0)
        else:
            kind, depth, freq = "convex", rng.uniform(40, 65), rng.uniform(5.0, 8.0)
    if kind == "convex":
        radius = rng.uniform(40, 60) if organ == "liver" else rng.uniform(15, 25)
        half = math.radians(rng.uniform(28, 38) if organ == "liver" else rng.uniform(30, 40))
        width = 0.0
    elif kind == "sector":
        radius, half, width = 1.5, math.radians(rng.uniform(35, 45)), 0.0
    else:
        radius, half, width = 0.0, 0.0, rng.uniform(38, 50)
    return _Probe(kind, depth, freq, rng.uniform(0.5, 0.8), radius, half, width,
                  focus=depth * rng.uniform(0.3, 0.65), f_number=rng.uniform(2.4, 4.0))


class _Grid:
    """Beam-line geometry: line index x depth sample <-> Cartesian mm (x lateral, y down)."""

    def __init__(self, probe: _Probe, n_lines: int, n_depth: int) -> None:
        self.p = probe
        self.n_lines = n_lines
        self.n_depth = n_depth
        self.dz = probe.depth / n_depth
        if probe.kind == "linear":
            self.u = np.linspace(-probe.width / 2, probe.width / 2, n_lines)
        else:
            self.u = np.linspace(-probe.half_angle, probe.half_angle, n_lines)
        self.du = float(self.u[1] - self.u[0])
        self.d = (np.arange(n_depth) + 0.5) * self.dz

    def cart(self, u: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.p.kind == "linear":
            return u + 0 * d, d + 0 * u
        r = self.p.radius + d
        return r * np.sin(u), r * np.cos(u) - self.p.radius

    def beam(self, u: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit beam direction (x, y) at grid points."""
        if self.p.kind == "linear":
            return np.zeros_like(u + 0 * d), np.ones_like(u + 0 * d)
        return np.sin(u) + 0 * d, np.cos(u) + 0 * d

    def polar(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cartesian mm -> (u, depth)."""
        if self.p.kind == "linear":
            return x, y
        yy = y + self.p.radius
        return np.arctan2(x, yy), np.hypot(x, yy) - self.p.radius

    def line_width_mm(self, d: np.ndarray) -> np.ndarray:
        if self.p.kind == "linear":
            return np.full_like(d, self.du)
        return (self.p.radius + d) * self.du

    def beam_fwhm_mm(self, d: np.ndarray) -> np.ndarray:
        lam = SOUND_MM_US / self.p.freq
        w0 = lam * self.p.f_number
        zr = max(self.p.focus * 0.6, 8.0)
        return w0 * np.sqrt(1.0 + ((d - self.p.focus) / zr) ** 2)


class _Maps:
    """Coarse tissue maps on the beam grid plus helpers to paint shapes with windows."""

    def __init__(self, grid: _Grid, step: int) -> None:
        self.g = grid
        self.step = step
        nd = grid.n_depth // step
        self.dc = (np.arange(nd) + 0.5) * grid.dz * step
        uu, dd = np.meshgrid(grid.u, self.dc, indexing="ij")
        self.x, self.y = (v.astype(np.float32) for v in grid.cart(uu, dd))
        self.bx, self.by = (v.astype(np.float32) for v in grid.beam(uu, dd))
        shape = self.x.shape
        self.echo = np.ones(shape, np.float32)
        self.att = np.full(shape, 0.5, np.float32)
        self.imp = np.ones(shape, np.float32)
        self.points = np.zeros(shape, np.float32)

    def window(self, cx: float, cy: float, r: float) -> tuple[slice, slice]:
        g = self.g
        u, d = g.polar(np.array(cx), np.array(cy))
        u, d = float(u), float(d)
        if g.p.kind == "linear":
            du = r
        else:
            rr = max(g.p.radius + d, 1e-3)
            du = math.asin(min(1.0, r / rr)) if r < rr else math.pi
        i0 = int(np.searchsorted(g.u, u - du)) - 1
        i1 = int(np.searchsorted(g.u, u + du)) + 1
        stepmm = g.dz * self.step
        j0 = int((d - r) / stepmm) - 1
        j1 = int((d + r) / stepmm) + 2
        return (slice(max(i0, 0), max(min(i1, g.n_lines), 0)),
                slice(max(j0, 0), max(min(j1, len(self.dc)), 0)))

    def blend(self, win: tuple[slice, slice], m: np.ndarray, *, echo: Any = None,
              att: Any = None, imp: Any = None) -> None:
        if echo is not None:
            e = self.echo[win]
            self.echo[win] = e + (echo - e) * m
        if att is not None:
            a = self.att[win]
            self.att[win] = a + (att - a) * m
        if imp is not None:
            i = self.imp[win]
            self.imp[win] = i + (imp - i) * m


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _soft_inside(sd: np.ndarray, width: float) -> np.ndarray:
    """1 inside (sd < 0), 0 outside, smooth over ``width`` mm across the boundary."""
    if width <= 1e-6:
        return (sd < 0).astype(np.float32)
    return _smoothstep(0.5 - sd / width).astype(np.float32)


def _ridge(sd: np.ndarray, at: float, width: float) -> np.ndarray:
    return np.exp(-(((sd - at) / max(width, 1e-3)) ** 2)).astype(np.float32)


@dataclass
class _Noise:
    """Smooth random field as a sum of plane waves (grid independent)."""

    kx: np.ndarray
    ky: np.ndarray
    ph: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, scale_mm: float, n: int = 8) -> _Noise:
        ang = rng.uniform(0, np.pi, n)
        k = 2 * np.pi / (scale_mm * rng.uniform(0.6, 1.6, n))
        return cls(k * np.cos(ang), k * np.sin(ang), rng.uniform(0, 2 * np.pi, n))

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast(x, y).shape, np.float32)
        for a, b, p in zip(self.kx.tolist(), self.ky.tolist(), self.ph.tolist(), strict=True):
            out += np.cos(a * x + b * y + p)
        return out * (math.sqrt(2.0 / len(self.kx)))


# --------------------------------------------------------------------------- shapes


@dataclass
class _Blob:
    """Lobulated / spiculated ellipse; ``sd`` gives an approximate signed distance (mm)."""

    cx: float
    cy: float
    a: float
    b: float
    rot: float = 0.0
    harm: list[tuple[int, float, float]] = field(default_factory=list)
    spikes: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def rmax(self) -> float:
        extra = sum(abs(h[1]) for h in self.harm) + max((s[1] for s in self.spikes), default=0)
        return max(self.a, self.b) * (1.0 + extra) + 1.0

    @property
    def r_eq(self) -> float:
        return math.sqrt(self.a * self.b)

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.rot), math.sin(self.rot)
        dx, dy = x - self.cx, y - self.cy
        return dx * c + dy * s, -dx * s + dy * c

    def sd(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u, v = self.local(x, y)
        un, vn = u / self.a, v / self.b
        rho = np.sqrt(un * un + vn * vn)
        bound = np.ones_like(rho)
        if self.harm or self.spikes:
            phi = np.arctan2(vn, un)
            for k, amp, ph in self.harm:
                bound += amp * np.cos(k * phi + ph)
            for ang, h, w in self.spikes:
                dphi = np.angle(np.exp(1j * (phi - ang)))
                bound += h * np.exp(-((dphi / w) ** 2))
        return ((rho - bound) * self.r_eq).astype(np.float32)

    def grazing(self, x: np.ndarray, y: np.ndarray, bx: np.ndarray,
                by: np.ndarray) -> np.ndarray:
        """1 where the beam grazes the outline (normal perpendicular to the beam)."""
        u, v = self.local(x, y)
        nu, nv = u / self.a**2, v / self.b**2
        c, s = math.cos(self.rot), math.sin(self.rot)
        nx, ny = nu * c - nv * s, nu * s + nv * c
        norm = np.sqrt(nx * nx + ny * ny) + 1e-9
        cos = np.abs(nx * bx + ny * by) / norm
        return np.exp(-((cos / 0.2) ** 2)).astype(np.float32)


@dataclass
class _Tube:
    """Quadratic Bezier tube with tapering radius."""

    p0: tuple[float, float]
    p1: tuple[float, float]
    p2: tuple[float, float]
    r0: float
    r1: float

    def pts(self, n: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.linspace(0, 1, n)
        px = (1 - t) ** 2 * self.p0[0] + 2 * (1 - t) * t * self.p1[0] + t**2 * self.p2[0]
        py = (1 - t) ** 2 * self.p0[1] + 2 * (1 - t) * t * self.p1[1] + t**2 * self.p2[1]
        return px, py, self.r0 + (self.r1 - self.r0) * t

    def sd(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        px, py, pr = self.pts()
        best = np.full(x.shape, np.inf, np.float32)
        for i in range(len(px)):
            d = np.hypot(x - px[i], y - py[i]) - pr[i]
            np.minimum(best, d, out=best)
        return best

    def bounds(self) -> tuple[float, float, float]:
        px, py, pr = self.pts()
        cx, cy = float(px.mean()), float(py.mean())
        return cx, cy, float(np.max(np.hypot(px - cx, py - cy) + pr)) + 1.5


def _paint_tube(m: _Maps, tube: _Tube, *, echo: float, att: float, wall: float,
                imp: float = 0.985) -> None:
    win = m.window(*tube.bounds())
    if win[0].stop <= win[0].start or win[1].stop <= win[1].start:
        return
    sd = tube.sd(m.x[win], m.y[win])
    inside = _soft_inside(sd, 0.5)
    m.blend(win, inside, echo=echo, att=att, imp=imp)
    if wall > 0:
        m.imp[win] += wall * _ridge(sd, 0.35, 0.45)
        m.echo[win] += wall * 8.0 * _ridge(sd, 0.4, 0.5)


def _paint_blob_layer(m: _Maps, blob: _Blob, *, echo: Any, att: float, imp: float = 1.0,
                      edge: float = 0.4, wall: float = 0.0, wall_echo: float = 0.0,
                      grazing_att: float = 0.0) -> None:
    win = m.window(blob.cx, blob.cy, blob.rmax + 2.0)
    if win[0].stop <= win[0].start or win[1].stop <= win[1].start:
        return
    x, y = m.x[win], m.y[win]
    sd = blob.sd(x, y)
    inside = _soft_inside(sd, edge)
    e = echo(x, y, sd) if callable(echo) else echo
    m.blend(win, inside, echo=e, att=att, imp=imp)
    if wall:
        m.imp[win] += wall * _ridge(sd, 0.0, 0.35)
    if wall_echo:
        m.echo[win] += wall_echo * _ridge(sd, 0.25, 0.45)
    if grazing_att:
        g = blob.grazing(x, y, m.bx[win], m.by[win]) * _ridge(sd, 0.3, 0.7)
        m.att[win] += grazing_att * g


# --------------------------------------------------------------------------- lesions


@dataclass
class _Lesion:
    label: str
    blob: _Blob
    halo: float = 0.0
    """Extent (mm) beyond ``blob`` that belongs to the lesion (halo, rim, capsule)."""
    rim_contrast: bool = False
    rim_width: float = 0.0
    """Width (mm) of the band inside the outline that carries the contrast (halo, rim)."""
    att: float = 0.0
    """Attenuation (dB/cm/MHz) at the lesion centre, recorded after painting."""

    def outline_sd(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.blob.sd(x, y) - self.halo


def _lobulated(rng: np.random.Generator, n: int, amp: float) -> list[tuple[int, float, float]]:
    ks = rng.choice(np.arange(2, 7), size=n, replace=False)
    return [(int(k), rng.uniform(0.3, 1.0) * amp / n * (3.0 / max(k, 3)), rng.uniform(0, 2 * np.pi))
            for k in ks]


def _log_size(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _liver_lesion(label: str, rng: np.random.Generator, cx: float, cy: float, diam: float,
                  pe: float, m: _Maps, style: dict[str, float]) -> _Lesion:
    r = diam / 2
    ell = rng.uniform(0.75, 1.0)
    a, b = (r / math.sqrt(ell), r * math.sqrt(ell))
    rot = rng.uniform(-np.pi / 2, np.pi / 2)
    tex = _Noise.draw(rng, max(1.5, r / 3), 8)
    if label == "cyst":
        blob = _Blob(cx, cy, a, b, rot, _lobulated(rng, 1, 0.04))
        lev = rng.uniform(0.0, 0.02) * pe
        _paint_blob_layer(m, blob, echo=lev, att=rng.uniform(0.0, 0.05), imp=0.97,
                          edge=0.25, wall=0.04, grazing_att=rng.uniform(6, 14))
        return _Lesion(label, blob, 0.0)
    if label == "hemangioma":
        blob = _Blob(cx, cy, a, b, rot, _lobulated(rng, 3, rng.uniform(0.08, 0.2)))
        bright = pe * rng.uniform(1.6, 2.6)
        large = diam > 30 and rng.random() < 0.7

        def echo(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> np.ndarray:
            e = bright * (1 + 0.12 * tex(x, y))
            if large:
                core = _soft_inside(sd + r * rng_frac, r * 0.4)
                patchy = 0.5 + 0.5 * np.clip(tex(y, x), -1, 1)
                e = e * (1 - core) + pe * (0.5 + 0.9 * patchy) * core
                e = e + bright * 0.4 * _ridge(sd, -1.0, 1.5)
            return e

        rng_frac = rng.uniform(0.3, 0.5)
        _paint_blob_layer(m, blob, echo=echo, att=style["att"] * rng.uniform(0.6, 0.85),
                          imp=1.01, edge=rng.uniform(0.2, 0.6))
        return _Lesion(label, blob, 0.0)
    if label == "hcc":
        blob = _Blob(cx, cy, a, b, rot, _lobulated(rng, 2, rng.uniform(0.03, 0.12)))
        halo_w = rng.uniform(0.7, 1.8) if rng.random() < 0.8 else 0.0
        if diam < 20:
            inner = pe * rng.uniform(0.4, 0.7)

            def echo(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> np.ndarray:
                return inner * (1 + 0.15 * tex(x, y))
        else:
            k = int(rng.integers(3, 7))
            sx = cx + rng.uniform(-0.55, 0.55, k) * a
            sy = cy + rng.uniform(-0.55, 0.55, k) * b
            lv = pe * rng.uniform(0.4, 1.4, k)

            def echo(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> np.ndarray:
                dist = np.stack([np.hypot(x - sx[i], y - sy[i]) for i in range(k)])
                order = np.argsort(dist, axis=0)
                near = np.take_along_axis(dist, order[:2], axis=0)
                e = lv[order[0]] * (1 + 0.12 * tex(x, y))
                septum = np.exp(-(((near[1] - near[0]) / 0.8) ** 2))
                return (e * (1 - 0.5 * septum)).astype(np.float32)

        _paint_blob_layer(m, blob, echo=echo, att=style["att"] * rng.uniform(0.5, 0.9),
                          imp=1.01, edge=0.4, grazing_att=rng.uniform(3, 9) if halo_w else 0)
        if halo_w:
            big = _Blob(cx, cy, a, b, rot, blob.harm)
            win = m.window(cx, cy, blob.rmax + halo_w + 2)
            sd = big.sd(m.x[win], m.y[win])
            band = _smoothstep(1 - np.abs(sd - halo_w / 2) / (halo_w / 2 + 0.3))
            m.echo[win] = m.echo[win] * (1 - 0.75 * band)
            m.imp[win] += 0.03 * _ridge(sd, halo_w, 0.3)
        if diam >= 20 and rng.random() < 0.5:
            inner_blob = _Blob(cx + rng.uniform(-0.3, 0.3) * a, cy + rng.uniform(-0.3, 0.3) * b,
                               a * 0.4, b * 0.4, rot)
            _paint_blob_layer(m, inner_blob, echo=pe * rng.uniform(0.4, 1.8), att=style["att"],
                              imp=1.01, edge=0.6)
        return _Lesion(label, blob, halo_w, rim_contrast=bool(halo_w), rim_width=halo_w + 0.3)
    # metastasis
    blob = _Blob(cx, cy, a, b, rot, _lobulated(rng, 2, rng.uniform(0.05, 0.2)))
    kind = style["met_kind"]
    edge = rng.uniform(0.15, 0.35) * r + 0.3
    if kind < 0.45:  # target / bull's eye
        rim_frac = rng.uniform(0.2, 0.4)
        centre = pe * rng.uniform(1.3, 2.2)
        rim = pe * rng.uniform(0.25, 0.45)

        def echo(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> np.ndarray:
            t = _soft_inside(sd + rim_frac * r, max(0.6, 0.25 * r))
            return (rim + (centre - rim) * t) * (1 + 0.15 * tex(x, y))
        rim_c = True
        rim_w = rim_frac * r
    elif kind < 0.75:  # hypoechoic
        lev = pe * rng.uniform(0.3, 0.6)

        def echo(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> np.ndarray:
            return lev * (1 + 0.2 * tex(x, y))
        rim_c = False
    else:  # hyperechoic (e.g. colorectal), sometimes calcified
        lev = pe * rng.uniform(1.5, 2.3)

        def echo(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> np.ndarray:
            return lev * (1 + 0.25 * tex(x, y))
        rim_c = False
        if rng.random() < 0.3:
            _add_points(m, rng, blob, n=int(3 + diam / 3), amp=6.0)
    _paint_blob_layer(m, blob, echo=echo, att=style["att"] * rng.uniform(0.9, 1.3), imp=1.0,
                      edge=edge)
    return _Lesion(label, blob, 0.0, rim_contrast=rim_c,
                   rim_width=rim_w if rim_c else 0.0)


def _add_points(m: _Maps, rng: np.random.Generator, blob: _Blob, n: int, amp: float) -> None:
    ang = rng.uniform(0, 2 * np.pi, n)
    rad = np.sqrt(rng.uniform(0, 0.8, n))
    x = blob.cx + rad * blob.a * np.cos(ang)
    y = blob.cy + rad * blob.b * np.sin(ang)
    u, d = m.g.polar(x, y)
    i = np.round((u - m.g.u[0]) / m.g.du).astype(int)
    j = np.round(d / (m.g.dz * m.step) - 0.5).astype(int)
    ok = (i >= 0) & (i < m.points.shape[0]) & (j >= 0) & (j < m.points.shape[1])
    m.points[i[ok], j[ok]] += amp * rng.uniform(0.6, 1.4, int(ok.sum()))


def _breast_lesion(label: str, rng: np.random.Generator, cx: float, cy: float, diam: float,
                   m: _Maps, ref: float, fat: float) -> _Lesion:
    r = diam / 2
    tex = _Noise.draw(rng, max(1.0, r / 3), 8)
    if label == "carcinoma":
        tall = rng.random() < 0.5
        ratio = rng.uniform(1.0, 1.5) if tall else rng.uniform(0.65, 1.0)
        a, b = r / math.sqrt(ratio), r * math.sqrt(ratio)
        n_sp = int(rng.integers(4, 18)) if rng.random() < 0.7 else 0
        spikes = [(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.2, 0.6)),
                   float(rng.uniform(0.03, 0.09))) for _ in range(n_sp)]
        blob = _Blob(cx, cy, a, b, rng.uniform(-0.3, 0.3),
                     _lobulated(rng, 3, rng.uniform(0.15, 0.35)), spikes)
        lev = fat * rng.uniform(0.35, 0.75)
        shadow = rng.random() < 0.65
        # extra round-trip loss across the lesion of 8-22 dB (shadowing) whatever its size
        extra_db = rng.uniform(8.0, 22.0) if shadow else rng.uniform(0.0, 3.0)
        att = 0.8 + extra_db / (2 * m.g.p.freq * max(2 * b, 3.0) / 10.0)

        def echo(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> np.ndarray:
            return lev * (1 + 0.3 * tex(x, y))
        halo = rng.uniform(0.8, 2.0) if rng.random() < 0.5 else 0.0
        if halo:
            win = m.window(cx, cy, blob.rmax + halo + 2)
            sd = blob.sd(m.x[win], m.y[win])
            band = _smoothstep(1 - np.abs(sd - halo / 2) / (halo / 2 + 0.4))
            m.echo[win] = m.echo[win] + (ref * 1.4 - m.echo[win]) * band
        _paint_blob_layer(m, blob, echo=echo, att=att, imp=1.0, edge=rng.uniform(0.3, 0.9))
        if rng.random() < 0.35:
            _add_points(m, rng, blob, n=int(rng.integers(3, 12)), amp=8.0)
        return _Lesion(label, blob, halo, rim_contrast=bool(halo), rim_width=halo + 0.3)
    if label == "fibroadenoma":
        ratio = rng.uniform(0.45, 0.75)
        a, b = r / math.sqrt(ratio), r * math.sqrt(ratio)
        lob = _lobulated(rng, 2, rng.uniform(0.0, 0.15))
        blob = _Blob(cx, cy, a, b, rng.uniform(-0.25, 0.25), lob)
        lev = fat * rng.uniform(0.4, 0.85)
        septa = rng.random() < 0.3

        def echo(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> np.ndarray:
            e = lev * (1 + 0.1 * tex(x, y))
            if septa:
                e = e * (1 + 1.2 * np.clip(tex(y * 0.5, x * 0.5), 0.8, 1.4) - 1.2 * 0.8)
            return e
        _paint_blob_layer(m, blob, echo=echo, att=rng.uniform(0.3, 0.6), imp=1.0,
                          edge=0.25, wall=rng.uniform(0.02, 0.05),
                          grazing_att=rng.uniform(0, 8))
        return _Lesion(label, blob, 0.3)
    if label == "simple_cyst":
        ratio = rng.uniform(0.55, 1.0)
        a, b = r / math.sqrt(ratio), r * math.sqrt(ratio)
        blob = _Blob(cx, cy, a, b, rng.uniform(-0.4, 0.4), _lobulated(rng, 1, 0.03))
        _paint_blob_layer(m, blob, echo=rng.uniform(0.0, 0.01), att=rng.uniform(0.0, 0.05),
                          imp=0.97, edge=0.15, wall=0.05, grazing_att=rng.uniform(8, 16))
        return _Lesion(label, blob, 0.2)
    # other benign: complicated cyst, lipoma or intramammary lymph node
    sub = rng.random()
    if sub < 0.34:
        ratio = rng.uniform(0.55, 1.0)
        a, b = r / math.sqrt(ratio), r * math.sqrt(ratio)
        blob = _Blob(cx, cy, a, b, 0.0, _lobulated(rng, 1, 0.05))
        lev = fat * rng.uniform(0.12, 0.3)
        level = rng.random() < 0.5
        lvl_y = cy + rng.uniform(-0.2, 0.4) * b

        def echo(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> np.ndarray:
            e = lev * (1 + 0.2 * tex(x, y))
            if level:
                deb = _smoothstep((y - lvl_y) / 0.6 + 0.5)
                e = lev * 0.25 + (fat * rng_deb - lev * 0.25) * deb
            return e

        rng_deb = rng.uniform(0.5, 0.9)
        _paint_blob_layer(m, blob, echo=echo, att=rng.uniform(0.05, 0.25), imp=0.98,
                          edge=0.2, wall=0.05, grazing_att=rng.uniform(4, 10))
        return _Lesion(label, blob, 0.2)
    if sub < 0.67:  # lipoma
        ratio = rng.uniform(0.35, 0.6)
        a, b = r / math.sqrt(ratio), r * math.sqrt(ratio)
        blob = _Blob(cx, cy, a, b, rng.uniform(-0.15, 0.15), _lobulated(rng, 2, 0.06))
        lev = fat * rng.uniform(1.1, 1.7)
        rot = blob.rot
        per = rng.uniform(1.5, 3.0)

        def echo(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> np.ndarray:
            vv = -(x - cx) * math.sin(rot) + (y - cy) * math.cos(rot)
            lines = np.cos(2 * np.pi * vv / per + 2 * tex(x, y)) ** 12
            return lev * (0.85 + 0.1 * tex(y, x) + 0.9 * lines)
        _paint_blob_layer(m, blob, echo=echo, att=0.5, imp=0.99, edge=0.25, wall=0.04)
        return _Lesion(label, blob, 0.3)
    # intramammary lymph node: hypoechoic cortex, echogenic fatty hilum
    ratio = rng.uniform(0.4, 0.65)
    r = min(r, 9.0)
    a, b = r / math.sqrt(ratio), r * math.sqrt(ratio)
    rot = rng.uniform(-0.3, 0.3)
    blob = _Blob(cx, cy, a, b, rot, [(2, rng.uniform(0.0, 0.06), 0.0)])
    cortex = fat * rng.uniform(0.2, 0.45)
    hil = _Blob(cx + rng.uniform(-0.1, 0.3) * a, cy + rng.uniform(-0.15, 0.15) * b, a * 0.55,
                b * rng.uniform(0.35, 0.55), rot)
    hil_lev = ref * rng.uniform(1.0, 1.5)

    def echo(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> np.ndarray:
        h = _soft_inside(hil.sd(x, y), 0.8)
        return cortex * (1 - h) + hil_lev * h * (1 + 0.2 * tex(x, y))
    _paint_blob_layer(m, blob, echo=echo, att=0.6, imp=1.0, edge=0.3, wall=0.03)
    return _Lesion(label, blob, 0.2, rim_contrast=True, rim_width=0.3 * r)


# --------------------------------------------------------------------------- scenes


def _surface(rng: np.random.Generator, y0: float, slope: float, curv: float,
             wav: float = 0.0) -> tuple[float, float, float, float, float, float]:
    return (y0, rng.uniform(-slope, slope), rng.uniform(-curv, curv), wav,
            rng.uniform(8, 25), rng.uniform(0, 2 * np.pi))


def _surf_y(s: tuple[float, ...], x: np.ndarray | float) -> Any:
    y0, sl, cu, wav, lam, ph = s
    return y0 + sl * x + cu * x * x + wav * np.sin(2 * np.pi * np.asarray(x) / lam + ph)


def _pick_count(rng: np.random.Generator) -> int:
    return int(rng.choice([0, 1, 2, 3], p=[0.2, 0.5, 0.22, 0.08]))


def _paint_muscle(m: _Maps, rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
                  mask: np.ndarray, fibres: tuple[float, float, float, int],
                  echo: tuple[float, float]) -> None:
    """A muscle layer inside ``mask``: bright, wavy fibre striations.

    ``fibres`` is (wobble scale mm, largest tilt, wobble amplitude, sharpness exponent),
    ``echo`` the (base, striation) echo levels.
    """
    scale, tilt, amplitude, power = fibres
    wob = _Noise.draw(rng, scale, 6)
    stri = np.cos(2 * np.pi * (y + rng.uniform(-tilt, tilt) * x + amplitude * wob(x, y))
                  / rng.uniform(1.5, 3.0)) ** power
    m.echo[mask] = (echo[0] + echo[1] * stri)[mask]
    m.att[mask] = 1.0
    m.imp[mask] = (1.02 + 0.02 * stri)[mask]


def _liver_scene(m: _Maps, rng: np.random.Generator, forced: tuple[str, ...] | None = None
                 ) -> tuple[list[_Lesion], dict[str, float]]:
    p = m.g.p
    x, y = m.x, m.y
    fatty = rng.random() < 0.25
    pe = rng.uniform(1.6, 2.3) if fatty else 1.0
    att_liver = rng.uniform(0.85, 1.2) if fatty else rng.uniform(0.45, 0.6)
    thin = p.kind == "linear"
    fat_s = _surface(rng, rng.uniform(2, 6 if thin else 18), 0.05, 2e-4)
    mus_s = _surface(rng, 0, 0.05, 2e-4)
    mus_s = (_surf_y(fat_s, 0.0) + rng.uniform(4, 10), *mus_s[1:])
    cap_s = (mus_s[0] + rng.uniform(2, 8), *_surface(rng, 0, 0.12, 0.0005)[1:])
    yf, ym, yc = _surf_y(fat_s, x), _surf_y(mus_s, x), _surf_y(cap_s, x)
    # parenchyma with coarse texture
    tex = _Noise.draw(rng, rng.uniform(4, 12), 10)
    m.echo[:] = pe * (1 + rng.uniform(0.05, 0.15) * tex(x, y))
    m.att[:] = att_liver
    # abdominal wall
    fat_tex = _Noise.draw(rng, 3.0, 8)
    fat = y < yf
    m.echo[fat] = (0.55 * (1 + 0.12 * fat_tex(x, y)))[fat]
    m.att[fat] = 0.6
    m.imp[fat] = 0.95
    _paint_muscle(m, rng, x, y, (y >= yf) & (y < ym), (15.0, 0.1, 0.6, 6), (0.55, 0.35))
    gap = (y >= ym) & (y < yc)
    m.echo[gap] = 0.7
    m.imp += 0.25 * _ridge(y, 0.6, 0.4)  # skin
    m.imp += 0.04 * _ridge(y - ym, 0, 0.4) + 0.1 * _ridge(y - yc, 0.0, 0.4)  # capsule
    geo: list[tuple[float, float, float]] = []  # occupied circles (x, y, r)
    # diaphragm (dome, concave towards the probe) with mirror-image lung beyond
    has_dia = not thin and rng.random() < 0.75
    xd = rng.uniform(-40, 40)
    dia_s = (p.depth * rng.uniform(0.7, 1.05), 0.0, -rng.uniform(1.5e-3, 5e-3), 0.0, 10.0, 0.0)
    ydia = _surf_y((dia_s[0], *dia_s[1:]), x - xd) if has_dia else np.full_like(x, 1e9)
    if has_dia:
        beyond = y > ydia
        lung = _Noise.draw(rng, 6.0, 8)
        m.echo[beyond] = (pe * 0.8 * (1 + 0.3 * lung(x, y)))[beyond]
        m.att[beyond] = 1.6
        m.imp += rng.uniform(0.4, 0.7) * _ridge(y - ydia, 0.8, 1.0)
        m.echo += 6.0 * _ridge(y - ydia, 0.8, 1.2)
    # gallbladder (optional, with stones sometimes) or kidney at an edge
    side = rng.choice([-1.0, 1.0])
    wx = _half_width(m.g, p.depth * 0.45)
    if not thin and rng.random() < 0.3:
        gb = _Blob(side * wx * rng.uniform(0.45, 0.8), p.depth * rng.uniform(0.3, 0.55),
                   rng.uniform(10, 18), rng.uniform(22, 40), rng.uniform(-1.2, 1.2),
                   [(2, rng.uniform(0, 0.05), rng.uniform(0, 6.3))])
        _paint_blob_layer(m, gb, echo=0.01, att=0.03, imp=0.97, edge=0.3, wall=0.1,
                          wall_echo=3.0, grazing_att=8)
        geo.append((gb.cx, gb.cy, max(gb.a, gb.b) + 3))
        if rng.random() < 0.25:
            st = _Blob(gb.cx, gb.cy + 0.6 * max(gb.a, gb.b), rng.uniform(2, 5),
                       rng.uniform(2, 4))
            _paint_blob_layer(m, st, echo=6.0, att=40.0, imp=1.3, edge=0.3, wall=0.3)
    elif not thin and rng.random() < 0.3:
        kc = (-side * wx * rng.uniform(0.5, 0.9), p.depth * rng.uniform(0.65, 0.85))
        kid = _Blob(kc[0], kc[1], rng.uniform(25, 35), rng.uniform(12, 20),
                    rng.uniform(-0.5, 0.5), _lobulated(rng, 1, 0.05))
        sinus = _Blob(kc[0], kc[1], kid.a * 0.55, kid.b * 0.45, kid.rot,
                      _lobulated(rng, 2, 0.15))
        _paint_blob_layer(m, kid, echo=pe * 0.45, att=0.8, imp=1.0, edge=0.5, wall=0.1,
                          wall_echo=1.0)
        _paint_blob_layer(m, sinus, echo=2.4, att=0.9, imp=1.0, edge=1.5)
        geo.append((kid.cx, kid.cy, max(kid.a, kid.b) + 3))
    # vessels: portal veins with echogenic walls, hepatic veins without; tubes and sections
    top = float(np.median(yc)) + 5
    for i in range(int(rng.integers(1, 4))):
        portal = i == 0 or rng.random() < 0.5
        c0 = (rng.uniform(-0.8, 0.8) * wx, rng.uniform(top, p.depth * 0.8))
        ang = rng.uniform(0, np.pi)
        ln = rng.uniform(25, 70)
        dx, dy = math.cos(ang) * ln / 2, math.sin(ang) * ln / 2
        tube = _Tube((c0[0] - dx, c0[1] - dy),
                     (c0[0] + rng.uniform(-10, 10), c0[1] + rng.uniform(-10, 10)),
                     (c0[0] + dx, c0[1] + dy), rng.uniform(3, 7), rng.uniform(1.5, 3.5))
        _paint_tube(m, tube, echo=0.02 * pe, att=0.85 * att_liver, wall=0.12 if portal else 0.0)
    for _ in range(int(rng.integers(1, 7))):
        rr = _log_size(rng, 1.5, 6.0)
        vb = _Blob(rng.uniform(-0.85, 0.85) * wx, rng.uniform(top, p.depth * 0.85), rr,
                   rr * rng.uniform(0.65, 1.0), rng.uniform(0, np.pi))
        portal = rng.random() < 0.5
        _paint_blob_layer(m, vb, echo=0.02 * pe, att=0.6 * att_liver, imp=0.985, edge=0.3,
                          wall=0.1 if portal else 0.0, wall_echo=2.0 if portal else 0.0)
    # lesions
    lesions: list[_Lesion] = []
    n = _pick_count(rng)
    classes = list(LIVER_CLASSES)
    first_met = None
    style = {"att": att_liver, "met_kind": float(rng.random())}
    if forced is not None:
        n = len(forced)
    for k in range(n):
        if first_met is not None and rng.random() < 0.45:
            label = "metastasis"
        else:
            label = str(rng.choice(classes, p=[0.27, 0.19, 0.27, 0.27]))
        if forced is not None:
            label = forced[k]
        diam = min(_diameter_liver(label, rng), 0.5 * p.depth)
        placed = _place(rng, m.g, geo, diam / 2, lambda xx: float(_surf_y(cap_s, xx)) + 2,
                        (lambda xx: float(_surf_y((dia_s[0], *dia_s[1:]), xx - xd)) - 2)
                        if has_dia else (lambda xx: p.depth))
        if placed is None:
            continue
        cx, cy = placed
        les = _liver_lesion(label, rng, cx, cy, diam, pe, m, style)
        les.att = _att_at(m, cx, cy)
        if label == "metastasis":
            first_met = les
        lesions.append(les)
        geo.append((cx, cy, les.blob.rmax + les.halo + 2))
    # ribs in the near field cast shadows
    if not thin and rng.random() < 0.35:
        for _ in range(int(rng.integers(1, 3))):
            rx = rng.choice([-1, 1]) * rng.uniform(0.5, 1.0) * _half_width(m.g, 15)
            rib = _Blob(rx, float(_surf_y(mus_s, rx)) - rng.uniform(0, 4), rng.uniform(5, 8),
                        rng.uniform(3, 4.5), rng.uniform(-0.2, 0.2))
            _paint_blob_layer(m, rib, echo=0.2, att=60.0, imp=1.0, edge=0.4, wall=0.6,
                              wall_echo=4.0)
    # sparse bright point targets (portal triads, fibrous tissue)
    pts = rng.random(m.points.shape) < rng.uniform(0.002, 0.006)
    m.points[pts & (y > yc)] += rng.uniform(1.5, 3.0)
    return lesions, {"fatty": float(fatty), "parenchyma_echo": float(pe)}


def _att_at(m: _Maps, x: float, y: float) -> float:
    u, d = m.g.polar(np.array(x), np.array(y))
    i = int(np.clip(round((float(u) - m.g.u[0]) / m.g.du), 0, m.att.shape[0] - 1))
    j = int(np.clip(float(d) / (m.g.dz * m.step) - 0.5, 0, m.att.shape[1] - 1))
    return float(m.att[i, j])


def _half_width(g: _Grid, depth: float) -> float:
    if g.p.kind == "linear":
        return g.p.width / 2
    return (g.p.radius + depth) * math.sin(g.p.half_angle)


def _diameter_liver(label: str, rng: np.random.Generator) -> float:
    hi = {"hcc": 60.0, "metastasis": 45.0, "hemangioma": 50.0, "cyst": 40.0}[label]
    return _log_size(rng, 5.0, hi)


def _place(rng: np.random.Generator, g: _Grid, geo: list[tuple[float, float, float]],
           r: float, top: Any, bottom: Any) -> tuple[float, float] | None:
    for _ in range(40):
        d = rng.uniform(0.1, 0.95) * g.p.depth
        u = rng.uniform(g.u[0], g.u[-1]) * 0.9
        x, y = g.cart(np.array(u), np.array(d))
        x, y = float(x), float(y)
        low = min(bottom(x - r), bottom(x), bottom(x + r), g.p.depth - 2)
        if y - r * 0.8 < top(x) or y + r > low:
            continue
        if any(math.hypot(x - gx, y - gy) < gr + r + 1 for gx, gy, gr in geo):
            continue
        return x, y
    return None


def _breast_scene(m: _Maps, rng: np.random.Generator, forced: tuple[str, ...] | None = None
                  ) -> tuple[list[_Lesion], dict[str, float]]:
    p = m.g.p
    x, y = m.x, m.y
    fat = rng.uniform(0.35, 0.55)
    gland = rng.uniform(1.4, 2.3)
    dens = rng.random()
    sub_s = _surface(rng, rng.uniform(2.5, 4 + 9 * (1 - dens)), 0.1, 1e-3, rng.uniform(0.5, 3))
    gl_t = rng.uniform(5, 8 + 18 * dens) * min(1.0, p.depth / 40)
    gl_s = (sub_s[0] + gl_t, *_surface(rng, 0, 0.12, 0.001, rng.uniform(0.5, 2.5))[1:])
    mu_s = (gl_s[0] + rng.uniform(1.5, 5), *_surface(rng, 0, 0.08, 0.0003)[1:])
    mu_t = rng.uniform(5, 11)
    ys, yg, ym = _surf_y(sub_s, x), _surf_y(gl_s, x), _surf_y(mu_s, x)
    ymb = ym + mu_t
    ftex = _Noise.draw(rng, 2.5, 10)
    gtex = _Noise.draw(rng, rng.uniform(1.2, 3), 12)
    m.echo[:] = fat * (1 + 0.25 * ftex(x, y))
    m.att[:] = 0.5
    m.imp[:] = 0.95
    skin = y < 1.8
    m.echo[skin] = 1.6
    m.imp += 0.25 * _ridge(y, 0.4, 0.3) + 0.1 * _ridge(y, 1.8, 0.3)
    gl = (y >= ys) & (y < yg)
    m.echo[gl] = (gland * (1 + 0.35 * np.clip(gtex(x, y), -1.5, 1.5)))[gl]
    m.att[gl] = 0.8
    m.imp[gl] = 1.0
    _paint_muscle(m, rng, x, y, (y >= ym) & (y < ymb), (12.0, 0.3, 0.5, 8), (0.6, 0.45))
    m.imp += 0.06 * _ridge(y - ym, 0, 0.35) + 0.06 * _ridge(y - ymb, 0, 0.35)
    deep = y >= ymb
    m.echo[deep] = 0.6 * (1 + 0.2 * ftex(y, x))[deep]
    m.att[deep] = 1.1
    ybm = float(np.median(ymb))
    geo: list[tuple[float, float, float]] = []
    # rib and pleura when the field is deep enough
    if ybm + 6 < p.depth and rng.random() < 0.6:
        ypl = ybm + rng.uniform(3, 7)
        if ypl < p.depth - 2:
            pleura = y > ypl
            m.echo[pleura] = 0.5 * (1 + 0.4 * ftex(x, y))[pleura]
            m.att[pleura] = 3.0
            m.imp += 0.5 * _ridge(y - ypl, 0.3, 0.4)
            for k in (2, 3):  # reverberation A-lines
                m.echo += 3.0 / k * _ridge(y - ypl * k, 0.3, 0.5)
        if rng.random() < 0.5:
            rx = rng.uniform(-0.6, 0.6) * _half_width(m.g, 10)
            rib = _Blob(rx, ybm + rng.uniform(3, 6), rng.uniform(5, 9), rng.uniform(3, 5))
            _paint_blob_layer(m, rib, echo=0.15, att=50.0, imp=1.0, edge=0.4, wall=0.5,
                              wall_echo=3.0)
            geo.append((rib.cx, rib.cy, rib.a + 1))
    # Cooper's ligaments and fat lobules (negatives)
    wx = _half_width(m.g, 5)
    for _ in range(int(rng.integers(3, 9))):
        x0 = rng.uniform(-wx, wx)
        y0 = float(_surf_y(sub_s, x0))
        lig = _Tube((x0, y0), (x0 + rng.uniform(-6, 6), y0 * 0.5 + 1),
                    (x0 + rng.uniform(-12, 12), 2.0), 0.2, 0.15)
        win = m.window(*lig.bounds())
        if win[0].stop > win[0].start and win[1].stop > win[1].start:
            sd = lig.sd(m.x[win], m.y[win])
            m.imp[win] += 0.06 * _ridge(sd, 0, 0.3)
            m.echo[win] += 1.2 * _ridge(sd, 0, 0.4)
    for _ in range(int(rng.integers(4, 14))):
        lx = rng.uniform(-wx, wx)
        ly = rng.uniform(2.5, float(np.median(yg)))
        rr = rng.uniform(2, 6)
        lob = _Blob(lx, ly, rr * rng.uniform(1.0, 1.8), rr * rng.uniform(0.5, 0.8),
                    rng.uniform(-0.3, 0.3), _lobulated(rng, 1, 0.1))
        _paint_blob_layer(m, lob, echo=fat * rng.uniform(0.8, 1.1), att=0.5, imp=0.95,
                          edge=0.6, wall=0.03, wall_echo=0.6)
    if rng.random() < 0.35:  # ducts
        for _ in range(int(rng.integers(1, 3))):
            x0 = rng.uniform(-wx, wx)
            yy = rng.uniform(float(np.median(ys)) + 1, float(np.median(yg)) - 1)
            ln = rng.uniform(15, 35)
            duct = _Tube((x0 - ln / 2, yy + rng.uniform(-3, 3)), (x0, yy),
                         (x0 + ln / 2, yy + rng.uniform(-4, 4)), rng.uniform(0.8, 1.8), 0.6)
            _paint_tube(m, duct, echo=0.08, att=0.2, wall=0.05)
    # lesions
    lesions: list[_Lesion] = []
    n = _pick_count(rng)
    if forced is not None:
        n = len(forced)
    for k in range(n):
        label = str(rng.choice(list(BREAST_CLASSES)))
        if forced is not None:
            label = forced[k]
        hi = {"carcinoma": 35.0, "fibroadenoma": 30.0, "simple_cyst": 25.0, "other": 25.0}
        diam = min(_log_size(rng, 5.0, hi[label]), 0.6 * p.depth)
        bot = ybm - 1 if label != "carcinoma" else ybm + 2
        top_y = {"other": 2.5, "simple_cyst": float(np.median(ys)) - 2,
                 "carcinoma": float(np.median(ys)) - 2}.get(label, float(np.median(ys)) - 2)
        placed = _place(rng, m.g, geo, diam / 2 * 0.9, lambda xx, t=top_y: t,
                        lambda xx, b=bot: b)
        if placed is None:
            continue
        les = _breast_lesion(label, rng, placed[0], placed[1], diam, m, gland, fat)
        les.att = _att_at(m, placed[0], placed[1])
        lesions.append(les)
        geo.append((placed[0], placed[1], les.blob.rmax + les.halo + 1))
    return lesions, {"gland_echo": float(gland), "fat_echo": float(fat)}


# --------------------------------------------------------------------------- pulse-echo


def _upsample_depth(a: np.ndarray, step: int, n: int) -> np.ndarray:
    pos = (np.arange(n) + 0.5) / step - 0.5
    pos = np.clip(pos, 0, a.shape[1] - 1)
    j0 = np.floor(pos).astype(int)
    j1 = np.minimum(j0 + 1, a.shape[1] - 1)
    f = (pos - j0).astype(np.float32)
    return a[:, j0] * (1 - f) + a[:, j1] * f


def _hat_weights(d: np.ndarray, centres: np.ndarray) -> np.ndarray:
    w = np.zeros((len(centres), len(d)), np.float32)
    for k in range(len(centres)):
        if k == 0:
            w[k] = d <= centres[0]
        if k == len(centres) - 1:
            w[k] += d >= centres[-1]
        if k > 0:
            seg = (d > centres[k - 1]) & (d < centres[k])
            w[k][seg] = ((d - centres[k - 1]) / (centres[k] - centres[k - 1]))[seg]
        if k < len(centres) - 1:
            seg = (d >= centres[k]) & (d < centres[k + 1])
            w[k][seg] = ((centres[k + 1] - d) / (centres[k + 1] - centres[k]))[seg]
    return w


def _pulse_echo(m: _Maps, rng: np.random.Generator, settings: dict[str, float]) -> np.ndarray:
    """RF simulation; returns log-compressed envelope (dB) on the beam grid."""
    g, p = m.g, m.g.p
    n, ns = g.n_lines, g.n_depth
    step = m.step
    # round-trip attenuation at the centre frequency, accumulated along each line
    dcm = g.dz * step / 10.0
    cum_db = np.cumsum(m.att * dcm, axis=1) * 2 * p.freq
    cum_db -= m.att * dcm * p.freq  # mid-cell
    att_amp = (10.0 ** (-cum_db / 20.0)).astype(np.float32)
    # specular reflection from impedance changes along the beam
    imp = _upsample_depth(m.imp, step, ns)
    refl = np.zeros_like(imp)
    refl[:, 1:] = np.diff(imp, axis=1) / (imp[:, 1:] + imp[:, :-1])
    refl *= 1.0 + 0.3 * ndimage.gaussian_filter1d(
        rng.standard_normal(refl.shape[0]).astype(np.float32), 2.0)[:, None]
    echo = _upsample_depth(m.echo, step, ns)
    amp = _upsample_depth(att_amp, step, ns)
    scat = rng.standard_normal((n, ns), dtype=np.float32) * echo
    points = _upsample_depth(m.points, step, ns) * np.clip(echo / 0.5, 0, 1)
    sparse = rng.random((n, ns), dtype=np.float32) < 1.0 / step
    sign = np.where(rng.random((n, ns), dtype=np.float32) < 0.5, -1.0, 1.0).astype(np.float32)
    scat += points * sparse * sign * step * 0.5
    spec_gain = settings["spec_gain"]
    # imperfect time-gain compensation; a slowly varying gain commutes with the short pulse,
    # so it is applied before the convolution to keep the numerical range small
    ph = rng.uniform(0, 2 * np.pi, 3)
    ripple = sum(settings["tgc_ripple"] / 3 * np.cos(2 * np.pi * (i + 1) * g.d / p.depth + ph[i])
                 for i in range(3))
    tgc_db = np.minimum(2 * settings["tgc_att"] * p.freq * g.d / 10.0, settings["tgc_max"])
    tgc = (10.0 ** ((tgc_db + ripple) / 20.0)).astype(np.float32)[None, :]
    s = (scat + refl * spec_gain) * amp * tgc
    # electronic noise and near-field reverberation haze (not attenuated, but amplified)
    noise = settings["noise"] * tgc[0] + settings["reverb"] * np.exp(-g.d / settings["reverb_mm"])
    s += rng.standard_normal((n, ns), dtype=np.float32) * noise[None, :].astype(np.float32)
    # axial pulse, three depth bands with down-shifted spectra
    spec = sfft.rfft(s, axis=1, workers=1)
    nu = sfft.rfftfreq(ns, g.dz)  # cycles/mm along depth
    f = nu * SOUND_MM_US / 2.0  # MHz
    sig_f = p.bandwidth * p.freq / 2.355
    centres = np.array([0.0, 0.5, 1.0]) * p.depth
    mean_np = np.interp(centres, m.dc, cum_db.mean(axis=0)) * _DB_NP / p.freq / 2.0 * 2.0
    weights = _hat_weights(g.d, centres)
    rf = np.zeros((n, ns), np.float32)
    for k in range(3):
        fc_k = max(p.freq - sig_f**2 * mean_np[k], 0.4 * p.freq)
        h = np.exp(-0.5 * ((f - fc_k) / sig_f) ** 2) * (1 - np.exp(-((f / (0.35 * fc_k)) ** 2)))
        h *= _smoothstep((f.max() - f) / (0.2 * f.max()))  # no cut at Nyquist
        h = h.astype(np.float32)
        rf += sfft.irfft(spec * h[None, :], n=ns, axis=1, workers=1) * weights[k][None, :]
    # lateral beam profile: Gaussian across neighbouring lines, focused-beam width law
    sig_lines = g.beam_fwhm_mm(centres + 1e-3) / 2.355 / g.line_width_mm(centres + 2.0)
    sig_lines = np.clip(sig_lines, 0.6, 6.0)
    rf_l = np.zeros_like(rf)
    for k in range(3):
        rf_l += ndimage.gaussian_filter1d(rf, float(sig_lines[k]), axis=0,
                                          mode="nearest") * weights[k][None, :]
    env = np.abs(signal.hilbert(rf_l, axis=1)).astype(np.float32)
    db = 20.0 * np.log10(env + 1e-9)
    return db


# --------------------------------------------------------------------------- display


def _display_geometry(p: _Probe, rows: int, cols: int, rng: np.random.Generator
                      ) -> tuple[float, float, float]:
    """pixel_mm and the display position (col, row) of the Cartesian origin."""
    if p.kind == "linear":
        height, width, ytop = p.depth, p.width, 0.0
    else:
        ytop = p.radius * math.cos(p.half_angle) - p.radius
        height = p.depth - ytop
        width = 2 * (p.radius + p.depth) * math.sin(p.half_angle)
    fill = rng.uniform(0.78, 0.9)
    pix = max(height / (rows * fill), width / (cols * 0.88))
    row0 = rows * rng.uniform(0.05, 0.08) - ytop / pix
    col0 = cols / 2 + rng.uniform(-0.04, 0.04) * cols
    col0 = float(np.clip(col0, width / 2 / pix + 2, cols - width / 2 / pix - 2))
    return pix, col0, row0


def _scan_convert(db: np.ndarray, g: _Grid, pix: float, col0: float, row0: float,
                  rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    x = (xx + 0.5 - col0) * pix
    y = (yy + 0.5 - row0) * pix
    u, d = g.polar(x, y)
    li = (u - g.u[0]) / g.du
    di = d / g.dz - 0.5
    mask = (li >= -0.5) & (li <= g.n_lines - 0.5) & (d >= 0) & (d <= g.p.depth)
    ratio = pix / g.dz
    if ratio > 1.5:
        db = ndimage.gaussian_filter1d(db, 0.4 * ratio, axis=1, mode="nearest")
    out = ndimage.map_coordinates(db, [np.clip(li, 0, g.n_lines - 1),
                                       np.clip(di, 0, g.n_depth - 1)], order=1, mode="nearest")
    return out.astype(np.float32), mask, x, y


_FONT_CACHE: dict[int, Any] = {}


def _font(size: int) -> Any:
    if size not in _FONT_CACHE:
        try:
            _FONT_CACHE[size] = ImageFont.load_default(size=size)
        except TypeError:  # pragma: no cover - old Pillow
            _FONT_CACHE[size] = ImageFont.load_default()
    return _FONT_CACHE[size]


def _annotate(img: np.ndarray, mask: np.ndarray, organ: Organ, p: _Probe, pix: float,
              row0: float, col0: float, rng: np.random.Generator,
              settings: dict[str, float]) -> np.ndarray:
    rows, cols = img.shape
    pil = Image.fromarray(img)
    dr = ImageDraw.Draw(pil)
    fs = max(9, rows // 45)
    font = _font(fs)
    grey = int(rng.uniform(170, 255))
    cols_any = np.flatnonzero(mask.any(axis=0))
    right = int(cols_any[-1])
    probe_name = {"convex": "C5-1", "sector": "P4-2", "linear": "L12-5"}[p.kind]
    lines = [rng.choice(["ABDOMEN", "LIVER", "RT LOBE"]) if organ == "liver"
             else rng.choice(["BREAST", "R BREAST", "L BREAST 2:00"]),
             f"{probe_name} {p.freq:.1f}MHz",
             f"G{int(settings['gain_db'] + 50)} DR{int(settings['dr'])}",
             f"D {p.depth / 10:.1f}cm"]
    if rng.random() < 0.6:
        lines.append(f"FR {int(rng.integers(12, 40))}Hz")
    ytxt = 2 + int(rng.integers(0, 4))
    xtxt = 4 if rng.random() < 0.7 else max(4, right + 8)
    if xtxt > 4:
        ytxt += fs + 12  # below the logo
    for t in lines:
        if xtxt + fs * len(t) * 0.6 > cols - 2:
            xtxt = 4
        dr.text((xtxt, ytxt), t, fill=grey, font=font)
        ytxt += fs + 3
    # depth scale on the right of the field of view
    xs = min(right + 6, cols - 12)
    step_mm = 10.0 if p.depth > 25 else 5.0
    k = 0
    while True:
        dmm = k * step_mm
        if dmm > p.depth:
            break
        rr = round(row0 + dmm / pix)
        if rr >= rows - 2:
            break
        ln = 6 if k % 5 == 0 else 3
        dr.line([(xs, rr), (xs + ln, rr)], fill=grey)
        if k % 5 == 0 and k > 0 and xs + 10 + fs * 1.5 < cols:
            dr.text((xs + 8, rr - fs // 2), str(int(dmm / 10)), fill=grey, font=font)
        k += 1
    dr.line([(xs, int(row0)), (xs, min(rows - 2, int(row0 + p.depth / pix)))], fill=grey // 2)
    # focus marker
    fr = int(row0 + p.focus / pix)
    if fr < rows - 4:
        dr.polygon([(xs - 2, fr), (xs - 7, fr - 4), (xs - 7, fr + 4)], fill=grey)
    # logo
    if rng.random() < 0.7:
        lx, ly = cols - 50, 4
        dr.rectangle([lx, ly, lx + 40, ly + fs + 4], outline=grey)
        dr.text((lx + 4, ly + 2), "PEX", fill=grey, font=font)
    # body marker
    if rng.random() < 0.7:
        bx, by = 8, rows - 44
        if organ == "breast":
            dr.ellipse([bx, by, bx + 34, by + 34], outline=grey)
            dr.ellipse([bx + 14, by + 14, bx + 20, by + 20], outline=grey)
            a = rng.uniform(0, np.pi)
            cxm, cym = bx + 17 + 11 * math.cos(a), by + 17 - 11 * math.sin(a)
            dr.line([(cxm - 6, cym - 3), (cxm + 6, cym + 3)], fill=255, width=3)
        else:
            dr.rectangle([bx + 6, by, bx + 30, by + 36], outline=grey)
            dr.ellipse([bx + 12, by - 10, bx + 24, by], outline=grey)
            dr.line([(bx + 16, by + 10), (bx + 28, by + 16)], fill=255, width=3)
    out = np.asarray(pil).copy()
    # annotations live outside the field of view (or on its very edge)
    out[mask] = img[mask]
    return out


# --------------------------------------------------------------------------- truth


def _visible(lesion: _Lesion, img: np.ndarray, mask: np.ndarray, x: np.ndarray,
             y: np.ndarray, pix: float, g: _Grid) -> tuple[bool, np.ndarray | None]:
    """Apply the visibility criterion; return (visible, outline mask on the display)."""
    reason, rose, cnr, lm = _visibility_metrics(lesion, img, mask, x, y, pix, g)
    return reason == "ok" and rose >= MIN_ROSE and cnr >= MIN_CNR, lm


def _visibility_metrics(lesion: _Lesion, img: np.ndarray, mask: np.ndarray, x: np.ndarray,
                        y: np.ndarray, pix: float, g: _Grid
                        ) -> tuple[str, float, float, np.ndarray | None]:
    """(reason, Rose index, CNR, outline mask); reason is ``"ok"`` unless geometry fails."""
    b = lesion.blob
    rext = b.rmax + lesion.halo + max(3.0, 0.4 * b.r_eq) + 2
    c0 = int(max(0, (b.cx - rext) / pix + (x[0, 0] / -pix) - 1))
    c1 = int(min(img.shape[1], (b.cx + rext) / pix - x[0, 0] / pix + 2))
    r0 = int(max(0, (b.cy - rext) / pix - y[0, 0] / pix - 1))
    r1 = int(min(img.shape[0], (b.cy + rext) / pix - y[0, 0] / pix + 2))
    if c1 <= c0 or r1 <= r0:
        return "outside", 0.0, 0.0, None
    win = (slice(r0, r1), slice(c0, c1))
    sd = lesion.outline_sd(x[win], y[win])
    full = sd < 0
    if not full.any():
        return "outside", 0.0, 0.0, None
    inside = full & mask[win]
    area_mm2 = inside.sum() * pix * pix
    if inside.sum() < MIN_INSIDE_FRACTION * full.sum() or \
            2 * math.sqrt(area_mm2 / math.pi) < MIN_VISIBLE_MM:
        return "outside", 0.0, 0.0, None
    outer = max(2.5, 0.35 * b.r_eq)
    ring = (sd > 0.7) & (sd < 0.7 + outer) & mask[win]
    # exclude the posterior column (shadow / enhancement)
    u_l, d_l = g.polar(x[win], y[win])
    u_c, d_c = g.polar(np.array(b.cx), np.array(b.cy))
    lat = np.abs(u_l - u_c) if g.p.kind == "linear" else np.abs(u_l - u_c) * (g.p.radius + d_l)
    ring &= ~((d_l > d_c) & (lat < b.rmax + lesion.halo))
    vals = img[win].astype(np.float32)
    if ring.sum() < 20:
        return "no_ring", 0.0, 0.0, None
    out = vals[ring]
    if np.mean(out < 6) > 0.5:
        return "dark", 0.0, 0.0, None
    depth = float(d_c)
    cell_mm2 = float(g.beam_fwhm_mm(np.array(depth))) * (
        2.355 / (2 * np.pi * g.p.bandwidth * g.p.freq / 2.355) * SOUND_MM_US / 2)
    best_rose, best_cnr = 0.0, 0.0
    regions = [inside]
    if lesion.rim_contrast:
        regions.append(inside & (sd > -max(0.8, lesion.rim_width)))
    for reg in regions:
        if reg.sum() < 10:
            continue
        vin = vals[reg]
        dmu = abs(float(vin.mean()) - float(out.mean()))
        s_out = float(out.std()) + 1.0
        cells = reg.sum() * pix * pix / max(cell_mm2, 1e-3)
        rose = dmu / s_out * math.sqrt(cells)
        cnr = dmu / math.sqrt((float(vin.std()) ** 2 + s_out**2) / 2)
        if cnr > best_cnr:
            best_rose, best_cnr = rose, cnr
    full_mask = np.zeros(img.shape, bool)
    full_mask[win] = inside
    return "ok", best_rose, best_cnr, full_mask


# --------------------------------------------------------------------------- public


def generate_pulse_echo(organ: Organ, seed: int, rows: int = 480, cols: int = 640, *,
                        annotations: bool | None = None,
                        lesion_classes: Sequence[str] | None = None) -> PhantomSample:
    """Render one B-mode still of ``organ`` by RF pulse-echo simulation.

    Parameters
    ----------
    organ:
        ``"liver"`` or ``"breast"``.
    seed:
        Random seed; the same seed gives the identical image and truth.
    rows, cols:
        Frame size in pixels.
    annotations:
        Burn in text, depth scale, logo and body marker: ``None`` draws it at random
        (about 70 % of images), ``True``/``False`` forces it.
    lesion_classes:
        Force the classes of the lesions placed (for tests and targeted evaluation sets);
        ``None`` draws 0-3 lesions with classes about equally often.  A lesion that finds
        no room is dropped, so ``labels`` can be shorter than this.

    Returns
    -------
    PhantomSample
        One ``uint8`` frame ``(1, rows, cols)`` (black outside the field of view apart from
        annotations), one :class:`LesionTruth` per visible lesion, the class of every
        placed lesion in ``labels``, the field-of-view box, the square pixel size and a
        few drawn settings in ``params``.
    """
    if organ not in ("liver", "breast"):
        raise ValueError(f"Unknown organ {organ!r}.")
    rng = np.random.default_rng([int(seed), 31337, 1 if organ == "liver" else 2])
    p = _draw_probe(organ, rng)
    n_lines = int(rng.integers(200, 280))
    dz_target = SOUND_MM_US / (2 * 3.6 * p.freq)
    n_depth = int(np.clip(p.depth / dz_target, 800, 3600))
    step = 4
    n_depth -= n_depth % step
    g = _Grid(p, n_lines, n_depth)
    m = _Maps(g, step)
    classes = LIVER_CLASSES if organ == "liver" else BREAST_CLASSES
    forced = None if lesion_classes is None else tuple(lesion_classes)
    if forced is not None and any(c not in classes for c in forced):
        raise ValueError(f"Lesion classes must be from {classes}.")
    scene = _liver_scene if organ == "liver" else _breast_scene
    lesions, scene_params = scene(m, rng, forced)
    settings = {
        "spec_gain": rng.uniform(25.0, 45.0),
        "noise": 10 ** (rng.uniform(-3.2, -2.6)) * (1.0 if organ == "liver" else 0.5),
        "reverb": rng.uniform(0.05, 0.3) if organ == "liver" else rng.uniform(0.0, 0.1),
        "reverb_mm": rng.uniform(8, 25) if organ == "liver" else rng.uniform(2, 6),
        "tgc_att": (0.5 if organ == "liver" else 0.78) * rng.uniform(0.85, 1.2),
        "tgc_ripple": rng.uniform(0.0, 5.0),
        "tgc_max": rng.uniform(45.0, 75.0),
        "dr": rng.uniform(45.0, 72.0),
        "gain_db": rng.uniform(-6.0, 6.0),
        "gamma": rng.uniform(0.8, 1.25),
        "grey_mid": rng.uniform(80, 125) if organ == "liver" else rng.uniform(135, 175),
    }
    settings["ref_echo"] = scene_params.get("parenchyma_echo", scene_params.get("gland_echo", 1.0))
    db = _pulse_echo(m, rng, settings)
    pix, col0, row0 = _display_geometry(p, rows, cols, rng)
    disp_db, mask, x, y = _scan_convert(db, g, pix, col0, row0, rows, cols)
    # log compression: a reference level (median of the central field) -> mid grey
    # reference: median level of ordinary tissue (not lesions, vessels or shadows), so that
    # a large lesion does not re-normalise the grey scale
    coarse = db[:, step // 2::step][:, : m.echo.shape[1]]
    lo_e, hi_e = settings["ref_echo"] * 0.6, settings["ref_echo"] * 1.6
    sel = (m.echo[:, : coarse.shape[1]] > lo_e) & (m.echo[:, : coarse.shape[1]] < hi_e)
    sel[:, : int(0.1 * sel.shape[1])] = False
    sel[:, int(0.7 * sel.shape[1]):] = False
    ref = float(np.median(coarse[sel])) if sel.sum() > 100 else float(np.median(coarse))
    grey = (disp_db - ref + settings["gain_db"]) / settings["dr"] * 255.0 + settings["grey_mid"]
    grey = 255.0 * (np.clip(grey, 0, 255) / 255.0) ** settings["gamma"]
    img = np.where(mask, grey, 0).astype(np.uint8)
    if annotations is None:
        annotations = bool(rng.random() < 0.7)
    if annotations:
        img = _annotate(img, mask, organ, p, pix, row0, col0, rng, settings)
    rows_any = np.flatnonzero(mask.any(axis=1))
    cols_any = np.flatnonzero(mask.any(axis=0))
    scan_box = BoundingBox(float(cols_any[0]), float(rows_any[0]), float(cols_any[-1] + 1),
                           float(rows_any[-1] + 1))
    truths: list[LesionTruth] = []
    for i, les in enumerate(lesions):
        vis, lm = _visible(les, img, mask, x, y, pix, g)
        if vis and lm is not None and lm.any():
            truths.append(LesionTruth(i, les.label, BoundingBox.of_mask(lm), int(lm.sum())))
    params = {
        "frequency_mhz": float(p.freq),
        "depth_mm": float(p.depth),
        "probe_kind": float({"linear": 0, "convex": 1, "sector": 2}[p.kind]),
        "dynamic_range_db": float(settings["dr"]),
        "gain_db": float(settings["gain_db"]),
        "gamma": float(settings["gamma"]),
        "focus_mm": float(p.focus),
        "n_lines": float(n_lines),
        "annotations": float(annotations),
        **scene_params,
    }
    for i, les in enumerate(lesions):
        params[f"lesion{i}_diameter_mm"] = float(2 * les.blob.r_eq)
        params[f"lesion{i}_att_db_cm_mhz"] = float(les.att)
    return PhantomSample(organ=organ, seed=int(seed), frames=img[None], truths=[truths],
                         labels=[les.label for les in lesions], scan_box=scan_box,
                         pixel_mm=float(pix), params=params)
