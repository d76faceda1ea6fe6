"""Anatomy/view classifier: liver (abdomen), breast, apical four-chamber echo, other.

Tags on real ultrasound are often empty or wrong, so the analyzer also asks
the image.  A tiny CNN looks at the B-mode scan area (cropped, resized to
``VIEW_INPUT_SIZE`` square, so burned-in text outside the sector is ignored);
for a cine, the class probabilities of up to ``VIEW_FRAMES`` evenly spaced
frames are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
import torch
from torch import nn

from inference.engines.base import ImageInput
from inference.engines.lv_segmentation import prepare_frames
from inference.engines.model_card import load_model
from inference.findings import AlgorithmInfo, AnatomyValues
from inference.models.runtime import make_runner
from inference.preprocessing import scan_area

logger = structlog.get_logger(__name__)

VIEW_CLASSES: tuple[AnatomyValues, ...] = (
    AnatomyValues.LIVER,
    AnatomyValues.BREAST,
    AnatomyValues.HEART,
    AnatomyValues.OTHER,
)
"""Classifier outputs, in order.  HEART means the apical four-chamber view."""

VIEW_INPUT_SIZE = 96
"""Side of the square classifier input."""

VIEW_FRAMES = 5
"""Frames of a cine that are classified and averaged."""

WEIGHTS_NAME = "view_cnn.pt"
"""Shipped classifier weights in ``inference/weights``."""

ALGORITHM_NAME = "us-anatomy-view"
"""Algorithm name of the classifier."""

VERSION = "1.0.0"
"""Version of the classifier code."""

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
"""Where the shipped weights live."""


class ViewCNN(nn.Module):
    """Five strided convolutions, global average pooling and a linear layer.

    Parameters
    ----------
    width:
        Channels of the first convolution (doubled twice).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4, width * 4, width * 4]
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in widths:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(c_in, len(VIEW_CLASSES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(n, classes)`` of images ``(n, 1, s, s)``."""
        return self.classifier(self.features(x).mean(dim=(2, 3)))


@dataclass(frozen=True)
class ViewPrediction:
    """What the image looks like.

    Attributes
    ----------
    anatomy:
        The most probable class.
    probability:
        Its probability.
    probabilities:
        Probability of every class.
    """

    anatomy: AnatomyValues
    probability: float
    probabilities: dict[AnatomyValues, float]


class ViewClassifier:
    """Recognise the anatomy/view of an image from its pixels.

    Parameters
    ----------
    weights_dir:
        Directory holding ``view_cnn.pt`` and its card; the shipped weights
        when ``None``.

    Raises
    ------
    FileNotFoundError
        When the weights or their card are missing.
    ValueError
        When the weights do not match their card.
    """

    def __init__(self, weights_dir: Path | None = None) -> None:
        self._weights = (weights_dir or DEFAULT_WEIGHTS_DIR) / WEIGHTS_NAME
        self._model, card = load_model(self._weights, "View classifier",
                                       lambda arch: ViewCNN(int(arch["width"])))
        digest = str(card["sha256"])
        self._runner = make_runner(self._model, self._weights, digest)
        self._algorithm = AlgorithmInfo(
            name=ALGORITHM_NAME, version=VERSION, weights_sha256=digest,
            parameters={"classes": ",".join(c.value for c in VIEW_CLASSES),
                        "frames_averaged": str(VIEW_FRAMES)},
        )

    @property
    def algorithm(self) -> AlgorithmInfo:
        """Identity of the classifier."""
        return self._algorithm

    def networks(self) -> list[tuple[Path, torch.nn.Module, tuple[int, ...]]]:
        """The network this classifier runs: weights file, module and input shape (for export)."""
        return [(self._weights, self._model, (1, 1, VIEW_INPUT_SIZE, VIEW_INPUT_SIZE))]

    def predict(self, image: ImageInput) -> ViewPrediction:
        """Classify the anatomy/view of ``image``.

        Parameters
        ----------
        image:
            Decoded image; its scan area comes from the regions or the pixels.

        Returns
        -------
        ViewPrediction
            Averaged class probabilities over up to five frames.

        Raises
        ------
        ValueError
            When the image has no scan area (blank).
        """
        box = scan_area(image)
        count = min(VIEW_FRAMES, image.number_of_frames)
        picks = np.unique(np.linspace(0, image.number_of_frames - 1, count).round().astype(int))
        inputs = prepare_frames(image.frames[picks], box, VIEW_INPUT_SIZE)
        x = torch.from_numpy(np.ascontiguousarray(inputs, np.float32))[:, None]
        probs = torch.softmax(self._runner(x)[0], dim=1).mean(dim=0).numpy()
        best = int(np.argmax(probs))
        return ViewPrediction(
            anatomy=VIEW_CLASSES[best],
            probability=float(probs[best]),
            probabilities={c: float(p) for c, p in zip(VIEW_CLASSES, probs, strict=True)},
        )
