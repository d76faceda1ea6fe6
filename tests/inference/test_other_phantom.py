"""Tests of the negative ("other" anatomy) phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from inference.phantoms.other import OTHER_KINDS, generate_other


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_each_kind_renders_deterministically(kind: str) -> None:
    a = generate_other(7, 160, 200, kind=kind)
    b = generate_other(7, 160, 200, kind=kind)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.kind == kind and a.frames.shape == (1, 160, 200) and a.frames.dtype == np.uint8
    x0, y0, x1, y1 = a.scan_box
    inside = a.frames[0, y0:y1, x0:x1]
    assert inside.std() > 10  # speckle, not a flat field
    assert a.pixel_mm > 0


def test_random_kind_is_one_of_the_kinds() -> None:
    assert {generate_other(s, 120, 160).kind for s in range(10)} <= set(OTHER_KINDS)
