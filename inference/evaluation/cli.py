"""``us-ai-evaluate``: held-out evaluation report of the shipped engines.

Writes ``docs/evaluation.md`` and PNG plots (PR curves, confusion matrices)
in ``docs/evaluation/``.  Each part of the report is kept as a section file
there (``liver.md``, ``breast.md``, ``cardiac.md``) so parts can be
evaluated in separate runs; the report is reassembled from the section files
present after every run.  With ``--cardiac`` the cardiac helper module
``inference.evaluation.cardiac`` is called (``section(plot_dir, quick)``,
EF Bland-Altman) and its markdown kept as ``cardiac.md``.

Examples
--------
``us-ai-evaluate --organs liver --images 250 --clips 25``
``us-ai-evaluate --organs --cardiac``
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import structlog
import torch

from inference.engines.lesion import WEIGHTS_DIR
from inference.engines.model_card import read_card
from inference.evaluation.lesion import FIRST_SEEDS, evaluate_organ
from inference.evaluation.report import cross_validation_lines, organ_section

logger = structlog.get_logger(__name__)


HEADER = [
    "# Evaluation on held-out phantom data", "",
    "Held-out seeds (1,000,000 and up) are disjoint from every training set (seeds below "
    "20,000 of the first generator and 40,000-43,999 for the liver verifier; "
    "20,000,000-20,008,999 and 20,910,000-20,913,999 of the second). Figures are on "
    "this project's phantoms, not on patients; the published figures "
    "are from the JSUM reports on clinical images, so the comparison shows whether the engines "
    "reach the published level on the synthetic task, nothing more.", "",
    "ROI rows score the classifier on ground-truth lesion boxes, as the published classifiers "
    "were scored; the detector + classifier rows score the classes of the lesions the detector "
    "found (IoU >= 0.25). Cine clips (one lesion each) are scored twice. The ROI rows vote the "
    "classifier (3 of 5 sampled frames) on the lesion's ground-truth boxes: the published cine "
    "figure is the classification report's, whose network classifies a lesion ROI cropped from "
    "the image. The detector + tracking rows score the class the engine voted for the track "
    "that follows the lesion, so they also need the detector to find and track it: a clip whose "
    "lesion was not tracked counts as wrong. No published figure covers that chain. 25 % of the "
    "images are passed without ultrasound regions, so the "
    "engine finds the scan area from the pixels.", "",
    "Ground truth holds the lesions a sonographer could see on the rendered frame (Rose index "
    ">= 4 against the tissue around the lesion and against the frame rendered without it, "
    "docs/dataset-card.md); lesions hidden under a rib shadow, in a blown-out region or too "
    "faint for their size are not counted (reports before 2026-11-25 23:00 UTC counted some "
    "of them). On cine the engine uses the track score of its detector card, chosen by "
    "`us-ai-train cine-vote` on validation clips (seeds 9,500 and up), never on these.", "",
    "Each lesion section ends with the same engine on held-out images and cine clips of a "
    "second generator (inference/phantoms/imagedomain.py; images from seed 21,000,000 for "
    "the liver and 22,000,000 for the breast, clips from 23,000,000 and 24,000,000), "
    "written apart from the first to draw the same published appearances another way: the "
    "engines will be judged on images from a generator they never saw. Training caches of "
    "that generator use seeds from 20,000,000 and hold stills only (docs/dataset-card.md). "
    "The cardiac section likewise ends with held-out apical four-chamber cines of that "
    "generator (inference/phantoms/imagedomain_echo.py, seeds from 26,000,000); it says "
    "whether the U-Net was trained on other cines of it (seeds from 27,000,000). The lesion "
    "sections close with images of two generators written by someone who had read none of "
    "the others: the pulse-echo generator (inference/phantoms/pulse_echo.py; liver from "
    "seed 31,000,000, breast from 32,000,000) and the volume-slice generator "
    "(inference/phantoms/volume_slice.py; liver from 33,000,000, breast from 34,000,000). "
    "No training, tuning or choice of weights used these images or any of the volume-slice "
    "generator; each section says whether its detector was trained on other images of the "
    "pulse-echo generator (training seeds 30,000,000-30,999,999).",
    "",
]
"""Opening of the report."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="us-ai-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--organs", nargs="*", default=["liver", "breast"],
                        choices=["liver", "breast"])
    parser.add_argument("--images", type=int, default=400, help="held-out images per organ")
    parser.add_argument("--clips", type=int, default=40, help="held-out cine clips per organ")
    parser.add_argument("--perturbed-images", type=int, default=150,
                        help="held-out images also scored changed as other scanners would")
    parser.add_argument("--second-images", type=int, default=150,
                        help="held-out images per organ from the image-domain generator")
    parser.add_argument("--second-clips", type=int, default=60,
                        help="held-out cine clips per organ from the image-domain generator")
    parser.add_argument("--independent-images", "--unseen-images", type=int, default=200,
                        dest="independent_images",
                        help="images per organ from each independent generator")
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=Path("docs/evaluation.md"))
    parser.add_argument("--cardiac", action="store_true",
                        help="(re)compute the cardiac section (needs inference.evaluation.cardiac)")
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate the chosen organs, then assemble the report from all organ sections.

    Each organ's section (with the command that produced it) is kept in
    ``<plot dir>/<organ>.md``, so organs can be evaluated in separate runs.
    The classifiers' cross-validation is read from their weights cards.
    """
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    plot_dir = args.output.parent / "evaluation"
    plot_dir.mkdir(parents=True, exist_ok=True)
    command = "us-ai-evaluate " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    for organ in args.organs:
        started = time.time()
        ev = evaluate_organ(organ, args.images, args.clips, args.weights_dir,
                            n_perturbed=args.perturbed_images, n_second=args.second_images,
                            n_second_clips=args.second_clips,
                            n_independent=args.independent_images)
        section = organ_section(ev, plot_dir, plot_dir.name)
        note = (f"Produced by `{command}` in {time.time() - started:.0f} s "
                f"({args.threads} CPU thread{'s' if args.threads > 1 else ''}); held-out images "
                f"from seed {FIRST_SEEDS[organ][0]}, "
                f"clips from seed {FIRST_SEEDS[organ][1]}.")
        (plot_dir / f"{organ}.md").write_text(section.replace("\n\n", f"\n\n{note}\n\n", 1))
        logger.info("organ_evaluated", organ=organ, detection=ev.detection,
                    roi=ev.summary("roi"), clip=ev.summary("clip"))
    if args.cardiac and importlib.util.find_spec("inference.evaluation.cardiac"):
        cardiac = importlib.import_module("inference.evaluation.cardiac")
        (plot_dir / "cardiac.md").write_text(cardiac.section(plot_dir, False))
    sections = [(plot_dir / f"{name}.md").read_text() for name in ("liver", "breast", "cardiac")
                if (plot_dir / f"{name}.md").exists()]
    weights_dir = args.weights_dir or WEIGHTS_DIR
    cards = {organ: read_card(weights_dir / f"{organ}_classifier.pt")
             for organ in ("liver", "breast")
             if (weights_dir / f"{organ}_classifier.json").exists()}
    report = [*HEADER, *sections, *cross_validation_lines(cards)]
    args.output.write_text("\n".join(report) + "\n")
    logger.info("report_written", path=str(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
