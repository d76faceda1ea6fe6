"""Turn a DICOM ultrasound dataset into an :class:`ImageInput`.

Decoding uses pydicom 3 and its plugins (pylibjpeg, openjpeg, RLE, pyjpegls),
so every transfer syntax pydicom can decode is accepted: native and deflated,
JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000 and RLE.  Every
photometric interpretation an ultrasound machine writes is reduced to
``uint8`` luminance:

* ``MONOCHROME1``/``MONOCHROME2``: rescale (modality LUT), then the VOI
  window or LUT when present, else the stored range (8-bit data is kept as is,
  wider data is stretched over its minimum..maximum); ``MONOCHROME1`` is
  inverted so that bright always means echogenic.
* ``RGB`` (and ``YBR_ICT``/``YBR_RCT``/JPEG data the decoder already turned
  into RGB): ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``.
* ``YBR_FULL``/``YBR_FULL_422``: the Y component, which is that same luma.
* ``YBR_PARTIAL_420``/``YBR_PARTIAL_422``: the Y component stretched from
  the 16..235 video range.
* ``PALETTE COLOR``: the palette applied, then luma.

The fraction of the image that carries colour (Doppler/colour flow overlays)
is measured before the conversion and kept in
:attr:`ImageInput.color_fraction` for the quality gate.  Colour is measured
against the image's own grey scale: many scanners can show B-mode through a
tint map (sepia, blue...), and such an image is B-mode, not colour Doppler.

Nothing is decoded whose decoded size exceeds :data:`MAX_DECODED_BYTES`, or
whose compressed frames declare another size than Rows x Columns
(:mod:`inference.codestreams`): decoders allocate what a frame header says.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import structlog
from pydicom import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    convert_color_space,
    get_decoder,
)
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)
from scipy import ndimage

from inference.codestreams import declared_size, jpeg_colour_space
from inference.engines.base import ImageInput
from inference.findings import AnatomyValues, BoundingBox
from inference.geometry import FORMAT_2D, TISSUE, ImageGeometry, UltrasoundRegion
from inference.video import VIDEO_TRANSFER_SYNTAXES, VideoDecodeError, decode_video

logger = structlog.get_logger(__name__)

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 weights of R, G, B in the luminance."""

COLOR_CHROMA_THRESHOLD = 40
"""Chroma (max - min of R, G, B) of a pixel's departure from the image's grey
or tint curve above which the pixel counts as coloured."""

TINT_LUMA_BIN = 8
"""Width, in luma levels, of the bins over which the tint curve is measured."""

MAX_TINT_SATURATION = 0.6
"""Saturation ((max - min) / max of R, G, B) above which a bin's median colour
is taken for a colour overlay, not a tint map: tint maps are pale (sepia 0.3,
bronze 0.45), flow and power Doppler colours saturated (0.8-1)."""

SCAN_AREA_THRESHOLD = 8.0
"""Mean grey level above which a (downsampled) pixel may belong to a scan area."""

MIN_VIEW_SHARE = 0.5
"""A further B-mode view of a dual or quad display counts when its area is at least
this share of the largest view's."""

MAX_VIEWS = 4
"""At most this many B-mode views per image (a quad display)."""

VIEW_GAP = 0.01
"""Parts of the scan area closer than this share of the image width are one view."""

FULL_SCREEN_SHARE = 0.9
"""A region covering at least this share of the image is the whole screen, not the
B-mode area: some devices and secondary captures describe the screen, text bars and
all, as one tissue region.  The 2D tissue regions inside it are then the views (see
:data:`MIN_INNER_VIEW_SHARE`); without them the scan area is found in the pixels, as
without regions (the region's calibration still holds)."""

MIN_INNER_VIEW_SHARE = 0.1
"""A 2D tissue region inside a whole-screen one is a view when it covers at least this
share of the image; smaller ones (a zoom box, a reference thumbnail) are not."""

MAX_FRAMES_FOR_COLOR = 8
"""At most this many frames are sampled to measure the coloured fraction."""

MAX_DECODED_BYTES = 2 * 2**30
"""Largest pixel data decoded (a 10 s loop at 60 frames/s of 1024 x 768 RGB is 1.4 GiB);
larger images are not assessed rather than risk the process's memory."""

_ANATOMY_KEYWORDS: dict[AnatomyValues, tuple[str, ...]] = {
    AnatomyValues.LIVER: (
        "LIVER", "HEPATIC", "HEPAR", "ABDOMEN", "ABDOMINAL", "ABDO", "ABD", "UPPERABDOMEN",
    ),
    AnatomyValues.BREAST: ("BREAST", "MAMMA", "MAMMARY", "MAMA", "SEIN", "SENO"),
    AnatomyValues.HEART: (
        "HEART", "CARDIAC", "CARDIO", "ECHOCARDIOGRAPHY", "ECHOCARDIOGRAM", "TTE",
        "TRANSTHORACIC", "EPICARDIAL", "A4C", "AP4", "4CH", "APICAL", "HART",
    ),
}
"""Words (whole tokens of a tag value) that point to an anatomy.  ECHO is not one: in
English it is short for an echocardiogram, in Dutch, French and German (echo, écho,
Echographie) it is any ultrasound ("Echo lever", "Écho sein droit"); the image decides."""

