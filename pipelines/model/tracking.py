"""Experiment tracking: MLflow behind a two-method-deep protocol, or nothing at all.

By default runs go to a local SQLite database, ``sqlite:///mlflow.db`` in the working directory,
with artifacts under ``mlruns/`` beside it; ``MLFLOW_TRACKING_URI`` or an explicit URI (the CLI's
``--tracking-uri``) points anywhere MLflow can. Each training run records its flattened bundle
as params, per-epoch metrics, the bundle file, the data version (hash of ``prepared.json`` and of
``dvc.lock`` when there is one) and the final weights. :class:`NullTracker` keeps training usable
without MLflow (``--no-track``). MLflow is imported only when a tracker is created.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Protocol

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "basira"


class Tracker(Protocol):
    """What the training loop needs from a tracker."""

    def start(
        self, run_name: str, params: dict[str, str], tags: dict[str, str], run_id: str | None
    ) -> str | None:
        """Open a run (or reopen ``run_id`` when resuming); return its id."""
        ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record ``metrics`` for epoch ``step``."""
        ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Store a file with the run."""
        ...

    def finish(self, status: str) -> None:
        """Close the run as ``FINISHED``, ``FAILED`` or ``KILLED``."""
        ...


class NullTracker:
    """Tracks nothing: for tests and ``--no-track``."""

    def start(
        self, run_name: str, params: dict[str, str], tags: dict[str, str], run_id: str | None
    ) -> str | None:
        """No run is opened."""
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Dropped."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Dropped."""

    def finish(self, status: str) -> None:
        """Nothing to close."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else the local SQLite default."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _artifact_root(uri: str) -> str | None:
    """``mlruns/`` beside a SQLite file; other backends keep their own artifact store."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    return (database.resolve().parent / "mlruns").as_uri()


class MlflowTracker:
    """:class:`Tracker` writing to MLflow at ``uri`` in experiment ``experiment``."""

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self._mlflow = mlflow
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(
                experiment, artifact_location=_artifact_root(self.uri)
            )
        )
        self.run_id: str | None = None

    def start(
        self, run_name: str, params: dict[str, str], tags: dict[str, str], run_id: str | None
    ) -> str | None:
        """Create the run and log params and tags once; a resumed run only changes status."""
        from mlflow.entities import Param, RunTag

        if run_id is not None:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(key, value[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """One batch call per epoch."""
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        now = _now_ms()
        batch = [Metric(_metric_key(k), float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy ``path`` into the run's artifact store."""
        if self.run_id is not None:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str) -> None:
        """Mark the run terminated with ``status``."""
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


def _metric_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_-. /``: ``sens@0.125`` becomes ``sens_at_0.125``."""
    return key.replace("@", "_at_")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_version(data_dir: Path, dvc_lock: Path = Path("dvc.lock")) -> dict[str, str]:
    """Tags naming the exact training data: hashes of ``prepared.json`` and ``dvc.lock``."""
    version = {"data.path": str(data_dir)}
    index = data_dir / "prepared.json"
    if index.is_file():
        version["data.prepared_sha256"] = _sha256(index)
    if dvc_lock.is_file():
        version["data.dvc_lock_sha256"] = _sha256(dvc_lock)
    return version
