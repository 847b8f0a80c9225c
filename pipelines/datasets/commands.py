"""``basira dataset import`` and ``basira prepare``: parse, load config, call one function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from pipelines.datasets.adapters import Layout, import_dataset
from pipelines.datasets.splits import SplitConfig
from pipelines.errors import ConfigError, PrepareFailedError

dataset_app = typer.Typer(
    name="dataset",
    help="Convert public dataset layouts into Basira manifests.",
    no_args_is_help=True,
)


@dataset_app.command("import")
def import_command(
    src: Annotated[Path, typer.Argument(help="The dataset folder, laid out as --layout says.")],
    layout: Annotated[Layout, typer.Option("--layout", help="How SRC is laid out.")],
    out: Annotated[Path, typer.Option("--out", help="The manifest JSON to write.")],
    seed: Annotated[int, typer.Option("--seed", help="Split seed: same seed, same split.")] = 0,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Share of patients for val.")
    ] = 0.15,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Share for test.")] = 0.15,
    no_split: Annotated[
        bool, typer.Option("--no-split", help="Leave every case's split empty.")
    ] = False,
) -> None:
    """Write a manifest for the dataset at SRC, split by patient and stratified by lesion."""
    try:
        split = SplitConfig(seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    except ValidationError as exc:
        raise ConfigError(f"Invalid split fractions: {exc.errors()[0]['msg']}") from exc
    manifest = import_dataset(layout, src, out, split=None if no_split else split)
    counts = {s: sum(c.split == s for c in manifest.cases) for s in ("train", "val", "test")}
    lesions = sum(len(c.lesions) for c in manifest.cases)
    typer.echo(
        f"{out}: {len(manifest.cases)} cases, {lesions} lesions "
        f"(train {counts['train']}, val {counts['val']}, test {counts['test']})"
    )


def prepare_command(
    manifest: Annotated[Path, typer.Option("--manifest", help="The manifest JSON to prepare.")],
    out: Annotated[Path, typer.Option("--out", help="Cache folder (prepared.json + cases/*.npz).")],
    params: Annotated[
        Path | None, typer.Option("--params", help="YAML holding the config.")
    ] = None,
    section: Annotated[
        str, typer.Option("--section", help="Dotted section of --params.")
    ] = "prepare",
) -> None:
    """Preprocess and cache every case of a manifest; exit non-zero if any case failed."""
    from rich.progress import Progress

    from pipelines.datasets.manifest import read_manifest
    from pipelines.datasets.prepare import load_prepare_config, prepare_manifest

    config = load_prepare_config(params, section)
    total = len(read_manifest(manifest).cases)
    with Progress(transient=True) as progress:
        task = progress.add_task("preparing", total=total)
        index = prepare_manifest(manifest, out, config, on_case=lambda _: progress.advance(task))
    typer.echo(f"{out}: {len(index.cases)} cases prepared, {len(index.failures)} failed")
    for failure in index.failures:
        typer.echo(f"  {failure.case_id}: error[{failure.code}]: {failure.message}", err=True)
    if index.failures:
        raise PrepareFailedError(
            f"{len(index.failures)} of {total} cases could not be prepared; "
            f"see {out / 'prepared.json'}.",
            failed=[f.case_id for f in index.failures],
        )
