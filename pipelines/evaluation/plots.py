"""PNG plots drawn from the metrics of :func:`pipelines.evaluation.report.evaluate_cases`.

The only module that imports matplotlib, with the non-interactive Agg backend (no display on
servers and CI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def plot_all(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """``froc.png``, ``roc.png`` and ``reliability.png`` in ``out_dir``; returns their paths."""
    paths = [out_dir / "froc.png", out_dir / "roc.png", out_dir / "reliability.png"]
    figures = [plot_froc(metrics["detection"]), plot_roc(metrics["study"])]
    figures.append(plot_reliability(metrics["calibration"]))
    for figure, path in zip(figures, paths, strict=True):
        figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(figure)
    return paths


def _value(interval: dict[str, float | None]) -> str:
    value = interval["value"]
    return "n/a" if value is None else f"{value:.3f}"


def plot_froc(detection: dict[str, Any]) -> Figure:
    """FROC curve on a log2 FP axis, the sensitivities at the FP rates marked, CPM in the title."""
    figure, axes = plt.subplots(figsize=(5, 4))
    curve = detection["froc_curve"]
    points = [
        (x, y)
        for x, y in zip(curve["fps_per_scan"], curve["sensitivity"], strict=True)
        if x and y is not None
    ]
    if points:
        axes.plot(*zip(*points, strict=True), color="tab:blue", label="FROC")
    rates = [(float(r), ci) for r, ci in detection["sensitivity_at_fp_rate"].items()]
    marked = [(r, ci["value"]) for r, ci in rates if ci["value"] is not None]
    if marked:
        axes.plot(*zip(*marked, strict=True), "o", color="tab:orange", label="operating rates")
    axes.set_xscale("log", base=2)
    axes.set_xlim(rates[0][0] / 2, rates[-1][0] * 2)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("false positives per scan")
    axes.set_ylabel("lesion sensitivity")
    axes.set_title(f"FROC (CPM {_value(detection['cpm'])})")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    return figure


def plot_roc(study: dict[str, Any]) -> Figure:
    """Study-level ROC curve with its AUC, and the chance diagonal."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    curve = study["roc_curve"]
    if None not in curve["fpr"] and None not in curve["tpr"]:
        axes.plot(curve["fpr"], curve["tpr"], color="tab:blue", label=f"AUC {_value(study['auc'])}")
    axes.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    axes.set_xlabel("1 - specificity")
    axes.set_ylabel("sensitivity")
    axes.set_title("Study-level ROC")
    axes.legend(loc="lower right")
    return figure


def plot_reliability(calibration: dict[str, Any]) -> Figure:
    """Reliability diagrams of study probabilities and finding confidences, side by side."""
    figure, panels = plt.subplots(1, 2, figsize=(9, 4.2))
    for axes, key, title in zip(panels, ("study", "findings"), ("Study", "Findings"), strict=True):
        block = calibration[key]
        filled = [b for b in block["reliability"] if b["count"]]
        width = 1.0 / calibration["n_bins"]
        axes.bar(
            [b["bin_low"] for b in filled],
            [b["fraction_positive"] for b in filled],
            width=width,
            align="edge",
            edgecolor="black",
            alpha=0.7,
            label="fraction positive",
        )
        axes.plot(
            [b["mean_probability"] for b in filled],
            [b["fraction_positive"] for b in filled],
            "o",
            color="tab:red",
            label="bin mean",
        )
        axes.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_xlabel("predicted probability")
        axes.set_ylabel("observed fraction positive")
        axes.set_title(f"{title}: ECE {_value(block['ece'])}, n = {block['n_samples']}")
        axes.legend(loc="upper left")
    return figure
