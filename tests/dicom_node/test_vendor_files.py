"""Every ultrasound file bundled with pydicom and pydicom-data, sent by storescu.

These are real vendors' files (ALOKA 16-bit palette, RLE and big-endian
palette, JPEG 2000 YBR_ICT/RCT, JPEG lossless SV1, 120-frame JPEG baseline
YBR_FULL_422, 1-bit monochrome...).  Each is received, analysed (by the test
engine) or reported as not assessed with a reason, and every result object
passes dciodvfy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread

from dicom_node.index import IndexQueries, JobState
from dicom_node.network import ULTRASOUND_SOP_CLASSES
from tests.dicom_node.conftest import NodeHarness
from tests.peers import STORESCU_PROPOSAL, dciodvfy_errors, storescu

pytestmark = pytest.mark.integration


def ultrasound_files() -> list[Path]:
    """US files shipped with pydicom and (when installed) pydicom-data."""
    folders = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # pydicom-data

        folders.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*.dcm")):
            try:
                ds = dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            if str(ds.get("SOPClassUID", "")) in ULTRASOUND_SOP_CLASSES:
                found.append(path)
    return found


def test_vendor_ultrasound_files(make_node: Callable[..., NodeHarness], tmp_path: Path) -> None:
    files = ultrasound_files()
    assert len(files) >= 5, "pydicom's bundled US examples are missing"
    harness = make_node(ae_title="NODE")
    by_syntax: dict[str, list[Path]] = {}
    for path in files:
        syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        by_syntax.setdefault(STORESCU_PROPOSAL.get(syntax, "-x="), []).append(path)
    for option, group in by_syntax.items():
        sent = storescu(harness.port, group, called="NODE", extra=[option])
        assert sent.returncode == 0, sent.stderr
    received = harness.node.spool.instance_files()
    sop_uids = {dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert len(received) == len(sop_uids)
    harness.settle()
    jobs = IndexQueries(harness.node.index).jobs(limit=500)
    failed = [(j["study_instance_uid"], j["error"]) for j in jobs if j["state"] != "done"]
    assert not failed
    assert all(j["state"] == JobState.DONE.value for j in jobs)
    analysed = {uid for uid, _, _ in harness.analyzer.calls}
    results = sorted(harness.node.spool.results.glob("job-*/*.dcm"))
    reports = [dcmread(p) for p in results if dcmread(p, stop_before_pixels=True).Modality == "SR"]
    assert len(reports) == len(jobs)
    not_assessed = sop_uids - analysed
    for uid in not_assessed:
        assert any(uid in str(r.ContentSequence) for r in reports), uid
    # A source's own defects (e.g. UIDs under the illegal root 999.999) show up
    # where our objects must reference it; everything else must be clean.
    headers = [dcmread(f, stop_before_pixels=True) for f in files]
    source_uids = {
        str(uid)
        for ds in headers
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    }
    errors = {
        p.name: [e for e in dciodvfy_errors(p) if not any(uid in e for uid in source_uids)]
        for p in results
    }
    assert {name: e for name, e in errors.items() if e} == {}
    assert len(analysed) >= len(sop_uids) - 3, f"too many undecodable files: {not_assessed}"


def test_h264_cine_is_received_and_analysed(
    make_node: Callable[..., NodeHarness], tmp_path: Path
) -> None:
    """An MPEG-4 AVC (H.264) cine, as some scanners export, sent with storescu."""
    from tests.inference.test_video import FRAMES, encode, moving_square, video_dataset
    from tests.sr_templates.sr_factories import make_us_image

    header = make_us_image("RGB", rows=240, columns=320)
    ds = video_dataset(encode(moving_square(FRAMES), "libx264", "h264"), "1.2.840.10008.1.2.4.102")
    for element in header:
        if element.keyword not in ds and element.keyword not in (
            "PixelData",
            "PlanarConfiguration",
        ):
            ds.add(element)
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.990001"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "h264.dcm"
    ds.save_as(path, enforce_file_format=True)
    harness = make_node(ae_title="NODE")
    sent = storescu(harness.port, [path], called="NODE", extra=["-xn"])
    assert sent.returncode == 0, sent.stderr
    harness.settle()
    assert [n for _, _, n in harness.analyzer.calls] == [FRAMES]
    results = sorted(harness.node.spool.results.glob("job-*/*.dcm"))
    assert results
    for result in results:
        assert dciodvfy_errors(result) == [], result
