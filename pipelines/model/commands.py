"""The model lifecycle's commands: ``basira export`` (:mod:`pipelines.model.export`) and
``basira models register | list | promote | package | verify | tune``
(:mod:`pipelines.model.registry`, :mod:`pipelines.model.release`,
:func:`pipelines.inference.predict.tune_release`). Each parses its options, then calls one
library function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.inference.commands import EngineCacheOption

models_app = typer.Typer(
    name="models",
    help="Register, list and promote models (MLflow registry, 'production' alias).",
    no_args_is_help=True,
)

TrackingUriOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow URI (default: $MLFLOW_TRACKING_URI, then sqlite:///mlflow.db).",
    ),
]


@models_app.command("register")
def register_command(
    bundle: Annotated[Path, typer.Option("--bundle", help="The bundle folder to register.")],
    weights: Annotated[Path, typer.Option("--weights", help="state_dict saved by training.")],
    metrics: Annotated[
        Path, typer.Option("--metrics", help="metrics.json from 'basira evaluate' (test split).")
    ],
    tracking_uri: TrackingUriOption = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment.")] = "basira",
) -> None:
    """Log a bundle, its weights and test metrics to MLflow and register a new version."""
    from pipelines.model.registry import register_model

    registered = register_model(
        bundle, weights, metrics, tracking_uri=tracking_uri, experiment=experiment
    )
    typer.echo(
        f"registered {registered.name} version {registered.version} (run {registered.run_id})"
    )


@models_app.command("list")
def list_command(tracking_uri: TrackingUriOption = None) -> None:
    """Every registered version: aliases, CPM, AUC, ECE on its test data, and that data's hash."""
    from pipelines.model.registry import client, list_models

    rows = list_models(client(tracking_uri))
    header = f"{'name':24} {'version':>7} {'alias':12} {'CPM':>6} {'AUC':>6} {'ECE':>6}  test data"
    typer.echo(header)
    for row in rows:
        values = " ".join(
            f"{value:6.3f}" if value is not None else f"{'-':>6}" for value in row.metrics.values()
        )
        typer.echo(
            f"{row.name:24} {row.version:>7} {','.join(row.aliases) or '-':12} {values}  "
            f"{(row.test_data_sha256 or '-')[:12]}"
        )


