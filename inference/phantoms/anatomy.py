"""Normal anatomy of the liver and breast phantoms, and lesion-like structures.

Painters here draw the background a lesion sits in and the normal
structures a detector must not flag: vessel cross-sections, fat lobules,
ribs and their shadows, bowel gas, the gallbladder, the kidney, the
diaphragm, Cooper's ligaments.  :func:`liver_scene` and
:func:`breast_scene` compose them with lesions into a
:class:`~inference.phantoms.scene.Scene`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import structlog

from inference.findings import BREAST_CLASSES, LIVER_CLASSES
from inference.phantoms.acoustics import ProbeGeometry
from inference.phantoms.lesions import BREAST_FACTORIES, LIVER_FACTORIES, LesionFactory
from inference.phantoms.scene import (
    Blob,
    Grid,
    LesionPainter,
    Scene,
    TextureField,
    band,
    random_outline,
)

logger = structlog.get_logger(__name__)


@dataclass
class Layer:
    """One tissue layer: thickness, echogenicity, attenuation and texture.

    ``lines`` > 0 draws bright curvy lines (ligaments, fascia) where the
    texture crosses zero, ``islands`` > 0 hypoechoic islands (fat lobules)
    where it exceeds that level.
    """

    thickness_mm: float
    echo: float
    atten: float
    texture: TextureField | None = None
    texture_amp: float = 0.0
    lines: float = 0.0
    islands: float = 0.0
    island_echo: float = 0.45


@dataclass
class LayerStack:
    """Layers parallel to the transducer face with undulating boundaries.

    The last layer extends to the bottom of the image.
    """

    layers: list[Layer]
    probe: ProbeGeometry
    wobble: TextureField
    wobble_mm: float

    def paint(self, grid: Grid, echo: np.ndarray, atten: np.ndarray) -> None:
        """Paint all layers over the whole frame."""
        x, z = np.meshgrid(grid.xs, grid.zs)
        depth = self.probe.face_depth(x, z) - self.wobble_mm * self.wobble(x, z * 0.0)
        top = 0.0
        for i, layer in enumerate(self.layers):
            bottom = np.inf if i == len(self.layers) - 1 else top + layer.thickness_mm
            sel = (depth >= top) & (depth < bottom) if i else depth < bottom
            value = np.full(int(sel.sum()), layer.echo, dtype=np.float32)
            if layer.texture is not None:
                t = layer.texture(x[sel], z[sel])
                value *= 1.0 + layer.texture_amp * t
                if layer.islands:
                    value = np.where(t > layer.islands, layer.island_echo, value)
                if layer.lines:
                    value = np.where(np.abs(t) < layer.lines, 2.0 * layer.echo + 1.0, value)
            echo[sel] = value
            atten[sel] = layer.atten
            top = bottom


@dataclass
class Tube:
    """A vessel or duct: a 3-D polyline with a lumen radius and optional wall."""

    points: np.ndarray
    radius_mm: float
    lumen_echo: float = 0.03
    wall_echo: float = 0.0
    wall_mm: float = 0.8
    atten: float = 0.15

    def paint(self, grid: Grid, echo: np.ndarray, atten: np.ndarray) -> None:
        """Paint every segment the imaging plane cuts."""
        reach = self.radius_mm + self.wall_mm
        for p0, p1 in zip(self.points[:-1], self.points[1:], strict=True):
            win = grid.window(min(p0[0], p1[0]) - reach, max(p0[0], p1[0]) + reach,
                              min(p0[2], p1[2]) - reach, max(p0[2], p1[2]) + reach)
            if win is None:
                continue
            x, z = grid.mesh(win)
            seg = p1 - p0
            rel = np.stack([x - p0[0], np.full_like(x, grid.y_mm - p0[1]), z - p0[2]])
            t = np.clip(np.tensordot(seg, rel, axes=1) / float(seg @ seg), 0.0, 1.0)
            dist = np.linalg.norm(rel - seg[:, None, None] * t, axis=0)
            lumen = dist < self.radius_mm
            e, a = echo[win], atten[win]
            if self.wall_echo:
                e[(dist >= self.radius_mm) & (dist < reach)] = self.wall_echo
            e[lumen] = self.lumen_echo
            a[lumen] = self.atten


@dataclass
class Shadowing:
    """Rib or bowel gas: a bright curved surface that blocks the beam.

    ``reverberation`` > 0 adds equally spaced bright lines below the surface
    (a "dirty" gas shadow); a rib gives a clean shadow.
    """

    blob: Blob
    surface_echo: float
    atten: float
    reverberation: float = 0.0
    spacing_mm: float = 3.0

    def paint(self, grid: Grid, echo: np.ndarray, atten: np.ndarray) -> None:
        """Paint the surface, the attenuating body and any reverberations."""
        reach = self.blob.reach * 1.2
        win = grid.window(self.blob.cx - reach, self.blob.cx + reach,
                          self.blob.cz - reach, self.blob.cz + reach)
        if win is None:
            return
        x, z = grid.mesh(win)
        d, _ = self.blob.distance(x, z)
        upper = z < self.blob.cz
        e, a = echo[win], atten[win]
        inside = d < 1.0
        e[inside] = 0.2
        if self.reverberation:
            lines = np.abs(((z - self.blob.cz) % self.spacing_mm) - 0.5) < 0.4
            e[inside & lines] = self.reverberation
        e[(band(d, 1.0, 0.12) > 0) & upper] = self.surface_echo
        a[inside] = self.atten


def _texture(rng: np.random.Generator, probe: ProbeGeometry, scale: tuple[float, float]
             ) -> TextureField:
    """A texture covering the probe's field of view plus room for motion."""
    width, height = probe.extent_mm
    return TextureField(rng, (-width / 2 - 30, width / 2 + 30, -30, height + 30), scale)


