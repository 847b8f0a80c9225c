"""The one way tests run the ``basira`` command line (the ``basira`` fixture of
``tests/conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from pipelines.cli import main

#: The console script pip installed beside this interpreter.
BASIRA = str(Path(sys.executable).with_name("basira"))


class Basira:
    """``basira(*args)`` runs the command in this process and returns its exit code (output
    through ``capsys``); ``basira.run(*args)`` runs it as its own process, as a user does, and
    returns what it printed and its exit code."""

    def __call__(self, *args: str) -> int:
        with pytest.raises(SystemExit) as exited:
            main(args)
            raise SystemExit(0)
        return int(exited.value.code or 0)

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: str = "",
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """The command as its own process; ``env`` replaces the environment (default: this
        one, with torch held to one thread so that parallel tests share the CPU)."""
        return subprocess.run(
            [BASIRA, *args],
            env=dict(env) if env is not None else {**os.environ, "OMP_NUM_THREADS": "1"},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
