"""Demo phantom studies are valid ultrasound DICOM that the engines can read."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread

from dicom_node.cli import main
from inference.preprocessing import image_input_from_dataset
from tests.peers import dciodvfy_errors


def test_demo_studies_are_valid_and_decodable(tmp_path: Path) -> None:
    assert main(["demo-study", str(tmp_path), "--images", "1", "--seed", "3"]) == 0
    files = sorted(tmp_path.rglob("*.dcm"))
    assert [f.parent.name for f in files] == ["breast", "echo", "liver"]
    for path in files:
        assert dciodvfy_errors(path) == [], path
        ds = dcmread(path)
        image = image_input_from_dataset(ds)
        assert image.geometry.pixel_size_mm is not None
        assert image.frames.shape[0] == (1 if path.parent.name != "echo" else ds.NumberOfFrames)
