"""Screening of received data sets before they are parsed, stored or acknowledged.

:func:`check_structure` walks the encoded bytes without recursion: every
element must fit in the bytes that enclose it, every undefined-length
sequence and item must be closed, and sequences may nest only so deep (a
recursion bomb of nested sequences crashes parsers that recurse, such as
DCMTK's storescp).  Image semantics (pixel data length, Rows, frames) are
left to decoding, which marks such an image not assessed without touching
the study's other images.
"""

from __future__ import annotations

import struct
from collections.abc import Collection

from pydicom.datadict import dictionary_VR
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

MAX_KEPT_VALUE = 1024
"""Longest value of an identifying element (UIDs, character set, modality, body part,
study description) accepted, in bytes: sixteen times what the longest of them may hold
(a 64-character description in a multi-byte character set), and a bound on what one
small (or deflated) instance can make the receiver decode."""

MAX_SEQUENCE_DEPTH = 32
"""Deepest sequence nesting accepted; real objects (SR trees included) stay far below."""

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
_VRS = frozenset(vr.encode() for vr in STANDARD_VR)


class MalformedDataset(ValueError):
    """The encoded data set is not well formed; the message says why."""


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _is_sequence(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


class _Walker:
    """Iterative walk over an encoded data set, one frame per open container."""

    def __init__(self, data: bytes | memoryview, implicit: bool, little: bool, max_depth: int,
                 keep: Collection[int]) -> None:
        self.data = data
        self.keep = keep
        self.kept: dict[int, bytes] = {}
        self.implicit = implicit
        self.order = "<" if little else ">"
        self.max_depth = max_depth
        self.pos = 0
        # (end offset or None when undefined, kind, implicit VR) per open container
        self.frames: list[tuple[int | None, str, bool]] = [(len(data), "dataset", implicit)]

    def _unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        return struct.unpack_from(self.order + fmt, self.data, offset)

    def _limit(self) -> int:
        end = self.frames[-1][0]
        return len(self.data) if end is None else end

    def _need(self, count: int, what: str) -> None:
        if self.pos + count > self._limit():
            raise MalformedDataset(f"truncated {what} at byte {self.pos}")

    def _push(self, length: int, kind: str, implicit: bool) -> None:
        if length != UNDEFINED:
            self._need(length, kind)
        depth = sum(1 for _, k, _ in self.frames if k == "sequence")
        if kind == "sequence" and depth >= self.max_depth:
            raise MalformedDataset(f"sequences nested deeper than {self.max_depth} levels")
        self.frames.append((None if length == UNDEFINED else self.pos + length, kind, implicit))

    def run(self) -> None:
        while self.frames:
            end, kind, implicit = self.frames[-1]
            if end is not None and self.pos == end:
                self.frames.pop()
                continue
            if end is None and self.pos >= len(self.data):
                raise MalformedDataset(f"undefined-length {kind} is never closed")
            self._need(8, "element header")
            group, element = self._unpack("HH", self.pos)
            tag = group << 16 | element
            if kind == "dataset":
                self._element(tag, end, implicit)
            else:
                self._item(tag, end, kind, implicit)

    def _item(self, tag: int, end: int | None, kind: str, implicit: bool) -> None:
        (length,) = self._unpack("L", self.pos + 4)
        self.pos += 8
        if tag == SEQUENCE_END and end is None:
            self.frames.pop()
        elif tag != ITEM:
            raise MalformedDataset(f"expected an item in a sequence, found {_tag_text(tag)}")
        elif kind == "fragments":
            if length == UNDEFINED:
                raise MalformedDataset("pixel data fragment of undefined length")
            self._need(length, "pixel data fragment")
            self.pos += length
        else:
            self._push(length, "dataset", implicit)

    def _element(self, tag: int, end: int | None, implicit: bool) -> None:
        if tag == ITEM_END:
            if end is not None:
                raise MalformedDataset("item delimiter inside a defined-length item")
            self.pos += 8
            self.frames.pop()
            return
        if implicit:
            (length,) = self._unpack("L", self.pos + 4)
            vr = b"SQ" if _is_sequence(tag) else b"UN"
            self.pos += 8
        else:
            vr = bytes(self.data[self.pos + 4 : self.pos + 6])
            if vr not in _VRS:
                raise MalformedDataset(f"element {_tag_text(tag)} has no valid VR ({vr!r})")
            if vr in _LONG_VRS:
                self._need(12, "element header")
                (length,) = self._unpack("L", self.pos + 8)
                self.pos += 12
            else:
                (length,) = self._unpack("H", self.pos + 6)
                self.pos += 8
        if tag == PIXEL_DATA and length == UNDEFINED:
            self._push(length, "fragments", implicit)
        elif length == UNDEFINED:
            # An undefined-length UN is read as an implicit VR sequence (PS3.5 6.2.2).
            self._push(length, "sequence", implicit or vr == b"UN")
        elif vr == b"SQ":
            self._push(length, "sequence", implicit)
        else:
            self._need(length, "element value")
            if tag in self.keep and len(self.frames) == 1:
                if length > MAX_KEPT_VALUE:
                    raise MalformedDataset(
                        f"element {_tag_text(tag)} is {length} bytes long, beyond the "
                        f"{MAX_KEPT_VALUE} any identifying value needs")
                self.kept[tag] = bytes(self.data[self.pos : self.pos + length])
            self.pos += length


def check_structure(
    data: bytes | memoryview,
    implicit: bool,
    little: bool,
    max_depth: int = MAX_SEQUENCE_DEPTH,
    keep: Collection[int] = (),
) -> dict[int, bytes]:
    """Check that an encoded data set (no file meta) is well formed.

    Returns
    -------
    dict[int, bytes]
        The encoded values of the top-level elements whose tags are in
        ``keep`` (sequences excepted), so callers need not parse the data set
        again for a few elements.

    Raises
    ------
    MalformedDataset
        If the first element is encoded with the other VR encoding than the
        transfer syntax says, an explicit VR is not one of the standard's, an
        element runs past the bytes that enclose it, a container is never
        closed, or sequences nest deeper than ``max_depth``.
    """
    if len(data) >= 8:
        vr = bytes(data[4:6])
        looks_explicit = vr in _VRS
        if looks_explicit == implicit:
            found, declared = ("explicit", "implicit") if implicit else ("implicit", "explicit")
            raise MalformedDataset(
                f"data set is encoded {found} VR but the transfer syntax is {declared} VR"
            )
    walker = _Walker(data, implicit, little, max_depth, keep)
    walker.run()
    return walker.kept
