"""The model registry: MLflow registered models, and a promotion gate on the locked test split.

:func:`register_model` logs a bundle folder (``bundle.yaml``, calibration, model card…), its
weights and its ``metrics.json`` from ``basira evaluate`` to an MLflow run, tags the run with the
data version, and registers a model version under the bundle's name whose source is that run's
``bundle/`` artifacts. The gate's inputs are stored as version tags: ``cpm``
(``detection.cpm``), ``auc`` (``study.auc``), ``ece`` (``calibration.study.ece``) and
``test_data_sha256`` (``data.sha256``, the content hash of the test split).

:func:`promote` moves the MLflow 3 alias ``production`` (aliases replace the deprecated stages)
to a version. The gate refuses when the candidate is worse than the current production version
on any of CPM or AUC (lower) or ECE (higher) by more than :class:`PromotionGate`'s tolerance, and
refuses outright when the two were evaluated on different test data (comparing metrics of
different data says nothing). The first promotion of a name has nothing to compare with and is
allowed; ``force`` skips the gate and is recorded on the version. MLflow is imported inside the
functions that need it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, Field

from pipelines.errors import (
    IncompleteMetricsError,
    InputNotFoundError,
    ModelVersionNotFoundError,
    PromotionRefusedError,
    TestDataMismatchError,
)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

PRODUCTION_ALIAS = "production"
#: metrics.json path of each gated metric, and whether higher is better.
GATED_METRICS: dict[str, tuple[tuple[str, ...], bool]] = {
    "cpm": (("detection", "cpm", "value"), True),
    "auc": (("study", "auc", "value"), True),
    "ece": (("calibration", "study", "ece", "value"), False),
}


class PromotionGate(BaseModel):
    """Absolute tolerances: how much worse than production a candidate may be on each metric
    (bootstrap noise on a small test split is larger than a strict zero would allow for)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpm: float = Field(default=0.01, ge=0)
    auc: float = Field(default=0.01, ge=0)
    ece: float = Field(default=0.01, ge=0)


@dataclass(frozen=True)
class ModelMetrics:
    """What the gate compares, read from ``metrics.json`` or from a version's tags."""

    cpm: float
    auc: float
    ece: float
    test_data_sha256: str

    def to_tags(self) -> dict[str, str]:
        """The version tags the registry stores them as."""
        return {
            "cpm": repr(self.cpm),
            "auc": repr(self.auc),
            "ece": repr(self.ece),
            "test_data_sha256": self.test_data_sha256,
        }


def read_model_metrics(path: Path) -> ModelMetrics:
    """The gated metrics and test data hash of a ``metrics.json`` written by ``basira evaluate``.

    Raises:
        InputNotFoundError: no such file.
        IncompleteMetricsError: a gated metric is missing or undefined, or there is no test
            data hash.
    """
    if not path.is_file():
        raise InputNotFoundError(f"Metrics file {path} does not exist.", path=str(path))
    metrics = json.loads(path.read_text(encoding="utf-8"))
    values: dict[str, Any] = {}
    for name, (keys, _) in GATED_METRICS.items():
        value: Any = metrics
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        values[name] = value
    values["test_data_sha256"] = (metrics.get("data") or {}).get("sha256")
    missing = sorted(name for name, value in values.items() if value is None)
    if missing:
        raise IncompleteMetricsError(
            f"{path} has no {', '.join(missing)}; write it with 'basira evaluate' on a test "
            "split holding lesion and lesion-free studies.",
            path=str(path),
            missing=missing,
        )
    return ModelMetrics(**values)


def _metrics_from_tags(tags: dict[str, str]) -> ModelMetrics:
    return ModelMetrics(
        cpm=float(tags["cpm"]),
        auc=float(tags["auc"]),
        ece=float(tags["ece"]),
        test_data_sha256=tags["test_data_sha256"],
    )


