"""``basira train``: parse, load the bundle, call :func:`pipelines.training.loop.train`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.datasets.manifest import Split


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


stage2_app = typer.Typer(
    help="Stage 2 of the two-stage detector: a classifier of stage-1 nodule candidates.",
    no_args_is_help=True,
)

_Data = Annotated[Path, typer.Option("--data", help="Folder holding prepared.json.")]
_Split = Annotated[Split, typer.Option("--split", help="Which cases to score.")]
_Candidates = Annotated[
    Path, typer.Option("--candidates", help="JSON of stage-1 candidates (stage2 candidates).")
]


@stage2_app.command("candidates")
def stage2_candidates_command(
    data: _Data,
    out: Annotated[Path, typer.Option("--out", help="JSON to write (kept cases are reused).")],
    split: Annotated[
        Split | None, typer.Option("--split", help="Only this split (default: every case).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes.")] = 1,
    max_candidates: Annotated[
        int, typer.Option("--max", min=1, help="Candidates kept a scan.")
    ] = 400,
) -> None:
    """Find the stage-1 candidates of every prepared case once, for training and evaluation."""
    from rich.progress import Progress

    from pipelines.candidates import CandidateConfig
    from pipelines.datasets.prepare import cases_of_split, read_prepared_index
    from pipelines.training.stage2 import cache_candidates

    index = read_prepared_index(data)
    cases = index.cases if split is None else cases_of_split(index, split)
    with Progress() as progress:
        task = progress.add_task("candidates", total=len(cases))
        found = cache_candidates(
            data,
            cases,
            out,
            CandidateConfig(max_candidates=max_candidates),
            workers,
            on_case=lambda _case: progress.advance(task),
        )
    typer.echo(f"{out}: candidates of {len(found)} cases")


def _stage2_cases(data: Path, split: Split, candidates: Path, budget: int) -> list[Any]:
    from rich.progress import track

    from pipelines.datasets.prepare import (
        cases_of_split,
        read_prepared_index,
        source_slice_thicknesses,
    )
    from pipelines.training.stage2 import PatchSpec, candidates_of, load_stage2_case

    index = read_prepared_index(data)
    chosen = cases_of_split(index, split)
    found = candidates_of(candidates, [case.case_id for case in chosen])
    thickness = source_slice_thicknesses(data)
    return [
        load_stage2_case(
            data, case, found[case.case_id], PatchSpec(), budget, thickness.get(case.case_id)
        )
        for case in track(chosen, description=f"load {split}")
    ]


@stage2_app.command("train")
def stage2_train_command(
    data: _Data,
    candidates: _Candidates,
    out: Annotated[Path, typer.Option("--out", help="Run folder (resumes its checkpoint).")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps.")] = 1500,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="torch CPU threads.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Train the candidate classifier on the train split (real, inserted and hard negatives)."""
    from rich.progress import Progress

    from pipelines.datasets.prepare import read_prepared_index
    from pipelines.training.stage2 import Stage2Config, train_stage2

    config = Stage2Config(steps=steps, seed=seed)
    cases = _stage2_cases(data, Split.TRAIN, candidates, config.negative_budget)
    preprocess = read_prepared_index(data).config.preprocess
    with Progress() as progress:
        task = progress.add_task("steps", total=steps)
        run = train_stage2(
            cases,
            config,
            out,
            preprocess,
            threads=threads,
            on_step=lambda step, _loss: progress.update(task, completed=step),
        )
    typer.echo(
        f"{out}: {run.steps} steps, {run.patches} patches, {run.inserted_lesions} distinct "
        f"inserted lesions, {run.patches / max(run.seconds, 1e-9):.1f} patches/s"
    )


@stage2_app.command("evaluate")
def stage2_evaluate_command(  # noqa: PLR0913 -- typer maps each CLI option to a parameter
    data: _Data,
    candidates: _Candidates,
    run: Annotated[Path, typer.Option("--run", help="Run folder of stage2 train.")],
    out: Annotated[Path, typer.Option("--out", help="Metrics JSON to write.")],
    split: _Split = Split.VAL,
    budgets: Annotated[
        str, typer.Option("--budgets", help="Comma-separated candidates a scan to score.")
    ] = "100,200,400",
    proposals: Annotated[
        Path | None,
        typer.Option(
            "--proposals",
            help="predictions.json of basira evaluate on the same split: its findings are "
            "scored by stage 2 as well, beside each budget's candidates.",
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="torch CPU threads.")
    ] = None,
) -> None:
    """Score the first candidates of every case of a split; FROC, lesion-free and study figures."""
    import json

    import numpy as np
    import torch

    from pipelines.evaluation.predictions import read_predictions
    from pipelines.training.stage2 import (
        Stage2Config,
        detections_of,
        evaluate_stage2,
        load_classifier,
        score_points,
    )

    if threads is not None:
        torch.set_num_threads(threads)
    sizes = sorted({int(b) for b in budgets.split(",") if b.strip()})
    config = Stage2Config()
    model = load_classifier(run, config)
    cases = _stage2_cases(data, split, candidates, max(sizes))
    found = (
        {case.case_id: case.findings for case in read_predictions(proposals).cases}
        if proposals is not None
        else {}
    )
    scored = []
    for case in cases:
        findings = found.get(case.case_id, [])
        extra_kji = np.array([f.center_ijk[::-1] for f in findings], np.float64).reshape(-1, 3)
        extra_lps = np.array([f.center_lps_mm for f in findings], np.float64).reshape(-1, 3)
        scored.append(
            (
                case,
                score_points(model, case, case.candidates_kji, config.patch),
                extra_lps,
                score_points(model, case, extra_kji, config.patch),
            )
        )
    report: dict[str, Any] = {}
    for size in sizes:
        for with_proposals in (False, True) if proposals is not None else (False,):
            detections = [
                detections_of(
                    case,
                    scores,
                    size,
                    extra_lps if with_proposals else None,
                    extra if with_proposals else None,
                )
                for case, scores, extra_lps, extra in scored
            ]
            key = f"{size}+proposals" if with_proposals else str(size)
            report[key] = evaluate_stage2(detections, [case.lesions for case in cases])
            groups = report[key]["groups"]
            typer.echo(
                f"budget {key}: CPM {groups['all']['cpm']['value']:.3f}, "
                f"sensitivity at 1 FP {groups['all']['sensitivity_at_1fp']['value']:.3f}"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