@models_app.command("promote")
def promote_command(
    name: Annotated[str, typer.Argument(help="Registered model name (the bundle's name).")],
    version: Annotated[str, typer.Argument(help="The version to make production.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Skip the gate (recorded on the version)."),
    ] = False,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Point the 'production' alias at NAME VERSION unless it is worse than production on the
    locked test split (CPM, AUC lower or ECE higher by more than 0.01)."""
    from pipelines.model.registry import PromotionGate, client, promote

    result = promote(client(tracking_uri), name, version, PromotionGate(), force=force)
    for comparison in result.comparisons:
        typer.echo(f"  {comparison.describe()}")
    before = f" (was {result.previous})" if result.previous else " (first promotion)"
    forced = " [forced: gate skipped]" if result.forced else ""
    typer.echo(f"{name} version {version} is now production{before}{forced}")


@models_app.command("package")
def package_command(
    bundle: Annotated[
        Path, typer.Option("--bundle", help="The calibrated bundle folder ('basira calibrate').")
    ],
    weights: Annotated[Path, typer.Option("--weights", help="state_dict saved by training.")],
    metrics: Annotated[
        Path, typer.Option("--metrics", help="metrics.json from 'basira evaluate' (test split).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The release folder to write.")],
    limitations: Annotated[
        Path | None,
        typer.Option("--limitations", help="Markdown: the model card's known limitations."),
    ] = None,
    trained_on: Annotated[
        str, typer.Option("--trained-on", help="Where it was trained, for the model card.")
    ] = "",
    variants: Annotated[
        bool,
        typer.Option(
            "--variants/--no-variants", help="Time ONNX Runtime variants (fp16, int8, levels)."
        ),
    ] = True,
) -> None:
    """Write a self-contained release: weights, ONNX, calibration, metrics, card, checksums."""
    from pipelines.model.export import ExportConfig
    from pipelines.model.release import package_release

    written = package_release(
        bundle,
        weights,
        metrics,
        out,
        limitations=limitations,
        trained_on=trained_on,
        export=ExportConfig(check_volume=True, try_variants=variants),
    )
    typer.echo(f"released {written.parent} (model card {written.parent / 'MODEL_CARD.md'})")


@models_app.command("verify")
def verify_command(
    release: Annotated[Path, typer.Argument(help="A release folder ('basira models package').")],
) -> None:
    """Check every file of a release against its SHA-256 before it is served or copied."""
    from pipelines.model.release import verify_release

    bundle = verify_release(release)
    typer.echo(f"{bundle.name} {bundle.version}: every file matches its checksum")


@models_app.command("tune")
def tune_command(
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Model release folder [models/lung-nodule-unet/release]."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="Time only this thread count.")
    ] = None,
    providers: Annotated[
        str | None,
        typer.Option(
            "--providers", help="Time only ONNX Runtime with these providers, comma-separated."
        ),
    ] = None,
    engine_cache: EngineCacheOption = None,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="Timed runs per candidate (median kept).")
    ] = 5,
) -> None:
    """Time every engine that can run the release on this host; cache and print the fastest."""
    from pipelines.engine.chooser import is_cached
    from pipelines.inference.commands import engine_choice
    from pipelines.inference.predict import DEFAULT_RELEASE, tune_release

    choice = engine_choice("auto", threads, providers, engine_cache)
    runtime = tune_release(model or DEFAULT_RELEASE, choice.model_copy(update={"rounds": rounds}))
    shape = "x".join(str(n) for n in runtime.window_batch_shape)
    typer.echo(f"CPU: {runtime.cpu.summary()}")
    typer.echo(f"one window batch [{shape}], median of {rounds}:")
    for timing in runtime.candidates:
        mark = "*" if timing.candidate == runtime.chosen else " "
        took = f"{timing.window_batch_ms:9.1f} ms" if timing.window_batch_ms is not None else ""
        typer.echo(f" {mark} {timing.candidate.label:50} {took}{timing.error or ''}")
    kept = choice.cache is not None and is_cached(choice.cache, runtime)
    where = f"cached in {choice.cache}" if kept else f"not cached: {choice.cache} is not writable"
    typer.echo(f"chosen: {runtime.chosen.label} ({where})")


def export_command(
    bundle: Annotated[Path, typer.Option("--bundle", help="The bundle folder or bundle.yaml.")],
    weights: Annotated[Path, typer.Option("--weights", help="state_dict saved by training.")],
    out: Annotated[Path, typer.Option("--out", help="The ONNX file to write (model.onnx).")],
    opset: Annotated[int, typer.Option("--opset", min=17, help="ONNX opset.")] = 17,
    tolerance: Annotated[
        float,
        typer.Option("--tolerance", min=0.0, help="Max abs probability difference torch vs ORT."),
    ] = 1e-4,
    check_volume: Annotated[
        bool,
        typer.Option("--check-volume", help="Also compare both engines on a whole small volume."),
    ] = False,
    variants: Annotated[
        bool,
        typer.Option(
            "--variants/--no-variants",
            help="Measure graph optimisation levels, fp16 and int8; keep one only if faster "
            "and in agreement.",
        ),
    ] = True,
) -> None:
    """Export a trained network to one ONNX file with proven torch parity (+ export.json)."""
    from pipelines.model.export import ExportConfig, export_model, report_path

    config = ExportConfig(
        opset=opset, tolerance=tolerance, check_volume=check_volume, try_variants=variants
    )
    report = export_model(bundle, weights, out, config)
    info = report.info
    typer.echo(
        f"exported {info.model_name} {info.model_version} to {out} "
        f"(opset {info.opset}, {info.precision.value}, graph optimisation "
        f"{info.graph_optimization.value}); patch parity max |diff| {report.patch_max_abs_diff:.2e}"
    )
    for variant in report.variants:
        speed = f"{variant.speedup:.2f}x" if variant.speedup is not None else "-"
        diff = f"{variant.max_abs_diff:.2e}" if variant.max_abs_diff is not None else "-"
        status = "kept" if variant.kept else (variant.error or "not kept")
        typer.echo(
            f"  {variant.name:14} {speed:>7} vs {variant.baseline:14} |diff| {diff}  {status}"
        )
    if report.volume is not None:
        typer.echo(f"volume parity max |diff| {report.volume.max_abs_diff:.2e}")
    typer.echo(f"report: {report_path(out)}")
