"""Service fixtures: a small real model release, settings on temporary folders, an app built by
the same factory production uses, a tenant with its key, and small real CT studies."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipelines.transforms import PreprocessConfig
from serving.app import create_app
from serving.db import Database
from serving.models import KeyRole
from serving.settings import Settings
from serving.tenants import create_tenant, get_tenant, issue_key
from tests.pipelines.releases import make_release, small_bundle
from tests.pipelines.test_predict import write_study


@pytest.fixture(scope="session")
def service_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real release of a fresh unet_small on a coarse grid (the shipped model is too slow for
    unit tests; the demo and the benchmark use it)."""
    preprocess = PreprocessConfig(target_spacing_mm=(10.0, 10.0, 5.0))
    return make_release(tmp_path_factory.mktemp("service-release"), small_bundle(preprocess))


@pytest.fixture
def settings(tmp_path: Path, service_release: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "service",
        model_dir=service_release,
        run_worker=False,
        dicom_port=0,
        study_quiet_s=0.0,
        worker_poll_s=0.05,
        min_free_bytes=0,
        inference_threads=1,
    )


@dataclass
class Tenant:
    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_tenant(settings: Settings, name: str, *, ae_title: str | None = None) -> Tenant:
    db = Database(settings.resolved_database_url)
    db.create_schema()
    with db.session() as session:
        issued = create_tenant(session, name, ae_title=ae_title)
        key = issued.api_key
    db.dispose()
    return Tenant(name, key)


def admin_key(settings: Settings, name: str) -> str:
    db = Database(settings.resolved_database_url)
    with db.session() as session:
        key = issue_key(session, get_tenant(session, name), KeyRole.ADMIN)
    db.dispose()
    return key


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def hospital(settings: Settings, client: TestClient) -> Tenant:
    return make_tenant(settings, "Hôpital Ibn Sina", ae_title="IBNSINA_CT")


@pytest.fixture
def study_files(tmp_path: Path) -> list[Path]:
    """One small real chest-like CT series (64 slices)."""
    return write_study(tmp_path / "study-a", "1.2.826.0.1.3680043.8.498.1")


def multipart_files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths]


def zip_of(paths: list[Path], *, names: list[str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i, path in enumerate(paths):
            zf.writestr(names[i] if names else path.name, path.read_bytes())
    return buffer.getvalue()
