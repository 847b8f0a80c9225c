"""Render a model card from the files a release ships: never typed by hand, never stale.

Sections follow "Model Cards for Model Reporting" (Mitchell et al., 2019) as far as a
synthetic-data reference model can fill them: intended use, model, training data and procedure,
evaluation with 95 % confidence intervals and subgroups, calibration and operating point, the
release targets with met / not met, known limitations, and file checksums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.bundle import Bundle, preprocessing_hash

#: The reference model's release targets on the locked test split (issues 4 and 14).
TARGETS: tuple[tuple[str, tuple[str, ...], str, float], ...] = (
    ("CPM", ("detection", "cpm", "value"), ">=", 0.85),
    (
        "Sensitivity at 1 FP/scan, nodules >= 6 mm",
        ("subgroups", "lesion_size_target", ">=6 mm", "sensitivity_at_fp_rate", "1", "value"),
        ">=",
        0.95,
    ),
    (
        "Sensitivity at 1 FP/scan, nodules 3-6 mm",
        ("subgroups", "lesion_size_target", "<6 mm", "sensitivity_at_fp_rate", "1", "value"),
        ">=",
        0.70,
    ),
    ("Study ROC AUC", ("study", "auc", "value"), ">=", 0.95),
    ("Study ECE", ("calibration", "study", "ece", "value"), "<=", 0.05),
    ("Finding ECE", ("calibration", "findings", "ece", "value"), "<=", 0.05),
    ("Findings on a lesion-free study (median)", ("lesion_free", "findings_median"), "<=", 1.0),
    ("Diameter error (median absolute, mm)", ("sizing", "median_abs_error_mm"), "<=", 1.5),
)


@dataclass(frozen=True)
class CardInputs:
    """What the card is rendered from (the release folder's files, parsed)."""

    bundle: Bundle
    metrics: Mapping[str, Any]
    calibration: Mapping[str, Any]
    history: Sequence[Mapping[str, float]]
    weights_sha256: str
    limitations: str = ""
    trained_on: str = ""
    #: ``model.export.json`` (the variants timed at export and the CPU they were timed on).
    export_report: Mapping[str, Any] | None = None


def render_model_card(card: CardInputs) -> str:
    """The Markdown model card."""
    b = card.bundle
    parts = [
        f"# Model card: {b.name} {b.version}\n\n{b.description.strip()}\n",
        _intended_use(b),
        _model(b, card.weights_sha256),
        _training(card),
        _evaluation(card.metrics),
        _calibration(card.calibration, card.metrics),
        _targets(card.metrics),
        _performance(card.export_report),
        "## Known limitations\n\n" + (card.limitations.strip() or "None recorded.") + "\n",
    ]
    return "\n".join(parts)


def interval(value: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``0.873 (95 % CI 0.801–0.930)``; ``n/a`` for an undefined metric."""
    if not value or value.get("value") is None:
        return "n/a"
    text = f"{value['value']:.{digits}f}"
    if value.get("ci_low") is not None and value.get("ci_high") is not None:
        text += f" (95 % CI {value['ci_low']:.{digits}f}–{value['ci_high']:.{digits}f})"
    return text


def _get(data: Mapping[str, Any], path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    return data


def _intended_use(b: Bundle) -> str:
    use = b.intended_use
    low, high = use.slice_thickness_mm
    return (
        "## Intended use\n\n"
        f"- **Input:** adult {use.body_part.lower()} {use.modality}, axial, slice thickness "
        f"{low:g}–{high:g} mm, at least {use.min_slices} slices. Studies outside this are "
        "reported `not_analysable` with a reason and are never scored.\n"
        "- **Output:** candidate lung nodules (centre, diameter, volume, calibrated confidence) "
        "and the probability that the study holds a nodule, as decision support for a "
        "radiologist who reviews every finding. Not for use without that review.\n"
        "- **Users:** radiologists through the review interface; researchers.\n"
    )


def _model(b: Bundle, weights_sha256: str) -> str:
    p = b.preprocess
    return (
        "## Model\n\n"
        f"- Network: `{b.network.name}`{f' {dict(b.network.kwargs)}' if b.network.kwargs else ''} "
        "(MONAI), patch "
        f"{'×'.join(map(str, b.patch_size_kji))} voxels (k, j, i).\n"
        f"- Preprocessing: orientation {p.orientation}, spacing {tuple(p.target_spacing_mm)} mm "
        f"(i, j, k), window {tuple(p.window_hu)} HU, crop `{p.crop}`; contract hash "
        f"`{preprocessing_hash(b)[:16]}`.\n"
        f"- Inference: sliding window {'×'.join(map(str, b.inference.roi_size_kji))}, overlap "
        f"{b.inference.overlap}, {b.inference.blend} blending; findings at probability ≥ "
        f"{b.findings.threshold}, diameter ≥ {b.findings.min_diameter_mm} mm.\n"
        f"- Weights: `model.pt`, sha256 `{weights_sha256}`.\n"
    )


def _performance(report: Mapping[str, Any] | None) -> str:
    """The CPU the export timed the ONNX variants on, and those times: speed depends on the CPU
    (its instruction sets above all), so every figure names it; the engine that serves a host is
    chosen by timing on that host."""
    head = (
        "## Performance\n\n"
        "Speed depends on the CPU, above all on its instruction sets (AVX2, AVX-512, VNNI, AMX). "
        "The engine that serves a host (torch or ONNX Runtime, execution provider, threads) is "
        "chosen by timing them on that host (`basira models tune`, docs/operations.md), and each "
        "result JSON names the CPU and the engine that ran (`runtime`).\n\n"
    )
    cpu = (report or {}).get("cpu")
    variants = [v for v in (report or {}).get("variants", []) if v.get("seconds_median")]
    if cpu is None or not variants:
        return head + "No timing was recorded at export.\n"
    isa = " ".join(cpu.get("isa", [])) or "no AVX2/AVX-512"
    lines = [
        f"ONNX Runtime variants timed at export on {cpu['model']}, {cpu['logical_cpus']} CPUs, "
        f"{isa} (one window batch, median):\n",
        "| variant | seconds | × baseline | kept |",
        "|---|---|---|---|",
    ]
    for v in variants:
        speedup = f"{v['speedup']:.2f}" if v.get("speedup") is not None else "–"
        lines.append(
            f"| {v['precision']}/{v['graph_optimization']} | {v['seconds_median']:.3f} | "
            f"{speedup} | {'yes' if v.get('kept') else 'no'} |"
        )
    return head + "\n".join(lines) + "\n"


def _training(card: CardInputs) -> str:
    history = card.history
    t = card.bundle.training
    seconds = sum(float(e.get("epoch_seconds", 0.0)) for e in history)
    rates = [float(e["patches_per_s"]) for e in history if "patches_per_s" in e]
    validated = [e for e in history if "cpm" in e]
    best = max(validated, key=lambda e: e["cpm"]) if validated else None
    lines = [
        "## Training\n",
        "- Data: the project's synthetic chest-CT generator (`basira synth`, `dvc repro`); "
        "patient-level train/validation split (`params.yaml`). No real patient data.",
        f"- Recipe: {t.loss} loss, lr {t.lr:g}, {t.batch_size} case(s) × "
        f"{t.patches_per_case} patches per step ({t.positive_fraction:.0%} centred on a lesion, "
        f"{t.hard_negative_fraction:.0%} of the rest on vessels, hila and pleura), "
        + (f"output prior {t.output_prior:g}, " if t.output_prior is not None else "")
        + f"seed {t.seed}.",
        f"- Ran {len(history)} epoch(s) in {seconds / 60:.1f} min"
        + (f", {sum(rates) / len(rates):.2f} patches/s on average" if rates else "")
        + (f", on {card.trained_on}" if card.trained_on else "")
        + ".",
    ]
    if best is not None:
        lines.append(
            f"- Best validation CPM {best['cpm']:.3f} at epoch {int(best['epoch'])} "
            "(these weights)."
        )
    return "\n".join(lines) + "\n"


def _evaluation(m: Mapping[str, Any]) -> str:
    det, study = m.get("detection") or {}, m.get("study") or {}
    threshold = study.get("threshold")
    op = f" (probability ≥ {threshold:.3f})" if isinstance(threshold, float) else ""
    rows = [
        ("CPM (mean sensitivity at 1/8–8 FP/scan)", interval(det.get("cpm"))),
        *(
            (f"Sensitivity at {rate} FP/scan", interval(value))
            for rate, value in (det.get("sensitivity_at_fp_rate") or {}).items()
        ),
        ("Lesion sensitivity (any finding)", interval(det.get("lesion_sensitivity"))),
        ("Study ROC AUC", interval(study.get("auc"))),
        (
            f"Study sensitivity at the operating point{op}",
            interval(study.get("sensitivity")),
        ),
        (
            f"Study specificity at the operating point{op}",
            interval(study.get("specificity")),
        ),
        ("Dice (mean over cases with lesions)", interval(_get(m, ("segmentation", "dice_mean")))),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        "## Evaluation on the locked test split\n\n"
        f"{m.get('n_cases')} held-out synthetic studies generated with another seed "
        f"({m.get('n_positive_cases')} with lesions, {m.get('n_lesions')} lesions). Intervals "
        "are case-bootstrap 95 % CIs.\n\n| metric | value |\n|---|---|\n"
        f"{table}\n\n{_subgroups(m)}"
    )


def _subgroups(m: Mapping[str, Any]) -> str:
    lines = [
        "| subgroup | lesions | sensitivity at 1 FP/scan | lesion sensitivity | CPM |",
        "|---|---|---|---|---|",
    ]
    for family, groups in (m.get("subgroups") or {}).items():
        for name, group in groups.items():
            at_one = _get(group, ("sensitivity_at_fp_rate", "1"))
            lines.append(
                f"| {family.replace('_', ' ')}: {name} | {group.get('n_lesions', '')} | "
                f"{interval(at_one)} | {interval(group.get('lesion_sensitivity'))} | "
                f"{interval(group.get('cpm'))} |"
            )
    return "Subgroups:\n\n" + "\n".join(lines) + "\n\n" + _reported(m)


def _reported(m: Mapping[str, Any]) -> str:
    """What a radiologist sees: findings on lesion-free studies, and how well sizes hold."""
    free = m.get("lesion_free") or {}
    sizing = m.get("sizing") or {}
    lines = []
    if free.get("n_cases"):
        lines.append(
            f"- Lesion-free studies ({free['n_cases']}): {free['findings_median']:g} findings "
            f"reported at the median, {free['findings_mean']:.2f} on average; "
            f"{free['share_with_a_finding']:.0%} show at least one."
        )
    if sizing.get("n_lesions"):
        by_size = "; ".join(
            f"{name} {v['median_abs_error_mm']:.2f} mm (n={v['n']})"
            for name, v in (sizing.get("by_size") or {}).items()
            if v.get("n")
        )
        lines.append(
            f"- Diameter from the segmentation against the truth's mask, over the "
            f"{sizing['n_lesions']} lesions found: median absolute error "
            f"{sizing['median_abs_error_mm']:.2f} mm, mean error {sizing['mean_error_mm']:+.2f} mm"
            f" ({by_size})."
        )
    return ("\n".join(lines) + "\n") if lines else ""


def _calibration(c: Mapping[str, Any], m: Mapping[str, Any]) -> str:
    op = c.get("operating_point") or {}
    fitted = c.get("fitted_on") or {}
    combine = c.get("study_score", "max")
    how = "the best finding's score" if combine == "max" else "a noisy-OR of every finding"
    return (
        "## Calibration and operating point\n\n"
        f"- Method: {c.get('method')}, fitted on the `{fitted.get('split')}` split "
        f"({fitted.get('n_cases')} studies, {fitted.get('n_findings')} findings).\n"
        f"- Study score: {how} (`{combine}`), the better study AUC on that split.\n"
        f"- Operating point: study probability ≥ {op.get('threshold', float('nan')):.3f}, chosen "
        f"for sensitivity ≥ {op.get('target_sensitivity')} on that split (achieved "
        f"{op.get('sensitivity')}, specificity {op.get('specificity')}).\n\n" + _reliability(m)
    )


def _reliability(m: Mapping[str, Any]) -> str:
    """The reliability diagrams of the test split as tables: per probability bin, how many,
    the mean predicted probability and the share that were right."""
    parts = []
    for name, key in (("Study probability", "study"), ("Finding confidence", "findings")):
        block = _get(m, ("calibration", key)) or {}
        bins = [b for b in block.get("reliability") or [] if b.get("count")]
        if not bins:
            continue
        rows = "\n".join(
            f"| {b['bin_low']:.1f}–{b['bin_high']:.1f} | {b['count']} | "
            f"{b['mean_probability']:.3f} | {b['fraction_positive']:.3f} |"
            for b in bins
        )
        parts.append(
            f"{name} on the test split (ECE {interval(block.get('ece'))}):\n\n"
            "| bin | n | mean predicted | observed |\n|---|---|---|---|\n" + rows + "\n"
        )
    return "\n".join(parts)


def _targets(m: Mapping[str, Any]) -> str:
    lines = ["## Release targets\n", "| target | required | achieved | |", "|---|---|---|---|"]
    for name, path, sense, bound in TARGETS:
        value = _get(m, path)
        met = value is not None and (value >= bound if sense == ">=" else value <= bound)
        shown = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"| {name} | {sense} {bound} | {shown} | {'met' if met else 'NOT met'} |")
    return "\n".join(lines) + "\n"
