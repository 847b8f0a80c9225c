"""Service fixtures: a small real model release, settings on temporary folders, an app built by
the same factory production uses, a tenant with its key, and small real CT studies."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from pipelines.transforms import PreprocessConfig
from serving.app import create_app
from serving.db import Database
from serving.models import KeyRole
from serving.settings import Settings
from serving.tenants import create_tenant, get_tenant, issue_key
from tests.cli import BASIRA, Basira
from tests.pipelines.releases import make_release, small_bundle
from tests.pipelines.test_predict import write_study
from tests.serving.postgres import SKIP_MESSAGE, postgres_base_url, private_schema


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningService:
    """A real ``basira serve`` process on loopback (HTTP and DICOM ports), restartable."""

    base_url: str
    http_port: int
    dicom_port: int
    env: dict[str, str]
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 60.0) -> None:
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 (kept open by the child)
        self.process = subprocess.Popen(
            [BASIRA, "serve", "--port", str(self.http_port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"basira serve exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"basira serve not ready in {timeout_s} s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs (a crash or power cut, as far as the data goes)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def log_tail(self, n: int = 4000) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``basira ARGS`` against this service's database."""
        return Basira().run(*args, env=self.env, timeout=120)

    def create_tenant(self, name: str, *extra: str) -> Tenant:
        done = self.cli("tenants", "create", name, *extra)
        assert done.returncode == 0, done.stderr
        key = next(
            line.split(": ", 1)[1]
            for line in done.stdout.splitlines()
            if line.startswith("api key")
        )
        return Tenant(name, key)


def service_env(data_dir: Path, release: Path, dicom_port: int, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASIRA_")}
    env.update(
        {
            "BASIRA_DATA_DIR": str(data_dir),
            "BASIRA_MODEL_DIR": str(release),
            "BASIRA_DICOM_PORT": str(dicom_port),
            "BASIRA_DICOM_HOST": "127.0.0.1",
            "BASIRA_STUDY_QUIET_S": "2",
            "BASIRA_WORKER_POLL_S": "0.2",
            "BASIRA_MIN_FREE_BYTES": "0",
            "BASIRA_INFERENCE_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


@pytest.fixture
def running_service(tmp_path: Path, service_release: Path) -> Iterator[RunningService]:
    """A started ``basira serve`` with its own database, storage and ports; stopped after."""
    http_port, dicom_port = free_port(), free_port()
    data_dir = tmp_path / "served"
    data_dir.mkdir()
    service = RunningService(
        f"http://127.0.0.1:{http_port}",
        http_port,
        dicom_port,
        service_env(data_dir, service_release, dicom_port),
        data_dir,
    )
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private schema on the PostgreSQL server of ``BASIRA_TEST_POSTGRES_URL``, or on the local
    one when it answers, for this test session (each pytest-xdist worker gets its own), dropped
    at the end; skipped, saying so, when there is neither."""
    base_url = postgres_base_url()
    if not base_url:
        pytest.skip(SKIP_MESSAGE)
    with private_schema(base_url) as url:
        yield url