_ANATOMY_PREFIXES: dict[AnatomyValues, tuple[str, ...]] = {
    AnatomyValues.LIVER: ("ABDOM", "ADDOM", "HEPAT", "LEBER", "OBERBAUCH", "FOIE", "HIGADO",
                          "FEGATO", "LEVER", "BOVENBUIK"),
    AnatomyValues.BREAST: ("MAMM", "MAMAR", "BRUST"),
    AnatomyValues.HEART: ("CARDI", "KARDI", "ECHOCARDIO", "ECHOKARDIO", "ECOCARDIO", "HERZ",
                          "COEUR", "CORAZON", "CUORE"),
}
"""Token prefixes that point to an anatomy, in the languages of descriptions hospitals
write (ABDOMINALE, LEBERSONOGRAPHIE, MAMMAIRE, ECOCARDIOGRAMA, KARDIOLOGIE...); accents
are dropped first (HÍGADO -> HIGADO)."""

_FETAL_WORDS: tuple[str, ...] = ("OB", "OBGYN")
_FETAL_PREFIXES: tuple[str, ...] = (
    "FETA", "FETU", "FOETA", "FOETU", "FOTA", "FOTU", "OBSTET", "OSTETR", "PRENAT", "PRANAT",
    "PRAENAT", "ANTENAT", "NUCHAL", "SCHWANGER", "GROSSESS", "EMBARAZ", "ZWANGER", "GRAVID",
)
"""Words and token prefixes of fetal and obstetric imaging (FETAL, FOETUS, Fötus, OB,
OBSTETRIC, obstétrica, PRENATAL, Schwangerschaft, grossesse, embarazo, zwangerschap,
gravidanza).  The engines are made for adults: a fetal echo ("FETAL HEART") must not get
an adult ejection fraction, nor a fetal abdomen liver findings."""

_ANATOMY_CODES: dict[str, str] = {
    "10200004": "LIVER", "T-62000": "LIVER",
    "818981001": "ABDOMEN", "113345001": "ABDOMEN", "T-D4000": "ABDOMEN",
    "76752008": "BREAST", "T-04000": "BREAST", "80248007": "BREAST", "T-04005": "BREAST",
    "80891009": "HEART", "T-32000": "HEART",
}
"""SNOMED CT (and the SRT codes before them) of the anatomic regions (CID 4031, 4040) the
engines serve: a code whose meaning is empty or in another language ("Seno", "Leber")
still names its anatomy."""

_SERIES_TEXT_TAGS: tuple[str, ...] = (
    "SeriesDescription",
    "ProtocolName",
    "PerformedProcedureStepDescription",
)
"""Free-text tags of the series and its procedure step searched for anatomy keywords."""


class PixelDataError(ValueError):
    """The pixel data of a dataset is missing, undecodable or inconsistent."""


