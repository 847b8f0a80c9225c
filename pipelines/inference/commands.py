"""``basira predict``: parse, then call :func:`pipelines.inference.predict.predict_inputs`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from pipelines.engine.chooser import EngineChoice
    from pipelines.result import StudyResult

#: Exit code when at least one study ended ``failed`` (its result JSON says why).
EXIT_STUDY_FAILED = 1
#: where ``basira predict`` and ``basira models tune`` keep the engine measured fastest
EngineCacheOption = Annotated[
    Path | None,
    typer.Option(
        "--engine-cache",
        envvar="BASIRA_ENGINE_CACHE",
        help="JSON file of engine choices by CPU and model "
        "[$XDG_CACHE_HOME/basira/engine-choice.json].",
    ),
]


class _ProgressBar:
    """A progress bar on stderr over the studies of a batch (see ``PredictProgress``)."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self._bar: typer.progressbar | None = None  # type: ignore[valid-type]

    def start(self, total: int) -> None:
        bar = typer.progressbar(length=total, label="predict", file=typer.get_text_stream("stderr"))
        self._bar = self._stack.enter_context(bar)

    def advance(self, result: StudyResult) -> None:
        if self._bar is not None:
            self._bar.update(1)


def _formats(value: str) -> list[str]:
    from pipelines.reports import OutputFormat

    names = [name.strip() for name in value.split(",") if name.strip()]
    known = {f.value for f in OutputFormat} | {"json"}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise typer.BadParameter(
            f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    return [name for name in names if name != "json"]


def _providers(text: str | None) -> list[str] | None:
    """``--providers``: comma-separated names, ``None`` when not given."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise typer.BadParameter("--providers needs at least one execution provider name")
    return names


def engine_choice(
    engine: str, threads: int | None, providers: str | None, cache: Path | None
) -> EngineChoice:
    """``--engine``, ``--threads``, ``--providers`` and ``--engine-cache`` as an
    :class:`~pipelines.engine.chooser.EngineChoice` (the cache defaults to
    :func:`~pipelines.engine.chooser.default_cache_path`)."""
    from pipelines.engine.chooser import AUTO, EngineChoice, default_cache_path

    kinds = (AUTO, "onnx", "torch")
    if engine not in kinds:
        raise typer.BadParameter(f"--engine must be one of {', '.join(kinds)}, not {engine!r}")
    names = _providers(providers)
    return EngineChoice(
        kind=engine,  # type: ignore[arg-type]  # checked against kinds above
        threads=threads,
        providers=None if names is None else tuple(names),
        cache=cache or default_cache_path(),
    )


def predict_command(  # noqa: PLR0913 -- typer maps each CLI option to a parameter
    paths: Annotated[
        list[Path], typer.Argument(help="Folders, zip archives or DICOM files (any mix).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for <StudyInstanceUID>.json etc.")],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Model release folder [models/lung-nodule-unet/release]."),
    ] = None,
    formats: Annotated[
        str,
        typer.Option("--format", help="Comma-separated: json,seg,sr,fhir,keyimages (json always)."),
    ] = "json",
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="auto (the fastest on this host, measured once and cached), or pin onnx "
            "(ONNX Runtime) or torch.",
        ),
    ] = "auto",
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="Inference threads [auto: measured; pinned: all]."),
    ] = None,
    providers: Annotated[
        str | None,
        typer.Option(
            "--providers",
            help="ONNX Runtime execution providers in order, comma-separated, e.g. "
            "CPUExecutionProvider [auto: each installed one is measured].",
        ),
    ] = None,
    engine_cache: EngineCacheOption = None,
) -> None:
    """Analyse CT studies: one result JSON per study, plus SEG/SR/FHIR/key images if asked."""
    from pipelines.inference.predict import DEFAULT_RELEASE, predict_inputs

    choice = engine_choice(engine, threads, providers, engine_cache)
    wanted = _formats(formats)
    with contextlib.ExitStack() as stack:
        summary = predict_inputs(
            paths,
            model or DEFAULT_RELEASE,
            out,
            wanted,
            engine=choice,
            progress=_ProgressBar(stack),
        )
    counts: dict[str, int] = {}
    for result in summary.results:
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
        if result.reasons:
            reason = result.reasons[0]
            typer.echo(
                f"{result.study_instance_uid}: {result.status.value} [{reason.code}] "
                f"{reason.message}",
                err=True,
            )
        for item in result.withheld:
            typer.echo(
                f"{result.study_instance_uid}: withheld [{item.code}] {item.message}", err=True
            )
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    typer.echo(f"{len(summary.results)} studies ({tally}); results in {out}")
    if summary.any_failed:
        raise typer.Exit(EXIT_STUDY_FAILED)
