"""Scene building blocks of the phantoms: grids, textures, shapes, lesions.

A scene is painted in *tissue* coordinates (mm): ``x`` lateral, ``z`` depth,
``y`` elevational (across the imaging plane).  A :class:`Grid` holds the
tissue coordinates of the image pixels for one frame, so probe motion and
breathing are just grid offsets, and the elevational position ``y`` lets
lesions grow and shrink as the plane sweeps through them.

Painters write into two maps (see :mod:`inference.phantoms.acoustics`):
echogenicity (mean backscatter, soft tissue ~1) and attenuation
(dB/cm/MHz).  Lesion painters also return their mask, which is the ground
truth of the lesion on that frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import structlog
from scipy import ndimage

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Grid:
    """Tissue coordinates of the pixels of one frame.

    Attributes
    ----------
    xs:
        ``(cols,)`` lateral position (mm) of each column centre.
    zs:
        ``(rows,)`` depth (mm) of each row centre.
    y_mm:
        Elevational position of the imaging plane.
    """

    xs: np.ndarray
    zs: np.ndarray
    y_mm: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return len(self.zs), len(self.xs)

    @property
    def step_mm(self) -> float:
        """Pixel size in mm."""
        return float(self.xs[1] - self.xs[0])

    def window(self, x0: float, x1: float, z0: float, z1: float
               ) -> tuple[slice, slice] | None:
        """Row and column slices covering ``[x0, x1] x [z0, z1]`` mm, if visible."""
        c0, c1 = np.searchsorted(self.xs, [x0, x1])
        r0, r1 = np.searchsorted(self.zs, [z0, z1])
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(int(r0), int(r1)), slice(int(c0), int(c1))

    def mesh(self, win: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """``(X, Z)`` mm of the pixels of a window."""
        return np.meshgrid(self.xs[win[1]], self.zs[win[0]])

    def moved(self, dx_mm: float, dz_mm: float, y_mm: float) -> Grid:
        """The grid seen after the tissue moved by ``(dx, dz)`` at plane ``y``."""
        return Grid(self.xs - dx_mm, self.zs - dz_mm, y_mm)


class TextureField:
    """A smooth random field with unit standard deviation, sampled anywhere.

    Parameters
    ----------
    rng:
        Random generator.
    extent:
        ``(x0, x1, z0, z1)`` mm covered (values outside repeat the edge).
    scale_mm:
        Correlation length ``(lateral, axial)`` in mm.
    step_mm:
        Grid spacing of the stored field.
    """

    def __init__(self, rng: np.random.Generator, extent: tuple[float, float, float, float],
                 scale_mm: tuple[float, float], step_mm: float | None = None) -> None:
        x0, x1, z0, z1 = extent
        steps = ((step_mm, step_mm) if step_mm is not None
                 else (max(scale_mm[0] / 3.0, 0.1), max(scale_mm[1] / 3.0, 0.1)))
        nx = max(int((x1 - x0) / steps[0]) + 2, 2)
        nz = max(int((z1 - z0) / steps[1]) + 2, 2)
        noise = ndimage.gaussian_filter(rng.standard_normal((nz, nx)).astype(np.float32),
                                        (scale_mm[1] / steps[1], scale_mm[0] / steps[0]),
                                        mode="wrap")
        self._values = ((noise - noise.mean()) / (noise.std() + 1e-9)).astype(np.float32)
        self._origin = (z0, x0)
        self._steps = steps

    def __call__(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Field values at points ``(x, z)`` mm."""
        coords = np.stack([(z - self._origin[0]) / self._steps[1],
                           (x - self._origin[1]) / self._steps[0]])
        return ndimage.map_coordinates(self._values, coords, order=1, mode="nearest")