def image_input_from_dataset(ds: Dataset) -> ImageInput:
    """Decode ``ds`` into a grayscale :class:`ImageInput`.

    Parameters
    ----------
    ds:
        An ultrasound image (single-frame or multi-frame), with its file meta
        information when the pixel data is compressed.

    Returns
    -------
    ImageInput
        ``uint8`` frames shaped ``(frames, rows, columns)``, the geometry from
        the Sequence of Ultrasound Regions, frame time, body part and the
        anatomy the tags suggest.

    Raises
    ------
    PixelDataError
        When the pixel data is missing, cannot be decoded, or does not match
        the Image Pixel attributes.
    """
    geometry = ImageGeometry.from_dataset(ds)
    colour_area = geometry.scan_area
    shape = (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
    for view in _region_views(geometry.regions, shape):
        colour_area = view if colour_area is None else _union(colour_area, view)
    frames, color_fraction = decode_frames(ds, colour_area=colour_area)
    if frames.ndim != 3:
        raise PixelDataError(f"Decoded frames have shape {frames.shape}, not frames x rows x "
                             "columns.")
    return ImageInput(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        frames=frames,
        geometry=geometry,
        frame_time_ms=frame_time_ms(ds),
        heart_rate_bpm=_positive(_value(ds, "HeartRate")),
        body_part=body_part(ds),
        tag_anatomy=tag_anatomy(ds),
        color_fraction=color_fraction,
    )


def decode_frames(ds: Dataset, colour_area: BoundingBox | None = None
                  ) -> tuple[np.ndarray, float]:
    """Decode the pixel data of ``ds`` to ``uint8`` luminance frames.

    Parameters
    ----------
    ds:
        Dataset holding ``PixelData`` and the Image Pixel module.
    colour_area:
        Where to measure colour: the B-mode regions of the Sequence of
        Ultrasound Regions when there are some (every view the engines will
        analyse), so that a scanner's coloured banners and logos around them do
        not count.  The whole image when ``None``.

    Returns
    -------
    tuple of numpy.ndarray and float
        Frames ``(frames, rows, columns)`` as ``uint8``, and the fraction of
        non-black pixels that carry colour (0 for monochrome data).

    Raises
    ------
    PixelDataError
        When the pixel data is missing, cannot be decoded or is inconsistent.
    """
    if "PixelData" not in ds:
        raise PixelDataError("The dataset has no Pixel Data (7FE0,0010).")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if not photometric:
        raise PixelDataError("Photometric Interpretation (0028,0004) is missing.")
    arr, decoded_photometric = _decode(ds)
    arr = _to_frames(ds, arr)
    if arr.ndim == 4 and decoded_photometric in ("MONOCHROME1", "MONOCHROME2",
                                                 "PALETTE COLOR"):
        # Samples per Pixel 3 under a one-sample interpretation: the samples are colour.
        logger.warning("photometric_interpretation_mismatch", declared=decoded_photometric,
                       samples=int(arr.shape[-1]), read_as="RGB")
        decoded_photometric = "RGB"
    if decoded_photometric in ("MONOCHROME1", "MONOCHROME2"):
        return _monochrome_to_uint8(arr, ds, invert=decoded_photometric == "MONOCHROME1"), 0.0
    if decoded_photometric == "PALETTE COLOR":
        rgb = _palette_to_rgb(arr, ds)
        return _luma(rgb), _color_fraction_rgb(_within(rgb, colour_area))
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise PixelDataError(
            f"{decoded_photometric} pixel data has shape {arr.shape}, expected 3 samples."
        )
    arr = _to_uint8_range(arr, int(ds.get("BitsStored", 8) or 8))
    if decoded_photometric in ("RGB", "YBR_ICT", "YBR_RCT"):
        # openjpeg returns YBR_ICT/YBR_RCT as RGB; the properties then say RGB.
        return _luma(arr), _color_fraction_rgb(_within(arr, colour_area))
    if decoded_photometric in ("YBR_FULL", "YBR_FULL_422"):
        return (np.ascontiguousarray(arr[..., 0]).astype(np.uint8),
                _color_fraction_ybr(_within(arr, colour_area), partial=False))
    if decoded_photometric.startswith("YBR_PARTIAL"):
        luma = (arr[..., 0].astype(np.float32) - 16.0) * (255.0 / 219.0)
        return _round_uint8(luma), _color_fraction_ybr(_within(arr, colour_area), partial=True)
    raise PixelDataError(f"Unsupported Photometric Interpretation {photometric!r}.")


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is not None:
        return UID(str(uid))
    element = ds["PixelData"]
    if getattr(element, "is_undefined_length", False):
        raise PixelDataError(
            "Encapsulated pixel data without a Transfer Syntax UID in the file meta."
        )
    # Native pixel data does not depend on the VR encoding, only on endianness.
    return ExplicitVRLittleEndian


def _check_size(ds: Dataset, tsyntax: UID) -> None:
    """Refuse, before decoding, pixel data too large to decode, and compressed frames
    whose headers declare another size than Rows x Columns (a decoder allocates what
    the header declares)."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    n_frames = _frame_count(ds)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bytes_per_sample = (int(ds.get("BitsAllocated", 8) or 8) + 7) // 8
    decoded = n_frames * rows * cols * samples * bytes_per_sample
    if decoded > MAX_DECODED_BYTES:
        raise PixelDataError(
            f"Pixel data of {decoded / 2**20:.0f} MiB ({n_frames} frames of {rows}x{cols}"
            f"x{samples}) is beyond the {MAX_DECODED_BYTES / 2**20:.0f} MiB decoded here."
        )
    if not tsyntax.is_encapsulated or tsyntax in VIDEO_TRANSFER_SYNTAXES:
        return
    try:
        mismatch = _first_mismatch(generate_frames(ds.PixelData, number_of_frames=n_frames),
                                   rows, cols)
    except (ValueError, TypeError, KeyError):
        return  # the decoder, which frames the data the same way, reports it
    if mismatch is not None:
        number, (declared_rows, declared_cols) = mismatch
        raise PixelDataError(
            f"Frame {number} declares {declared_rows}x{declared_cols} pixels, "
            f"the data set {rows}x{cols}."
        )


def _first_mismatch(frames: Iterable[bytes], rows: int, cols: int
                    ) -> tuple[int, tuple[int, int]] | None:
    """The number and declared size of the first frame declaring another size than
    ``rows`` x ``cols`` (0 rows: defined later in the scan).  Frames are read one at a
    time: a copy of all of them at once could be as large as the pixel data."""
    for number, frame in enumerate(frames, start=1):
        declared = declared_size(frame)
        if declared is not None and declared not in ((rows, cols), (0, cols)):
            return number, declared
    return None


def _frame_count(ds: Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise PixelDataError(f"Invalid Number of Frames {ds.get('NumberOfFrames')!r}.") from exc


def _decode(ds: Dataset) -> tuple[np.ndarray, str]:
    """Decode all frames without colour conversion, with the resulting interpretation."""
    tsyntax = _transfer_syntax(ds)
    _check_size(ds, tsyntax)
    if tsyntax in VIDEO_TRANSFER_SYNTAXES:
        try:
            return decode_video(ds), "RGB"
        except VideoDecodeError as exc:
            raise PixelDataError(str(exc)) from exc
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise PixelDataError(f"No decoder for transfer syntax {tsyntax.name}.") from exc
    if not decoder.is_available:
        raise PixelDataError(
            f"Transfer syntax {tsyntax.name} is not decodable here "
            f"(missing plugin: {', '.join(decoder.missing_dependencies) or 'none'})."
        )
    try:
        arr, properties = decoder.as_array(ds, raw=True, **decode_options(ds))
    except Exception as exc:  # decoder plugins raise many exception types
        raise PixelDataError(f"Cannot decode pixel data ({tsyntax.name}): {exc}") from exc
    decoded = str(
        properties.get("photometric_interpretation", ds.PhotometricInterpretation)
    ).strip().upper()
    return arr, decoded


def decode_options(ds: Dataset) -> dict[str, object]:
    """Options for pydicom's decoders that correct what devices get wrong.

    * Planar Configuration: 0 when it is missing (Type 1C, left out by some devices:
      interleaved, as nearly every one writes), and for compressed data but RLE, where
      the codestream decides and the attribute is ignored (PS3.5 8.2) but pydicom
      reshapes what the JPEG and JPEG 2000 decoders return by its value.
    * Photometric Interpretation: ``YBR_FULL`` for native data labelled
      ``YBR_FULL_422`` that holds every chroma sample (senders that decompress a JPEG
      keep its label); for three-sample JPEG, the colour space its codestream was
      coded in when the label says otherwise (:func:`_jpeg_colour_space`).
    """
    tsyntax = _transfer_syntax(ds)
    options: dict[str, object] = {}
    if int(ds.get("SamplesPerPixel", 1) or 1) != 3:
        return options
    if ds.get("PlanarConfiguration") is None or (
            tsyntax.is_encapsulated and tsyntax != RLELossless):
        options["planar_configuration"] = 0
    declared = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if _full_size_422(ds, tsyntax):
        options["photometric_interpretation"] = "YBR_FULL"
    coded = _jpeg_colour_space(ds, tsyntax, declared)
    if coded != declared:
        options["photometric_interpretation"] = coded
    return options


def _full_size_422(ds: Dataset, tsyntax: UID) -> bool:
    """Whether native ``YBR_FULL_422`` pixel data holds three samples for every pixel."""
    if tsyntax.is_encapsulated or "PixelData" not in ds:
        return False
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() != "YBR_FULL_422":
        return False
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    bytes_per_sample = (int(ds.get("BitsAllocated", 8) or 8) + 7) // 8
    full = _frame_count(ds) * rows * cols * 3 * bytes_per_sample
    return full > 0 and len(ds.PixelData) in (full, full + 1)


def _jpeg_colour_space(ds: Dataset, tsyntax: UID, decoded: str) -> str:
    """The colour space of three-sample JPEG data as its first frame was coded.

    pydicom trusts the data set's interpretation except in two cases (JFIF, or
    component identifiers 'R', 'G', 'B'), and vendors write YCbCr JPEG labelled RGB and
    RGB JPEG labelled YBR_FULL_422; the decoders return the samples as coded.  Lossy JPEG
    follows the markers (:func:`inference.codestreams.jpeg_colour_space`); lossless JPEG
    labelled YBR_FULL_422, which it cannot be, holds RGB.
    """
    if tsyntax in (JPEGLossless, JPEGLosslessSV1) and decoded == "YBR_FULL_422":
        coded = "RGB"
    elif tsyntax in (JPEGBaseline8Bit, JPEGExtended12Bit):
        try:
            first = next(generate_frames(ds.PixelData, number_of_frames=_frame_count(ds)))
        except (StopIteration, ValueError, TypeError, KeyError):
            return decoded
        coded = jpeg_colour_space(first) or decoded
    else:
        return decoded
    if coded.startswith("YBR") == decoded.startswith("YBR"):
        return decoded
    logger.info("jpeg_colour_space_from_codestream", declared=decoded, coded=coded)
    return coded


def _to_frames(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    """Reshape a decoded array to ``(frames, rows, columns[, samples])``."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    n_frames = _frame_count(ds)
    if rows <= 0 or cols <= 0 or n_frames <= 0:
        raise PixelDataError(f"Invalid image size {n_frames}x{rows}x{cols}.")
    expected = n_frames * rows * cols * samples
    if "NumberOfFrames" not in ds and arr.size > expected and arr.size % expected == 0:
        raise PixelDataError(f"The pixel data holds {arr.size // expected} frames, but Number "
                             "of Frames (0028,0008) is missing.")
    if arr.size != expected:
        raise PixelDataError(
            f"Decoded {arr.size} values, expected {expected} "
            f"({n_frames} frames of {rows}x{cols}x{samples})."
        )
    shape = (n_frames, rows, cols) if samples == 1 else (n_frames, rows, cols, samples)
    return arr.reshape(shape)


