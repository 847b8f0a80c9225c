"""``basira evaluate`` and ``basira calibrate``: parse, then call one function of
:mod:`pipelines.evaluation.runs`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.calibration import CalibrationMethod
from pipelines.datasets.manifest import Split

BundleOption = Annotated[
    Path | None,
    typer.Option("--bundle", help="The model's bundle folder or its bundle.yaml."),
]
WeightsOption = Annotated[
    Path | None, typer.Option("--weights", help="state_dict saved by training.")
]
DataOption = Annotated[Path | None, typer.Option("--data", help="Folder holding prepared.json.")]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
ThreadsOption = Annotated[
    int | None, typer.Option("--threads", min=1, help="torch CPU threads for inference.")
]


@contextmanager
def _case_progress(label: str) -> Iterator[Callable[[str], None]]:
    """A transient progress bar with ETA; yields the per-case callback."""
    from rich.progress import Progress, TimeRemainingColumn

    with Progress(*Progress.get_default_columns(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda case_id: bar.update(task, advance=1, description=f"{label} {case_id}")


def _inference_inputs(
    bundle: Path | None, weights: Path | None, data: Path | None
) -> tuple[Path, Path, Path]:
    """The three paths inference needs, or a usage error naming the missing ones."""
    if bundle is None or weights is None or data is None:
        given = {"--bundle": bundle, "--weights": weights, "--data": data}
        missing = ", ".join(name for name, value in given.items() if value is None)
        raise typer.BadParameter(f"{missing} required unless --predictions is given")
    return bundle, weights, data


def evaluate_command(  # noqa: PLR0913 -- typer maps each CLI option to a parameter
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, plots.")],
    bundle: BundleOption = None,
    weights: WeightsOption = None,
    data: DataOption = None,
    split: Annotated[Split, typer.Option("--split", help="Which cases to evaluate.")] = Split.TEST,
    predictions: Annotated[
        Path | None,
        typer.Option("--predictions", help="Re-evaluate a predictions.json without inference."),
    ] = None,
    n_bootstrap: Annotated[
        int, typer.Option("--n-bootstrap", min=0, help="Case resamples for 95% CIs.")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    device: DeviceOption = "cpu",
    threads: ThreadsOption = None,
) -> None:
    """Evaluate a model on one split: predictions.json, metrics.json and FROC/ROC/reliability."""
    from pipelines.evaluation.predictions import read_predictions
    from pipelines.evaluation.report import EvaluationConfig
    from pipelines.evaluation.runs import (
        RunOptions,
        bundle_file,
        evaluate_model,
        evaluate_predictions,
    )

    config = EvaluationConfig(n_bootstrap=n_bootstrap, seed=seed)
    if predictions is not None:
        metrics = evaluate_predictions(read_predictions(predictions), config, out)
    else:
        bundle_path, weights_path, data_dir = _inference_inputs(bundle, weights, data)
        with _case_progress("evaluating") as on_case:
            options = RunOptions(device=device, threads=threads, on_case=on_case)
            metrics = evaluate_model(
                bundle_file(bundle_path), weights_path, data_dir, split, out, config, options
            )
    typer.echo(f"{out}: {_summary(metrics)}")


def calibrate_command(  # noqa: PLR0913 -- typer maps each CLI option to a parameter
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle folder or bundle.yaml.")],
    weights: Annotated[Path, typer.Option("--weights", help="state_dict saved by training.")],
    data: Annotated[Path, typer.Option("--data", help="Folder holding prepared.json.")],
    split: Annotated[Split, typer.Option("--split", help="Split to fit on.")] = Split.VAL,
    method: Annotated[
        CalibrationMethod, typer.Option("--method", help="Calibrator for findings and studies.")
    ] = CalibrationMethod.TEMPERATURE,
    target_sensitivity: Annotated[
        float,
        typer.Option("--target-sensitivity", min=0.0, max=1.0, help="Study operating point."),
    ] = 0.9,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the calibrated bundle here instead of in place."),
    ] = None,
    findings_thresholds: Annotated[
        str | None,
        typer.Option(
            "--findings-thresholds",
            help="Comma-separated candidate findings thresholds in (0, 1]: the best CPM on the "
            "split (ties: the better study AUC, then the higher threshold) goes into the bundle "
            "before calibrating (default: keep the bundle's).",
        ),
    ] = None,
    device: DeviceOption = "cpu",
    threads: ThreadsOption = None,
) -> None:
    """Fit the per-finding and study calibration on a split and store it in the bundle."""
    from pipelines.evaluation.runs import (
        CalibrationRequest,
        RunOptions,
        bundle_file,
        calibrate_model,
    )

    thresholds = _thresholds(findings_thresholds) if findings_thresholds else ()
    request = CalibrationRequest(method, target_sensitivity, out, thresholds)
    with _case_progress("calibrating") as on_case:
        options = RunOptions(device=device, threads=threads, on_case=on_case)
        result = calibrate_model(bundle_file(bundle), weights, data, split, request, options)
    point = result.operating_point
    if result.findings_threshold is not None:
        typer.echo(
            f"findings threshold {result.findings_threshold.threshold:g} (CPM by threshold "
            f"{result.findings_threshold.cpm_by_threshold}, study AUC by threshold "
            f"{result.findings_threshold.auc_by_threshold})"
        )
    typer.echo(
        f"{out or bundle_file(bundle).parent}: {result.method} calibration fit on "
        f"{result.fitted_on.n_cases} {result.fitted_on.split} cases; operating point "
        f"{point.threshold:.4f} (sensitivity {point.sensitivity:.3f}, specificity "
        f"{_number(point.specificity)})"
    )


def _thresholds(text: str) -> tuple[float, ...]:
    """``"0.3,0.5"`` → ``(0.3, 0.5)``, or a usage error naming the bad item."""
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise typer.BadParameter(
                f"'{item}' is not a number", param_hint="--findings-thresholds"
            ) from None
        if not 0.0 < value <= 1.0:
            raise typer.BadParameter(
                f"{value:g} is not in (0, 1]", param_hint="--findings-thresholds"
            )
        values.append(value)
    return tuple(sorted(set(values)))


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _summary(metrics: dict[str, Any]) -> str:
    """One line: CPM, AUC and study ECE with their intervals."""
    parts = []
    for label, interval in (
        ("CPM", metrics["detection"]["cpm"]),
        ("AUC", metrics["study"]["auc"]),
        ("ECE", metrics["calibration"]["study"]["ece"]),
    ):
        low, high = interval["ci_low"], interval["ci_high"]
        ci = f" [{_number(low)}, {_number(high)}]" if low is not None else ""
        parts.append(f"{label} {_number(interval['value'])}{ci}")
    return f"{metrics['n_cases']} cases, " + ", ".join(parts)
