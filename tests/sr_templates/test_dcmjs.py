"""OHIF's parser: dcmjs reads our SR and finds every box (tests/sr_templates/js)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from inference.findings import BoundingBox
from sr_templates import ResultOptions, build_result_objects
from sr_templates.shapes import closed_polyline
from tests.sr_templates.sr_factories import analysed, make_lesion, make_us_image, save, study_of

JS = Path(__file__).parent / "js"


@pytest.fixture(scope="module")
def dcmjs_parser() -> Path:
    """The parse script, with dcmjs installed from the committed lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js / npm is not installed")
    if not (JS / "node_modules" / "dcmjs").is_dir():
        completed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True,
            timeout=300, check=False,
        )
        if completed.returncode != 0:
            pytest.skip(f"npm ci could not install dcmjs: {completed.stderr[-500:]}")
    return JS / "parse_sr.js"


def test_dcmjs_finds_every_box(dcmjs_parser: Path, tmp_path: Path) -> None:
    still = make_us_image("RGB")
    cine = make_us_image("YBR_FULL_422", frames=5)
    lesions = [
        make_lesion(still, BoundingBox(10, 10, 40, 30), index=1,
                    contour=np.array([[12.0, 12.0], [38.0, 14.0], [30.0, 28.0]])),
        make_lesion(still, BoundingBox(0, 60, 160, 120), index=2),
        make_lesion(cine, BoundingBox(50, 50, 90, 80), frames=(2, 3, 4), index=3),
    ]
    result = study_of(analysed(still, lesions[:2]), analysed(cine, lesions[2:]), source=still)
    options = ResultOptions(include_segmentation=False, include_presentation_state=False)
    (report,) = build_result_objects([still, cine], result, options)
    path = save(report, tmp_path / "report.dcm")

    completed = subprocess.run(["node", str(dcmjs_parser), str(path)], capture_output=True,
                               text=True, timeout=120, check=True)
    parsed = json.loads(completed.stdout)

    assert parsed["templateIdentifier"] == "1500"
    assert parsed["imageLibraryPresent"]
    assert parsed["adapterGroupCount"] == 4
    by_uid = {m["trackingUid"]: m for m in parsed["measurements"]}
    assert set(by_uid) == {lesion.tracking_uid for lesion in lesions}
    for lesion in lesions:
        measurement = by_uid[lesion.tracking_uid]
        graphic = measurement["graphic"]
        assert measurement["trackingIdentifier"] == lesion.tracking_id
        assert graphic["graphicType"] == "POLYLINE"
        contour = lesion.key_observation.contour
        # A lesion with a contour is drawn as its outline, labelled with the outline's area.
        shape = (lesion.key_observation.box.polyline() if contour is None
                 else closed_polyline(contour))
        np.testing.assert_allclose(graphic["points"], shape.ravel())
        assert graphic["referencedSOPInstanceUID"] == lesion.source_sop_instance_uid
        expected_frames = [3] if lesion.source_sop_instance_uid == cine.SOPInstanceUID else []
        assert graphic["referencedFrameNumber"] == expected_frames
        labels = {label["code"]: label["value"] for label in measurement["labels"]}
        assert labels["111047"] == pytest.approx(lesion.malignancy_probability)
        assert ("42798000" in labels) == (contour is not None)  # Area, only the outline's
