"""Fixtures: the DICOM validators (skipped only when their binary is missing)."""

from __future__ import annotations

import re
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
    completed = subprocess.run(command, capture_output=True, text=True, errors="replace",
                               timeout=300, check=False)
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


DCMTK_READERS: dict[str, list[str]] = {
    "SR": ["dsrdump"],
    "PR": ["dcmpschk"],
}
"""DCMTK's parser per modality of a result object; images are rendered by ``dcm2pnm``."""
DCMTK_CHARSET_NOTICE = re.compile(r"Specific ?Character ?Set", re.IGNORECASE)
"""Words of DCMTK's notice that its build cannot convert a character set (ISO 2022 ones):
a limit of the reader, not a fault of the object, which keeps its source's character set."""


@pytest.fixture
def dcmtk_reads(tmp_path: Path) -> Callable[[Dataset], None]:
    """Read a dataset with DCMTK's parsers, as viewers built on DCMTK do; fail on any complaint.

    SR goes through ``dsrdump`` in its strict default mode (content item errors and
    relationship constraints abort), presentation states through ``dcmpschk``, and every
    other object is rendered frame by frame by ``dcm2pnm``.
    """
    if shutil.which("dsrdump") is None:
        pytest.skip("DCMTK is not installed")

    def check(ds: Dataset) -> None:
        path = save(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
        reader = DCMTK_READERS.get(str(ds.Modality))
        command = reader or ["dcm2pnm", "--all-frames"]
        arguments = [str(path)] if reader else [str(path), str(tmp_path / "frame.pnm")]
        completed = subprocess.run([*command, *arguments], capture_output=True, text=True,
                                   timeout=300, check=False)
        complaints = [line for line in (completed.stdout + completed.stderr).splitlines()
                      if line.startswith(("E:", "F:"))
                      or (line.startswith("W:") and "Test" not in line
                          and not DCMTK_CHARSET_NOTICE.search(line))]
        assert completed.returncode == 0 and not complaints, (
            f"{command[0]} on {ds.SOPClassUID.name}:\n{completed.stdout}{completed.stderr}"
        )
        if ds.Modality == "PR":
            assert "Test passed." in completed.stderr, completed.stderr

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
