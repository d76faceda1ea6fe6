"""Small helpers shared by the training modules: cached arrays, jittered crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inference.findings import BoundingBox


def load_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cached ``.npz``, or ``None`` when it does not exist."""
    if not path.exists():
        return None
    with np.load(path) as cached:
        return {key: cached[key] for key in cached.files}


def save_cache(path: Path, data: dict[str, np.ndarray]) -> None:
    """Write ``data`` to ``path`` atomically (compressed ``.npz``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **data)
    tmp.replace(path)


def jittered_box(box: BoundingBox | tuple[int, int, int, int], rng: np.random.Generator,
                 shape: tuple[int, int], jitter: float = 0.03) -> BoundingBox:
    """``box`` with each edge moved by up to ``jitter`` of its size, kept in the image.

    The engines find the scan area from the regions or from the pixels; the
    two can differ by a few pixels, so training crops are jittered.
    """
    if isinstance(box, BoundingBox):
        x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
    else:
        x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    j = rng.uniform(-jitter, jitter, 4) * np.array([w, h, w, h])
    return BoundingBox(max(0.0, x0 + j[0]), max(0.0, y0 + j[1]),
                       min(float(shape[1]), x1 + j[2]), min(float(shape[0]), y1 + j[3]))
