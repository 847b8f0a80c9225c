"""Loading SynthConfig from YAML and the ``basira synth`` command's error line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.errors import ConfigError
from pipelines.synth.commands import synth_command
from pipelines.synth.config import SynthConfig, load_synth_config


def test_config_loads_from_a_params_style_synth_section(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("synth:\n  matrix_size: 64\n  pixel_spacing_mm: [5, 6]\ntrain: {}\n")
    assert load_synth_config(path) == SynthConfig(matrix_size=64, pixel_spacing_mm=(5, 6))


def test_config_loads_a_named_section_and_refuses_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("synth:\n  matrix_size: 64\nsynth_shifted:\n  matrix_size: 32\n")
    assert load_synth_config(path, "synth_shifted") == SynthConfig(matrix_size=32)
    assert load_synth_config(path).matrix_size == 64
    with pytest.raises(ConfigError, match="no 'synth_other' section"):
        load_synth_config(path, "synth_other")


def test_unknown_field_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "synth.yaml"
    path.write_text("matrix_sise: 64\n")
    with pytest.raises(ConfigError, match="matrix_sise"):
        load_synth_config(path)


def test_cli_bad_config_exits_3_with_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pixel_spacing_mm: [2.0, 1.0]\n")
    monkeypatch.setattr(cli, "_register_commands", lambda: cli.app.command("synth")(synth_command))
    argv = ["basira", "synth", "--out", str(tmp_path / "out"), "--n", "1", "--config", str(bad)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error[config.invalid]: ")
    assert not (tmp_path / "out").exists()
