"""The ``basira`` command line: one subcommand per job, each calling one library function.

Exit codes: 0 ok, 2 usage, 3 bad input (nothing usable was given), 1 anything else. Errors are
printed as one line ``error[code]: message``; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import entry_points

import typer

from pipelines.errors import BasiraError

app = typer.Typer(
    name="basira",
    help="Basira: assisted tumour detection on CT studies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_BAD_INPUT = 3
#: The code of an unexpected error of ours; the exception's text is shown only with --verbose.
CLI_INTERNAL_ERROR = "cli.internal_error"
_INTERNAL_MESSAGE = (
    "The command stopped on an unexpected error of ours; rerun with --verbose for the traceback "
    "to report."
)
_state = {"verbose": False}


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and debug logs."),
) -> None:
    _state["verbose"] = verbose
    line = '{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":%(message)r}'
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format=line)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_WithoutTraceback(line))


class _WithoutTraceback(logging.Formatter):
    """Without ``--verbose`` a log line keeps its message (an error id, a code) but not the
    exception's traceback and text, which users are never shown; ``--verbose`` shows them.
    The record itself is left whole for every other handler (a filter that cleared it would
    strip the traceback from the structured log a test or a service captures as well)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _register_commands() -> None:
    """Attach the subcommands; each lives beside the library code it drives."""
    from pipelines.dicom.commands import inspect_command

    app.command("inspect")(inspect_command)
    from pipelines.synth.commands import synth_command

    app.command("synth")(synth_command)
    from pipelines.datasets.commands import dataset_app, prepare_command

    app.add_typer(dataset_app, name="dataset")
    app.command("prepare")(prepare_command)
    from pipelines.training.commands import stage2_app, train_command

    app.command("train")(train_command)
    app.add_typer(stage2_app, name="stage2")
    from pipelines.evaluation.commands import calibrate_command, evaluate_command

    app.command("evaluate")(evaluate_command)
    app.command("calibrate")(calibrate_command)
    from pipelines.model.commands import export_command, models_app

    app.command("export")(export_command)

    app.add_typer(models_app, name="models")
    from pipelines.inference.commands import predict_command

    app.command("predict")(predict_command)
    # Packages that build on the library (the service) add their commands through this entry
    # point group, so pipelines never imports them.
    for entry in entry_points(group="basira.commands"):
        entry.load()(app)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the app on ``argv`` (default: the process's arguments)
    and turn errors into one line and an exit code."""
    _register_commands()
    try:
        # Without standalone mode click returns a command's typer.Exit code instead of raising
        # it: `basira predict` exited 0 with failed studies.
        code = app(
            args=None if argv is None else list(argv), prog_name="basira", standalone_mode=False
        )
        if isinstance(code, int) and code:
            sys.exit(code)
    except BasiraError as exc:
        if _state["verbose"]:
            traceback.print_exc()
        typer.echo(f"error[{exc.code}]: {exc.message}", err=True)
        sys.exit(EXIT_BAD_INPUT if exc.bad_input else 1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("error[cli.aborted]: aborted", err=True)
        sys.exit(1)
    except Exception as exc:  # the last line of defence: never a bare traceback for a user
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's usage errors: exit 2
            exc.show()
            sys.exit(exc.exit_code)
        if _state["verbose"]:
            traceback.print_exc()
        typer.echo(f"error[{CLI_INTERNAL_ERROR}]: {_INTERNAL_MESSAGE}", err=True)
        sys.exit(1)
