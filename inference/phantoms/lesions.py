"""Liver and breast lesions with the appearances the literature describes.

Every factory takes a random generator, the centre (mm, tissue coordinates)
and the largest diameter (mm) and returns a :class:`LesionPainter`.  Each
draws its own appearance parameters widely; the ranges are listed in
``docs/dataset-card.md``.

Liver (JSUM classes):

* **cyst**: anechoic, round or oval, thin bright wall, posterior
  enhancement (no attenuation inside), sometimes lateral edge shadows;
* **hemangioma**: homogeneous hyperechoic, well defined, round or gently
  lobulated, faint posterior enhancement; large ones may be heterogeneous;
* **HCC**: hypoechoic, mosaic (patches of different echo with septa) or
  iso/hyperechoic; thin hypoechoic halo (capsule), lateral shadows,
  nodule-in-nodule, mild posterior enhancement;
* **metastasis**: target / bull's-eye (echoic centre, thick hypoechoic rim)
  or hypoechoic with irregular margin, sometimes necrotic centre; often
  several in one image.

Breast:

* **carcinoma**: irregular or spiculated, often taller than wide,
  markedly hypoechoic and heterogeneous, echogenic halo, posterior
  shadowing, sometimes microcalcifications;
* **fibroadenoma**: oval, wider than tall, parallel to the skin,
  circumscribed, homogeneous hypoechoic, thin capsule, gently lobulated;
* **simple cyst**: anechoic, oval, thin wall, posterior enhancement;
* **other** benign: lipoma-like (iso/hyperechoic to fat, wide, fine
  internal lines), complicated cyst (low-level echoes or a fluid-debris
  level) or intramammary lymph node (hypoechoic cortex, echogenic hilum).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import structlog

from inference.phantoms.scene import (
    Blob,
    LesionPainter,
    StyleFn,
    TextureField,
    band,
    random_outline,
    random_spikes,
    smoothstep,
)

logger = structlog.get_logger(__name__)

Maps = tuple[np.ndarray, np.ndarray, np.ndarray]
LesionFactory = Callable[[np.random.Generator, float, float, float], LesionPainter]


def _texture(rng: np.random.Generator, radius: float, scale_mm: float) -> TextureField:
    """A texture in lesion-centred coordinates."""
    reach = 2.5 * radius + 2.0
    return TextureField(rng, (-reach, reach, -reach, reach), (scale_mm, scale_mm))


def _inside(d: np.ndarray, edge: float) -> np.ndarray:
    """Weight 1 inside the outline, 0 outside, blurred over ``edge``."""
    return 1.0 - smoothstep(1.0 - edge, 1.0 + edge, d)


def _lateral_edges(d: np.ndarray, dx: np.ndarray, dz: np.ndarray, outer: float
                   ) -> np.ndarray:
    """Pixels just outside the outline where it runs parallel to the beam."""
    horizontal = np.abs(dx) / (np.hypot(dx, dz) + 1e-6) > 0.97
    return horizontal & (d >= 1.0) & (d <= outer)


def _fill(echo_bg: np.ndarray, atten_bg: np.ndarray, value: np.ndarray, atten_in: float,
          d: np.ndarray, edge: float) -> Maps:
    """Blend a lesion interior into the background over a margin of ``edge``."""
    w = _inside(d, edge)
    return (echo_bg + (value - echo_bg) * w, atten_bg + (atten_in - atten_bg) * w,
            d <= 1.0 + edge)


def _level(echo_bg: np.ndarray) -> float:
    """Typical background echogenicity around a lesion."""
    return float(np.median(echo_bg))


def _fluid(rng: np.random.Generator, radius: float, internal: float, debris: bool = False,
           edge_shadow: float | None = None) -> StyleFn:
    """Fluid-filled lesion: thin bright wall, echo ``internal``, no attenuation."""
    wall_mm = float(rng.uniform(0.3, 0.9))
    wall_gain = float(rng.uniform(1.5, 3.5))
    wall = wall_mm / radius
    shadow = edge_shadow if edge_shadow is not None else (
        float(rng.uniform(4.0, 12.0)) if rng.random() < 0.6 else 0.0)
    level_z = float(rng.uniform(0.0, 0.5)) * radius
    fluid_atten = float(rng.uniform(0.0, 0.08))

    def style(d: np.ndarray, theta: np.ndarray, dx: np.ndarray, dz: np.ndarray,
              echo_bg: np.ndarray, atten_bg: np.ndarray) -> Maps:
        level = _level(echo_bg)
        inner = _inside(d, 0.02)
        inside_echo = np.full_like(d, internal * level)
        if debris:
            inside_echo = np.where(dz > level_z, level * 0.6, inside_echo)
        echo = echo_bg + (inside_echo - echo_bg) * inner
        echo = echo + wall_gain * level * band(d, 1.0 + wall / 2.0, wall / 2.0)
        atten = atten_bg + (fluid_atten - atten_bg) * inner
        if shadow:
            atten = np.where(_lateral_edges(d, dx, dz, 1.0 + 2.0 * wall), shadow, atten)
        return echo, atten, d <= 1.0 + wall

    return style


def _oval_blob(rng: np.random.Generator, cx: float, cz: float, radius: float,
               aspect: tuple[float, float], irregularity: tuple[float, float],
               angle_sd: float = 0.3) -> Blob:
    """A round-to-oval blob, elevation comparable to its in-plane size."""
    a = float(rng.uniform(*aspect))
    return Blob(cx, cz, radius / np.sqrt(max(a, 1 / a)), aspect=a,
                angle=float(rng.normal(0.0, angle_sd)),
                harmonics=random_outline(rng, float(rng.uniform(*irregularity))),
                elevation_mm=radius * float(rng.uniform(0.8, 1.2)),
                y0=float(rng.uniform(-0.3, 0.3)) * radius)


def liver_cyst(rng: np.random.Generator, cx: float, cz: float, size_mm: float) -> LesionPainter:
    """Simple hepatic cyst."""
    r = size_mm / 2.0
    blob = _oval_blob(rng, cx, cz, r, (0.8, 1.4), (0.0, 0.04))
    return LesionPainter("cyst", blob, _fluid(rng, r, float(rng.uniform(0.0, 0.04))))


def hemangioma(rng: np.random.Generator, cx: float, cz: float, size_mm: float) -> LesionPainter:
    """Hepatic hemangioma: homogeneous hyperechoic, well defined."""
    r = size_mm / 2.0
    blob = _oval_blob(rng, cx, cz, r, (0.75, 1.35), (0.0, 0.12))
    contrast = float(rng.uniform(2.0, 4.0))
    grain = float(rng.uniform(0.03, 0.15))
    texture = _texture(rng, r, float(rng.uniform(1.0, 3.0)))
    atypical = size_mm > 22 and rng.random() < 0.35
    core = _texture(rng, r, r / 3.0)
    edge = float(rng.uniform(0.02, 0.07))
    atten_in = float(rng.uniform(0.3, 0.45))

    def style(d: np.ndarray, theta: np.ndarray, dx: np.ndarray, dz: np.ndarray,
              echo_bg: np.ndarray, atten_bg: np.ndarray) -> Maps:
        level = _level(echo_bg)
        value = contrast * level * (1.0 + grain * texture(dx, dz))
        if atypical:
            hypo = (core(dx, dz) > 0.6) & (d < 0.6)
            value = np.where(hypo, 0.6 * level, value)
        return _fill(echo_bg, atten_bg, value, atten_in, d, edge)

    return LesionPainter("hemangioma", blob, style)


def hcc(rng: np.random.Generator, cx: float, cz: float, size_mm: float) -> LesionPainter:
    """Hepatocellular carcinoma: hypoechoic or mosaic, halo, lateral shadows."""
    r = size_mm / 2.0
    blob = _oval_blob(rng, cx, cz, r, (0.8, 1.3), (0.0, 0.08))
    mode = rng.choice(["hypo", "mosaic", "bright"], p=[0.45, 0.4, 0.15])
    base = {"hypo": rng.uniform(0.35, 0.7), "mosaic": rng.uniform(0.6, 1.1),
            "bright": rng.uniform(1.3, 2.0)}[str(mode)]
    mosaic = _texture(rng, r, max(r / 3.0, 1.5))
    halo_mm = float(rng.uniform(0.7, 2.2)) if rng.random() < 0.85 else 0.0
    halo = halo_mm / r
    halo_echo = float(rng.uniform(0.08, 0.3))
    shadow = float(rng.uniform(5.0, 12.0)) if rng.random() < 0.55 else 0.0
    nodule = rng.random() < 0.3
    n_off = rng.uniform(-0.3, 0.3, 2) * r
    n_r = float(rng.uniform(0.3, 0.5)) * r
    n_echo = float(rng.uniform(0.3, 0.6) if base > 0.8 else rng.uniform(1.3, 2.0))
    atten_in = float(rng.uniform(0.25, 0.4))

    def style(d: np.ndarray, theta: np.ndarray, dx: np.ndarray, dz: np.ndarray,
              echo_bg: np.ndarray, atten_bg: np.ndarray) -> Maps:
        level = _level(echo_bg)
        value = np.full_like(d, base * level)
        if mode == "mosaic":
            t = mosaic(dx, dz)
            value = level * np.select([t < -0.5, t < 0.4], [0.45, base], 1.6)
            value = value * (1.0 - 0.6 * (np.abs(t + 0.05) < 0.06))
        if nodule:
            inner = np.hypot(dx - n_off[0], dz - n_off[1]) < n_r
            value = np.where(inner, n_echo * level, value)
        w = _inside(d, 0.03)
        echo = echo_bg + (value - echo_bg) * w
        atten = atten_bg + (atten_in - atten_bg) * w
        if halo:
            ring = (d > 1.0 - 0.02) & (d < 1.0 + halo)
            echo = np.where(ring, halo_echo * level, echo)
            if shadow:
                atten = np.where(_lateral_edges(d, dx, dz, 1.0 + halo), shadow, atten)
        return echo, atten, d <= 1.0 + halo

    return LesionPainter("hcc", blob, style)


def metastasis(rng: np.random.Generator, cx: float, cz: float, size_mm: float
               ) -> LesionPainter:
    """Liver metastasis: target (bull's-eye) or hypoechoic."""
    r = size_mm / 2.0
    target = rng.random() < 0.55
    blob = _oval_blob(rng, cx, cz, r, (0.8, 1.25), (0.04, 0.18) if not target else (0.0, 0.1))
    rim = float(rng.uniform(0.25, 0.45))
    rim_echo = float(rng.uniform(0.12, 0.4))
    centre_echo = float(rng.uniform(0.9, 2.2))
    hypo_echo = float(rng.uniform(0.3, 0.65))
    necrosis = rng.random() < 0.2
    necrosis_r = float(rng.uniform(0.2, 0.45))
    edge = float(rng.uniform(0.04, 0.15))
    grain = _texture(rng, r, float(rng.uniform(1.0, 2.5)))
    atten_in = float(rng.uniform(0.45, 0.7))

    def style(d: np.ndarray, theta: np.ndarray, dx: np.ndarray, dz: np.ndarray,
              echo_bg: np.ndarray, atten_bg: np.ndarray) -> Maps:
        level = _level(echo_bg)
        if target:
            value = level * np.where(d < 1.0 - rim, centre_echo, rim_echo)
            value = value * (1.0 + 0.12 * grain(dx, dz))
        else:
            value = level * hypo_echo * (1.0 + 0.2 * grain(dx, dz))
        if necrosis:
            value = np.where(d < necrosis_r, 0.03 * level, value)
        return _fill(echo_bg, atten_bg, value, atten_in, d, edge)

    return LesionPainter("metastasis", blob, style)


def carcinoma(rng: np.random.Generator, cx: float, cz: float, size_mm: float) -> LesionPainter:
    """Breast carcinoma: irregular/spiculated, taller than wide, shadowing."""
    r = size_mm / 2.0
    taller = rng.random() < 0.65
    aspect = float(rng.uniform(0.55, 0.95) if taller else rng.uniform(0.95, 1.3))
    spikes = random_spikes(rng, int(rng.integers(5, 15)), (0.15, 0.55)) \
        if rng.random() < 0.7 else ()
    blob = Blob(cx, cz, r / np.sqrt(max(aspect, 1 / aspect)) / (1.2 if spikes else 1.0),
                aspect=aspect, angle=float(rng.normal(0.0, 0.25)),
                harmonics=random_outline(rng, float(rng.uniform(0.1, 0.3)), 6),
                spikes=spikes, spike_width=float(rng.uniform(0.04, 0.1)),
                elevation_mm=r * float(rng.uniform(0.8, 1.2)))
    inner = float(rng.uniform(0.08, 0.35))
    hetero = _texture(rng, r, float(rng.uniform(1.0, 3.0)))
    halo = float(rng.uniform(0.1, 0.35)) if rng.random() < 0.6 else 0.0
    halo_gain = float(rng.uniform(1.3, 2.2))
    atten_in = float(rng.uniform(1.2, 3.0) if rng.random() < 0.75 else rng.uniform(0.5, 0.9))
    calc = rng.random() < 0.4
    calc_field = _texture(rng, r, 0.25)

    def style(d: np.ndarray, theta: np.ndarray, dx: np.ndarray, dz: np.ndarray,
              echo_bg: np.ndarray, atten_bg: np.ndarray) -> Maps:
        level = _level(echo_bg)
        value = inner * level * (1.0 + 0.35 * hetero(dx, dz))
        if calc:
            value = np.where(calc_field(dx, dz) > 2.6, 6.0 * level, value)
        w = _inside(d, 0.06)
        echo = echo_bg + (value - echo_bg) * w
        if halo:
            echo = echo * (1.0 + (halo_gain - 1.0) * band(d, 1.0 + halo / 2, halo / 2))
        atten = atten_bg + (atten_in - atten_bg) * w
        return echo, atten, d <= 1.0 + halo

    return LesionPainter("carcinoma", blob, style)


def fibroadenoma(rng: np.random.Generator, cx: float, cz: float, size_mm: float
                 ) -> LesionPainter:
    """Fibroadenoma: oval, wider than tall, circumscribed, homogeneous."""
    r = size_mm / 2.0
    blob = _oval_blob(rng, cx, cz, r, (1.3, 2.3), (0.0, 0.1), angle_sd=0.12)
    value_rel = float(rng.uniform(0.15, 0.45))
    grain = _texture(rng, r, float(rng.uniform(0.8, 2.0)))
    capsule = float(rng.uniform(0.3, 0.8)) / r if rng.random() < 0.5 else 0.0
    septa = rng.random() < 0.2
    septa_field = _texture(rng, r, r / 2.0)
    atten_in = float(rng.uniform(0.3, 0.6))

    def style(d: np.ndarray, theta: np.ndarray, dx: np.ndarray, dz: np.ndarray,
              echo_bg: np.ndarray, atten_bg: np.ndarray) -> Maps:
        level = _level(echo_bg)
        value = value_rel * level * (1.0 + 0.12 * grain(dx, dz))
        if septa:
            value = np.where(np.abs(septa_field(dx, dz)) < 0.05, 1.5 * level, value)
        w = _inside(d, 0.03)
        echo = echo_bg + (value - echo_bg) * w
        if capsule:
            echo = echo + 1.2 * level * band(d, 1.0 + capsule / 2.0, capsule / 2.0)
        return echo, atten_bg + (atten_in - atten_bg) * w, d <= 1.0 + capsule

    return LesionPainter("fibroadenoma", blob, style)


def simple_cyst(rng: np.random.Generator, cx: float, cz: float, size_mm: float
                ) -> LesionPainter:
    """Simple breast cyst: anechoic oval, thin wall, posterior enhancement."""
    r = size_mm / 2.0
    blob = _oval_blob(rng, cx, cz, r, (1.0, 1.8), (0.0, 0.05), angle_sd=0.2)
    return LesionPainter("simple_cyst", blob, _fluid(rng, r, float(rng.uniform(0.0, 0.04))))


def _lipoma(rng: np.random.Generator, r: float) -> tuple[Blob, StyleFn]:
    blob = _oval_blob(rng, 0.0, 0.0, r, (1.6, 3.0), (0.0, 0.06), angle_sd=0.08)
    rel = float(rng.uniform(0.9, 1.6))
    lines = _texture(rng, r, 1.0)
    fat = float(rng.uniform(0.4, 0.6))

    def style(d: np.ndarray, theta: np.ndarray, dx: np.ndarray, dz: np.ndarray,
              echo_bg: np.ndarray, atten_bg: np.ndarray) -> Maps:
        value = rel * fat * (1.0 + 0.8 * (np.abs(lines(dx * 0.3, dz)) < 0.15))
        w = _inside(d, 0.03)
        echo = echo_bg + (value - echo_bg) * w + 1.0 * fat * band(d, 1.0 + 0.25 / r, 0.25 / r)
        return echo, atten_bg + (0.5 - atten_bg) * w, d <= 1.0 + 0.5 / r

    return blob, style


def _lymph_node(rng: np.random.Generator, r: float) -> tuple[Blob, StyleFn]:
    blob = _oval_blob(rng, 0.0, 0.0, r, (1.5, 2.5), (0.0, 0.05), angle_sd=0.2)
    cortex = float(rng.uniform(0.2, 0.45))
    hilum = float(rng.uniform(0.35, 0.6))

    def style(d: np.ndarray, theta: np.ndarray, dx: np.ndarray, dz: np.ndarray,
              echo_bg: np.ndarray, atten_bg: np.ndarray) -> Maps:
        level = _level(echo_bg)
        value = level * np.where(d < hilum, 1.4, cortex)
        w = _inside(d, 0.04)
        return echo_bg + (value - echo_bg) * w, atten_bg + (0.5 - atten_bg) * w, d <= 1.04

    return blob, style


def other_breast(rng: np.random.Generator, cx: float, cz: float, size_mm: float
                 ) -> LesionPainter:
    """Other benign breast lesion: lipoma-like, complicated cyst or lymph node."""
    r = size_mm / 2.0
    kind = str(rng.choice(["lipoma", "complicated_cyst", "lymph_node"], p=[0.35, 0.4, 0.25]))
    if kind == "complicated_cyst":
        blob = _oval_blob(rng, 0.0, 0.0, r, (1.0, 1.6), (0.0, 0.06))
        debris = rng.random() < 0.4
        style = _fluid(rng, r, 0.08 if debris else float(rng.uniform(0.12, 0.35)), debris)
    elif kind == "lipoma":
        blob, style = _lipoma(rng, r)
    else:
        blob, style = _lymph_node(rng, r)
    return LesionPainter("other", replace(blob, cx=cx, cz=cz), style)


LIVER_FACTORIES: dict[str, LesionFactory] = {
    "hcc": hcc,
    "metastasis": metastasis,
    "hemangioma": hemangioma,
    "cyst": liver_cyst,
}
"""Liver lesion factories by class (order of :data:`inference.findings.LIVER_CLASSES`)."""

BREAST_FACTORIES: dict[str, LesionFactory] = {
    "carcinoma": carcinoma,
    "fibroadenoma": fibroadenoma,
    "simple_cyst": simple_cyst,
    "other": other_breast,
}
"""Breast lesion factories by class (order of :data:`inference.findings.BREAST_CLASSES`)."""