@dataclass
class SceneConfig:
    """Knobs of scene sampling (defaults are the published-appearance ranges)."""

    size_mm: tuple[float, float] = (5.0, 40.0)
    lesion_counts: tuple[float, ...] = (0.2, 0.5, 0.15, 0.1, 0.05)
    """Probability of 0, 1, 2, 3, 4 lesions."""
    same_class: float = 0.75
    """Probability that further lesions share the first lesion's class."""
    classes: tuple[str, ...] | None = None
    """Restrict lesion classes (default: all of the organ)."""
    extra: dict[str, float] = field(default_factory=dict)


def _place_lesions(rng: np.random.Generator, probe: ProbeGeometry,
                   factories: dict[str, LesionFactory], labels: list[str],
                   z_range: tuple[float, float], size_mm: tuple[float, float],
                   organ_limit: Blob | None = None) -> list[LesionPainter]:
    """Place lesions inside the field of view and depth range, without overlap.

    With ``organ_limit`` (the diaphragm dome), lesions stay outside that blob.
    """
    placed: list[tuple[float, float, float]] = []
    lesions: list[LesionPainter] = []
    for label in labels:
        for _ in range(30):
            size = float(np.exp(rng.uniform(np.log(size_mm[0]), np.log(size_mm[1]))))
            r = size / 2.0
            lo, hi = z_range[0] + r + 1.0, z_range[1] - r - 1.0
            if hi <= lo:
                continue
            cz = float(rng.uniform(lo, hi))
            half = probe.extent_mm[0] / 2.0
            cx = float(rng.uniform(-half, half))
            if not probe.contains(np.array([cx - r, cx + r, cx]), np.array([cz, cz, cz + r]),
                                  margin_mm=1.0).all():
                continue
            if any(np.hypot(cx - px, cz - pz) < r + pr + 2.0 for px, pz, pr in placed):
                continue
            if organ_limit is not None and np.hypot(
                    cx - organ_limit.cx, cz - organ_limit.cz) < organ_limit.radius + r + 3.0:
                continue
            placed.append((cx, cz, r))
            lesions.append(factories[label](rng, cx, cz, size))
            break
    return lesions


