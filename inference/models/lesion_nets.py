"""Lesion networks: a CenterNet-style single-class detector and a ROI classifier.

The detector (as the published YOLOv5 system, one class "tumour") takes the
letterboxed scan area (:data:`~inference.models.roi.DETECTOR_SIZE` square,
grey levels / 255) and predicts, at stride 4, a centre heatmap, the box size
(log input pixels) and the sub-cell centre offset.  The classifier takes a
:func:`~inference.models.roi.roi_crop` of a detection and returns class
logits; its last convolution is the Grad-CAM layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from torch import nn

logger = structlog.get_logger(__name__)

STRIDE = 4
"""Output stride of the detector."""

DETECTOR_WIDTHS = (16, 24, 48, 64, 96)
"""Default channels of the detector's stem and four stages (its card may say others)."""

DETECTOR_HEAD = 32
"""Default channels of the detector's FPN head."""


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _stage(cin: int, cout: int, blocks: int = 0) -> nn.Sequential:
    """Downsample by 2 then refine, with ``blocks`` residual blocks after."""
    return nn.Sequential(_conv(cin, cout, 2), _conv(cout, cout),
                         *(ResidualBlock(cout) for _ in range(blocks)))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions added to their input, then ReLU.

    The second batch norm starts at zero scale, so a new block is the identity
    on the (non-negative) features it follows: a network grown with blocks
    computes what it computed before until training changes them.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.body[2].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(x + body(x))``."""
        return F.relu(x + self.body(x))


class LesionDetector(nn.Module):
    """Small FPN + CenterNet head; outputs ``(heat logits, log size, offset)``.

    ``blocks`` residual blocks follow each of the stride 4, 8 and 16 stages and
    the fused head (0: the plain network); see :func:`load_grown`.
    """

    def __init__(self, widths: tuple[int, ...] = DETECTOR_WIDTHS, head: int = DETECTOR_HEAD,
                 blocks: int = 0) -> None:
        super().__init__()
        w = widths
        self.stem = _conv(1, w[0], 2)
        self.s4 = _stage(w[0], w[1], blocks)
        self.s8 = _stage(w[1], w[2], blocks)
        self.s16 = _stage(w[2], w[3], blocks)
        self.s32 = _stage(w[3], w[4])
        self.lat = nn.ModuleList(nn.Conv2d(c, head, 1) for c in (w[1], w[2], w[3], w[4]))
        self.fuse = nn.Sequential(*_conv(head, head), *(ResidualBlock(head) for _ in range(blocks)))
        self.heat = nn.Conv2d(head, 1, 1)
        self.size = nn.Conv2d(head, 2, 1)
        self.offset = nn.Conv2d(head, 2, 1)
        nn.init.constant_(self.heat.bias, -2.19)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x``: ``(n, 1, S, S)`` in ``[0, 1]``."""
        f4 = self.s4(self.stem(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        top = self.lat[3](f32)
        for lat, feat in ((self.lat[2], f16), (self.lat[1], f8), (self.lat[0], f4)):
            top = lat(feat) + F.interpolate(top, size=feat.shape[-2:], mode="nearest")
        y = self.fuse(top)
        return self.heat(y), self.size(y), self.offset(y)


def load_grown(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load ``state`` of the same network with fewer residual blocks into ``model``.

    Every tensor of ``state`` must have its place in ``model``; the blocks it
    lacks keep their identity start.  Returns the names of those new tensors.

    Raises
    ------
    ValueError
        When ``state`` holds a tensor ``model`` has no place for or of another
        shape, or lacks one that is not part of a residual block.
    """
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise ValueError(f"weights do not fit the network: {error}") from error
    grown = {name for name, module in model.named_modules() if isinstance(module, ResidualBlock)}
    foreign = [k for k in result.missing_keys if not any(k.startswith(g + ".") for g in grown)]
    if result.unexpected_keys or foreign:
        raise ValueError(f"weights do not fit the network: unexpected {result.unexpected_keys}, "
                         f"missing {foreign}")
    return list(result.missing_keys)


class LesionClassifier(nn.Module):
    """ROI classifier; ``features`` is the Grad-CAM layer (8 x 8 for 64 px input)."""

    def __init__(self, n_classes: int, widths: tuple[int, ...] = (24, 32, 64, 96, 128)) -> None:
        super().__init__()
        w = widths
        self.features = nn.Sequential(
            _conv(1, w[0], 2), _conv(w[0], w[1]), _stage(w[1], w[2]), _stage(w[2], w[3]),
            _conv(w[3], w[4]),
        )
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(w[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(n, 1, C, C)`` in ``[0, 1]`` -> logits."""
        return self.head(self.features(x))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from the last feature map."""
        return self.fc(self.drop(features.mean(dim=(2, 3))))


@dataclass(frozen=True)
class Detection:
    """A detection in detector-input pixels."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float


def predict_mirrored(run: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], x: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detector outputs averaged with those of the left-right mirrored input.

    The test-time counterpart of the horizontal flips of training: ``run`` (the
    detector, or a runtime running it) sees the batch and its mirror image at
    once; heatmap logits and log sizes are averaged cell by cell (the stride
    divides the input side, so mirrored cells line up) and the sub-cell offsets
    are those of the unmirrored input.

    Parameters
    ----------
    run:
        Detector forward pass: ``(n, 1, S, S)`` -> ``(heat, size, offset)``.
    x:
        ``(n, 1, S, S)`` input.
    """
    n = x.shape[0]
    heat, size, offset = run(torch.cat([x, torch.flip(x, dims=[3])]))[:3]
    return ((heat[:n] + torch.flip(heat[n:], dims=[3])) / 2.0,
            (size[:n] + torch.flip(size[n:], dims=[3])) / 2.0, offset[:n])


def decode(heat: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, threshold: float,
           max_detections: int = 20) -> list[list[Detection]]:
    """Peaks of the heatmap -> boxes, per image of the batch.

    A 3x3 max-pool keeps local maxima only (CenterNet's NMS); overlapping
    boxes are then suppressed at IoU 0.5.
    """
    prob = torch.sigmoid(heat)
    peaks = (prob == F.max_pool2d(prob, 3, 1, 1)) & (prob >= threshold)
    out: list[list[Detection]] = []
    for b in range(prob.shape[0]):
        ys, xs = torch.nonzero(peaks[b, 0], as_tuple=True)
        scores = prob[b, 0, ys, xs]
        order = torch.argsort(scores, descending=True)[: max_detections * 2]
        dets = []
        for i in order.tolist():
            y, x = int(ys[i]), int(xs[i])
            cx = (x + float(offset[b, 0, y, x])) * STRIDE
            cy = (y + float(offset[b, 1, y, x])) * STRIDE
            w = float(torch.exp(size[b, 0, y, x]))
            h = float(torch.exp(size[b, 1, y, x]))
            dets.append(Detection(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2,
                                  float(scores[i])))
        out.append(_nms(dets, 0.5)[:max_detections])
    return out


def box_iou(a: Detection | np.ndarray, b: Detection | np.ndarray) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes."""
    ax0, ay0, ax1, ay1 = (a.x0, a.y0, a.x1, a.y1) if isinstance(a, Detection) else a[:4]
    bx0, by0, bx1, by1 = (b.x0, b.y0, b.x1, b.y1) if isinstance(b, Detection) else b[:4]
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return float(inter / union) if union > 0 else 0.0


def _nms(dets: list[Detection], iou: float) -> list[Detection]:
    kept: list[Detection] = []
    for det in dets:
        if all(box_iou(det, k) < iou for k in kept):
            kept.append(det)
    return kept


def grad_cam(classifier: LesionClassifier, crop: torch.Tensor, class_index: int
             ) -> np.ndarray:
    """Grad-CAM of ``class_index`` for one crop, ``(C, C)`` in ``[0, 1]``.

    Parameters
    ----------
    classifier:
        The classifier (eval mode).
    crop:
        ``(1, 1, C, C)`` input.
    class_index:
        Class whose evidence is mapped.
    """
    with torch.enable_grad():
        features = classifier.features(crop).detach().requires_grad_(True)
        logits = classifier.head(features)
        (grad,) = torch.autograd.grad(logits[0, class_index], features)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=crop.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam.detach().numpy()
    peak = float(cam.max())
    return (cam / peak).astype(np.float32) if peak > 0 else np.zeros_like(cam, np.float32)
