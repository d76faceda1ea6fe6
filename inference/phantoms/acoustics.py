"""Acoustic core of the ultrasound phantoms: probe geometry, speckle, B-mode.

The phantoms describe tissue as two maps drawn on the image pixel grid in
Cartesian millimetres (``ScanLayout.x_mm`` lateral, ``ScanLayout.z_mm`` depth
below the skin at the probe centre):

* *echogenicity*: mean backscatter amplitude (1.0 = reference soft tissue,
  0 = anechoic fluid, > 1 bright reflectors);
* *attenuation*: local attenuation in dB/cm/MHz (soft tissue ~0.5, fluid
  ~0.0, fibrous carcinoma ~1-2, bone and gas >> 10).

:func:`render` turns them into a B-mode frame the way a scanner does: the maps
are sampled along the beams (:class:`ScanLayout` holds the beam grid of a
linear, convex or sector probe), complex scatterers weighted by the
echogenicity are convolved with a point spread function whose axial and
lateral size follow the transmit frequency (:func:`speckle_image`, Rayleigh
envelope), the round-trip attenuation is integrated along each beam (so
posterior shadowing and enhancement arise by themselves), electronic noise,
TGC, gain and log compression follow (:func:`bmode`), and the beams are scan
converted back onto the image with a black background.  :func:`burn_in_text`
adds the annotations scanners burn into the pixels.

Cine helpers: scatterers kept on the beam grid (:func:`make_scatterers`,
``ScanLayout.beam_shape``) move with the tissue (:func:`shift_scatterers`,
``ScanLayout.beam_shift``) and lose coherence with :func:`decorrelate`; maps
move with :func:`shift_map`; :func:`breathing_offset_mm` gives a respiratory
displacement.

Public API
----------
``ProbeGeometry``, ``random_probe``, ``ScanLayout``, ``layout_scan``,
``make_scan_mask``, ``ScannerSettings``, ``random_settings``,
``make_scatterers``, ``speckle_image``, ``bmode``, ``render``,
``burn_in_text``, ``decorrelate``, ``shift_scatterers``, ``shift_map``, ``breathing_offset_mm``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import structlog
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

logger = structlog.get_logger(__name__)

SPEED_OF_SOUND_MM_US = 1.54
"""Speed of sound in soft tissue, mm per microsecond."""

ProbeKind = Literal["linear", "convex", "sector"]


@dataclass(frozen=True)
class ProbeGeometry:
    """Field of view of a probe.

    Parameters
    ----------
    kind:
        ``"linear"`` (rectangle), ``"convex"`` (curved array: annular sector
        with a curved top) or ``"sector"`` (phased array: fan from a point).
    depth_mm:
        Imaging depth below the transducer face.
    width_mm:
        Aperture width of a linear probe.
    angle_deg:
        Field angle of a convex or sector probe.
    radius_mm:
        Radius of curvature of a convex array (a sector probe has ~0-3 mm).
    """

    kind: ProbeKind
    depth_mm: float
    width_mm: float = 40.0
    angle_deg: float = 60.0
    radius_mm: float = 0.0

    @property
    def extent_mm(self) -> tuple[float, float]:
        """Width and height of the field of view, in mm."""
        if self.kind == "linear":
            return self.width_mm, self.depth_mm
        half = np.deg2rad(self.angle_deg) / 2.0
        outer = self.radius_mm + self.depth_mm
        width = 2.0 * outer * np.sin(half)
        height = outer - self.radius_mm * np.cos(half)
        return float(width), float(height)

    def contains(self, x: np.ndarray | float, z: np.ndarray | float, margin_mm: float = 0.0
                 ) -> np.ndarray:
        """Whether Cartesian points lie inside the field of view, ``margin_mm`` in."""
        depth, lateral = _beam_coordinates(self, np.asarray(x, float), np.asarray(z, float))
        if self.kind == "linear":
            half = self.width_mm / 2.0 - margin_mm
            return (depth >= margin_mm) & (depth <= self.depth_mm - margin_mm) & (
                np.abs(lateral) <= half)
        half_angle = np.deg2rad(self.angle_deg) / 2.0
        arc_margin = margin_mm / np.maximum(depth + self.radius_mm, 1e-3)
        return (depth >= margin_mm) & (depth <= self.depth_mm - margin_mm) & (
            np.abs(lateral) <= half_angle - arc_margin)

    def face_depth(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance (mm) of Cartesian points from the transducer face, along the beam."""
        return _beam_coordinates(self, x, z)[0]


