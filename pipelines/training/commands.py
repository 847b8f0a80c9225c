"""``basira train``: parse, load the bundle, call :func:`pipelines.training.loop.train`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def train_command(  # noqa: PLR0913 -- typer maps each CLI option to a parameter
    bundle: Annotated[Path, typer.Option("--bundle", help="The model's bundle.yaml.")],
    data: Annotated[Path, typer.Option("--data", help="Folder holding prepared.json.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (checkpoint, best weights).")],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")
    ] = False,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Override the bundle's epochs.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader processes.")] = 1,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="torch CPU threads per process.")
    ] = None,
    hold_gb: Annotated[
        float,
        typer.Option("--hold-gb", min=0, help="GiB of training cases kept in memory (0: none)."),
    ] = 8.0,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow.")] = False,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow URI (default: $MLFLOW_TRACKING_URI, then sqlite:///mlflow.db).",
        ),
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment.")] = "basira",
) -> None:
    """Train a model bundle on prepared data; under torchrun, on every process (DDP)."""
    from pipelines.bundle import load_bundle
    from pipelines.model.tracking import MlflowTracker, NullTracker, Tracker
    from pipelines.training.loop import TrainOptions, train

    loaded = load_bundle(bundle)
    main_process = os.environ.get("RANK", "0") == "0"  # torchrun: only rank 0 tracks
    tracker: Tracker = (
        MlflowTracker(tracking_uri, experiment) if main_process and not no_track else NullTracker()
    )
    options = TrainOptions(
        data_dir=data,
        out_dir=out,
        resume=resume,
        epochs=epochs,
        device=device,
        workers=workers,
        threads=threads,
        hold_gb=hold_gb,
        tracker=tracker,
    )
    result = train(loaded, options)
    if result.epochs_completed and result.history:
        inserted = int(sum(entry.get("inserted_lesions", 0.0) for entry in result.history))
        typer.echo(
            f"{out}: {result.epochs_completed} epochs, best CPM {result.best_metric:.4f} "
            f"at epoch {result.best_epoch}{' (stopped early)' if result.stopped_early else ''}, "
            f"{inserted} synthetic lesions inserted"
        )
