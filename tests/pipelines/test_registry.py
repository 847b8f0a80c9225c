"""``basira models register | list | promote`` against a real MLflow SQLite registry.

One tracking database serves the whole module (MLflow's first setup takes seconds); each test
registers under its own model name so the tests stay independent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.bundle import write_bundle
from pipelines.model.registry import (
    ModelMetrics,
    PromotionGate,
    client,
    compare_metrics,
)
from tests.cli import Basira
from tests.pipelines.training.conftest import tiny_bundle

TEST_DATA = "a" * 64


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


def _candidate(
    root: Path, name: str, cpm: float, auc: float, ece: float, test_data: str = TEST_DATA
) -> list[str]:
    """A bundle folder, weights and a metrics.json; the ``register`` arguments for them."""
    folder = root / f"{name}-{cpm}-{auc}-{ece}-{test_data[:4]}"
    folder.mkdir(parents=True)
    write_bundle(tiny_bundle().model_copy(update={"name": name}), folder / "bundle.yaml")
    (folder / "calibration.json").write_text("{}")
    (folder / "weights.pt").write_bytes(b"weights")
    metrics = {
        "detection": {"cpm": {"value": cpm}},
        "study": {"auc": {"value": auc}},
        "calibration": {"study": {"ece": {"value": ece}}},
        "data": {"path": str(root), "split": "test", "sha256": test_data, "n_cases": 6},
    }
    (folder.parent / f"{folder.name}.json").write_text(json.dumps(metrics))
    return [
        "--bundle",
        str(folder),
        "--weights",
        str(folder / "weights.pt"),
        "--metrics",
        str(folder.parent / f"{folder.name}.json"),
    ]


def _register(basira: Basira, uri: str, args: list[str]) -> None:
    assert basira("models", "register", *args, "--tracking-uri", uri) == 0


def _promote(basira: Basira, uri: str, *args: str) -> int:
    return basira("models", "promote", *args, "--tracking-uri", uri)


def _production(uri: str, name: str) -> str:
    return str(client(uri).get_registered_model(name).aliases["production"])


def test_register_logs_files_and_list_shows_metrics_and_alias(
    tracking_uri: str,
    tmp_path: Path,
    basira: Basira,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _register(basira, tracking_uri, _candidate(tmp_path, "listed", 0.9, 0.97, 0.03))
    assert "registered listed version 1" in capsys.readouterr().out
    assert _promote(basira, tracking_uri, "listed", "1") == 0
    assert "first promotion" in capsys.readouterr().out

    assert basira("models", "list", "--tracking-uri", tracking_uri) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("listed"))
    assert line.split()[:6] == ["listed", "1", "production", "0.900", "0.970", "0.030"]
    assert TEST_DATA[:12] in line

    mlflow_client = client(tracking_uri)
    version = mlflow_client.get_model_version("listed", "1")
    artifacts = {a.path for a in mlflow_client.list_artifacts(version.run_id, "bundle")}
    assert artifacts == {"bundle/bundle.yaml", "bundle/calibration.json", "bundle/weights.pt"}
    run = mlflow_client.get_run(version.run_id)
    assert run.data.tags["test_data_sha256"] == TEST_DATA and "data.path" in run.data.tags
    assert run.data.metrics["test_cpm"] == pytest.approx(0.9)


def test_promotion_gate_refuses_a_worse_candidate_saying_by_how_much(
    tracking_uri: str,
    tmp_path: Path,
    basira: Basira,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _register(basira, tracking_uri, _candidate(tmp_path, "gated", 0.85, 0.95, 0.04))
    assert _promote(basira, tracking_uri, "gated", "1") == 0
    _register(basira, tracking_uri, _candidate(tmp_path, "gated", 0.80, 0.955, 0.07))
    capsys.readouterr()

    assert _promote(basira, tracking_uri, "gated", "2") == 3
    error = capsys.readouterr().err
    assert error.startswith("error[registry.promotion_refused]:")
    assert "CPM 0.8000 vs 0.8500 (-0.0500, tolerance 0.0100)" in error
    assert "ECE 0.0700 vs 0.0400 (+0.0300, tolerance 0.0100)" in error
    assert "AUC" not in error  # better, so not a reason
    assert _production(tracking_uri, "gated") == "1"

    _register(basira, tracking_uri, _candidate(tmp_path, "gated", 0.86, 0.945, 0.045))
    assert _promote(basira, tracking_uri, "gated", "3") == 0  # within the tolerance
    assert "now production (was 1)" in capsys.readouterr().out
    assert _production(tracking_uri, "gated") == "3"


def test_force_promotes_a_worse_candidate_and_records_it(
    tracking_uri: str, tmp_path: Path, basira: Basira
) -> None:
    _register(basira, tracking_uri, _candidate(tmp_path, "forced", 0.9, 0.97, 0.03))
    assert _promote(basira, tracking_uri, "forced", "1") == 0
    _register(basira, tracking_uri, _candidate(tmp_path, "forced", 0.5, 0.6, 0.2))
    assert _promote(basira, tracking_uri, "forced", "2", "--force") == 0
    assert _production(tracking_uri, "forced") == "2"
    tags = client(tracking_uri).get_model_version("forced", "2").tags
    assert tags["promotion_forced"] == "true" and tags["promoted_from"] == "1"


def test_candidate_evaluated_on_other_test_data_is_refused(
    tracking_uri: str,
    tmp_path: Path,
    basira: Basira,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _register(basira, tracking_uri, _candidate(tmp_path, "locked", 0.8, 0.9, 0.05))
    assert _promote(basira, tracking_uri, "locked", "1") == 0
    better_elsewhere = _candidate(tmp_path, "locked", 0.99, 0.99, 0.01, test_data="b" * 64)
    _register(basira, tracking_uri, better_elsewhere)
    capsys.readouterr()
    assert _promote(basira, tracking_uri, "locked", "2") == 3
    assert _error_line(capsys).startswith("error[registry.test_data_mismatch]:")
    assert _production(tracking_uri, "locked") == "1"


def test_unknown_version_is_model_not_found(
    tracking_uri: str, basira: Basira, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _promote(basira, tracking_uri, "nobody", "7") == 3
    assert _error_line(capsys).startswith("error[registry.model_not_found]:")


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's one error line: the last line on stderr. MLflow logs its own INFO lines there
    when it creates a fresh tracking database, depending on which test a worker ran first."""
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


def test_metrics_without_auc_are_incomplete(
    tracking_uri: str,
    tmp_path: Path,
    basira: Basira,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _candidate(tmp_path, "incomplete", 0.9, 0.9, 0.05)
    metrics_path = Path(args[-1])
    metrics = json.loads(metrics_path.read_text())
    metrics["study"]["auc"]["value"] = None  # a test split with one class
    metrics_path.write_text(json.dumps(metrics))
    code = basira("models", "register", *args, "--tracking-uri", tracking_uri)
    assert code == 3
    error = capsys.readouterr().err
    assert error.startswith("error[registry.incomplete_metrics]:") and "auc" in error


def test_gate_tolerance_is_inclusive_and_direction_aware() -> None:
    production = ModelMetrics(cpm=0.85, auc=0.95, ece=0.04, test_data_sha256=TEST_DATA)
    candidate = ModelMetrics(cpm=0.84, auc=0.99, ece=0.05, test_data_sha256=TEST_DATA)
    gate = PromotionGate(cpm=0.010001, auc=0.0, ece=0.0)
    worse = {c.name: c.worse for c in compare_metrics(candidate, production, gate)}
    assert worse == {"cpm": False, "auc": False, "ece": True}
