"""MLflow tracking into a temporary SQLite database: params, per-epoch metrics, data, weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.bundle import flatten_bundle
from pipelines.datasets.prepare import PreparedIndex
from pipelines.model.tracking import (
    DEFAULT_TRACKING_URI,
    MlflowTracker,
    data_version,
    resolve_tracking_uri,
)
from pipelines.training.loop import TrainOptions, train
from tests.pipelines.training.conftest import tiny_bundle


def test_training_run_is_recorded_in_mlflow(
    prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bundle = tiny_bundle(epochs=2, validate_every=2)
    tracker = MlflowTracker(uri, experiment="tests")
    options = TrainOptions(
        data_dir=prepared[0], out_dir=tmp_path / "run", progress=False, threads=1, tracker=tracker
    )
    train(bundle, options)

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([tracker.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params == flatten_bundle(bundle)
    assert (
        run.data.tags["data.prepared_sha256"] == data_version(prepared[0])["data.prepared_sha256"]
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert "cpm" in run.data.metrics and "sens_at_0.125" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"bundle.yaml", "best_model.pt", "history.json"} <= artifacts
    assert (tmp_path / "mlruns").is_dir()  # artifacts beside the database, not in the cwd


def test_tracking_uri_defaults_to_local_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert resolve_tracking_uri() == "http://mlflow:5000"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_data_version_includes_the_dvc_lock_when_present(tmp_path: Path) -> None:
    (tmp_path / "prepared.json").write_text("{}")
    assert "data.dvc_lock_sha256" not in data_version(tmp_path, tmp_path / "dvc.lock")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    version = data_version(tmp_path, tmp_path / "dvc.lock")
    assert len(version["data.dvc_lock_sha256"]) == len(version["data.prepared_sha256"]) == 64
