"""sr_templates stays free of torch and of the node."""

from __future__ import annotations

import subprocess
import sys


def test_importing_sr_templates_loads_neither_torch_nor_dicom_node() -> None:
    code = (
        "import sys, sr_templates, sr_templates.capture, sr_templates.seg;"
        "print(sorted(m for m in ('torch', 'dicom_node') if m in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True, timeout=120)
    assert completed.stdout.strip() == "[]"
