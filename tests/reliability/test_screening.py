"""The receipt screening accepts real-world encodings and rejects broken ones.

The corpus is pydicom's own test files: every transfer syntax, big endian,
encapsulated pixel data, defined and undefined lengths, nested sequences.
"""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.uid import UID
from pynetdicom.dsutils import encode

from dicom_node.network import IDENTIFYING_TAGS
from dicom_node.screening import MAX_SEQUENCE_DEPTH, MalformedDataset, check_structure
from tests.dicom_node.conftest import make_study
from tests.reliability.test_hostile import recursion_bomb

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
BROKEN = {
    "MR_truncated.dcm": "truncated",
    "rtplan_truncated.dcm": "truncated",
    "SC_rgb_jpeg.dcm": "encoded implicit VR but the transfer syntax is explicit VR",
}


def _data_set(path: Path) -> tuple[bytes, UID] | None:
    """The encoded data set after the file meta, and its transfer syntax (``None`` if odd)."""
    raw = path.read_bytes()
    stream = BytesIO(raw)
    try:
        read_preamble(stream, False)
        meta = _read_file_meta_info(stream)
        syntax = UID(meta.TransferSyntaxUID)
    except (AttributeError, ValueError, pydicom.errors.InvalidDicomError):
        return None
    if syntax.is_deflated or not syntax.is_transfer_syntax:
        return None
    return raw[stream.tell() :], syntax


FILES = sorted(p for p in CORPUS.glob("*.dcm") if _data_set(p) is not None)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_corpus(path: Path) -> None:
    data, syntax = _data_set(path)  # type: ignore[misc]
    if path.name in BROKEN:
        with pytest.raises(MalformedDataset, match=BROKEN[path.name]):
            check_structure(data, syntax.is_implicit_VR, syntax.is_little_endian)
    else:
        kept = check_structure(data, syntax.is_implicit_VR, syntax.is_little_endian,
                               keep=IDENTIFYING_TAGS)
        # The values kept for the index are the ones pydicom reads at the top level.
        ds = read_dataset(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian)
        raw = {tag: ds.get_item(tag) for tag in IDENTIFYING_TAGS if tag in ds}
        assert kept == {tag: e.value or b"" for tag, e in raw.items() if e.VR != "SQ"}


def test_corpus_is_broad() -> None:
    syntaxes = {str(_data_set(p)[1]) for p in FILES}  # type: ignore[index]
    assert len(FILES) > 50 and len(syntaxes) >= 8


def test_depth_limit_is_exact() -> None:
    (ds,) = make_study(1, rows=8, columns=8)
    check_structure(recursion_bomb(ds, MAX_SEQUENCE_DEPTH), False, True)
    with pytest.raises(MalformedDataset, match="nested deeper"):
        check_structure(recursion_bomb(ds, MAX_SEQUENCE_DEPTH + 1), False, True)


@pytest.mark.parametrize("vr", [b"XX", b"ob", b"\0\0"])
def test_an_explicit_vr_outside_the_standard_is_refused(vr: bytes) -> None:
    # Found by fuzzing: pydicom cannot read such an element back (an unknown VR raises,
    # a lower-case one is read another way), so the stored instance failed its study.
    (ds,) = make_study(1, rows=8, columns=8)
    tag = struct.pack("<HH", 0x0018, 0x0015)  # Body Part Examined
    ds.BodyPartExamined = "LIVER"
    data = bytearray(encode(ds, False, True))
    at = data.index(tag)
    check_structure(bytes(data), False, True)
    data[at + 4 : at + 6] = vr
    with pytest.raises(MalformedDataset, match=r"\(0018,0015\) has no valid VR"):
        check_structure(bytes(data), False, True)
