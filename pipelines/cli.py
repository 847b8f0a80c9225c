"""The ``basira`` command line: one subcommand per job, each calling one library function.

Exit codes: 0 ok, 2 usage, 3 bad input (nothing usable was given), 1 anything else. Errors are
printed as one line ``error[code]: message``; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback
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
_state = {"verbose": False}


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and debug logs."),
) -> None:
    _state["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":%(message)r}',
    )


def _register_commands() -> None:
    """Attach the subcommands; each lives beside the library code it drives."""
    from pipelines.dicom.commands import inspect_command

    app.command("inspect")(inspect_command)
    from pipelines.synth.commands import synth_command

    app.command("synth")(synth_command)
    from pipelines.datasets.commands import dataset_app, prepare_command

    app.add_typer(dataset_app, name="dataset")
    app.command("prepare")(prepare_command)
    from pipelines.training.commands import train_command

    app.command("train")(train_command)
    from pipelines.evaluation.commands import calibrate_command, evaluate_command

    app.command("evaluate")(evaluate_command)
    app.command("calibrate")(calibrate_command)
    from pipelines.export_commands import export_command

    app.command("export")(export_command)
    from pipelines.registry_commands import models_app

    app.add_typer(models_app, name="models")
    from pipelines.predict_commands import predict_command

    app.command("predict")(predict_command)
    # Packages that build on the library (the service) add their commands through this entry
    # point group, so pipelines never imports them.
    for entry in entry_points(group="basira.commands"):
        entry.load()(app)


def main() -> None:
    """Console-script entry point: run the app and turn errors into one line and an exit code."""
    _register_commands()
    try:
        app(standalone_mode=False)
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
        typer.echo(f"error[internal]: {type(exc).__name__}: {exc} (rerun with --verbose)", err=True)
        sys.exit(1)