@dataclass(frozen=True)
class MetricComparison:
    """One gated metric of candidate and production; ``worse`` beyond the tolerance."""

    name: str
    candidate: float
    production: float
    tolerance: float
    higher_is_better: bool

    @property
    def difference(self) -> float:
        """Candidate minus production."""
        return self.candidate - self.production

    @property
    def worse(self) -> bool:
        """True when the candidate loses more than the tolerance."""
        loss = -self.difference if self.higher_is_better else self.difference
        return loss > self.tolerance

    def describe(self) -> str:
        """E.g. ``CPM 0.8000 vs 0.8500 (-0.0500, tolerance 0.0100)``."""
        return (
            f"{self.name.upper()} {self.candidate:.4f} vs {self.production:.4f} "
            f"({self.difference:+.4f}, tolerance {self.tolerance:.4f})"
        )


def compare_metrics(
    candidate: ModelMetrics, production: ModelMetrics, gate: PromotionGate
) -> list[MetricComparison]:
    """Each gated metric of the candidate against production.

    Raises:
        TestDataMismatchError: the two were evaluated on different test data.
    """
    if candidate.test_data_sha256 != production.test_data_sha256:
        raise TestDataMismatchError(
            "The candidate was evaluated on other test data "
            f"({candidate.test_data_sha256[:12]}) than the production model "
            f"({production.test_data_sha256[:12]}); evaluate it on the locked test split.",
            candidate=candidate.test_data_sha256,
            production=production.test_data_sha256,
        )
    return [
        MetricComparison(
            name,
            getattr(candidate, name),
            getattr(production, name),
            getattr(gate, name),
            higher_is_better,
        )
        for name, (_, higher_is_better) in GATED_METRICS.items()
    ]


def client(tracking_uri: str | None = None) -> MlflowClient:
    """An MLflow client on ``tracking_uri`` (default as :mod:`pipelines.model.tracking` resolves
    it)."""
    from mlflow.tracking import MlflowClient

    from pipelines.model.tracking import resolve_tracking_uri

    return MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))


def get_version(mlflow_client: MlflowClient, name: str, version: str) -> ModelVersion:
    """A registered version.

    Raises:
        ModelVersionNotFoundError: no such name or version.
    """
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelVersionNotFoundError(
            f"No registered model '{name}' version {version}; see 'basira models list'.",
            name=name,
            version=version,
        ) from exc


def production_version(mlflow_client: MlflowClient, name: str) -> str | None:
    """The version the ``production`` alias points at, or None."""
    aliases: dict[str, str] = dict(mlflow_client.get_registered_model(name).aliases)
    return aliases.get(PRODUCTION_ALIAS)


@dataclass(frozen=True)
class PromotionResult:
    """What :func:`promote` did: the new and previous production versions and the comparison."""

    name: str
    version: str
    previous: str | None
    comparisons: list[MetricComparison]
    forced: bool


