"""A second phantom generator, built apart from :mod:`inference.phantoms.generator`.

The lesion engines will be judged on images from a generator they never saw.  A
detector trained on one generator learns some of that generator's ways as well as
the published appearances: on this module's images the detectors trained on the
first generator alone found 57 % (liver) and 50 % (breast) of the lesions
(docs/dataset-card.md).  So this generator draws the same published appearances
(docs/clinical-background.md via the dataset card) by another route, and shares
no rendering code with the first one:

* the echogenicity map is drawn on the display grid, not on the beam grid, and
  the lesions are shapes with a modulated radius, not ellipsoids in a volume;
* speckle is complex Gaussian noise filtered by a Gaussian point spread function
  on the display grid (no scatterer volume, no scan conversion);
* posterior enhancement, posterior shadowing and the edge shadows of round
  lesions are transmission factors along the beam lines, fading with depth,
  instead of an integrated attenuation map;
* depth gain is left imperfect by a residual slope, and electronic noise,
  log compression, gain and burned-in annotations are drawn in their own way.

:func:`generate_image_domain` renders stills and :func:`generate_image_domain_clip`
cine clips (probe motion, breathing, the plane sweeping through the lesions, speckle
decorrelation).  Both return the same
:class:`~inference.phantoms.generator.PhantomSample` as the first generator, so
the training caches and the evaluation take either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from inference.findings import BREAST_CLASSES, LIVER_CLASSES, BoundingBox
from inference.phantoms.generator import LesionTruth, Organ, PhantomSample

BEAM_BINS = 256
"""Depth and lateral bins of the beam grid that carries the transmission factors."""

EDGE_SHADOW_CLASSES = frozenset({"cyst", "simple_cyst", "fibroadenoma", "hemangioma"})
"""Round, smooth-walled lesions that may cast refraction shadows from their edges."""

MIN_LESION_PX = 12
"""Lesions with fewer visible pixels are not drawn into the ground truth."""

MIN_TRANSMISSION = 0.35
"""A lesion lying under a shadow darker than this (a rib's) is not ground truth."""

Shape = tuple[tuple[float, float], tuple[float, float], float, tuple[int, int] | None]

SHAPES: dict[str, Shape] = {
    "carcinoma": ((0.85, 1.0), (0.55, 0.9), 0.3, (4, 12)),
    "fibroadenoma": ((0.45, 0.75), (0.95, 1.1), 0.05, None),
    "other": ((0.45, 0.75), (0.95, 1.1), 0.05, None),
    "round": ((0.75, 1.0), (0.85, 1.1), 0.1, None),
}
"""Per class: half-height and half-width ranges (times half the size), lobulation, and
the range of the number of spicules.  Carcinomas are taller than wide and spiculated,
fibroadenomas and the other benign masses oval and wider than tall."""


@dataclass
class _Lesion:
    """A drawn lesion: its mask, what it does to the echoes behind it, and its normalised
    radius map and centre (a clip sweeps the imaging plane through it)."""

    label: str
    mask: np.ndarray
    transmission: float
    radius: np.ndarray
    centre: tuple[float, float]


@dataclass(frozen=True)
class _Field:
    """Where each display pixel lies in the field of view (``yy``, ``xx``: its row and
    column)."""

    inside: np.ndarray
    depth_mm: np.ndarray
    lateral: np.ndarray
    pixel_mm: float
    max_depth_mm: float
    scan_box: BoundingBox
    yy: np.ndarray
    xx: np.ndarray


def _field(rng: np.random.Generator, organ: Organ, rows: int, cols: int) -> _Field:
    """A convex or linear field of view centred near the middle of the image."""
    top = int(rng.integers(rows // 16, rows // 7))
    bottom = rows - int(rng.integers(rows // 48, rows // 12))
    convex = rng.random() < (0.75 if organ == "liver" else 0.1)
    if organ == "liver":
        depth = rng.uniform(110, 190) if convex else rng.uniform(50, 90)
    else:
        depth = rng.uniform(45, 70) if convex else rng.uniform(28, 55)
    pixel = depth / (bottom - top)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cx = cols / 2 + rng.uniform(-0.05, 0.05) * cols
    if convex:
        radius = rng.uniform(35, 65)
        half = np.deg2rad(rng.uniform(25, 38))
        apex_y = top - radius / pixel
        depth_map = np.hypot(xx - cx, yy - apex_y) * pixel - radius
        phi = np.arctan2(xx - cx, yy - apex_y)
        inside = (depth_map >= 0) & (depth_map <= depth) & (np.abs(phi) <= half)
        lateral = phi / half
    else:
        half_w = min(rng.uniform(36, 50) / pixel / 2, cols / 2 - cols / 32)
        depth_map = (yy - top) * pixel
        inside = (depth_map >= 0) & (depth_map <= depth) & (np.abs(xx - cx) <= half_w)
        lateral = (xx - cx) / half_w
    return _Field(inside, depth_map, lateral, pixel, depth, BoundingBox.of_mask(inside), yy, xx)


def _texture(rng: np.random.Generator, shape: tuple[int, ...], sigma_px: float,
             amount: float) -> np.ndarray:
    """Smooth multiplicative texture with mean 1 and relative spread ``amount``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px)
    return (1.0 + amount * noise / (noise.std() + 1e-9)).astype(np.float32)


def _radius(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float],
            radii: tuple[float, float], irregular: float = 0.0, spicules: int = 0,
            angle: float = 0.0) -> np.ndarray:
    """Normalised radius of a shape (``<= 1`` inside), lobulated by ``irregular`` and
    drawn out into ``spicules``."""
    cy, cx = centre
    ry, rx = radii
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    theta = np.arctan2(v, u)
    outline = np.ones_like(theta)
    for k in range(2, 6):
        phase = rng.uniform(0, 2 * np.pi)
        outline += irregular * rng.uniform(-1, 1) / k * np.cos(k * theta + phase)
    for _ in range(spicules):
        offset = np.angle(np.exp(1j * (theta - rng.uniform(-np.pi, np.pi))))
        outline += rng.uniform(0.25, 0.6) * np.exp(-((offset / 0.06) ** 2))
    return np.hypot(u, v) / outline


def _cyst(rng: np.random.Generator, r: np.ndarray, echo: np.ndarray
          ) -> tuple[np.ndarray, float]:
    """Draw a simple cyst: anechoic, a thin bright wall, posterior enhancement."""
    mask = r <= 1
    echo[mask] = rng.uniform(0.0005, 0.004)
    echo[(r > 1) & (r <= 1 + rng.uniform(0.04, 0.1))] *= rng.uniform(1.2, 2.0)
    return mask, rng.uniform(2.0, 5.0)


def _liver_lesion(rng: np.random.Generator, label: str, r: np.ndarray, echo: np.ndarray
                  ) -> tuple[np.ndarray, float]:
    """Draw a liver lesion whose normalised radius is ``r``; its mask and transmission."""
    mask = r <= 1
    if label == "cyst":
        return _cyst(rng, r, echo)
    if label == "hemangioma":  # homogeneous, hyperechoic, well defined
        echo[mask] = rng.uniform(4.0, 16.0) * _texture(rng, echo.shape, 2, 0.08)[mask]
        return mask, rng.uniform(1.0, 1.4)
    if label == "hcc":  # hypoechoic or mosaic, nodule in nodule, hypoechoic halo
        if rng.random() < 0.5:
            echo[mask] = rng.uniform(0.1, 0.4)
        else:
            patches = _texture(rng, echo.shape, max(1.5, float(mask.sum()) ** 0.5 / 8), 1.0) - 1
            echo[mask] = 10 ** (0.6 * np.clip(patches[mask], -1.7, 1.7))
            inner = r <= rng.uniform(0.35, 0.55)
            echo[inner] = rng.uniform(0.1, 0.3) if rng.random() < 0.5 else rng.uniform(3.0, 6.0)
        halo = (r > 1) & (r <= 1 + rng.uniform(0.1, 0.2))
        echo[halo] = rng.uniform(0.03, 0.15)
        return mask | halo, rng.uniform(0.55, 1.1)
    # metastasis: target (echogenic centre, hypoechoic rim) or hypoechoic
    if rng.random() < 0.6:
        echo[mask] = rng.uniform(2.5, 10.0)
        echo[mask & (r > rng.uniform(0.55, 0.75))] = rng.uniform(0.03, 0.15)
    else:
        echo[mask] = rng.uniform(0.06, 0.25)
    return mask, rng.uniform(0.8, 1.05)


def _breast_lesion(rng: np.random.Generator, label: str, r: np.ndarray, echo: np.ndarray,
                   yy: np.ndarray, centre_y: float, height: float) -> tuple[np.ndarray, float]:
    """Draw a breast lesion whose normalised radius is ``r``; its mask and transmission."""
    mask = r <= 1
    if label == "simple_cyst":
        return _cyst(rng, r, echo)
    if label == "carcinoma":  # markedly hypoechoic, echogenic halo, posterior shadow
        echo[mask] = rng.uniform(0.01, 0.1)
        echo[(r > 1) & (r <= 1 + rng.uniform(0.12, 0.3))] *= rng.uniform(2.0, 6.0)
        return mask, rng.uniform(0.1, 0.4)
    if label == "fibroadenoma":  # hypoechoic, homogeneous, mild enhancement
        echo[mask] = rng.uniform(0.08, 0.3) * _texture(rng, echo.shape, 1.5, 0.1)[mask]
        return mask, rng.uniform(1.0, 1.35)
    if rng.random() < 0.5:  # lipoma-like: echogenic capsule and thin internal lines
        lines = np.sin((yy - centre_y) / max(height, 1.0) * rng.uniform(6, 12)
                       + rng.uniform(0, 2 * np.pi)) > 0.85
        echo[mask] = rng.uniform(1.3, 1.8) * float(np.median(echo[mask]))
        echo[mask & lines] = rng.uniform(2.2, 3.0)
        echo[(r > 1) & (r <= 1.06)] = rng.uniform(1.8, 2.6)
        return mask, rng.uniform(0.95, 1.1)
    echo[mask] = rng.uniform(0.08, 0.25)  # complicated cyst: low echoes and a debris level
    echo[mask & (yy > centre_y + height * rng.uniform(0.0, 0.5))] = rng.uniform(0.4, 0.8)
    return mask, rng.uniform(1.2, 1.8)


def _liver_background(rng: np.random.Generator, f: _Field, echo: np.ndarray) -> None:
    """Parenchyma, vessels along and across the plane, and the diaphragm."""
    yy, xx = f.yy, f.xx
    echo *= _texture(rng, echo.shape, 6 / f.pixel_mm, rng.uniform(0.05, 0.15))
    ys, xs = np.nonzero(f.inside)
    for _ in range(int(rng.integers(1, 5))):  # vessels in the plane
        k = rng.integers(len(ys))
        angle = rng.uniform(-0.8, 0.8)
        width = rng.uniform(2.5, 9) / f.pixel_mm
        distance = np.abs(-(xx - xs[k]) * np.sin(angle) + (yy - ys[k]) * np.cos(angle))
        echo[distance <= width / 2] = 0.03
        if rng.random() < 0.5:  # portal vein: echogenic wall
            echo[(distance > width / 2) & (distance <= width / 2 + 1.2 / f.pixel_mm)] *= 2.5
    for _ in range(int(rng.integers(0, 4))):  # vessels across the plane: lesion-like negatives
        k = rng.integers(len(ys))
        radius = rng.uniform(2, 6) / f.pixel_mm
        r = _radius(rng, yy, xx, (ys[k], xs[k]), (radius * rng.uniform(0.7, 1.0), radius),
                    angle=rng.uniform(0, np.pi))
        echo[r <= 1] = 0.03
        if rng.random() < 0.5:
            echo[(r > 1) & (r <= 1.3)] *= 2.5
    if rng.random() < 0.6:  # diaphragm: a bright curved band, lung below it
        level = rng.uniform(0.7, 0.95) * f.max_depth_mm
        curve = level + rng.uniform(5, 20) * f.lateral**2 * rng.choice([-1, 1])
        echo[np.abs(f.depth_mm - curve) <= rng.uniform(1.5, 3.0)] = rng.uniform(4, 8)
        echo[f.depth_mm > curve + 3] *= rng.uniform(0.4, 0.8)


def _breast_background(rng: np.random.Generator, f: _Field, echo: np.ndarray) -> None:
    """Skin, subcutaneous fat, the gland with fat islands and Cooper's ligaments,
    retromammary fat and the pectoral muscle."""
    yy, xx = f.yy, f.xx
    skin = rng.uniform(1.5, 2.5)
    fat_end = skin + rng.uniform(3, 10)
    gland_end = fat_end + rng.uniform(8, 18) * f.max_depth_mm / 45
    wave = rng.uniform(1, 4) * np.sin(f.lateral * rng.uniform(2, 5) + rng.uniform(0, 2 * np.pi))
    depth = f.depth_mm
    echo[depth < skin] = rng.uniform(2.5, 4)
    echo[(depth >= skin) & (depth < fat_end + wave)] = rng.uniform(0.3, 0.5)
    gland = (depth >= fat_end + wave) & (depth < gland_end + wave)
    echo[gland] = rng.uniform(1.2, 1.8)
    echo *= _texture(rng, echo.shape, 3 / f.pixel_mm, 0.15)
    ys, xs = np.nonzero(gland & f.inside)
    for _ in range(int(rng.integers(2, 7)) if len(ys) else 0):  # fat islands: negatives
        k = rng.integers(len(ys))
        radius = rng.uniform(2, 6) / f.pixel_mm
        r = _radius(rng, yy, xx, (ys[k], xs[k]), (radius * rng.uniform(0.4, 0.7), radius),
                    angle=rng.uniform(-0.3, 0.3))
        echo[r <= 1] = rng.uniform(0.3, 0.5)
    for _ in range(int(rng.integers(2, 6))):  # Cooper's ligaments
        x0 = rng.uniform(-1, 1)
        curve = fat_end - rng.uniform(0, 6) * np.exp(-(((f.lateral - x0) / 0.15) ** 2))
        echo[(np.abs(depth - curve) < 0.5) & (np.abs(f.lateral - x0) < 0.35)] = rng.uniform(2, 3.5)
    echo[depth >= gland_end + wave] = rng.uniform(0.35, 0.55)
    muscle = depth >= gland_end + wave + rng.uniform(2, 6)
    striation = 1 + 0.6 * (np.sin(depth * rng.uniform(1.5, 3) + f.lateral * 3) > 0.6)
    echo[muscle] = rng.uniform(0.5, 0.8) * striation[muscle]


def _place(rng: np.random.Generator, organ: Organ, f: _Field, size_mm: float,
           placed: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """A lesion centre inside the field, clear of the lesions already placed."""
    shallowest = (8.0 if organ == "liver" else 5.0) + size_mm / 2
    deepest = f.max_depth_mm * (0.8 if organ == "liver" else 0.7) - size_mm / 2
    size_px = size_mm / f.pixel_mm
    for _ in range(50):
        depth = rng.uniform(shallowest, max(shallowest, deepest))
        lateral = rng.uniform(-0.75, 0.75)
        ys, xs = np.nonzero(f.inside & (np.abs(f.depth_mm - depth) < f.pixel_mm)
                            & (np.abs(f.lateral - lateral) < 0.02))
        if len(ys) == 0:
            continue
        cy, cx = float(ys.mean()), float(xs.mean())
        if all(np.hypot(cy - py, cx - px) > (size_px + ps) * 0.6 for py, px, ps in placed):
            return cy, cx
    return None


def _lesions(rng: np.random.Generator, organ: Organ, f: _Field, echo: np.ndarray,
             count: int | None = None) -> list[_Lesion]:
    """None (20 %), one (55 %) or two to three lesions (or ``count``, at most); metastases
    come several at once."""
    yy, xx = f.yy, f.xx
    classes = LIVER_CLASSES if organ == "liver" else BREAST_CLASSES
    u = rng.random()
    if count is None:
        count = 0 if u < 0.2 else 1 if u < 0.75 else int(rng.integers(2, 4))
    first = classes[int(rng.integers(len(classes)))]
    lesions: list[_Lesion] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(count):
        label = first if first == "metastasis" else classes[int(rng.integers(len(classes)))]
        size_mm = float(np.exp(rng.uniform(np.log(6), np.log(38 if organ == "liver" else 30))))
        size_mm = min(size_mm, 0.35 * f.max_depth_mm)
        centre = _place(rng, organ, f, size_mm, placed)
        if centre is None:
            continue
        half = size_mm / f.pixel_mm / 2
        height, width, irregular, spicules = SHAPES.get(label, SHAPES["round"])
        radii = (half * rng.uniform(*height), half * rng.uniform(*width))
        r = _radius(rng, yy, xx, centre, radii, irregular,
                    int(rng.integers(*spicules)) if spicules else 0, rng.uniform(-0.2, 0.2))
        if organ == "liver":
            mask, transmission = _liver_lesion(rng, label, r, echo)
        else:
            mask, transmission = _breast_lesion(rng, label, r, echo, yy, centre[0], radii[0])
        placed.append((centre[0], centre[1], 2 * half))
        lesions.append(_Lesion(label, mask & f.inside, transmission, r, centre))
    return lesions


def _transmission(rng: np.random.Generator, organ: Organ, f: _Field, lesions: list[_Lesion],
                  depth_bin: np.ndarray, lateral_bin: np.ndarray) -> np.ndarray:
    """Transmission factor per beam-grid cell: what each lesion does to the echoes behind
    it (enhancement, shadow, edge shadows), and sometimes a rib shadow."""
    transmission = np.ones((BEAM_BINS, BEAM_BINS), np.float32)
    depth_index = np.arange(BEAM_BINS)[:, None]
    for lesion in lesions:
        grid = np.zeros((BEAM_BINS, BEAM_BINS), bool)
        grid[depth_bin[lesion.mask], lateral_bin[lesion.mask]] = True
        hit = grid.any(axis=0)
        if not hit.any():
            continue
        last = np.where(hit, BEAM_BINS - 1 - np.argmax(grid[::-1], axis=0), -1)
        behind = (depth_index > last[None, :]) & hit[None, :]
        fade = np.exp(-(depth_index - last[None, :]) / (BEAM_BINS * rng.uniform(0.3, 1.0)))
        effect = 1 + (lesion.transmission - 1) * np.where(behind, fade, 0)
        beams = np.nonzero(hit)[0]
        if lesion.label in EDGE_SHADOW_CLASSES and len(beams) > 4 and rng.random() < 0.5:
            width = max(1, int(len(beams) * rng.uniform(0.04, 0.1)))
            for edge in (beams[0], beams[-1] - width + 1):
                band = slice(max(0, edge - width // 2), edge + width)
                effect[:, band] = np.where(behind[:, band], rng.uniform(0.15, 0.45),
                                           effect[:, band])
        transmission *= ndimage.gaussian_filter1d(effect, 1.0, axis=1).astype(np.float32)
    if organ == "liver" and rng.random() < 0.3:  # a rib's shadow from the skin down
        start = rng.uniform(-0.9, 0.6)
        lateral = np.linspace(-1, 1, BEAM_BINS)
        transmission[:, (lateral > start) & (lateral < start + rng.uniform(0.08, 0.25))] *= (
            rng.uniform(0.05, 0.2))
    return transmission


def _speckle(rng: np.random.Generator, organ: Organ, f: _Field, echo: np.ndarray,
             noise: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """Displayed grey levels (float, 0-255) of the echogenicity map; and the frequency
    (MHz) and gain (dB) used.  ``noise`` (``(2, rows, cols)``, standard normal: the real
    and imaginary scattering) is drawn from ``rng`` when not given."""
    frequency = rng.uniform(2.5, 5.0) if organ == "liver" else rng.uniform(7, 13)
    wavelength = 1.54 / frequency
    axial = max(0.7, rng.uniform(0.4, 0.7) * wavelength / f.pixel_mm)
    lateral = max(1.2, rng.uniform(1.0, 1.8) * wavelength / f.pixel_mm
                  * (1 + 0.5 * f.max_depth_mm / 150))
    shape = echo.shape
    if noise is None:
        noise = rng.standard_normal((2, *shape))
    amplitude = np.sqrt(np.maximum(echo, 0.0))  # a rare texture dip below 0 has no echo
    real = ndimage.gaussian_filter(noise[0] * amplitude, (axial, lateral))
    imag = ndimage.gaussian_filter(noise[1] * amplitude, (axial, lateral))
    envelope = np.hypot(real, imag)
    envelope /= np.sqrt(np.mean(envelope[f.inside] ** 2)) + 1e-12
    envelope *= 10 ** (rng.uniform(-0.06, 0.04) * frequency * (f.depth_mm / 10) / 20)
    envelope += rng.rayleigh(10 ** rng.uniform(-3.5, -2.5), shape)
    dynamic_range = rng.uniform(48, 72)
    gain = rng.uniform(-6, 6)
    level = ((20 * np.log10(envelope + 1e-9) + gain) / dynamic_range
             + rng.uniform(0.42, 0.62))
    grey = np.clip(level, 0, 1) * 255
    if rng.random() < 0.3:
        grey = ndimage.gaussian_filter(grey, 0.7)
    return grey, frequency, gain


def _annotate(rng: np.random.Generator, organ: Organ, f: _Field, grey: np.ndarray,
              frequency: float, gain: float) -> np.ndarray:
    """Burn in text in the margins, the depth scale, and sometimes a mark inside."""
    rows, cols = grey.shape
    image = Image.fromarray(grey.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((8, 6), f"{organ.upper()} {frequency:.1f}MHz", fill=220, font=font)
    draw.text((cols - 120, 6), f"D {f.max_depth_mm / 10:.1f}cm G{gain:+.0f}", fill=200, font=font)
    draw.text((8, rows - 18), "ABD" if organ == "liver" else "BREAST R", fill=180, font=font)
    x = min(cols - 6, f.scan_box.x1 + 6)
    for cm in range(int(f.max_depth_mm // 10) + 1):
        y = f.scan_box.y0 + cm * 10 / f.pixel_mm
        draw.line([(x, y), (x + 4, y)], fill=200)
    if rng.random() < 0.2:
        ys, xs = np.nonzero(f.inside)
        k = rng.integers(len(ys))
        draw.text((int(xs[k]), int(ys[k])), "+", fill=255, font=font)
    return np.asarray(image)


def _render(rng: np.random.Generator, organ: Organ, f: _Field, echo: np.ndarray,
            lesions: list[_Lesion], display: np.random.Generator | None = None,
            noise: np.ndarray | None = None) -> tuple[np.ndarray, list[LesionTruth], float, float]:
    """One displayed frame of the echogenicity map ``echo`` and the ground truth of
    ``lesions`` on it; and the frequency (MHz) and gain (dB).

    ``rng`` draws the transmission factors, ``display`` (``rng`` if not given) the
    display chain and the annotations.  Ground truth holds each lesion with at least
    :data:`MIN_LESION_PX` pixels in the field of view that no rib shadow hides.
    """
    display = rng if display is None else display
    depth_bin = np.clip((f.depth_mm / f.max_depth_mm * (BEAM_BINS - 1)).astype(int), 0,
                        BEAM_BINS - 1)
    lateral_bin = np.clip(((f.lateral + 1) / 2 * (BEAM_BINS - 1)).astype(int), 0, BEAM_BINS - 1)
    transmission = _transmission(rng, organ, f, lesions, depth_bin, lateral_bin)[
        depth_bin, lateral_bin]
    grey, frequency, gain = _speckle(display, organ, f, echo * transmission, noise)
    grey[~f.inside] = 0
    frame = _annotate(display, organ, f, grey, frequency, gain)
    truths = []
    for index, lesion in enumerate(lesions):
        if (lesion.mask.sum() < MIN_LESION_PX
                or np.median(transmission[lesion.mask]) < MIN_TRANSMISSION):
            continue
        truths.append(LesionTruth(index, lesion.label, BoundingBox.of_mask(lesion.mask),
                                  int(lesion.mask.sum())))
    return frame, truths, frequency, gain


def generate_image_domain(organ: Organ, seed: int, rows: int = 480, cols: int = 640
                          ) -> PhantomSample:
    """Render one phantom still of ``organ`` from ``seed`` (same seed, same image).

    Ground truth holds each lesion with at least :data:`MIN_LESION_PX` pixels in
    the field of view that no rib shadow hides.
    """
    rng = np.random.default_rng([seed, 0x1D])
    f = _field(rng, organ, rows, cols)
    echo = np.ones((rows, cols), np.float32)
    (_liver_background if organ == "liver" else _breast_background)(rng, f, echo)
    lesions = _lesions(rng, organ, f, echo)
    frame, truths, frequency, gain = _render(rng, organ, f, echo, lesions)
    return PhantomSample(organ=organ, seed=seed, frames=frame[None], truths=[truths],
                         labels=[lesion.label for lesion in lesions], scan_box=f.scan_box,
                         pixel_mm=f.pixel_mm, params={"frequency_mhz": frequency, "gain_db": gain})


LESION_REACH = 1.35
"""Normalised radius out to which a lesion's wall, halo or capsule reaches."""


@dataclass(frozen=True)
class _Motion:
    """Motion during a clip: the probe sliding sideways, breathing (liver), and the
    imaging plane sweeping through the lesions.

    ``sweep`` is the plane's distance from the lesions' centres at the first and the
    last frame, in lesion radii; ``correlation`` is that of the scattering between
    consecutive frames (out-of-plane motion decorrelates speckle).
    """

    slide_px_s: float
    breathing_px: float
    breathing_period_s: float
    breathing_angle: float
    breathing_phase: float
    sweep: tuple[float, float]
    correlation: float

    def offset(self, t_s: float) -> tuple[float, float]:
        """Displacement (rows, columns) of the tissue under the probe at ``t_s`` seconds."""
        b = self.breathing_px * np.sin(2 * np.pi * t_s / self.breathing_period_s
                                       + self.breathing_phase)
        return b * np.cos(self.breathing_angle), self.slide_px_s * t_s + b * np.sin(
            self.breathing_angle)

    def scale(self, fraction: float) -> float:
        """Size of the lesions' cut by the plane, relative to their largest, when
        ``fraction`` of the clip has passed (a sphere cut off its centre)."""
        z = self.sweep[0] + (self.sweep[1] - self.sweep[0]) * fraction
        return float(np.sqrt(max(0.0, 1.0 - z * z)))


def _motion(rng: np.random.Generator, organ: Organ, f: _Field) -> _Motion:
    start = rng.uniform(-0.9, 0.3)
    breathing_mm = rng.uniform(3, 12) if organ == "liver" else rng.uniform(0, 1)
    return _Motion(slide_px_s=rng.uniform(-6, 6) / f.pixel_mm,
                   breathing_px=breathing_mm / f.pixel_mm,
                   breathing_period_s=rng.uniform(3, 5),
                   breathing_angle=rng.uniform(-0.5, 0.5),
                   breathing_phase=rng.uniform(0, 2 * np.pi),
                   sweep=(start, start + rng.uniform(0.2, 1.2)),
                   correlation=rng.uniform(0.8, 0.97))


def _cut(f: _Field, echo: np.ndarray, background: np.ndarray, lesion: _Lesion,
         scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``echo`` and the mask of ``lesion`` when the plane cuts it at ``scale`` times its
    full size: a shrunken copy of the lesion, wall and halo included, on the background."""
    if scale >= 1.0:
        return echo, lesion.mask
    out = np.where(lesion.radius <= LESION_REACH, background, echo)
    if scale <= 0.0:
        return out, np.zeros_like(lesion.mask)
    cy, cx = lesion.centre
    source = np.stack([cy + (f.yy - cy) / scale, cx + (f.xx - cx) / scale])
    radius = ndimage.map_coordinates(lesion.radius, source, order=0, mode="constant",
                                     cval=np.inf)
    reach = radius <= LESION_REACH
    out[reach] = ndimage.map_coordinates(echo, source, order=0, mode="nearest")[reach]
    return out, (radius <= 1) & f.inside


def generate_image_domain_clip(organ: Organ, seed: int, n_frames: int, rows: int = 480,
                               cols: int = 640, lesions: int | None = None) -> PhantomSample:
    """Render a cine clip of ``organ`` from ``seed`` (same seed, same clip).

    The scene is drawn once (with at most ``lesions`` lesions when given); then, frame
    by frame, the tissue moves under the probe (:class:`_Motion`), the plane sweeps
    through the lesions, and the scattering decorrelates, while the display chain and
    annotations stay as they are.  Its scenes are not those of
    :func:`generate_image_domain` for the same seed.
    """
    rng = np.random.default_rng([seed, 0x2C])
    f = _field(rng, organ, rows, cols)
    background = np.ones((rows, cols), np.float32)
    (_liver_background if organ == "liver" else _breast_background)(rng, f, background)
    echo = background.copy()
    drawn = _lesions(rng, organ, f, echo, lesions)
    motion = _motion(rng, organ, f)
    frame_s = 1.0 / rng.uniform(15, 30)
    scattering = np.random.default_rng([seed, 0x2C, 1])
    noise = scattering.standard_normal((2, rows, cols))
    frames, truths = [], []
    for i in range(n_frames):
        if i:
            noise = (motion.correlation * noise + np.sqrt(1 - motion.correlation ** 2)
                     * scattering.standard_normal((2, rows, cols)))
        scale = motion.scale(i / max(1, n_frames - 1))
        dy, dx = motion.offset(i * frame_s)
        echo_i, moved = echo, []
        for lesion in drawn:
            echo_i, mask = _cut(f, echo_i, background, lesion, scale)
            moved.append(replace(lesion, mask=ndimage.shift(mask, (dy, dx), order=0) & f.inside))
        echo_i = ndimage.shift(echo_i, (dy, dx), order=1, mode="nearest")
        frame, found, frequency, gain = _render(
            np.random.default_rng([seed, 0x2C, 2]), organ, f, echo_i, moved,
            np.random.default_rng([seed, 0x2C, 3]),
            np.roll(noise, (round(dy), round(dx)), axis=(1, 2)))
        frames.append(frame)
        truths.append(found)
    return PhantomSample(organ=organ, seed=seed, frames=np.stack(frames), truths=truths,
                         labels=[lesion.label for lesion in drawn], scan_box=f.scan_box,
                         pixel_mm=f.pixel_mm, frame_time_ms=1000 * frame_s,
                         params={"frequency_mhz": frequency, "gain_db": gain})