def _labels(rng: np.random.Generator, config: SceneConfig, classes: tuple[str, ...],
            boost_multiple: str) -> list[str]:
    """Class labels of the lesions of one image."""
    pool = config.classes or classes
    first = str(rng.choice(pool))
    probs = np.asarray(config.lesion_counts, dtype=float)
    count = int(rng.choice(len(probs), p=probs / probs.sum()))
    if first == boost_multiple and count == 1 and rng.random() < 0.4:
        count = int(rng.integers(2, 5))
    return [first if i == 0 or rng.random() < config.same_class else str(rng.choice(pool))
            for i in range(count)]


def _vessels(rng: np.random.Generator, probe: ProbeGeometry, z_range: tuple[float, float],
             count: int, radius: tuple[float, float]) -> list[Tube]:
    """Random vessels: some along the plane (tubes), some across (cross-sections)."""
    tubes = []
    half = probe.extent_mm[0] / 2.0
    for _ in range(count):
        start = np.array([rng.uniform(-half, half), rng.uniform(-15, 15),
                          rng.uniform(*z_range)])
        across = rng.random() < 0.45
        direction = rng.normal(size=3)
        if across:
            direction[1] = 3.0 * np.sign(direction[1] or 1.0)
        else:
            direction[1] *= 0.15
        points = [start]
        for _ in range(int(rng.integers(1, 4))):
            direction = direction / np.linalg.norm(direction)
            points.append(points[-1] + direction * rng.uniform(15.0, 45.0))
            direction = direction + rng.normal(scale=0.35, size=3)
        portal = rng.random() < 0.5
        tubes.append(Tube(np.array(points), float(rng.uniform(*radius)),
                          lumen_echo=float(rng.uniform(0.0, 0.06)),
                          wall_echo=float(rng.uniform(2.0, 3.5)) if portal else 0.0,
                          wall_mm=float(rng.uniform(0.5, 1.2))))
    return tubes


def _rib(rng: np.random.Generator, probe: ProbeGeometry, depth_mm: float, gas: bool
         ) -> Shadowing:
    """A rib (clean shadow) or bowel gas (dirty shadow) near ``depth_mm``."""
    half = probe.extent_mm[0] / 2.0
    cx = float(rng.uniform(-half, half))
    if gas:
        blob = Blob(cx, depth_mm, float(rng.uniform(4.0, 12.0)), aspect=float(rng.uniform(1.5, 3)),
                    harmonics=random_outline(rng, 0.25, 6))
        return Shadowing(blob, float(rng.uniform(4.0, 8.0)), float(rng.uniform(4.0, 9.0)),
                         reverberation=float(rng.uniform(2.0, 5.0)),
                         spacing_mm=float(rng.uniform(2.0, 4.0)))
    blob = Blob(cx, depth_mm, float(rng.uniform(4.0, 7.0)), aspect=float(rng.uniform(1.3, 2.0)))
    return Shadowing(blob, float(rng.uniform(4.0, 8.0)), float(rng.uniform(15.0, 40.0)))


