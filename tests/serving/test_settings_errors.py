"""A ``BASIRA_*`` value that does not fit its setting is refused by the service's commands with
``config.invalid`` naming the variable: never an internal error, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli import Basira


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BASIRA_INFERENCE_THREADS", "0"), ("BASIRA_INFERENCE_ENGINE", "fast")],
)
def test_a_bad_setting_is_refused_with_its_variable_named(
    basira: Basira, tmp_path: Path, variable: str, value: str
) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "BASIRA_DATA_DIR": str(tmp_path),
        variable: value,
    }
    done = basira.run("tenants", "list", env=env)
    assert done.returncode != 0
    assert "error[config.invalid]" in done.stderr and variable in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