@dataclass(frozen=True)
class Blob:
    """A closed shape with a wavy or spiculated outline, possibly 3-D.

    The outline radius at polar angle ``t`` (in the blob frame) is
    ``radius * (1 + sum_k a_k cos(k t + p_k) + sum_s h_s spike(t - t_s))``;
    the blob frame is rotated by ``angle`` and stretched by ``aspect``
    (width / height).  Along the elevation the cross-section shrinks like an
    ellipsoid with semi-axis ``elevation_mm`` around ``y0``.
    """

    cx: float
    cz: float
    radius: float
    aspect: float = 1.0
    angle: float = 0.0
    harmonics: tuple[tuple[float, float], ...] = ()
    spikes: tuple[tuple[float, float], ...] = ()
    spike_width: float = 0.08
    elevation_mm: float = 0.0
    y0: float = 0.0

    @property
    def reach(self) -> float:
        """Largest distance (mm) of the outline from the centre."""
        wobble = sum(abs(a) for a, _ in self.harmonics) + max((h for _, h in self.spikes),
                                                              default=0.0)
        return self.radius * max(self.aspect, 1.0 / self.aspect) * (1.0 + wobble)

    def scale_at(self, y_mm: float) -> float:
        """Cross-section scale at elevation ``y_mm`` (0 when the plane misses)."""
        if self.elevation_mm <= 0:
            return 1.0
        r = (y_mm - self.y0) / self.elevation_mm
        return float(np.sqrt(max(1.0 - r * r, 0.0)))

    def local(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Blob-frame coordinates (aspect removed) of points ``(x, z)``."""
        dx, dz = x - self.cx, z - self.cz
        c, s = np.cos(self.angle), np.sin(self.angle)
        u = (c * dx + s * dz) / np.sqrt(self.aspect)
        v = (-s * dx + c * dz) * np.sqrt(self.aspect)
        return u, v

    def distance(self, x: np.ndarray, z: np.ndarray, y_mm: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Normalised radial distance (1 on the outline) and polar angle."""
        u, v = self.local(x, z)
        theta = np.arctan2(v, u)
        outline = np.ones_like(theta)
        for k, (amp, phase) in enumerate(self.harmonics, start=2):
            outline += amp * np.cos(k * theta + phase)
        for t_s, height in self.spikes:
            delta = np.angle(np.exp(1j * (theta - t_s)))
            outline += height * np.exp(-0.5 * (delta / self.spike_width) ** 2)
        scale = max(self.scale_at(y_mm), 1e-6)
        return np.hypot(u, v) / (self.radius * scale * np.clip(outline, 0.3, None)), theta


class Painter(Protocol):
    """Anything that paints tissue into the maps of a frame."""

    def paint(self, grid: Grid, echo: np.ndarray, atten: np.ndarray) -> None:
        """Paint into ``echo`` and ``atten`` (both ``grid.shape``)."""
        ...


@dataclass
class LesionPainter:
    """A lesion: a blob whose interior and rim a ``style`` function fills.

    Parameters
    ----------
    label:
        Class name (one of the anatomy's classes).
    blob:
        Outline.
    style:
        ``style(d, theta, dx, dz, echo_bg, atten_bg) -> (echo, atten, inside)``:
        given the normalised distance, blob-frame angle and offsets (mm) from
        the centre of the window pixels and the background maps there,
        returns the new maps and the pixels that belong to the lesion
        (including its wall or halo).
    margin:
        How far (normalised distance) the style paints beyond the outline.
    """

    label: str
    blob: Blob
    style: StyleFn
    margin: float = 0.35

    def paint(self, grid: Grid, echo: np.ndarray, atten: np.ndarray) -> np.ndarray | None:
        """Paint the lesion; return its mask (``grid.shape``) or ``None`` if unseen."""
        scale = self.blob.scale_at(grid.y_mm)
        if scale <= 0.05:
            return None
        reach = self.blob.reach * scale * (1.0 + self.margin)
        win = grid.window(self.blob.cx - reach, self.blob.cx + reach,
                          self.blob.cz - reach, self.blob.cz + reach)
        if win is None:
            return None
        x, z = grid.mesh(win)
        d, theta = self.blob.distance(x, z, grid.y_mm)
        new_echo, new_atten, inside = self.style(d, theta, x - self.blob.cx, z - self.blob.cz,
                                                 echo[win], atten[win])
        echo[win] = new_echo
        atten[win] = new_atten
        mask = np.zeros(grid.shape, dtype=bool)
        mask[win] = inside
        return mask if inside.any() else None


class StyleFn(Protocol):
    """Fills a lesion window (see :class:`LesionPainter`)."""

    def __call__(self, d: np.ndarray, theta: np.ndarray, dx: np.ndarray, dz: np.ndarray,
                 echo_bg: np.ndarray, atten_bg: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(echo, atten, inside)`` of the window."""
        ...


@dataclass
class Scene:
    """Everything painted on a frame, in order.

    ``background`` painters (anatomy, vessels, look-alikes) go first, then
    the lesions, then ``overlays`` (ribs and gas near the surface, whose
    shadows cover what is behind them).
    """

    organ: str
    background_echo: float
    background_atten: float
    background: list[Painter] = field(default_factory=list)
    lesions: list[LesionPainter] = field(default_factory=list)
    overlays: list[Painter] = field(default_factory=list)

    def paint(self, grid: Grid) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
        """Echogenicity, attenuation and one mask per lesion (``None`` if unseen)."""
        layers = self.paint_layers(grid)
        return layers.echo, layers.atten, layers.masks

    def paint_layers(self, grid: Grid) -> PaintedScene:
        """The scene's maps and masks, and its maps with the lesions left out."""
        echo = np.full(grid.shape, self.background_echo, dtype=np.float32)
        atten = np.full(grid.shape, self.background_atten, dtype=np.float32)
        for painter in self.background:
            painter.paint(grid, echo, atten)
        empty_echo, empty_atten = echo.copy(), atten.copy()
        masks = [lesion.paint(grid, echo, atten) for lesion in self.lesions]
        for painter in self.overlays:
            painter.paint(grid, echo, atten)
            painter.paint(grid, empty_echo, empty_atten)
        return PaintedScene(echo, atten, masks, empty_echo, empty_atten)


@dataclass(frozen=True)
class PaintedScene:
    """Maps of a painted scene (see :meth:`Scene.paint_layers`).

    ``empty_echo`` and ``empty_atten`` are the same scene without its lesions:
    rendered with the same speckle, they show what the lesions changed.
    """

    echo: np.ndarray
    atten: np.ndarray
    masks: list[np.ndarray | None]
    empty_echo: np.ndarray
    empty_atten: np.ndarray


def random_outline(rng: np.random.Generator, irregularity: float, n_harmonics: int = 4
                   ) -> tuple[tuple[float, float], ...]:
    """Random outline harmonics of total amplitude about ``irregularity``."""
    amps = rng.uniform(0.0, 1.0, n_harmonics)
    amps = amps / (amps.sum() + 1e-9) * irregularity
    return tuple((float(a), float(rng.uniform(0, 2 * np.pi))) for a in amps)


def random_spikes(rng: np.random.Generator, count: int, height: tuple[float, float]
                  ) -> tuple[tuple[float, float], ...]:
    """``count`` spicules at random angles with heights in ``height``."""
    return tuple((float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(*height)))
                 for _ in range(count))


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 below ``edge0``, 1 above ``edge1``, smooth in between."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def band(d: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    """Soft band of normalised distances around ``centre`` (1 at the centre)."""
    return np.clip(1.0 - np.abs(d - centre) / max(half_width, 1e-6), 0.0, 1.0)
