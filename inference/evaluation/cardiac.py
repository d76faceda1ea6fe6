"""Evaluate the cardiac engine on held-out phantom echo cines.

The held-out cines come from a seed the training never uses; each is
analysed twice: with its Sequence of Ultrasound Regions (scan area and pixel
size known: EF and volumes) and without (scan area found in the pixels, no
calibration: EF only).  The report gets the EF mean absolute error, a
Bland-Altman analysis (bias and 95 % limits of agreement) and its plot, and
the EDV/ESV errors in ml.  The first cines are also measured changed the way
other scanners differ (:mod:`inference.evaluation.robustness`).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import structlog
from matplotlib.figure import Figure

from inference.engines.base import ImageInput
from inference.engines.cardiac import DEFAULT_WEIGHTS_DIR, WEIGHTS_NAME, CardiacEngine
from inference.engines.model_card import read_card
from inference.evaluation.robustness import PERTURBATIONS, UNCHANGED, perturb
from inference.evaluation.view import evaluate_view, view_markdown
from inference.findings import BoundingBox
from inference.geometry import ImageGeometry
from inference.phantoms.echo import EchoCine, random_echo_spec, render_echo
from inference.phantoms.imagedomain_echo import generate_image_domain_echo

logger = structlog.get_logger(__name__)

EVAL_SEED = 90210
"""Seed of the held-out cines (training uses other seeds)."""

SECOND_GENERATOR_SEED = 26_000_000
"""First seed of the second generator's held-out cines (its training cines start at
27,000,000, :data:`inference.training.cardiac.IMAGE_DOMAIN_FIRST_SEED`)."""

TARGET_EF_MAE = 5.0
"""EF mean absolute error (points) the engine must reach on the held-out set."""

FIGURE_NAME = "cardiac_ef_bland_altman.png"
"""File name of the Bland-Altman figure in the output directory."""


@dataclass(frozen=True)
class CineOutcome:
    """Truth and engine output for one held-out cine."""

    index: int
    ef_true: float
    edv_true: float
    esv_true: float
    ef: float | None
    edv: float | None
    esv: float | None
    ef_no_regions: float | None
    detail: str = ""


def heldout_cine(index: int, seed: int = EVAL_SEED,
                 size: tuple[int, int] | None = None) -> EchoCine:
    """Render held-out cine number ``index``.

    Parameters
    ----------
    index:
        Cine number (each has its own seed derived from ``seed``).
    seed:
        Seed of the held-out set.
    size:
        ``(rows, cols)``, random when ``None``.

    Returns
    -------
    EchoCine
        Frames and ground truth.
    """
    rng = np.random.default_rng([seed, index])
    return render_echo(random_echo_spec(rng, size=size))


def image_input(cine: EchoCine, *, regions: bool = True, uid: str = "1.2.3") -> ImageInput:
    """The engine input of a phantom cine, with or without its region geometry."""
    x0, y0, x1, y1 = cine.scan_box
    geometry = (ImageGeometry(pixel_size_mm=(cine.pixel_mm, cine.pixel_mm),
                              scan_area=BoundingBox(x0, y0, x1, y1))
                if regions else ImageGeometry(pixel_size_mm=None, scan_area=None))
    return ImageInput(sop_instance_uid=uid, frames=cine.frames, geometry=geometry,
                      frame_time_ms=cine.frame_time_ms)


def _measure(engine: CardiacEngine, cine: EchoCine, index: int) -> CineOutcome:
    edv_true, esv_true = float(cine.volumes_ml.max()), float(cine.volumes_ml.min())
    with_regions = engine.run(image_input(cine, regions=True, uid=f"2.25.{index + 1}"))
    without = engine.run(image_input(cine, regions=False, uid=f"2.25.{index + 1}"))
    found = with_regions.cardiac[0] if with_regions.cardiac else None
    bare = without.cardiac[0] if without.cardiac else None
    detail = "; ".join(r.not_assessed.detail for r in (with_regions, without)
                       if r.not_assessed is not None)
    return CineOutcome(
        index=index, ef_true=cine.ejection_fraction, edv_true=edv_true, esv_true=esv_true,
        ef=found.ejection_fraction_percent if found else None,
        edv=found.end_diastolic_volume_ml if found else None,
        esv=found.end_systolic_volume_ml if found else None,
        ef_no_regions=bare.ejection_fraction_percent if bare else None,
        detail=detail,
    )


def robustness(engine: CardiacEngine, cines: list[EchoCine], seed: int
               ) -> dict[str, dict[str, float]]:
    """EF MAE and cines assessed, unchanged and under each perturbation.

    Every frame of each cine is changed by each of
    :data:`~inference.evaluation.robustness.PERTURBATIONS` (noise seeded by
    ``seed`` and the cine's number) and measured with its regions.

    Returns
    -------
    dict
        Per perturbation name (first
        :data:`~inference.evaluation.robustness.UNCHANGED`): ``ef_mae`` over
        the assessed cines, ``assessed`` (their count) and ``cines``.
    """
    out = {}
    for change in (UNCHANGED, *PERTURBATIONS):
        errors = []
        for index, cine in enumerate(cines):
            frames = cine.frames if change == UNCHANGED else perturb(cine.frames, change,
                                                                     seed + index)
            result = engine.run(image_input(replace(cine, frames=frames),
                                            uid=f"2.25.{index + 1}"))
            if result.cardiac:
                errors.append(abs(result.cardiac[0].ejection_fraction_percent
                                  - cine.ejection_fraction))
        out[change] = {"ef_mae": float(np.mean(errors)) if errors else float("nan"),
                       "assessed": len(errors), "cines": len(cines)}
        logger.info("cardiac_perturbation_evaluated", change=change, **out[change])
    return out


def agreement(truth: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """MAE, bias, SD of the differences, 95 % limits of agreement, RMSE and r.

    Parameters
    ----------
    truth, measured:
        Paired values.

    Returns
    -------
    dict
        ``mae``, ``bias``, ``sd``, ``loa_low``, ``loa_high``, ``rmse``, ``r``.
    """
    diff = measured - truth
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    bias = float(diff.mean()) if len(diff) else float("nan")
    r = float(np.corrcoef(truth, measured)[0, 1]) if len(diff) > 2 else float("nan")
    return {
        "mae": float(np.abs(diff).mean()) if len(diff) else float("nan"),
        "bias": bias,
        "sd": sd,
        "loa_low": bias - 1.96 * sd,
        "loa_high": bias + 1.96 * sd,
        "rmse": float(np.sqrt((diff**2).mean())) if len(diff) else float("nan"),
        "r": r,
    }


def plot_bland_altman(path: Path, truth: np.ndarray, measured: np.ndarray,
                      stats: dict[str, float], title: str) -> None:
    """Scatter (measured vs true) and Bland-Altman plot of the EF, as a PNG."""
    fig = Figure(figsize=(10, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter(truth, measured, s=18)
    ax1.plot([10, 80], [10, 80], "k--", lw=1)
    ax1.set(xlabel="True EF (%)", ylabel="Engine EF (%)", xlim=(10, 80), ylim=(10, 80),
            title=f"EF, MAE {stats['mae']:.1f} points, r={stats['r']:.2f}")
    mean = (truth + measured) / 2.0
    ax2.scatter(mean, measured - truth, s=18)
    for value, style in ((stats["bias"], "-"), (stats["loa_low"], "--"),
                         (stats["loa_high"], "--")):
        ax2.axhline(value, color="k", ls=style, lw=1)
    ax2.set(xlabel="Mean of true and engine EF (%)", ylabel="Engine - true EF (points)",
            title=f"Bland-Altman: bias {stats['bias']:+.1f}, "
                  f"LoA {stats['loa_low']:+.1f} / {stats['loa_high']:+.1f}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summarise(outcomes: list[CineOutcome]) -> dict[str, float]:
    """EF agreement with and without regions, and the volume errors, of measured cines.

    Parameters
    ----------
    outcomes:
        Truth and engine output per cine.

    Returns
    -------
    dict
        ``n_cines``, ``n_assessed``, ``ef_*`` (see :func:`agreement`),
        ``ef_mae_no_regions``, ``n_assessed_no_regions``, ``edv_mae_ml``,
        ``edv_bias_ml``, ``esv_mae_ml`` and ``esv_bias_ml``.
    """
    measured = [o for o in outcomes if o.ef is not None]
    stats = agreement(np.array([o.ef_true for o in measured]),
                      np.array([o.ef for o in measured], dtype=float))
    bare = [o for o in outcomes if o.ef_no_regions is not None]
    bare_stats = agreement(np.array([o.ef_true for o in bare]),
                           np.array([o.ef_no_regions for o in bare], dtype=float))
    edv = agreement(np.array([o.edv_true for o in measured]),
                    np.array([o.edv for o in measured], dtype=float))
    esv = agreement(np.array([o.esv_true for o in measured]),
                    np.array([o.esv for o in measured], dtype=float))
    return {
        "n_cines": len(outcomes),
        "n_assessed": len(measured),
        **{f"ef_{name}": value for name, value in stats.items()},
        "ef_mae_no_regions": bare_stats["mae"],
        "n_assessed_no_regions": len(bare),
        "edv_mae_ml": edv["mae"],
        "edv_bias_ml": edv["bias"],
        "esv_mae_ml": esv["mae"],
        "esv_bias_ml": esv["bias"],
    }


def evaluate(output_dir: Path, *, n_cines: int = 40, seed: int = EVAL_SEED,
             weights_dir: Path | None = None, size: tuple[int, int] | None = None,
             n_perturbed: int = 0, n_second: int = 0) -> dict[str, object]:
    """Run the cardiac engine on held-out phantom cines and write the report files.

    Parameters
    ----------
    output_dir:
        Where ``cardiac_metrics.json``, ``cardiac_cines.csv`` (and
        ``cardiac_second_cines.csv``) and the Bland-Altman figure are written.
    n_cines:
        Number of held-out cines.
    seed:
        Seed of the held-out set.
    weights_dir:
        Weights to evaluate (the shipped ones when ``None``).
    size:
        Fixed ``(rows, cols)`` of the cines, random when ``None``.
    n_perturbed:
        The first ``n_perturbed`` cines are also measured changed (see
        :func:`robustness`).
    n_second:
        Cines of the second generator (:mod:`inference.phantoms.imagedomain_echo`,
        seeds from :data:`SECOND_GENERATOR_SEED`) measured as well.

    Returns
    -------
    dict
        The metrics of :func:`summarise`, the target, the path of the plot
        (``figure``), ``robustness``, ``second_generator`` (the metrics of
        :func:`summarise` for the second generator's cines, empty without them) and
        ``second_generator_training_clips`` and
        ``second_generator_training_first_seed`` (how many of that generator's
        cines, other than these, the weights were trained on, and the first of
        their seeds, from their card).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    engine = CardiacEngine(weights_dir)
    outcomes = []
    kept = []
    for index in range(n_cines):
        cine = heldout_cine(index, seed, size)
        if index < n_perturbed:
            kept.append(cine)
        outcome = _measure(engine, cine, index)
        outcomes.append(outcome)
        logger.info("cine_evaluated", index=index, ef_true=round(outcome.ef_true, 1),
                    ef=outcome.ef, ef_no_regions=outcome.ef_no_regions)
    _write_csv(output_dir / "cardiac_cines.csv", outcomes)
    summary = summarise(outcomes)
    measured = [o for o in outcomes if o.ef is not None]
    truth = np.array([o.ef_true for o in measured])
    ef = np.array([o.ef for o in measured], dtype=float)
    figure = output_dir / FIGURE_NAME
    plot_bland_altman(figure, truth, ef, agreement(truth, ef),
                      f"Cardiac engine on {len(measured)} held-out phantom cines (seed {seed})")
    second = [_measure(engine, generate_image_domain_echo(SECOND_GENERATOR_SEED + index), index)
              for index in range(n_second)]
    card_data = read_card((weights_dir or DEFAULT_WEIGHTS_DIR) / WEIGHTS_NAME)["data"]
    if second:
        _write_csv(output_dir / "cardiac_second_cines.csv", second)
    metrics: dict[str, object] = {
        **summary,
        "target_ef_mae": TARGET_EF_MAE,
        "meets_target": bool(summary["ef_mae"] <= TARGET_EF_MAE),
        "seed": seed,
        "weights_sha256": engine.algorithm.weights_sha256,
        "figure": str(figure),
        "robustness": robustness(engine, kept, seed) if kept else {},
        "second_generator": summarise(second) if second else {},
        "second_generator_training_clips": int(card_data.get("image_domain_clips", 0)),
        "second_generator_training_first_seed": int(card_data.get("image_domain_first_seed", 0)),
    }
    (output_dir / "cardiac_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("cardiac_evaluated", ef_mae=round(summary["ef_mae"], 2), n=len(measured))
    return metrics


def _write_csv(path: Path, outcomes: list[CineOutcome]) -> None:
    fields = list(CineOutcome.__dataclass_fields__)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for outcome in outcomes:
            writer.writerow({f: getattr(outcome, f) for f in fields})


def section(plot_dir: Path, quick: bool) -> str:
    """Markdown section of the evaluation report: EF agreement and the view classifier.

    Called by ``us-ai-evaluate`` (:mod:`inference.evaluation.cli`).

    Parameters
    ----------
    plot_dir:
        Directory of the report's figures (its name is the link prefix).
    quick:
        Few cines and images (a smoke run) instead of the full held-out set.

    Returns
    -------
    str
        The section, with the Bland-Altman figure linked.
    """
    started = time.time()
    n_cines, n_view, n_perturbed = (8, 10, 2) if quick else (40, 60, 20)
    m = evaluate(plot_dir, n_cines=n_cines, n_perturbed=n_perturbed, n_second=n_cines)
    view = evaluate_view(n_view)
    lines = [
        "## Cardiac: LV ejection fraction (apical four-chamber cine)", "",
        f"{m['n_cines']} held-out phantom cines (seed {m['seed']}, EF 15-75 %, 1.2-2 beats, "
        "random depth, gain, dynamic range, frequency, heart rate and size); single-plane "
        "method of discs on the U-Net's LV masks, ED/ES = largest/smallest volume after a "
        "3-frame running median. "
        f"{m['n_assessed']} of {m['n_cines']} cines assessed with regions, "
        f"{m['n_assessed_no_regions']} without. Evaluated in {time.time() - started:.0f} s.", "",
        "| Measure | Value |", "|---|---|",
        f"| EF mean absolute error (target <= {TARGET_EF_MAE:.0f} points) | "
        f"{m['ef_mae']:.2f} {'(meets target)' if m['meets_target'] else '(**misses target**)'} |",
        f"| EF bias (engine - truth) | {m['ef_bias']:+.2f} |",
        f"| EF 95 % limits of agreement | {m['ef_loa_low']:+.2f} / {m['ef_loa_high']:+.2f} |",
        f"| EF RMSE / Pearson r | {m['ef_rmse']:.2f} / {m['ef_r']:.3f} |",
        f"| EF MAE without regions (scan area from pixels, uncalibrated) | "
        f"{m['ef_mae_no_regions']:.2f} |",
        f"| EDV MAE / bias (ml) | {m['edv_mae_ml']:.1f} / {m['edv_bias_ml']:+.1f} |",
        f"| ESV MAE / bias (ml) | {m['esv_mae_ml']:.1f} / {m['esv_bias_ml']:+.1f} |",
        "", "No published EF figures exist for the JSUM cardiac programme; EF MAE <= 5 points "
        "is this project's target.", "",
        f"![EF Bland-Altman]({plot_dir.name}/{FIGURE_NAME})", "",
        *second_generator_markdown(
            m["second_generator"],  # type: ignore[arg-type]
            m["second_generator_training_clips"],  # type: ignore[arg-type]
            m["second_generator_training_first_seed"]),  # type: ignore[arg-type]
        *robustness_markdown(m["robustness"]),  # type: ignore[arg-type]
        *view_markdown(view),
    ]
    return "\n".join(lines)


def second_generator_markdown(m: dict[str, float], training_clips: int = 0,
                              training_first_seed: int = 0) -> list[str]:
    """The report's table of the second generator's cines (empty without any).

    ``training_clips`` is the number of that generator's other cines the
    weights were trained on and ``training_first_seed`` the first of their
    seeds (their card's ``image_domain_clips`` and ``image_domain_first_seed``).
    """
    if not m:
        return []
    trained = (f"the U-Net was also trained on {training_clips} other cines of this generator "
               f"(seeds from {training_first_seed:,}), never on these" if training_clips
               else "no network was trained on its cines")
    return [
        f"The same engine on {m['n_cines']:.0f} held-out cines of the second generator "
        "(inference/phantoms/imagedomain_echo.py, seeds from "
        f"{SECOND_GENERATOR_SEED:,}): the heart drawn on the display grid, another cavity "
        f"profile and volume cycle, speckle filtered on the display grid; {trained}. "
        f"{m['n_assessed']:.0f} assessed with regions, "
        f"{m['n_assessed_no_regions']:.0f} without.", "",
        "| Measure | Value |", "|---|---|",
        f"| EF mean absolute error | {m['ef_mae']:.2f} |",
        f"| EF bias / 95 % limits of agreement | {m['ef_bias']:+.2f} / "
        f"{m['ef_loa_low']:+.2f} to {m['ef_loa_high']:+.2f} |",
        f"| EF MAE without regions | {m['ef_mae_no_regions']:.2f} |",
        f"| EDV MAE / bias (ml) | {m['edv_mae_ml']:.1f} / {m['edv_bias_ml']:+.1f} |",
        f"| ESV MAE / bias (ml) | {m['esv_mae_ml']:.1f} / {m['esv_bias_ml']:+.1f} |", "",
    ]


def robustness_markdown(changes: dict[str, dict[str, float]]) -> list[str]:
    """The report's table of EF under the perturbations (empty without any)."""
    if not changes:
        return []
    n = changes[UNCHANGED]["cines"]
    lines = [f"EF on the first {n:.0f} held-out cines, with regions, as they are and changed the "
             "way other scanners and generators differ (inference/evaluation/robustness.py):",
             "", "| Cines | EF MAE (points) | Assessed |", "|---|---|---|"]
    for change, m in changes.items():
        lines.append(f"| {change} | {m['ef_mae']:.2f} | {m['assessed']:.0f} of {n:.0f} |")
    return [*lines, ""]
