"""Image sizes that compressed frames declare, read before they are decoded.

A decoder allocates what a codestream's header declares: a JPEG of a few
kilobytes whose frame header claims 20000 x 20000 pixels made the node's
process take 3.5 GB before the size check after decoding refused it.
:func:`declared_size` reads that header (JPEG and JPEG-LS start of frame,
JPEG 2000 image and tile size marker), so a frame whose size differs from
the data set's Rows and Columns is refused without being decoded.

:func:`jpeg_colour_space` reads how a three-component JPEG frame was coded,
RGB or YCbCr, from its markers: pydicom's decoders return the samples as
coded and trust the data set's Photometric Interpretation, which vendors
and converters get wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

JPEG_SOI = b"\xff\xd8"
JPEG_SOF_MARKERS = frozenset({*range(0xC0, 0xD0), 0xF7}) - {0xC4, 0xC8, 0xCC}
"""Start-of-frame markers (ITU T.81 B.1.1.3; 0xF7 is JPEG-LS, ITU T.87); 0xC4, 0xC8 and
0xCC in that range are other segments."""
JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
"""Markers without a length field (TEM, RSTn)."""
JPEG_APP0, JPEG_APP14, JPEG_SOS = 0xE0, 0xEE, 0xDA
"""JFIF application segment, Adobe application segment, start of scan."""

J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
"""Start of codestream followed by the image and tile size marker (ISO 15444-1 A.5.1)."""
JP2_SIGNATURE = b"\x00\x00\x00\x0c\x6a\x50\x20\x20"
JP2_CODESTREAM_BOX = b"jp2c"

HEADER_BYTES = 65536
"""How far into a frame its size is looked for (headers come first)."""


def declared_size(codestream: bytes) -> tuple[int, int] | None:
    """``(rows, columns)`` that a JPEG, JPEG-LS or JPEG 2000 frame declares.

    Returns ``None`` when ``codestream`` starts as none of them or its header
    cannot be read within :data:`HEADER_BYTES` (the decoder then reports
    what is wrong).  A JPEG may declare 0 rows, defined later in the scan
    (a DNL marker).
    """
    head = codestream[:HEADER_BYTES]
    if head.startswith(JPEG_SOI):
        return _jpeg_size(head)
    return _j2k_size(head)


def _jpeg_segments(head: bytes) -> Iterator[tuple[int, int]]:
    """``(marker, offset)`` of each segment of a JPEG header up to its start of scan;
    stops where the header cannot be read within ``head``."""
    offset = len(JPEG_SOI)
    while offset + 4 <= len(head):
        if head[offset] != 0xFF:
            return
        marker = head[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in JPEG_STANDALONE_MARKERS:
            offset += 2
            continue
        yield marker, offset
        (length,) = struct.unpack_from(">H", head, offset + 2)
        if length < 2 or marker == JPEG_SOS:
            return
        offset += 2 + length


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    for marker, offset in _jpeg_segments(head):
        if marker in JPEG_SOF_MARKERS:
            if offset + 9 > len(head):
                return None
            rows, columns = struct.unpack_from(">HH", head, offset + 5)
            return int(rows), int(columns)
    return None


def jpeg_colour_space(codestream: bytes) -> str | None:
    """How a JPEG frame with three components was coded: ``"RGB"`` or ``"YBR_FULL"``.

    The rule of the IJG library that wrote most of them (``jdapimin.c``; GDCM and Pillow
    follow it): a JFIF segment means YCbCr; else an Adobe segment's transform flag
    decides (0 is RGB); else component identifiers 'R', 'G', 'B' mean RGB; else YCbCr.
    Returns ``None`` for anything but a JPEG frame of three components.
    """
    head = codestream[:HEADER_BYTES]
    if not head.startswith(JPEG_SOI):
        return None
    adobe: int | None = None
    jfif = False
    for marker, offset in _jpeg_segments(head):
        body = head[offset + 4:]
        if marker == JPEG_APP14 and body.startswith(b"Adobe") and len(body) >= 12:
            adobe = body[11]
        elif marker == JPEG_APP0 and body.startswith(b"JFIF\x00"):
            jfif = True
        elif marker in JPEG_SOF_MARKERS:
            if len(body) < 6 or body[5] != 3:
                return None
            ids = bytes(body[6 + 3 * i] for i in range(3) if 6 + 3 * i < len(body))
            if jfif:
                return "YBR_FULL"
            if adobe is not None:
                return "RGB" if adobe == 0 else "YBR_FULL"
            return "RGB" if ids == b"RGB" else "YBR_FULL"
    return None


def _j2k_size(head: bytes) -> tuple[int, int] | None:
    offset = 0
    if head.startswith(JP2_SIGNATURE):
        offset = head.find(JP2_CODESTREAM_BOX)
        if offset < 0:
            return None
        offset += len(JP2_CODESTREAM_BOX)
    if head[offset:offset + 4] != J2K_SOC_SIZ or offset + 24 > len(head):
        return None
    width, height, x_origin, y_origin = struct.unpack_from(">IIII", head, offset + 8)
    if width < x_origin or height < y_origin:
        return None
    return height - y_origin, width - x_origin
