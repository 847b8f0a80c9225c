"""``basira synth``: write a seeded synthetic chest-CT dataset with ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn


def synth_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for the studies and manifest.json.")],
    n: Annotated[int, typer.Option("--n", min=0, help="Number of studies.")],
    seed: Annotated[int, typer.Option("--seed", min=0, help="Same seed, same bytes.")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 2,
    preview: Annotated[
        bool, typer.Option("--preview", help="Write preview.png per study.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file of SynthConfig fields.")
    ] = None,
    section: Annotated[
        str, typer.Option("--section", help="The section of --config holding the fields.")
    ] = "synth",
) -> None:
    """Generate N synthetic chest-CT studies (DICOM, NIfTI and SEG ground truth, manifest)."""
    # imported here, not at registration: every basira command (predict too) registers this one
    from pipelines.synth.config import load_synth_config
    from pipelines.synth.dataset import generate_dataset

    synth_config = load_synth_config(config, section)
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("synthesising", total=n)
        manifest = generate_dataset(
            synth_config,
            out,
            n_studies=n,
            seed=seed,
            workers=workers,
            preview=preview,
            on_done=lambda _case: progress.advance(task),
        )
    with_lesions = sum(case.has_lesion for case in manifest.cases)
    typer.echo(f"wrote {len(manifest.cases)} studies ({with_lesions} with lesions) to {out}")
