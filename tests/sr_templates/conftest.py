"""Fixtures: the DICOM validators (skipped only when their binary is missing)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from pydicom import Dataset

from tests.sr_templates.sr_factories import save

PIXELMED = Path("/usr/share/java/pixelmed.jar")
VALIDATE_MANY = Path(__file__).parent / "java" / "ValidateMany.java"
_XPATH_LIMITS = [
    f"-Djdk.xml.{name}=0"
    for name in ("xpathExprOpLimit", "xpathExprGrpLimit", "xpathTotalOpLimit")
]


def _run(command: list[str]) -> str:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    return completed.stdout + completed.stderr


@pytest.fixture
def dciodvfy(tmp_path: Path) -> Callable[[Dataset], str]:
    """Run ``dciodvfy -new`` on a dataset; fail the test on any error line."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")

    def check(ds: Dataset) -> str:
        output = _run(["dciodvfy", "-new", str(save(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm"))])
        errors = [line for line in output.splitlines() if line.startswith("Error")]
        assert not errors, f"{ds.SOPClassUID.name}:\n{output}"
        return output

    return check


@pytest.fixture
def sr_validator(tmp_path: Path) -> Callable[[Sequence[Dataset]], list[str]]:
    """Run PixelMed's DicomSRValidator on SRs in one JVM; fail on any error."""
    if shutil.which("java") is None or not PIXELMED.exists():
        pytest.skip("java or PixelMed (/usr/share/java/pixelmed.jar) is not installed")

    def check(reports: Sequence[Dataset]) -> list[str]:
        paths = [str(save(ds, tmp_path / f"sr-{i}.dcm")) for i, ds in enumerate(reports)]
        output = _run(["java", *_XPATH_LIMITS, "-cp", str(PIXELMED), str(VALIDATE_MANY), *paths])
        sections = output.split("=== ")[1:]
        assert len(sections) == len(paths), output
        for section in sections:
            assert "Found Root Template TID_1500" in section, section
            errors = [line for line in section.splitlines() if line.startswith("Error")]
            assert not errors, section
        return sections

    return check