def _round_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of ``(..., 3)`` 8-bit RGB, frame by frame to bound memory."""
    out = np.empty(rgb.shape[:-1], dtype=np.uint8)
    for i in range(rgb.shape[0]):
        out[i] = _round_uint8(rgb[i].astype(np.float32) @ LUMA_WEIGHTS)
    return out


def _within(frames: np.ndarray, area: BoundingBox | None) -> np.ndarray:
    """The part of ``(frames, rows, columns, 3)`` inside ``area``; all of it when
    ``area`` is ``None`` or lies outside the frames."""
    if area is None:
        return frames
    rows = slice(max(0, int(area.y0)), int(np.ceil(area.y1)))
    cols = slice(max(0, int(area.x0)), int(np.ceil(area.x1)))
    inside = frames[:, rows, cols]
    return inside if inside.size else frames


def _sample_frames(arr: np.ndarray) -> np.ndarray:
    """At most :data:`MAX_FRAMES_FOR_COLOR` frames, every second pixel of each."""
    step = max(1, arr.shape[0] // MAX_FRAMES_FOR_COLOR)
    return arr[::step][:MAX_FRAMES_FOR_COLOR, ::2, ::2]


def _tint_curve(offsets: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """The image's colour at each luma bin, as offsets of R, G, B from the luma.

    The median offset of each channel over the pixels of a bin: a grey image
    gives zeros, a B-mode image shown through a scanner's tint map (sepia,
    blue...) that map.  A bin whose median colour is more saturated than
    :data:`MAX_TINT_SATURATION` is a colour overlay that outnumbers the B-mode
    pixels of that brightness, not a tint: it is given grey.
    """
    n_bins = 256 // TINT_LUMA_BIN
    span = 511  # offsets run from -255 to 255
    curve = np.zeros((n_bins, 3), dtype=np.int16)
    for channel in range(3):
        counts = np.bincount(bins * span + offsets[:, channel] + 255,
                             minlength=n_bins * span).reshape(n_bins, span)
        cumulative = counts.cumsum(axis=1)
        median = (2 * cumulative >= cumulative[:, -1:]).argmax(axis=1) - 255
        curve[:, channel] = np.where(cumulative[:, -1] > 0, median, 0)
    centre = np.arange(n_bins, dtype=np.int16)[:, None] * TINT_LUMA_BIN + TINT_LUMA_BIN // 2
    colour = np.clip(centre + curve, 0, 255)
    saturation = (colour.max(axis=1) - colour.min(axis=1)) / np.maximum(colour.max(axis=1), 1)
    curve[saturation > MAX_TINT_SATURATION] = 0
    return curve


def _color_fraction_rgb(rgb: np.ndarray) -> float:
    """Share of the visible pixels of 8-bit RGB frames that carry colour
    (:func:`_off_curve_fraction` of a sample of them)."""
    return _off_curve_fraction(_sample_frames(rgb))


def _color_fraction_ybr(ybr: np.ndarray, *, partial: bool) -> float:
    """:func:`_color_fraction_rgb` of YCbCr frames (full or video range)."""
    sample = _sample_frames(ybr)
    if partial:
        expanded = sample.astype(np.float32)
        expanded[..., 0] = (expanded[..., 0] - 16.0) * (255.0 / 219.0)
        expanded[..., 1:] = (expanded[..., 1:] - 128.0) * (255.0 / 224.0) + 128.0
        sample = _round_uint8(expanded)
    return _off_curve_fraction(convert_color_space(sample, "YBR_FULL", "RGB"))


def _off_curve_fraction(rgb: np.ndarray) -> float:
    """Share of the visible pixels (a channel above 10) of 8-bit RGB whose colour
    is off the image's grey or tint curve (:func:`_tint_curve`) by more than
    :data:`COLOR_CHROMA_THRESHOLD`: colour Doppler and other colour overlays."""
    pixels = rgb.reshape(-1, 3).astype(np.int16)
    visible = pixels.max(axis=1) > 10
    n_visible = int(visible.sum())
    if n_visible == 0:
        return 0.0
    pixels = pixels[visible]
    luma = _round_uint8(pixels @ LUMA_WEIGHTS).astype(np.int16)
    offsets = pixels - luma[:, None]
    bins = luma // TINT_LUMA_BIN
    off_curve = offsets - _tint_curve(offsets, bins)[bins]
    chroma = off_curve.max(axis=1) - off_curve.min(axis=1)
    return float((chroma > COLOR_CHROMA_THRESHOLD).sum()) / n_visible


def _to_uint8_range(arr: np.ndarray, bits: int) -> np.ndarray:
    """Scale colour samples of ``bits`` bits (palette entries, 16-bit RGB, 6-bit
    samples) to 0..255, frame by frame to bound memory."""
    if arr.dtype == np.uint8 and bits >= 8:
        return arr
    out = np.empty(arr.shape, dtype=np.uint8)
    for i in range(arr.shape[0]):
        out[i] = _round_uint8(arr[i].astype(np.float32) * (255.0 / float(2**bits - 1)))
    return out


def _palette_to_rgb(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """``uint8`` RGB of ``PALETTE COLOR`` frames, the palette applied frame by frame
    (a whole cine through a 16-bit palette would take six times its stored size)."""
    source = _native_order_palette(ds)
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    bits = int(descriptor[2]) if descriptor is not None else 16
    out = np.empty((*arr.shape, 3), dtype=np.uint8)
    for i in range(arr.shape[0]):
        try:
            rgb = apply_color_lut(arr[i], source)
        except (ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
            raise PixelDataError(f"Cannot apply the palette colour LUT: {exc}") from exc
        out[i] = _to_uint8_range(rgb[None, ..., :3], bits)[0]
    return out


def _native_order_palette(ds: Dataset) -> Dataset:
    """``ds``, or for a big-endian data set with 16-bit palette data a data set of its
    palette with the data in little-endian order: pydicom reads non-segmented palette
    data as little-endian whatever the transfer syntax."""
    if "RedPaletteColorLookupTableData" not in ds or _transfer_syntax(ds).is_little_endian:
        return ds
    palette = Dataset()
    for colour in ("Red", "Green", "Blue"):
        descriptor = ds.get(f"{colour}PaletteColorLookupTableDescriptor")
        data = ds.get(f"{colour}PaletteColorLookupTableData")
        if descriptor is None or data is None:
            return ds
        setattr(palette, f"{colour}PaletteColorLookupTableDescriptor", descriptor)
        entries = int(descriptor[0]) or 2**16
        if len(data) == 2 * entries:
            data = np.frombuffer(data, dtype=">u2").astype("<u2").tobytes()
        setattr(palette, f"{colour}PaletteColorLookupTableData", data)
    return palette


def _monochrome_to_uint8(arr: np.ndarray, ds: Dataset, *, invert: bool) -> np.ndarray:
    """Map stored monochrome values to display ``uint8``, frame by frame (the float
    copies of a whole 16-bit cine would take many times its stored size)."""
    bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    has_rescale = "RescaleSlope" in ds or "RescaleIntercept" in ds
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if ("VOILUTSequence" not in ds and not has_window and bits_stored <= 8
            and not has_rescale and arr.dtype == np.uint8):
        out = _to_uint8_range(arr, bits_stored)
    else:
        convert = _monochrome_converter(arr, ds)
        out = np.empty(arr.shape, dtype=np.uint8)
        for i in range(arr.shape[0]):
            out[i] = convert(arr[i])
    return 255 - out if invert else np.ascontiguousarray(out)


def _monochrome_converter(arr: np.ndarray, ds: Dataset
                          ) -> Callable[[np.ndarray], np.ndarray]:
    """The map of one stored monochrome frame to ``uint8``: rescale (modality LUT),
    then the VOI LUT or window when present, else the range of the whole image."""
    if "VOILUTSequence" in ds:
        lut_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])

        def voi_lut(frame: np.ndarray) -> np.ndarray:
            modality = apply_modality_lut(frame, ds)
            if modality.dtype.kind == "f" and np.array_equal(modality, np.rint(modality)):
                modality = modality.astype(np.int64)
            values = apply_voi(modality, ds, index=0).astype(np.float32)
            return _round_uint8(values * (255.0 / float(2**lut_bits - 1)))

        return voi_lut
    if "WindowCenter" in ds and "WindowWidth" in ds:

        def window(frame: np.ndarray) -> np.ndarray:
            return _apply_window(apply_modality_lut(frame, ds).astype(np.float32), ds)

        return window
    ranges = [(float(v.min()), float(v.max())) for v in
              (apply_modality_lut(frame, ds) for frame in arr)]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    scale = 255.0 / (high - low) if high > low else 0.0

    def stretch(frame: np.ndarray) -> np.ndarray:
        return _round_uint8((apply_modality_lut(frame, ds).astype(np.float32) - low) * scale)

    return stretch


def _first(value: object) -> float:
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        value = next(iter(value))
    return float(value)  # type: ignore[arg-type]


def _apply_window(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2) of the first window to 0..255."""
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    if function == "SIGMOID":
        scaled = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-6)))
    elif function == "LINEAR_EXACT":
        scaled = (values - center) / max(width, 1e-6) + 0.5
    else:
        scaled = (values - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5
    return _round_uint8(np.clip(scaled, 0.0, 1.0) * 255.0)


def frame_time_ms(ds: Dataset) -> float | None:
    """Time between frames in ms from FrameTime, FrameTimeVector or a frame rate.

    Parameters
    ----------
    ds:
        The source dataset.

    Returns
    -------
    float or None
        The frame interval, or ``None`` when the dataset does not say.
    """
    interval = _positive(_value(ds, "FrameTime"))
    if interval is not None:
        return interval
    vector = _value(ds, "FrameTimeVector") or []
    values = vector.split("\\") if isinstance(vector, str) else list(vector)
    steps = [_positive(v) for v in values[1:]]
    known = [step for step in steps if step is not None]
    if known:
        return float(np.mean(known))
    for keyword in ("RecommendedDisplayFrameRate", "CineRate"):
        rate = _positive(_value(ds, keyword))
        if rate is not None:
            return 1000.0 / rate
    return None


def _value(ds: Dataset, keyword: str) -> object:
    """An element's value, or its raw text when pydicom cannot convert it (a DS of
    '33,3'), or ``None``."""
    try:
        return ds.get(keyword)
    except ValueError:
        raw = ds.get_item(keyword)
        value = getattr(raw, "value", None)
        return value.decode("ascii", "replace") if isinstance(value, bytes) else None


def _positive(value: object) -> float | None:
    """A positive number from a DS or IS value (a decimal comma read as a point), else
    ``None``: timing a device wrote badly is unknown timing, not an undecodable image."""
    try:
        number = float(str(value).strip().replace(",", "."))
    except (TypeError, ValueError):
        return None
    return number if number > 0 and np.isfinite(number) else None


def body_part(ds: Dataset) -> str | None:
    """BodyPartExamined, stripped and upper case, or ``None`` when empty."""
    value = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    return value or None


def _tokens(text: str) -> set[str]:
    """Upper-case words of ``text``, accents dropped (HÍGADO -> HIGADO)."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return {t for t in re.split(r"[^A-Z0-9]+", plain.upper()) if t}


def _is_fetal(text: str) -> bool:
    tokens = _tokens(text)
    return bool(tokens & set(_FETAL_WORDS)) or any(t.startswith(_FETAL_PREFIXES) for t in tokens)


def _anatomies_in(text: str) -> set[AnatomyValues]:
    tokens = _tokens(text)
    found = {anatomy for anatomy, words in _ANATOMY_KEYWORDS.items() if tokens & set(words)}
    found |= {anatomy for anatomy, prefixes in _ANATOMY_PREFIXES.items()
              if any(t.startswith(prefixes) for t in tokens)}
    return found


def _tag_levels(ds: Dataset) -> list[list[str]]:
    """The texts that may name the anatomy, most specific level first: the image's
    (Body Part Examined, value 3 of the US Image Type, the anatomic region and view
    codes), the series', the study's description."""
    image = [str(ds.get("BodyPartExamined", "") or "")]
    image_type = list(ds.get("ImageType", []) or [])
    if len(image_type) > 2:
        # Value 3 of the US Image Type is the anatomic region (ABDOMINAL, TTE...).
        image.append(str(image_type[2]))
    for keyword in ("AnatomicRegionSequence", "ViewCodeSequence"):
        for item in ds.get(keyword, []):
            image.append(str(item.get("CodeMeaning", "")))
            image.append(_ANATOMY_CODES.get(str(item.get("CodeValue", "")).strip(), ""))
    series = [str(ds.get(keyword, "") or "") for keyword in _SERIES_TEXT_TAGS]
    study = [str(ds.get("StudyDescription", "") or "")]
    return [[t for t in level if t.strip()] for level in (image, series, study)]


def tag_anatomy(ds: Dataset) -> AnatomyValues | None:
    """The anatomy the tags point to, when they point to exactly one.

    The tags are searched for keywords (LIVER/ABDOMEN -> liver, BREAST -> breast,
    HEART/CARDIAC/ECHOCARDIOGRAPHY -> heart), and for stems of those words in German,
    French, Spanish, Italian and Dutch, level by level: the image's (Body Part Examined,
    value 3 of the US Image Type, the anatomic region and view codes), then the
    series' (description, protocol, procedure step), then the study description.
    The most specific level that names an anatomy decides, so a study described
    "US ABDOMEN + ECHO" leaves each image to its own body part.  A level that names
    two anatomies gives ``None``.

    Tags of fetal or obstetric imaging, at any level, give
    :attr:`AnatomyValues.OTHER` whatever else they name: no engine serves it.

    Parameters
    ----------
    ds:
        The source dataset.

    Returns
    -------
    AnatomyValues or None
        The single anatomy the tags name, or ``None``.
    """
    levels = _tag_levels(ds)
    if any(_is_fetal(text) for level in levels for text in level):
        logger.info("tags_describe_fetal_imaging")
        return AnatomyValues.OTHER
    for level in levels:
        found: set[AnatomyValues] = set()
        for text in level:
            found |= _anatomies_in(text)
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            logger.info("tags_name_several_anatomies", anatomies=sorted(a.value for a in found))
            return None
    return None


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def _filled_mask(frame: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """The non-black part of ``frame`` averaged down by the returned factor (to about 200
    pixels on its short side), closed and hole-filled: :func:`scan_area_mask` is a
    subset of it, scaled back up."""
    if frame.ndim != 2:
        raise ValueError(f"Expected a 2-D frame, got shape {frame.shape}.")
    factor = max(1, min(frame.shape) // 200)
    rows, cols = (frame.shape[0] // factor) * factor, (frame.shape[1] // factor) * factor
    small = frame[:rows, :cols].astype(np.float32)
    small = small.reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))
    smooth = ndimage.uniform_filter(small, size=max(1, 5 // factor))
    filled = ndimage.binary_fill_holes(ndimage.binary_closing(smooth > threshold, _disk(1),
                                                              iterations=2))
    return filled, factor


def scan_area_mask(frame: np.ndarray, threshold: float = SCAN_AREA_THRESHOLD) -> np.ndarray:
    """Boolean mask of the B-mode scan area of a grayscale frame.

    The frame is averaged down to about 200 pixels on its short side (speckle
    averaged, and fast), thresholded, closed and hole-filled (dark cavities
    inside the sector stay in), then opened with a disk about 1/40 of the
    image size so that burned-in text, tick marks and thin graphics vanish.
    The largest remaining component is grown back to its original outline
    and scaled back to the frame size.

    Parameters
    ----------
    frame:
        ``(rows, columns)`` grayscale frame, or a projection of a cine.
    threshold:
        Mean grey level above which a (downsampled) pixel is non-black.

    Returns
    -------
    numpy.ndarray
        Boolean ``(rows, columns)`` mask; all ``False`` when nothing is found.
    """
    return _largest_area(*_filled_mask(frame, threshold), frame.shape)


def _largest_area(mask: np.ndarray, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    """:func:`scan_area_mask` from the :func:`_filled_mask` of a frame of ``shape``."""
    rows, cols = mask.shape[0] * factor, mask.shape[1] * factor
    radius = max(2, round(min(mask.shape) / 40))
    opened = ndimage.binary_opening(mask, _disk(radius))
    labels, count = ndimage.label(opened)
    out = np.zeros(shape, dtype=bool)
    if count == 0:
        return out
    sizes = ndimage.sum_labels(opened, labels, index=np.arange(1, count + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    small_mask = ndimage.binary_dilation(largest, _disk(radius)) & mask
    out[:rows, :cols] = np.repeat(np.repeat(small_mask, factor, axis=0), factor, axis=1)
    return out


def image_scan_mask(image: ImageInput) -> np.ndarray:
    """The scan-area mask of an image's frames (:func:`scan_area_mask` of their
    :func:`projection`), made once per image and kept on it.

    The quality gate, the view classifier and the engine all need it; for an
    image without a Sequence of Ultrasound Regions they would otherwise make
    it three times.

    Parameters
    ----------
    image:
        The decoded image; it keeps the mask for the next caller.

    Returns
    -------
    numpy.ndarray
        Read-only boolean ``(rows, columns)`` mask; copy it to change it.
    """
    if image._scan_mask is None:
        mask = scan_area_mask(projection(image.frames))
        mask.flags.writeable = False
        image._scan_mask = mask
    return image._scan_mask


def _mask_box(mask: np.ndarray) -> BoundingBox:
    """Bounding box of a scan-area mask; raises ``ValueError`` when it is empty."""
    if not mask.any():
        raise ValueError("No scan area found: the frame is blank.")
    return BoundingBox.of_mask(mask)


def find_scan_area(frame: np.ndarray) -> BoundingBox:
    """Bounding box of the B-mode scan area estimated from the image.

    Used when the dataset has no Sequence of Ultrasound Regions.  See
    :func:`scan_area_mask` for the method; burned-in text outside the sector
    is ignored.

    Parameters
    ----------
    frame:
        ``(rows, columns)`` grayscale frame (or a projection of a cine).

    Returns
    -------
    BoundingBox
        Box in pixel-edge coordinates.

    Raises
    ------
    ValueError
        When the frame has no scan area (blank or nearly black).
    """
    return _mask_box(scan_area_mask(frame))


def projection(frames: np.ndarray, max_frames: int = 16) -> np.ndarray:
    """Per-pixel maximum over up to ``max_frames`` evenly sampled frames.

    Parameters
    ----------
    frames:
        ``(frames, rows, columns)`` array.
    max_frames:
        Upper bound on the frames sampled.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` projection, same dtype as ``frames``.
    """
    step = max(1, frames.shape[0] // max_frames)
    return frames[::step][:max_frames].max(axis=0)


def scan_areas(image: ImageInput) -> list[BoundingBox]:
    """The B-mode views of an image, top to bottom and left to right: one box for
    most images, two or four for a dual or quad display.

    From the regions when known and the largest is not the whole screen
    (:data:`FULL_SCREEN_SHARE`) or has views inside it: each 2D tissue region with a
    calibration whose area is at least :data:`MIN_VIEW_SHARE` of the largest one's,
    except a region inside another (for a whole-screen region, the regions inside
    it).  From the pixels otherwise: the scan area, then the scan
    area of what is left with the views found so far blacked out, as long as it
    is at least :data:`MIN_VIEW_SHARE` of the first.

    Parameters
    ----------
    image:
        The decoded image, with or without a Sequence of Ultrasound Regions.

    Returns
    -------
    list of BoundingBox
        At least one box.  For an image with one view, the box of
        :func:`scan_area`, or a wider one when a shadow cuts its scan area in two.

    Raises
    ------
    ValueError
        When there are no regions and the image is blank.
    """
    region = _region_scan_area(image)
    boxes = (_pixel_views(image) if region is None
             else _region_views(image.geometry.regions, image.frames.shape[1:3]) or [region])
    return sorted(boxes, key=lambda box: (box.y0, box.x0))


def _region_scan_area(image: ImageInput) -> BoundingBox | None:
    """The scan area the regions give, or ``None`` to find it in the pixels: without
    regions, and for a region of the whole screen (:data:`FULL_SCREEN_SHARE`) with no
    view inside it on an image whose pixels show a scan area.  Inside a whole-screen
    region, the largest view is the scan area."""
    box = image.geometry.scan_area
    if box is None:
        return None
    shape = image.frames.shape[1:3]
    if not _whole_screen(box, shape):
        return box
    inner = [view for view in _region_views(image.geometry.regions, shape)
             if not _whole_screen(view, shape)]
    if inner:
        return max(inner, key=lambda view: view.width * view.height)
    return box if not image_scan_mask(image).any() else None


def _whole_screen(box: BoundingBox, shape: tuple[int, int]) -> bool:
    """Whether ``box`` covers the whole screen of ``(rows, columns)``
    (:data:`FULL_SCREEN_SHARE`)."""
    return box.width * box.height >= FULL_SCREEN_SHARE * shape[0] * shape[1]


def _region_views(regions: Sequence[UltrasoundRegion], shape: tuple[int, int]
                  ) -> list[BoundingBox]:
    """Boxes of the 2D tissue regions large enough to be a view of their own, on an image
    of ``(rows, columns)``; a whole-screen region is none when 2D tissue regions of at
    least :data:`MIN_INNER_VIEW_SHARE` of the image lie inside it (and then only those are)."""
    views = list({r.box: r for r in regions if r.is_spatial and r.data_type == TISSUE
                  and r.spatial_format in (0, FORMAT_2D)}.values())
    rows, cols = shape
    screens = [r for r in views if _whole_screen(r.box, shape)]
    inner = [r for r in views if r not in screens
             and r.box.width * r.box.height >= MIN_INNER_VIEW_SHARE * rows * cols]
    if screens and inner:
        views = inner
    if not views:
        return []
    largest = max(r.box.width * r.box.height for r in views)
    large = [r for r in views if r.box.width * r.box.height >= MIN_VIEW_SHARE * largest]
    return [r.box for r in large
            if not any(other is not r and other.contains(r.box) for other in large)]


def _pixel_views(image: ImageInput) -> list[BoundingBox]:
    """Views found in the pixels, one after the other (see :func:`scan_areas`).

    A part found next to a view (less than :data:`VIEW_GAP` of the image width
    away) is joined to it: a sector that an acoustic shadow cuts in two, down to
    its far edge, is one view.
    """
    first = image_scan_mask(image)
    boxes = [_mask_box(first)]
    rest = projection(image.frames).copy()
    found = boxes[0]
    nearby = VIEW_GAP * rest.shape[1]
    for _ in range(2 * MAX_VIEWS):
        rest[int(found.y0):int(np.ceil(found.y1)), int(found.x0):int(np.ceil(found.x1))] = 0
        filled, factor = _filled_mask(rest, SCAN_AREA_THRESHOLD)
        if filled.sum() * factor**2 < MIN_VIEW_SHARE * first.sum():
            break  # what is left cannot hold a view (the scan-area mask is a subset of it)
        mask = _largest_area(filled, factor, rest.shape)
        if mask.sum() < MIN_VIEW_SHARE * first.sum():
            break
        found = _mask_box(mask)
        near = [i for i, box in enumerate(boxes) if _gap(box, found) < nearby]
        if near:
            boxes[near[0]] = _union(boxes[near[0]], found)
        elif len(boxes) < MAX_VIEWS:
            boxes.append(found)
    return boxes


def _gap(a: BoundingBox, b: BoundingBox) -> float:
    """Distance between two boxes along the axis that separates them most (0 if they meet)."""
    return max(a.x0 - b.x1, b.x0 - a.x1, a.y0 - b.y1, b.y0 - a.y1, 0.0)


def _union(a: BoundingBox, b: BoundingBox) -> BoundingBox:
    return BoundingBox(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1))


def scan_area(image: ImageInput) -> BoundingBox:
    """The scan area of an image: from its regions when known (for a region of the whole
    screen, see :data:`FULL_SCREEN_SHARE`, the largest view inside it), else from the
    pixels.

    Parameters
    ----------
    image:
        The decoded image.

    Returns
    -------
    BoundingBox
        The B-mode area.

    Raises
    ------
    ValueError
        When there are no regions and the image is blank.
    """
    region = _region_scan_area(image)
    if region is not None:
        return region
    return _mask_box(image_scan_mask(image))
