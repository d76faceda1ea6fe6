"""Engine registry: engines by routing name, loaded once per process.

Loading an engine reads its weights, so :func:`load_engine` caches the
instance; the lesion engines are imported lazily (their module pulls in the
detector and classifiers).
"""

from __future__ import annotations

import functools
import importlib

import structlog

from inference.engines.base import Engine

logger = structlog.get_logger(__name__)

ENGINE_NAMES: tuple[str, ...] = ("liver", "breast", "cardiac")
"""Names routing rules may use."""

_LESION_ENGINES = {"liver": "LiverEngine", "breast": "BreastEngine"}


class EngineUnavailableError(RuntimeError):
    """An engine exists by name but cannot be loaded here (module or weights missing)."""


@functools.cache
def load_engine(name: str) -> Engine:
    """The engine called ``name``, built on first use and cached per process.

    Parameters
    ----------
    name:
        One of :data:`ENGINE_NAMES`.

    Returns
    -------
    Engine
        The loaded engine.

    Raises
    ------
    ValueError
        For an unknown name.
    EngineUnavailableError
        When the engine's module or weights are missing.
    """
    if name not in ENGINE_NAMES:
        raise ValueError(f"Unknown engine {name!r}; known: {', '.join(ENGINE_NAMES)}.")
    try:
        if name == "cardiac":
            from inference.engines.cardiac import CardiacEngine

            engine: Engine = CardiacEngine()
        else:
            module = importlib.import_module("inference.engines.lesion")
            engine = getattr(module, _LESION_ENGINES[name])()
    except ImportError as exc:
        raise EngineUnavailableError(
            f"Engine {name!r} cannot be imported ({exc}); is inference.engines.lesion installed?"
        ) from exc
    except FileNotFoundError as exc:
        raise EngineUnavailableError(f"Engine {name!r} has no weights: {exc}") from exc
    logger.info("engine_loaded", engine=name, algorithm=engine.algorithm.name,
                version=engine.algorithm.version)
    return engine