def _look_alike(rng: np.random.Generator, cx: float, cz: float, size: float, aspect: float,
                echo_rel: float, wall: float, atten_in: float) -> LesionPainter:
    """A normal structure drawn like a lesion (gallbladder, kidney, fat lobule)."""
    blob = Blob(cx, cz, size / 2.0 / np.sqrt(aspect), aspect=aspect,
                angle=float(rng.normal(0, 0.3)), harmonics=random_outline(rng, 0.06))

    def style(d: np.ndarray, theta: np.ndarray, dx: np.ndarray, dz: np.ndarray,
              echo_bg: np.ndarray, atten_bg: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        level = float(np.median(echo_bg))
        inside = d < 1.0
        echo = np.where(inside, echo_rel * level, echo_bg) + wall * level * band(d, 1.0, 0.06)
        return echo, np.where(inside, atten_in, atten_bg), inside

    return LesionPainter("normal", blob, style)


def liver_scene(rng: np.random.Generator, probe: ProbeGeometry,
                config: SceneConfig | None = None) -> Scene:
    """A liver view: abdominal wall, parenchyma, vessels, lesions, look-alikes."""
    config = config or SceneConfig()
    fatty = rng.random() < 0.2
    parenchyma = Layer(0.0, float(rng.uniform(0.9, 1.3) * (1.4 if fatty else 1.0)),
                       float(rng.uniform(0.75, 1.0) if fatty else rng.uniform(0.4, 0.55)),
                       _texture(rng, probe, (float(rng.uniform(3, 10)),) * 2),
                       float(rng.uniform(0.04, 0.25)))
    wall = [Layer(float(rng.uniform(1.0, 2.0)), float(rng.uniform(1.5, 2.5)), 0.6),
            Layer(float(rng.uniform(3.0, 20.0)), float(rng.uniform(0.35, 0.6)), 0.6,
                  _texture(rng, probe, (6.0, 2.0)), 0.25),
            Layer(float(rng.uniform(4.0, 12.0)), float(rng.uniform(0.55, 0.9)), 1.0,
                  _texture(rng, probe, (12.0, 0.6)), 0.35),
            Layer(float(rng.uniform(0.6, 1.2)), float(rng.uniform(2.0, 3.5)), 0.6),
            parenchyma]
    wall_depth = sum(layer.thickness_mm for layer in wall[:-1])
    if wall_depth > 0.3 * probe.depth_mm:
        shrink = 0.3 * probe.depth_mm / wall_depth
        for layer in wall[:-1]:
            layer.thickness_mm *= shrink
        wall_depth *= shrink
    scene = Scene("liver", parenchyma.echo, parenchyma.atten)
    scene.background.append(LayerStack(wall, probe, _texture(rng, probe, (25.0, 25.0)),
                                       float(rng.uniform(0.5, 3.0))))
    depth = probe.depth_mm
    bottom = depth
    diaphragm = None
    if rng.random() < 0.5:
        bottom = wall_depth + float(rng.uniform(0.6, 0.95)) * (depth - wall_depth)
        diaphragm = Blob(float(rng.uniform(-30, 30)), bottom + 300.0, 300.0)
        scene.background.append(_diaphragm(rng, diaphragm))
    liver_z = (wall_depth + 2.0, bottom - 2.0)
    scene.background.extend(_vessels(rng, probe, liver_z, int(rng.integers(2, 9)), (1.5, 6.0)))
    if rng.random() < 0.12:
        size = float(rng.uniform(25, 45))
        scene.background.append(_look_alike(rng, float(rng.uniform(-40, 40)),
                                            wall_depth + size / 2 + 5, size,
                                            float(rng.uniform(2.0, 3.0)), 0.02, 2.0, 0.05))
    if rng.random() < 0.15 and depth > 100:
        size = float(rng.uniform(45, 70))
        kidney = _look_alike(rng, float(rng.uniform(-30, 30)), depth * 0.75, size,
                             float(rng.uniform(1.6, 2.4)), 0.5, 0.0, 0.5)
        scene.background.append(kidney)
        scene.background.append(_look_alike(rng, kidney.blob.cx, kidney.blob.cz, size * 0.5,
                                            kidney.blob.aspect, 1.8, 0.0, 0.6))
    labels = _labels(rng, config, LIVER_CLASSES, "metastasis")
    scene.lesions = _place_lesions(rng, probe, LIVER_FACTORIES, labels, liver_z, config.size_mm,
                                   organ_limit=diaphragm)
    if rng.random() < 0.3:
        scene.overlays.append(_rib(rng, probe, float(rng.uniform(8, max(wall_depth, 9.0))), False))
    if rng.random() < 0.15:
        scene.overlays.append(_rib(rng, probe, float(rng.uniform(wall_depth, depth * 0.5)), True))
    return scene


@dataclass
class _Diaphragm:
    """Bright curved diaphragm band; below it a dimmer mirror-image zone."""

    blob: Blob
    thickness: float
    echo: float
    mirror: TextureField

    def paint(self, grid: Grid, echo: np.ndarray, atten: np.ndarray) -> None:
        x, z = np.meshgrid(grid.xs, grid.zs)
        d, _ = self.blob.distance(x, z)
        below = d < 1.0
        echo[below] = 0.8 * (1.0 + 0.3 * self.mirror(x[below], -z[below]))
        edge = band(d, 1.0, self.thickness / self.blob.radius) > 0
        echo[edge] = self.echo
        atten[below] = 0.9


def _diaphragm(rng: np.random.Generator, blob: Blob) -> _Diaphragm:
    extent = (-150.0, 150.0, -400.0, 100.0)
    return _Diaphragm(blob, float(rng.uniform(1.5, 4.0)), float(rng.uniform(3.0, 6.0)),
                      TextureField(rng, extent, (6.0, 6.0), step_mm=2.0))


def breast_scene(rng: np.random.Generator, probe: ProbeGeometry,
                 config: SceneConfig | None = None) -> Scene:
    """A breast view: skin, fat with Cooper's ligaments, gland, muscle, chest wall."""
    config = config or SceneConfig(size_mm=(5.0, 30.0))
    fat_echo = float(rng.uniform(0.35, 0.55))
    gland_echo = float(rng.uniform(1.2, 2.1))
    layers = [
        Layer(float(rng.uniform(0.4, 0.8)), float(rng.uniform(2.0, 3.0)), 0.6),
        Layer(float(rng.uniform(0.6, 1.4)), float(rng.uniform(0.7, 1.1)), 0.6),
        Layer(float(rng.uniform(0.3, 0.6)), float(rng.uniform(1.6, 2.4)), 0.6),
        Layer(float(rng.uniform(3.0, 15.0)), fat_echo, 0.55,
              _texture(rng, probe, (float(rng.uniform(3, 7)),) * 2), 0.3,
              lines=float(rng.uniform(0.03, 0.07))),
        Layer(float(rng.uniform(8.0, 28.0)), gland_echo, float(rng.uniform(0.6, 0.9)),
              _texture(rng, probe, (float(rng.uniform(1, 3)), float(rng.uniform(0.7, 2)))),
              float(rng.uniform(0.15, 0.4)), islands=float(rng.uniform(1.0, 1.8)),
              island_echo=fat_echo),
        Layer(float(rng.uniform(1.0, 4.0)), fat_echo, 0.55),
        Layer(float(rng.uniform(0.4, 0.8)), 2.2, 0.6),
        Layer(float(rng.uniform(5.0, 12.0)), float(rng.uniform(0.55, 0.85)), 1.0,
              _texture(rng, probe, (15.0, 0.5)), 0.4),
        Layer(0.0, 0.6, 1.5, _texture(rng, probe, (8.0, 8.0)), 0.2),
    ]
    scene = Scene("breast", fat_echo, 0.55)
    scene.background.append(LayerStack(layers, probe, _texture(rng, probe, (20.0, 20.0)),
                                       float(rng.uniform(1.0, 5.0))))
    depths = np.cumsum([layer.thickness_mm for layer in layers])
    gland_top, gland_bottom, chest = float(depths[3]), float(depths[4]), float(depths[7])
    if rng.random() < 0.4:
        scene.background.extend(_vessels(rng, probe, (gland_top, gland_bottom),
                                         int(rng.integers(1, 3)), (0.7, 2.5)))
    for _ in range(int(rng.integers(0, 4))):
        size = float(rng.uniform(3.0, 10.0))
        scene.background.append(_look_alike(
            rng, float(rng.uniform(-25, 25)), float(rng.uniform(gland_top, gland_bottom)),
            size, float(rng.uniform(1.3, 2.5)), fat_echo / gland_echo, 0.0, 0.55))
    if chest < probe.depth_mm:
        for _ in range(int(rng.integers(0, 3))):
            scene.overlays.append(_rib(rng, probe, chest + float(rng.uniform(4, 8)), False))
    labels = _labels(rng, config, BREAST_CLASSES, "")
    lower = min(gland_bottom, chest - 2.0, probe.depth_mm)
    scene.lesions = _place_lesions(rng, probe, BREAST_FACTORIES, labels,
                                   (gland_top - 3.0, lower), config.size_mm)
    return scene