def random_probe(kind: ProbeKind, rng: np.random.Generator, depth_mm: tuple[float, float]
                 ) -> ProbeGeometry:
    """Draw a probe of ``kind`` with a depth uniformly in ``depth_mm``.

    Linear apertures are 35-50 mm, convex arrays have 40-70 mm radius and a
    55-75 degree field, sector probes 0-3 mm apex radius and 60-90 degrees.
    """
    depth = float(rng.uniform(*depth_mm))
    if kind == "linear":
        return ProbeGeometry("linear", depth, width_mm=float(rng.uniform(35.0, 50.0)))
    if kind == "convex":
        return ProbeGeometry("convex", depth, angle_deg=float(rng.uniform(55.0, 75.0)),
                             radius_mm=float(rng.uniform(40.0, 70.0)))
    return ProbeGeometry("sector", depth, angle_deg=float(rng.uniform(60.0, 90.0)),
                         radius_mm=float(rng.uniform(0.0, 3.0)))


@dataclass
class ScanLayout:
    """A probe's field of view placed on an image, with its beam grid.

    Attributes
    ----------
    geometry:
        The probe.
    rows, cols:
        Image size in pixels.
    pixel_mm:
        Size of a (square) pixel in mm.
    skin_row, centre_col:
        Image position (pixel-edge coordinates) of the skin line at the probe
        centre, i.e. of Cartesian ``(x, z) = (0, 0)``.
    mask:
        ``(rows, cols)`` bool, True inside the field of view.
    x_mm, z_mm:
        Cartesian coordinate of every column / row centre.
    beam_depth_mm, beam_lateral:
        Axial sample depths and lateral beam positions (mm for linear
        probes, radians for convex and sector probes).
    """

    geometry: ProbeGeometry
    rows: int
    cols: int
    pixel_mm: float
    skin_row: float
    centre_col: float
    mask: np.ndarray
    x_mm: np.ndarray
    z_mm: np.ndarray
    beam_depth_mm: np.ndarray
    beam_lateral: np.ndarray
    _to_beam: np.ndarray = field(repr=False)
    _to_image: np.ndarray = field(repr=False)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` pixel box (exclusive end) of the field of view."""
        ys, xs = np.nonzero(self.mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    @property
    def lateral_step_mm(self) -> float:
        """Beam spacing in mm (at mid-depth for convex and sector probes)."""
        step = float(self.beam_lateral[1] - self.beam_lateral[0])
        if self.geometry.kind == "linear":
            return step
        return step * (self.geometry.radius_mm + self.geometry.depth_mm / 2.0)

    @property
    def axial_step_mm(self) -> float:
        """Axial sample spacing in mm."""
        return float(self.beam_depth_mm[1] - self.beam_depth_mm[0])

    @property
    def beam_shape(self) -> tuple[int, int]:
        """``(depth samples, beams)`` of the beam grid."""
        return len(self.beam_depth_mm), len(self.beam_lateral)

    def beam_shift(self, dx_mm: float, dz_mm: float) -> tuple[int, int]:
        """Beam-grid shift ``(samples, beams)`` of a tissue motion, at mid-field."""
        return (round(dz_mm / self.axial_step_mm),
                round(dx_mm / self.lateral_step_mm))

    def grid_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, z)`` Cartesian mm of every pixel, each ``(rows, cols)``."""
        return np.meshgrid(self.x_mm, self.z_mm)

    def to_beam(self, image_map: np.ndarray, order: int = 1) -> np.ndarray:
        """Sample an image-grid map along the beams -> ``(depths, beams)``."""
        if np.iscomplexobj(image_map):
            return (self.to_beam(image_map.real, order)
                    + 1j * self.to_beam(image_map.imag, order)).astype(np.complex64)
        return ndimage.map_coordinates(
            np.asarray(image_map, dtype=np.float32), self._to_beam, order=order, mode="nearest"
        )

    def to_image(self, beam_map: np.ndarray, order: int = 1) -> np.ndarray:
        """Scan-convert a beam-grid map onto the image; zero outside the mask."""
        out = ndimage.map_coordinates(
            np.asarray(beam_map, dtype=np.float32), self._to_image, order=order, mode="nearest"
        )
        out[~self.mask] = 0.0
        return out


def _beam_coordinates(geometry: ProbeGeometry, x: np.ndarray, z: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Depth (mm) and lateral position of Cartesian points."""
    if geometry.kind == "linear":
        return z, x
    radius = np.hypot(x, z + geometry.radius_mm)
    return radius - geometry.radius_mm, np.arctan2(x, z + geometry.radius_mm)


def layout_scan(geometry: ProbeGeometry, rows: int, cols: int, rng: np.random.Generator,
                fill: float | None = None) -> ScanLayout:
    """Place ``geometry`` on a ``rows x cols`` image, leaving room for text.

    Parameters
    ----------
    geometry:
        The probe.
    rows, cols:
        Image size.
    rng:
        Random generator for the margins, fill ratio and horizontal offset.
    fill:
        Fraction of the usable height or width the field of view takes;
        random in ``[0.8, 1.0]`` when ``None``.

    Returns
    -------
    ScanLayout
        The layout, with beam and scan-conversion coordinates.
    """
    top = int(rng.integers(int(0.06 * rows), int(0.14 * rows) + 1))
    bottom = int(rng.integers(int(0.03 * rows), int(0.08 * rows) + 1))
    side = int(0.12 * cols)
    fill = float(rng.uniform(0.8, 1.0)) if fill is None else fill
    width_mm, height_mm = geometry.extent_mm
    pixel_mm = max(height_mm / ((rows - top - bottom) * fill),
                   width_mm / ((cols - 2 * side) * fill))
    free = (cols - 2 * side) - width_mm / pixel_mm
    centre_col = cols / 2.0 + float(rng.uniform(-0.3, 0.3)) * max(free, 0.0)
    skin_row = float(top)
    if geometry.kind != "linear":
        # The apex lies above the top row; the top of the fan is the arc ends.
        half = np.deg2rad(geometry.angle_deg) / 2.0
        skin_row += geometry.radius_mm * (1.0 - np.cos(half)) / pixel_mm
    x_mm = ((np.arange(cols) + 0.5) - centre_col) * pixel_mm
    z_mm = ((np.arange(rows) + 0.5) - skin_row) * pixel_mm
    xx, zz = np.meshgrid(x_mm, z_mm)
    depth, lateral = _beam_coordinates(geometry, xx, zz)

    n_depth = int(np.ceil(geometry.depth_mm / pixel_mm)) + 1
    beam_depth = np.linspace(0.0, geometry.depth_mm, n_depth)
    if geometry.kind == "linear":
        lat_max = geometry.width_mm / 2.0
        n_lines = int(np.ceil(geometry.width_mm / pixel_mm)) + 1
    else:
        lat_max = np.deg2rad(geometry.angle_deg) / 2.0
        arc = 2.0 * lat_max * (geometry.radius_mm + geometry.depth_mm)
        n_lines = int(np.ceil(arc / pixel_mm)) + 1
    beam_lateral = np.linspace(-lat_max, lat_max, n_lines)
    mask = (depth >= 0) & (depth <= geometry.depth_mm) & (np.abs(lateral) <= lat_max)

    d_step = beam_depth[1] - beam_depth[0]
    l_step = beam_lateral[1] - beam_lateral[0]
    to_image = np.stack([depth / d_step, (lateral + lat_max) / l_step]).astype(np.float32)

    bd, bl = np.meshgrid(beam_depth, beam_lateral, indexing="ij")
    if geometry.kind == "linear":
        bx, bz = bl, bd
    else:
        r = bd + geometry.radius_mm
        bx, bz = r * np.sin(bl), r * np.cos(bl) - geometry.radius_mm
    to_beam = np.stack([bz / pixel_mm + skin_row - 0.5, bx / pixel_mm + centre_col - 0.5])
    return ScanLayout(
        geometry=geometry, rows=rows, cols=cols, pixel_mm=float(pixel_mm),
        skin_row=skin_row, centre_col=float(centre_col), mask=mask,
        x_mm=x_mm, z_mm=z_mm, beam_depth_mm=beam_depth, beam_lateral=beam_lateral,
        _to_beam=to_beam.astype(np.float32), _to_image=to_image,
    )


def make_scan_mask(geometry: ProbeGeometry, rows: int, cols: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, tuple[float, float]]:
    """Field-of-view mask and pixel size ``(dx, dy)`` in mm (as ImageGeometry).

    A shortcut over :func:`layout_scan` for callers that only need the mask.
    """
    layout = layout_scan(geometry, rows, cols, rng)
    return layout.mask, (layout.pixel_mm, layout.pixel_mm)


@dataclass(frozen=True)
class ScannerSettings:
    """Acquisition and display settings of one image.

    Parameters
    ----------
    frequency_mhz:
        Transmit centre frequency: sets the resolution cell and attenuation.
    gain_db:
        Overall receive gain.
    dynamic_range_db:
        Displayed dynamic range of the log compression.
    tgc_db:
        Time-gain compensation sliders, dB at evenly spaced depths.
    noise_db:
        Electronic noise level relative to the reference tissue echo.
    assumed_attenuation:
        Attenuation (dB/cm/MHz) the automatic TGC part compensates.
    """

    frequency_mhz: float
    gain_db: float = 0.0
    dynamic_range_db: float = 60.0
    tgc_db: tuple[float, ...] = (0.0,) * 8
    noise_db: float = -45.0
    assumed_attenuation: float = 0.45


def random_settings(rng: np.random.Generator, frequency_mhz: tuple[float, float]
                    ) -> ScannerSettings:
    """Draw widely varied scanner settings.

    Gain -8..+8 dB, dynamic range 45-75 dB, eight TGC sliders each -6..+6 dB,
    noise -85..-62 dB, automatic TGC for 0.3-0.6 dB/cm/MHz.
    """
    return ScannerSettings(
        frequency_mhz=float(rng.uniform(*frequency_mhz)),
        gain_db=float(rng.uniform(-8.0, 8.0)),
        dynamic_range_db=float(rng.uniform(45.0, 75.0)),
        tgc_db=tuple(float(v) for v in np.cumsum(rng.uniform(-2.0, 2.0, 8)).clip(-6, 6)),
        noise_db=float(rng.uniform(-85.0, -62.0)),
        assumed_attenuation=float(rng.uniform(0.3, 0.6)),
    )


def make_scatterers(shape: tuple[int, ...], rng: np.random.Generator,
                    density: float = 1.0) -> np.ndarray:
    """Complex scatterer amplitudes, unit mean power.

    Parameters
    ----------
    shape:
        Grid shape.
    rng:
        Random generator.
    density:
        Fraction of grid cells holding a scatterer; ``1`` gives fully
        developed (Rayleigh) speckle, small values sparse bright points.
    """
    amp = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2.0)
    if density < 1.0:
        amp = amp * (rng.random(shape) < density) / np.sqrt(density)
    return amp.astype(np.complex64)


def resolution_mm(frequency_mhz: float) -> tuple[float, float]:
    """Axial and lateral resolution (FWHM, mm) at ``frequency_mhz``.

    Axial: a two-cycle pulse gives about one wavelength; lateral: an
    f-number of about 2.5 gives 2.5 wavelengths.
    """
    wavelength = SPEED_OF_SOUND_MM_US / frequency_mhz
    return wavelength, 2.5 * wavelength


def speckle_image(echogenicity: np.ndarray, pixel_mm: float | tuple[float, float],
                  frequency_mhz: float, rng: np.random.Generator,
                  scatterers: np.ndarray | None = None) -> np.ndarray:
    """Envelope of the echoes of a scatterer field (axis 0 = beam axis).

    Parameters
    ----------
    echogenicity:
        ``(rows, cols)`` mean backscatter amplitude.
    pixel_mm:
        Sample spacing, one value or ``(axial, lateral)``.
    frequency_mhz:
        Centre frequency; sets the Gaussian PSF (see :func:`resolution_mm`).
    rng:
        Random generator, used when ``scatterers`` is ``None``.
    scatterers:
        Complex scatterer field of the same shape (tissue-fixed, for cine).

    Returns
    -------
    numpy.ndarray
        Float32 envelope; its mean is about the echogenicity (Rayleigh).
    """
    axial_px, lateral_px = ((pixel_mm, pixel_mm) if np.isscalar(pixel_mm)
                            else pixel_mm)  # type: ignore[misc]
    if scatterers is None:
        scatterers = make_scatterers(echogenicity.shape, rng)
    fwhm_ax, fwhm_lat = resolution_mm(frequency_mhz)
    sigma = (max(fwhm_ax / 2.355 / float(axial_px), 0.6),
             max(fwhm_lat / 2.355 / float(lateral_px), 0.6))
    field_ = scatterers * np.asarray(echogenicity, dtype=np.float32)
    re = ndimage.gaussian_filter(field_.real, sigma, mode="nearest")
    im = ndimage.gaussian_filter(field_.imag, sigma, mode="nearest")
    # Normalise so a unit-echogenicity region keeps unit RMS amplitude.
    gain = np.sqrt(4.0 * np.pi * sigma[0] * sigma[1])
    return (np.hypot(re, im) * gain).astype(np.float32)


def bmode(envelope: np.ndarray, depth_mm: float, attenuation_db_cm_mhz: float | np.ndarray,
          frequency_mhz: float, tgc: np.ndarray | tuple[float, ...] | None = None,
          gain_db: float = 0.0, dynamic_range_db: float = 60.0, *,
          noise_db: float = -45.0, assumed_attenuation: float = 0.45,
          rng: np.random.Generator | None = None) -> np.ndarray:
    """Attenuate, add noise, apply TGC and gain, log-compress to ``uint8``.

    Parameters
    ----------
    envelope:
        ``(depths, beams)`` envelope from :func:`speckle_image`, axis 0 from
        the transducer face (row 0) to ``depth_mm`` (last row).
    depth_mm:
        Depth of the last row.
    attenuation_db_cm_mhz:
        Scalar or ``(depths, beams)`` map; integrated along each beam for the
        round trip, so strong attenuators shadow what lies behind them.
    frequency_mhz:
        Centre frequency.
    tgc:
        Slider gains in dB at evenly spaced depths (linearly interpolated).
    gain_db, dynamic_range_db:
        Overall gain and displayed dynamic range.
    noise_db:
        Electronic (Rayleigh) noise level before TGC, relative to unit echo.
    assumed_attenuation:
        Attenuation the automatic depth gain compensates.
    rng:
        Random generator for the noise (a fixed one when ``None``).

    Returns
    -------
    numpy.ndarray
        ``uint8`` image of the same shape as ``envelope``.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    n_depth = envelope.shape[0]
    dz_cm = depth_mm / 10.0 / max(n_depth - 1, 1)
    alpha = np.broadcast_to(np.asarray(attenuation_db_cm_mhz, dtype=np.float32), envelope.shape)
    loss_db = 2.0 * frequency_mhz * np.cumsum(alpha, axis=0) * dz_cm
    signal = envelope * np.power(10.0, -loss_db / 20.0)
    noise = np.abs(make_scatterers(envelope.shape, rng)) * 10.0 ** (noise_db / 20.0)
    received = np.sqrt(signal**2 + noise**2)
    depth_cm = np.arange(n_depth) * dz_cm
    compensation = 2.0 * frequency_mhz * assumed_attenuation * depth_cm
    if tgc is not None and len(tgc) > 0:
        sliders = np.asarray(tgc, dtype=np.float64)
        compensation = compensation + np.interp(
            depth_cm, np.linspace(0.0, depth_cm[-1], len(sliders)), sliders)
    level_db = 20.0 * np.log10(received + 1e-9) + compensation[:, None] + gain_db
    # Unit echo sits 22 dB below the top of the displayed range.
    grey = (level_db - 22.0 + dynamic_range_db) / dynamic_range_db
    return (np.clip(grey, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render(layout: ScanLayout, echogenicity: np.ndarray, attenuation: np.ndarray | float,
           settings: ScannerSettings, rng: np.random.Generator,
           scatterers: np.ndarray | None = None) -> np.ndarray:
    """Render one B-mode frame of a scene on the image grid.

    Parameters
    ----------
    layout:
        Field of view on the image.
    echogenicity:
        ``(rows, cols)`` mean backscatter on the image grid.
    attenuation:
        Scalar or ``(rows, cols)`` attenuation in dB/cm/MHz.
    settings:
        Scanner settings.
    rng:
        Random generator (scatterers, noise).
    scatterers:
        Complex scatterers on the beam grid (``layout.beam_shape``), kept
        from frame to frame in a cine (see :func:`shift_scatterers`); new
        ones are drawn when ``None``.

    Returns
    -------
    numpy.ndarray
        ``uint8`` ``(rows, cols)`` frame, black outside the field of view.
    """
    echo_beam = np.clip(layout.to_beam(echogenicity), 0.0, None)
    beam_scat = make_scatterers(echo_beam.shape, rng) if scatterers is None else scatterers
    envelope = speckle_image(echo_beam, (layout.axial_step_mm, layout.lateral_step_mm),
                             settings.frequency_mhz, rng, scatterers=beam_scat)
    atten = (layout.to_beam(attenuation) if np.ndim(attenuation) == 2
             else float(attenuation))  # type: ignore[arg-type]
    beam_img = bmode(envelope, layout.geometry.depth_mm, atten, settings.frequency_mhz,
                     settings.tgc_db, settings.gain_db, settings.dynamic_range_db,
                     noise_db=settings.noise_db,
                     assumed_attenuation=settings.assumed_attenuation, rng=rng)
    frame = layout.to_image(beam_img.astype(np.float32))
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


_LABELS = ("LIVER", "RT LOBE", "LT LOBE", "BREAST", "RT BREAST", "LT BREAST", "ABD",
           "SAG", "TRANS", "ECHO", "A4C", "CARD", "SMALL PARTS", "GB", "HEPATIC")


def _random_text(rng: np.random.Generator, layout: ScanLayout | None) -> str:
    kind = int(rng.integers(0, 7))
    if kind == 0:
        when = _dt.datetime(2020, 1, 1) + _dt.timedelta(minutes=int(rng.integers(0, 3_000_000)))
        return when.strftime("%Y/%m/%d %H:%M:%S")
    if kind == 1:
        gain, dyn = int(rng.integers(30, 90)), int(rng.integers(45, 80))
        return f"{rng.uniform(2, 15):.1f}MHz  G{gain}  DR{dyn}"
    if kind == 2:
        depth = layout.geometry.depth_mm / 10.0 if layout is not None else rng.uniform(3, 20)
        return f"D {depth:.1f}cm"
    if kind == 3:
        return str(rng.choice(_LABELS))
    if kind == 4:
        letters = "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), int(rng.integers(4, 10))))
        return f"{letters} HOSP  ID {int(rng.integers(10**6, 10**8))}"
    if kind == 5:
        return f"MI {rng.uniform(0.2, 1.4):.1f}  TIs {rng.uniform(0.1, 1.0):.1f}"
    return f"FR {int(rng.integers(10, 60))}Hz  {int(rng.integers(1, 9))}/{int(rng.integers(1, 9))}"


def _depth_scale(draw: ImageDraw.ImageDraw, layout: ScanLayout, colour: int) -> None:
    """Centimetre ticks beside the field of view."""
    x1 = layout.bbox[2]
    x = min(x1 + 6, layout.cols - 4)
    for cm in range(int(layout.geometry.depth_mm // 10) + 1):
        y = layout.skin_row + cm * 10.0 / layout.pixel_mm
        if y < layout.rows:
            length = 6 if cm % 5 == 0 else 3
            draw.line([(x, y), (x + length, y)], fill=colour)


def _caliper(draw: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, y: float,
             colour: int) -> None:
    """Two '+' calipers with a dotted line and a distance label."""
    dx, dy = rng.uniform(-60, 60, 2)
    ends = [(x, y), (x + dx, y + dy)]
    for ex, ey in ends:
        draw.line([(ex - 4, ey), (ex + 4, ey)], fill=colour)
        draw.line([(ex, ey - 4), (ex, ey + 4)], fill=colour)
    for t in np.linspace(0.1, 0.9, 8):
        px, py = x + t * dx, y + t * dy
        draw.point((px, py), fill=colour)
    draw.text((x + dx + 5, y + dy), f"{np.hypot(dx, dy) / 30:.2f}cm", fill=colour,
              font=ImageFont.load_default())


def burn_in_text(image: np.ndarray, rng: np.random.Generator, inside_probability: float = 0.15,
                 layout: ScanLayout | None = None) -> np.ndarray:
    """Burn scanner annotations into a frame.

    Text lines (date, settings, depth, labels, a fake hospital name and ID),
    a depth scale and a body marker go into the black margins; with
    probability ``inside_probability`` a label and measurement calipers are
    drawn inside the scan area too.

    Parameters
    ----------
    image:
        ``uint8`` ``(rows, cols)`` frame (not modified).
    rng:
        Random generator.
    inside_probability:
        Chance of annotations inside the field of view.
    layout:
        The field of view; without it, the non-black region is avoided.

    Returns
    -------
    numpy.ndarray
        A new ``uint8`` frame with the annotations.
    """
    rows, cols = image.shape
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    colour = int(rng.integers(170, 256))
    mask = layout.mask if layout is not None else image > 0
    margin_slots = [(4, 4), (cols * 0.55, 4), (4, rows - 14), (cols * 0.6, rows - 14)]
    margin_slots += [(4, 18 + 14 * i) for i in range(8)]
    margin_slots += [(cols - 110, 30 + 14 * i) for i in range(8)]
    n_lines = int(rng.integers(3, 10))
    for slot in rng.permutation(len(margin_slots))[:n_lines]:
        x, y = margin_slots[int(slot)]
        text = _random_text(rng, layout)
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        region = mask[max(int(top), 0):int(bottom) + 1, max(int(left), 0):int(right) + 1]
        if region.size and region.mean() > 0.05:
            continue
        draw.text((x, y), text, fill=colour, font=font)
    if layout is not None and rng.random() < 0.7:
        _depth_scale(draw, layout, colour)
    if rng.random() < 0.6:
        bx, by = 8 + rng.uniform(0, 20), rows - 60 + rng.uniform(-10, 10)
        draw.ellipse([bx, by, bx + 34, by + 34], outline=colour)
        draw.line([(bx + 10, by + 17), (bx + 24, by + 17 + rng.uniform(-8, 8))], fill=colour,
                  width=2)
    if rng.random() < inside_probability:
        ys, xs = np.nonzero(mask)
        if len(ys):
            i = int(rng.integers(0, len(ys)))
            if rng.random() < 0.5:
                _caliper(draw, rng, float(xs[i]), float(ys[i]), colour)
            else:
                draw.text((float(xs[i]), float(ys[i])), _random_text(rng, layout), fill=colour,
                          font=font)
    return np.asarray(pil, dtype=np.uint8).copy()


def decorrelate(scatterers: np.ndarray, fraction: float, rng: np.random.Generator
                ) -> np.ndarray:
    """Replace a ``fraction`` of the scatterer power with new random scatterers.

    Models out-of-plane motion between cine frames: the speckle correlation
    between the input and output fields is ``1 - fraction``.
    """
    fresh = make_scatterers(scatterers.shape, rng)
    return (np.sqrt(1.0 - fraction) * scatterers + np.sqrt(fraction) * fresh).astype(
        np.complex64)


def shift_scatterers(scatterers: np.ndarray, rows: int, cols: int, rng: np.random.Generator
                     ) -> np.ndarray:
    """Move a scatterer field by whole samples; new scatterers enter at the edges.

    Positive ``rows`` moves content down (deeper), positive ``cols`` right.
    """
    out = make_scatterers(scatterers.shape, rng)
    n_rows, n_cols = scatterers.shape
    if abs(rows) >= n_rows or abs(cols) >= n_cols:
        return out
    src_r = slice(max(-rows, 0), n_rows - max(rows, 0))
    dst_r = slice(max(rows, 0), n_rows - max(-rows, 0))
    src_c = slice(max(-cols, 0), n_cols - max(cols, 0))
    dst_c = slice(max(cols, 0), n_cols - max(-cols, 0))
    out[dst_r, dst_c] = scatterers[src_r, src_c]
    return out


def shift_map(values: np.ndarray, dx_px: float, dz_px: float) -> np.ndarray:
    """Translate an image-grid map (echogenicity or scatterers) by sub-pixels.

    Positive ``dx_px`` moves content right, positive ``dz_px`` moves it down;
    edges are extended.
    """
    if np.iscomplexobj(values):
        return (shift_map(values.real, dx_px, dz_px)
                + 1j * shift_map(values.imag, dx_px, dz_px)).astype(np.complex64)
    return ndimage.shift(np.asarray(values, dtype=np.float32), (dz_px, dx_px), order=1,
                         mode="nearest")


def breathing_offset_mm(t_s: float | np.ndarray, period_s: float = 4.0,
                        amplitude_mm: float = 8.0, phase: float = 0.0) -> np.ndarray:
    """Cranio-caudal organ displacement at time ``t_s`` (smooth, periodic).

    Uses ``amplitude * sin^2`` so the organ rests at end-expiration (0 mm)
    and moves by up to ``amplitude_mm``.
    """
    return amplitude_mm * np.sin(np.pi * np.asarray(t_s) / period_s + phase) ** 2
