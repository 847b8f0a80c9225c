"""``basira export``: parse, then call :func:`pipelines.export.export_model`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


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
    from pipelines.export import ExportConfig, export_model, report_path

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
