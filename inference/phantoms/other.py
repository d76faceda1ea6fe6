"""Negative phantoms for the anatomy/view classifier: images none of the engines read.

Five kinds of scan that a liver, breast or apical four-chamber model must not
claim: the thyroid (linear probe: lobes, trachea with its shadow, carotid),
a carotid artery in long axis, the kidney (convex probe: hypoechoic cortex,
bright sinus), a full bladder (anechoic, posterior enhancement), and the
parasternal short-axis view of the heart (sector probe: round LV ring, RV
crescent) -- a cardiac view that is *not* the apical four-chamber view.

They reuse the painters of :mod:`inference.phantoms.scene` and
:mod:`inference.phantoms.anatomy` and the acoustic core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import structlog

from inference.phantoms import acoustics as ac
from inference.phantoms.anatomy import Tube
from inference.phantoms.scene import Blob, Grid, TextureField, band

logger = structlog.get_logger(__name__)

OTHER_KINDS: tuple[str, ...] = ("thyroid", "carotid", "kidney", "bladder", "short_axis")
"""Kinds of negative scans."""


@dataclass
class OtherSample:
    """A rendered negative image.

    Attributes
    ----------
    kind:
        One of :data:`OTHER_KINDS`.
    frames:
        ``uint8`` ``(1, rows, cols)``.
    scan_box:
        ``(x0, y0, x1, y1)`` pixel box (exclusive end) of the field of view.
    pixel_mm:
        Pixel size in mm.
    """

    kind: str
    frames: np.ndarray
    scan_box: tuple[int, int, int, int]
    pixel_mm: float


_Maps = tuple[np.ndarray, np.ndarray]
_PROBES: dict[str, tuple[ac.ProbeKind, tuple[float, float], tuple[float, float]]] = {
    "thyroid": ("linear", (30.0, 55.0), (7.0, 13.0)),
    "carotid": ("linear", (30.0, 50.0), (6.0, 11.0)),
    "kidney": ("convex", (100.0, 180.0), (2.0, 5.0)),
    "bladder": ("convex", (100.0, 170.0), (2.0, 5.0)),
    "short_axis": ("sector", (110.0, 180.0), (1.7, 3.6)),
}
"""Probe kind, depth range and frequency range of each kind."""


def _paint_blob(blob: Blob, x: np.ndarray, z: np.ndarray, echo: np.ndarray,
                atten: np.ndarray, value: float, attenuation: float | None = None) -> np.ndarray:
    """Fill the inside of ``blob`` and return its mask."""
    d, _ = blob.distance(x, z)
    inside = d < 1.0
    echo[inside] = value
    if attenuation is not None:
        atten[inside] = attenuation
    return inside


def _background(rng: np.random.Generator, x: np.ndarray, z: np.ndarray, level: float,
                scale: tuple[float, float]) -> _Maps:
    texture = TextureField(rng, (float(x.min()) - 5, float(x.max()) + 5,
                                 float(z.min()) - 5, float(z.max()) + 5), scale)
    echo = level * np.clip(1.0 + 0.3 * texture(x, z), 0.2, None)
    return echo.astype(np.float32), np.full(x.shape, 0.5, dtype=np.float32)


def _thyroid(rng: np.random.Generator, x: np.ndarray, z: np.ndarray) -> _Maps:
    echo, atten = _background(rng, x, z, float(rng.uniform(0.4, 0.7)), (6.0, 2.0))
    skin = float(rng.uniform(2.0, 4.0))
    echo[z < skin] = float(rng.uniform(1.2, 2.0))
    strap = (z >= skin + 1.0) & (z < skin + float(rng.uniform(5.0, 9.0)))
    echo[strap] *= 0.6
    trachea_x = float(rng.uniform(-8.0, 8.0))
    lobe_z = skin + float(rng.uniform(9.0, 14.0))
    level = float(rng.uniform(1.1, 1.6))
    for side in (-1.0, 1.0):
        cx = trachea_x + side * float(rng.uniform(10.0, 14.0))
        lobe = Blob(cx, lobe_z, float(rng.uniform(7.0, 10.0)), aspect=float(rng.uniform(1.1, 1.6)),
                    angle=float(rng.uniform(-0.3, 0.3)))
        _paint_blob(lobe, x, z, echo, atten, level)
        carotid = Blob(cx + side * float(rng.uniform(8.0, 11.0)), lobe_z + 2.0,
                       float(rng.uniform(3.0, 4.0)))
        _paint_blob(carotid, x, z, echo, atten, 0.02, 0.15)
    trachea = Blob(trachea_x, lobe_z, float(rng.uniform(4.5, 6.5)))
    d, _ = trachea.distance(x, z)
    arc = (band(d, 1.0, 0.1) > 0) & (z < lobe_z)
    echo[arc] = 4.0
    atten[(d < 1.0) | ((np.abs(x - trachea_x) < trachea.radius * 0.8) & (z > lobe_z))] = 8.0
    return echo, atten


def _carotid(rng: np.random.Generator, x: np.ndarray, z: np.ndarray) -> _Maps:
    echo, atten = _background(rng, x, z, float(rng.uniform(0.4, 0.8)), (10.0, 1.5))
    centre = float(rng.uniform(12.0, 22.0))
    slope = float(rng.uniform(-0.15, 0.15))
    xs = np.array([float(x.min()) - 5.0, float(x.max()) + 5.0])
    points = np.stack([xs, np.zeros_like(xs), centre + slope * xs], axis=1)
    vessel = Tube(points, float(rng.uniform(3.0, 4.5)), lumen_echo=0.02,
                  wall_echo=float(rng.uniform(1.5, 3.0)), wall_mm=0.8)
    vessel.paint(Grid(x[0], z[:, 0]), echo, atten)
    return echo, atten


def _kidney(rng: np.random.Generator, x: np.ndarray, z: np.ndarray) -> _Maps:
    echo, atten = _background(rng, x, z, float(rng.uniform(0.6, 1.0)), (8.0, 8.0))
    cx, cz = float(rng.uniform(-20.0, 20.0)), float(rng.uniform(50.0, 80.0))
    angle = float(rng.uniform(-0.6, 0.6))
    size = float(rng.uniform(22.0, 30.0))
    capsule = Blob(cx, cz, size * 1.05, aspect=float(rng.uniform(1.8, 2.4)), angle=angle)
    d, _ = capsule.distance(x, z)
    echo[band(d, 1.0, 0.04) > 0] = 2.0
    _paint_blob(Blob(cx, cz, size, aspect=capsule.aspect, angle=angle), x, z, echo, atten,
                float(rng.uniform(0.25, 0.5)))
    sinus = Blob(cx, cz, size * 0.45, aspect=capsule.aspect * 1.2, angle=angle,
                 harmonics=((0.15, float(rng.uniform(0, 6))),))
    _paint_blob(sinus, x, z, echo, atten, float(rng.uniform(1.6, 2.6)))
    return echo, atten


def _bladder(rng: np.random.Generator, x: np.ndarray, z: np.ndarray) -> _Maps:
    echo, atten = _background(rng, x, z, float(rng.uniform(0.5, 0.9)), (10.0, 6.0))
    bladder = Blob(float(rng.uniform(-15.0, 15.0)), float(rng.uniform(45.0, 70.0)),
                   float(rng.uniform(25.0, 40.0)), aspect=float(rng.uniform(1.0, 1.6)),
                   harmonics=((0.06, 0.0), (0.05, float(rng.uniform(0, 6)))))
    d, _ = bladder.distance(x, z)
    echo[band(d, 1.0, 0.05) > 0] = 1.6
    _paint_blob(bladder, x, z, echo, atten, 0.015, 0.05)
    return echo, atten


def _short_axis(rng: np.random.Generator, x: np.ndarray, z: np.ndarray) -> _Maps:
    echo, atten = _background(rng, x, z, float(rng.uniform(0.1, 0.5)), (12.0, 8.0))
    cx, cz = float(rng.uniform(-12.0, 12.0)), float(rng.uniform(55.0, 85.0))
    cavity_r = float(rng.uniform(14.0, 26.0))
    wall = float(rng.uniform(7.0, 12.0))
    muscle = float(rng.uniform(0.5, 1.3))
    outer = Blob(cx, cz, cavity_r + wall, harmonics=((0.04, float(rng.uniform(0, 6))),))
    rv = Blob(cx - (cavity_r + wall) * 0.9, cz - 4.0, cavity_r * 0.8, aspect=0.6,
              angle=float(rng.uniform(-0.4, 0.4)))
    _paint_blob(Blob(rv.cx, rv.cz, rv.radius + 3.0, aspect=rv.aspect, angle=rv.angle),
                x, z, echo, atten, muscle)
    _paint_blob(rv, x, z, echo, atten, 0.02, 0.18)
    d, _ = outer.distance(x, z)
    echo[band(d, 1.08, 0.05) > 0] = float(rng.uniform(1.8, 3.2))
    _paint_blob(outer, x, z, echo, atten, muscle)
    _paint_blob(Blob(cx, cz, cavity_r, harmonics=outer.harmonics), x, z, echo, atten, 0.02,
                0.18)
    for angle in rng.uniform(0.0, 2.0 * np.pi, 2):
        papillary = Blob(cx + 0.7 * cavity_r * np.cos(angle), cz + 0.7 * cavity_r * np.sin(angle),
                         float(rng.uniform(3.0, 5.0)))
        _paint_blob(papillary, x, z, echo, atten, muscle)
    return echo, atten


_SCENES: dict[str, Callable[[np.random.Generator, np.ndarray, np.ndarray], _Maps]] = {
    "thyroid": _thyroid,
    "carotid": _carotid,
    "kidney": _kidney,
    "bladder": _bladder,
    "short_axis": _short_axis,
}


def generate_other(seed: int, rows: int = 480, cols: int = 640, kind: str | None = None,
                   text: bool = True) -> OtherSample:
    """Render one negative image.

    Parameters
    ----------
    seed:
        Seed of everything random.
    rows, cols:
        Image size.
    kind:
        One of :data:`OTHER_KINDS`; random when ``None``.
    text:
        Burn in annotations.

    Returns
    -------
    OtherSample
        The frame (as a one-frame stack) and its field of view.
    """
    rng = np.random.default_rng(seed)
    kind = kind or str(rng.choice(OTHER_KINDS))
    probe_kind, depth, frequency = _PROBES[kind]
    probe = ac.random_probe(probe_kind, rng, depth)
    layout = ac.layout_scan(probe, rows, cols, rng)
    x, z = layout.grid_mm()
    echo, atten = _SCENES[kind](rng, x, z)
    settings = ac.random_settings(rng, frequency)
    frame = ac.render(layout, echo, atten, settings, rng)
    if text:
        overlay = ac.burn_in_text(np.zeros_like(frame), rng, layout=layout)
        frame = np.where(overlay > 0, overlay, frame)
    return OtherSample(kind=kind, frames=frame[None], scan_box=layout.bbox,
                       pixel_mm=layout.pixel_mm)
