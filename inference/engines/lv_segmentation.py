"""Left-ventricular cavity segmentation: a small U-Net on the cropped scan area.

Frames are cropped to the B-mode scan area, resized to
``INPUT_SIZE x INPUT_SIZE`` (the aspect ratio is not kept; the network sees
the whole sector) and scaled to ``[0, 1]``.  The network outputs one logit
map of the LV cavity; probabilities are resized back to the scan area, cut at
0.5 and cleaned (largest component, holes filled), so masks live on the
original pixel grid and volumes use the original pixel size.

Training (:mod:`inference.training.cardiac`) and the engine share
:func:`prepare_frames` and :class:`LVUNet`, so both see identical inputs.
"""

from __future__ import annotations

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from inference.findings import BoundingBox
from inference.models.runtime import Runner

logger = structlog.get_logger(__name__)

INPUT_SIZE = 128
"""Side of the square network input, in pixels."""


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class LVUNet(nn.Module):
    """Four-level U-Net with one output logit map.

    Parameters
    ----------
    base:
        Channels of the first level (doubled at each level).
    """

    def __init__(self, base: int = 16) -> None:
        super().__init__()
        widths = [base, base * 2, base * 4, base * 8]
        self.base = base
        self.down = nn.ModuleList()
        c_in = 1
        for width in widths:
            self.down.append(_block(c_in, width))
            c_in = width
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(c_in, width, 2, stride=2))
            self.merge.append(_block(2 * width, width))
            c_in = width
        self.head = nn.Conv2d(c_in, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, 1, h, w)`` of images ``(n, 1, h, w)`` (``h, w`` divisible by 8)."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def box_slices(box: BoundingBox, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Integer row/column slices of ``box`` clipped to an image of ``shape``."""
    r0 = int(np.clip(np.floor(box.y0), 0, shape[0] - 1))
    c0 = int(np.clip(np.floor(box.x0), 0, shape[1] - 1))
    r1 = int(np.clip(np.ceil(box.y1), r0 + 1, shape[0]))
    c1 = int(np.clip(np.ceil(box.x1), c0 + 1, shape[1]))
    return slice(r0, r1), slice(c0, c1)


def resize_stack(stack: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(n, h, w)`` arrays to ``(n, *size)`` as float32 (bilinear, antialiased)."""
    tensor = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    antialias = size[0] < stack.shape[1] or size[1] < stack.shape[2]
    out = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False,
                        antialias=antialias)
    return out[:, 0].numpy()


def prepare_frames(frames: np.ndarray, box: BoundingBox, size: int = INPUT_SIZE) -> np.ndarray:
    """Crop ``(n, rows, cols)`` uint8 frames to ``box`` and resize to the network input.

    Returns
    -------
    numpy.ndarray
        Float32 ``(n, size, size)`` in ``[0, 1]``.
    """
    rows, cols = box_slices(box, frames.shape[1:])
    return resize_stack(frames[:, rows, cols], (size, size)) / 255.0


def predict_probabilities(model: Runner, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    """LV probabilities ``(n, size, size)`` of prepared inputs, run by ``model``."""
    out = []
    for start in range(0, len(inputs), batch):
        x = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch], np.float32))
        out.append(torch.sigmoid(model(x[:, None])[0])[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros((0, *inputs.shape[1:]), np.float32)


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Largest connected component of ``mask`` with its holes filled."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask.astype(bool)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)


def masks_on_image(probabilities: np.ndarray, box: BoundingBox, shape: tuple[int, int]
                   ) -> np.ndarray:
    """Resize probabilities back to the scan area and cut at 0.5.

    Parameters
    ----------
    probabilities:
        ``(n, size, size)`` network probabilities.
    box:
        Scan area the inputs were cropped from.
    shape:
        ``(rows, cols)`` of the original frames.

    Returns
    -------
    numpy.ndarray
        Boolean ``(n, rows, cols)`` cleaned masks.
    """
    rows, cols = box_slices(box, shape)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    resized = resize_stack(probabilities, (height, width))
    out = np.zeros((len(probabilities), *shape), dtype=bool)
    for i, prob in enumerate(resized):
        out[i, rows, cols] = clean_mask(prob > 0.5)
    return out