def promote(
    mlflow_client: MlflowClient,
    name: str,
    version: str,
    gate: PromotionGate,
    *,
    force: bool = False,
) -> PromotionResult:
    """Point ``production`` at ``version`` if the gate allows it (see module docstring).

    Raises:
        ModelVersionNotFoundError: no such version. TestDataMismatchError: evaluated on other
            test data than production. PromotionRefusedError: worse beyond the tolerance.
    """
    candidate = get_version(mlflow_client, name, version)
    previous = production_version(mlflow_client, name)
    comparisons: list[MetricComparison] = []
    if previous is not None and previous != str(candidate.version) and not force:
        current = get_version(mlflow_client, name, previous)
        comparisons = compare_metrics(
            _metrics_from_tags(candidate.tags), _metrics_from_tags(current.tags), gate
        )
        worse = [c for c in comparisons if c.worse]
        if worse:
            raise PromotionRefusedError(
                f"'{name}' version {version} is worse than production version {previous} on "
                "the locked test split: " + "; ".join(c.describe() for c in worse) + ".",
                worse={c.name: c.difference for c in worse},
            )
    mlflow_client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
    mlflow_client.set_model_version_tag(name, version, "promoted_from", previous or "none")
    mlflow_client.set_model_version_tag(name, version, "promotion_forced", str(force).lower())
    return PromotionResult(name, version, previous, comparisons, force)


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version and the run holding its files."""

    name: str
    version: str
    run_id: str


def register_model(
    bundle_dir: Path,
    weights: Path,
    metrics_path: Path,
    *,
    tracking_uri: str | None = None,
    experiment: str = "basira",
) -> RegisteredVersion:
    """Log the bundle, weights, metrics and data version to MLflow; register a new version.

    Raises:
        InputNotFoundError, ConfigError: a missing bundle, weights or metrics file, or an
            invalid bundle. IncompleteMetricsError: metrics.json lacks a gated value.
    """
    from pipelines.bundle import flatten_bundle, load_bundle
    from pipelines.model.tracking import MlflowTracker, data_version

    bundle = load_bundle(bundle_dir / "bundle.yaml")
    if not weights.is_file():
        raise InputNotFoundError(f"Weights file {weights} does not exist.", path=str(weights))
    metrics = read_model_metrics(metrics_path)
    test_data = json.loads(metrics_path.read_text(encoding="utf-8"))["data"]
    tracker = MlflowTracker(tracking_uri, experiment)
    tags = {**data_version(Path(test_data["path"])), **metrics.to_tags()}
    started = tracker.start(f"register-{bundle.name}", flatten_bundle(bundle), tags, None)
    run_id = cast(str, started)  # MlflowTracker always opens a run
    for path in sorted(p for p in bundle_dir.iterdir() if p.is_file()):
        tracker.log_artifact(path, "bundle")
    tracker.log_artifact(weights, "bundle")
    tracker.log_artifact(metrics_path, "evaluation")
    tracker.log_metrics({f"test_{k}": v for k, v in _gated(metrics).items()}, step=0)
    tracker.finish("FINISHED")
    mlflow_client = tracker.client
    if not mlflow_client.search_registered_models(filter_string=f"name = '{bundle.name}'"):
        mlflow_client.create_registered_model(bundle.name, description=bundle.description)
    source = f"{mlflow_client.get_run(run_id).info.artifact_uri}/bundle"
    version_tags = {**tags, "bundle_version": bundle.version}
    created = mlflow_client.create_model_version(bundle.name, source, run_id, tags=version_tags)
    return RegisteredVersion(bundle.name, str(created.version), run_id)


def _gated(metrics: ModelMetrics) -> dict[str, float]:
    return {name: getattr(metrics, name) for name in GATED_METRICS}


@dataclass(frozen=True)
class ModelRow:
    """One line of ``basira models list``."""

    name: str
    version: str
    aliases: list[str]
    bundle_version: str
    metrics: dict[str, float | None]
    test_data_sha256: str | None


def list_models(mlflow_client: MlflowClient) -> list[ModelRow]:
    """Every registered version, by name then version number."""
    rows = []
    for model in mlflow_client.search_registered_models():
        aliases_of: dict[str, list[str]] = {}
        for alias, version in dict(model.aliases).items():
            aliases_of.setdefault(str(version), []).append(alias)
        for item in mlflow_client.search_model_versions(f"name = '{model.name}'"):
            tags = dict(item.tags)
            rows.append(
                ModelRow(
                    name=model.name,
                    version=str(item.version),
                    aliases=sorted(aliases_of.get(str(item.version), [])),
                    bundle_version=tags.get("bundle_version", ""),
                    metrics={k: float(tags[k]) if k in tags else None for k in GATED_METRICS},
                    test_data_sha256=tags.get("test_data_sha256"),
                )
            )
    return sorted(rows, key=lambda row: (row.name, int(row.version)))
