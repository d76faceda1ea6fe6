"""Forward passes in ONNX Runtime when a matching export is shipped, in torch otherwise.

Every shipped network can have an ONNX export next to its weights
(``name.pt`` -> ``name.onnx``, made by ``us-ai-train export-onnx``).  The
export carries the SHA-256 of the weights it was made from in its metadata
(``source_sha256``); :func:`make_runner` uses it only when that matches the
weights' card, so a retrained model whose export was not redone runs in
torch rather than with stale numbers.  ONNX Runtime is an optional
dependency (the ``onnx`` extra); without it every network runs in torch.
Grad-CAM needs gradients and always uses the torch module.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog
import torch

logger = structlog.get_logger(__name__)

ONNX_OPSET = 17
"""Opset of the exports."""

SOURCE_KEY = "source_sha256"
"""Metadata key of an export: SHA-256 of the weights file it was made from."""


class Runner(Protocol):
    """A network's forward pass on a batch; always a tuple of output tensors."""

    backend: str

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Outputs of the network for ``x``."""
        ...


class TorchRunner:
    """The torch module itself, without gradients."""

    backend = "torch"

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module.eval()

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Outputs of the module for ``x``."""
        with torch.inference_mode():
            out = self.module(x)
        return tuple(out) if isinstance(out, tuple | list) else (out,)


class OnnxRunner:
    """An ONNX Runtime session on the CPU with a fixed number of threads.

    Its threads do not spin waiting for the next run: an engine runs several small
    sessions in turn (view classifier, detector, classifier, verifier), and on two
    cores the spinning threads of one took the CPU from the next (liver stills on two
    threads went from 40 to 14 per second when a third lesion session was added).
    """

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(threads, 1)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    @property
    def source_sha256(self) -> str | None:
        """SHA-256 of the weights the export was made from."""
        return self.session.get_modelmeta().custom_metadata_map.get(SOURCE_KEY)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Outputs of the session for ``x``."""
        feed = {self.input: np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)}
        return tuple(torch.from_numpy(out) for out in self.session.run(None, feed))


def onnx_path(weights: Path) -> Path:
    """Where the export of a weights file lies."""
    return weights.with_suffix(".onnx")


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime is installed."""
    return importlib.util.find_spec("onnxruntime") is not None


def make_runner(module: torch.nn.Module, weights: Path, weights_sha256: str,
                prefer_onnx: bool = True) -> Runner:
    """The fastest trustworthy way to run ``module``.

    Parameters
    ----------
    module:
        The network, loaded from ``weights``.
    weights:
        Its ``.pt`` file; the export is looked for next to it.
    weights_sha256:
        SHA-256 of the weights (from their card).
    prefer_onnx:
        Use the export when it exists, ONNX Runtime is installed and the export
        was made from these weights.

    Returns
    -------
    Runner
        An :class:`OnnxRunner` or a :class:`TorchRunner`.
    """
    path = onnx_path(weights)
    if not (prefer_onnx and path.exists() and onnxruntime_available()):
        return TorchRunner(module)
    runner = OnnxRunner(path, torch.get_num_threads())
    if runner.source_sha256 != weights_sha256:
        logger.warning("onnx_export_stale", weights=weights.name,
                       reason="the export was made from other weights; running in torch")
        return TorchRunner(module)
    return runner


def export_onnx(module: torch.nn.Module, weights: Path, sample: torch.Tensor,
                weights_sha256: str) -> dict[str, Any]:
    """Export ``module`` next to ``weights`` and check it against torch.

    The export has a dynamic batch axis and records ``weights_sha256`` in
    its metadata.  The check runs both on a batch of two random inputs shaped
    like ``sample``.

    Returns
    -------
    dict
        ``file``, ``sha256``, ``source_sha256``, ``opset`` and ``max_abs_diff``
        (largest difference between the two runtimes' outputs), for the card.

    Raises
    ------
    ValueError
        When the export's outputs differ from torch's by more than 1e-3.
    """
    import onnx

    from inference.engines.model_card import sha256_of

    path = onnx_path(weights)
    module = module.eval()
    dynamic = {"x": {0: "batch"}}
    torch.onnx.export(module, (sample,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                      input_names=["x"], dynamic_axes=dynamic)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = SOURCE_KEY, weights_sha256
    onnx.save(model, str(path))
    x = torch.rand((2, *sample.shape[1:]), generator=torch.Generator().manual_seed(0))
    expected = TorchRunner(module)(x)
    got = OnnxRunner(path, 1)(x)
    diff = max(float((a - b).abs().max()) for a, b in zip(expected, got, strict=True))
    if diff > 1e-3:
        path.unlink()
        raise ValueError(f"ONNX export of {weights.name} differs from torch by {diff:.2g}")
    logger.info("onnx_exported", weights=weights.name, max_abs_diff=diff)
    return {"file": path.name, "sha256": sha256_of(path), SOURCE_KEY: weights_sha256,
            "opset": ONNX_OPSET, "max_abs_diff": diff}
