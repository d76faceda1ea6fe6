"""``us-ai-train``: one subcommand per model, each a lazily imported module.

Every subcommand maps to a module of :mod:`inference.training` exposing
``add_arguments(parser)`` and ``run(args)``, plus fixed option defaults
(``liver-detector`` is the detector module with ``--organ liver``).  Only
the chosen module is imported, so ``us-ai-train cardiac`` never loads the
lesion code and vice versa.

Examples
--------
``us-ai-train lesion-data --organ liver --count 4500 --output /work/cache/lesion/liver-train.npz``
``us-ai-train liver-detector --cache /work/cache/lesion/liver-train.npz``
(``--cache a.npz b.npz`` trains on several caches together)
``us-ai-train liver-classifier --cache /work/cache/lesion/liver-train.npz``
``us-ai-train export-onnx`` (after any training: ONNX exports of the shipped weights)
``us-ai-train cine-vote --organ liver`` (after a detector: its cine track score)
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from collections.abc import Sequence

import structlog

logger = structlog.get_logger(__name__)

SUBCOMMANDS: dict[str, tuple[str, dict[str, str]]] = {
    "lesion-data": ("lesion_data", {}),
    "liver-detector": ("detector", {"organ": "liver"}),
    "liver-classifier": ("classifier", {"organ": "liver"}),
    "breast-detector": ("detector", {"organ": "breast"}),
    "breast-classifier": ("classifier", {"organ": "breast"}),
    "liver-verifier": ("verifier", {"organ": "liver"}),
    "breast-verifier": ("verifier", {"organ": "breast"}),
    "cardiac": ("cardiac", {}),
    "view": ("view", {}),
    "export-onnx": ("onnx_export", {}),
    "cine-vote": ("cine_vote", {}),
}
"""Subcommand -> (module under ``inference.training``, fixed option defaults)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the subcommand, import its module, add its options and run it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="us-ai-train", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(SUBCOMMANDS))
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv[:1] or ["--help"])
        return 2
    module_name, fixed = SUBCOMMANDS[argv[0]]
    module = importlib.import_module(f"inference.training.{module_name}")
    sub = argparse.ArgumentParser(prog=f"us-ai-train {argv[0]}")
    module.add_arguments(sub)
    rest = list(argv[1:])
    for key, value in fixed.items():
        if f"--{key}" not in rest:
            rest += [f"--{key}", value]
    args = sub.parse_args(rest)
    args.command_line = "us-ai-train " + " ".join(shlex.quote(a) for a in argv)
    logger.info("training_start", command=argv[0], module=module_name)
    module.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
