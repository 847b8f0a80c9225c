"""``basira demo``: the whole product on one machine, as ``make demo`` runs it.

It starts a real ``basira serve`` on a fresh demo database with the shipped model, creates a
demo hospital (API key, C-STORE AE title) and a radiologist account, submits the CT series of
every study under the given folder through the real upload API, prints where to sign in, and
reports each result as the worklist fills. Nothing here is a shortcut the product does not take.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pipelines.dicom.index import index_inputs
from pipelines.errors import NoDicomFoundError
from serving.errors import ServiceUnavailableError
from serving.settings import Settings

__all__ = ["DemoConfig", "DemoSummary", "run_demo"]

HOSPITAL = "Demo Hospital"
RADIOLOGIST = "radiologist"
PACS_AE_TITLE = "DEMO_PACS"
_TERMINAL = {"completed", "not_analysable", "failed"}


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    studies_dir: Path
    data_dir: Path
    model_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    dicom_port: int = 11112
    #: Stop the service once every study has a result (tests); otherwise serve until Ctrl-C.
    exit_when_done: bool = False
    ready_timeout_s: float = 180.0
    result_timeout_s: float = 1800.0


@dataclass
class DemoSummary:
    url: str
    api_key: str
    password: str
    statuses: dict[str, str] = field(default_factory=dict)


def run_demo(config: DemoConfig, say: Callable[[str], None] = print) -> DemoSummary:
    """Run the demo; returns what was created and how each study ended.

    Raises:
        NoDicomFoundError: no analysable CT series under ``studies_dir``.
        ServiceUnavailableError: the service did not become ready (its log is named).
    """
    series = _series_to_submit(config.studies_dir)
    if config.data_dir.exists():
        shutil.rmtree(config.data_dir)  # the demo's own database and storage, made anew
    config.data_dir.mkdir(parents=True)
    summary = _seed(config)
    server = _start(config)
    try:
        _wait_ready(summary.url, server, config)
        say(_welcome(summary, config))
        jobs = {_upload(summary, files): uid for uid, files in series.items()}
        say(f"Submitted {len(jobs)} studies through POST /v1/studies; results follow.")
        _follow(summary, jobs, config, say)
        if config.exit_when_done:
            return summary
        say("The service keeps running; press Ctrl-C to stop it.")
        server.wait()
    except KeyboardInterrupt:
        say("Stopping.")
    finally:
        _stop(server)
    return summary


def _series_to_submit(studies_dir: Path) -> dict[str, list[Path]]:
    """The selected CT series' files of every study (ground-truth SEGs are not sent)."""
    with tempfile.TemporaryDirectory(prefix="basira-demo-") as workdir:
        index = index_inputs([studies_dir], workdir=Path(workdir))
    series = {
        study.study_instance_uid: [inst.path for inst in study.selected_series.instances]
        for study in index.studies
        if study.selected_series is not None
    }
    if not series:
        raise NoDicomFoundError(f"No analysable CT series under {studies_dir}.")
    return series


def _settings(config: DemoConfig) -> Settings:
    return Settings(data_dir=config.data_dir, model_dir=config.model_dir)


def _seed(config: DemoConfig) -> DemoSummary:
    """The demo hospital (key, AE title) and its radiologist, created in the demo database."""
    from serving.services import Services
    from serving.tenants import create_tenant
    from serving.ui.accounts import create_user, generate_password

    services = Services.from_settings(_settings(config))
    password = generate_password()
    try:
        with services.db.session() as session:
            issued = create_tenant(session, HOSPITAL, ae_title=PACS_AE_TITLE)
            create_user(session, issued.tenant.id, RADIOLOGIST, password)
            key = issued.api_key
    finally:
        services.close()
    return DemoSummary(f"http://{config.host}:{config.port}", key, password)


def _start(config: DemoConfig) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASIRA_")}
    env |= {
        "BASIRA_DATA_DIR": str(config.data_dir),
        "BASIRA_MODEL_DIR": str(config.model_dir),
        "BASIRA_DICOM_PORT": str(config.dicom_port),
        "BASIRA_DICOM_HOST": config.host,
        "BASIRA_UI_INSECURE_COOKIES": "true",  # plain HTTP on this machine only
    }
    log = open(config.data_dir / "server.log", "ab")  # noqa: SIM115 (the child keeps it)
    basira = str(Path(sys.executable).with_name("basira"))
    command = [basira, "serve", "--host", config.host, "--port", str(config.port)]
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_ready(url: str, server: subprocess.Popen[bytes], config: DemoConfig) -> None:
    deadline = time.monotonic() + config.ready_timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise ServiceUnavailableError(
        f"The service did not become ready (is port {config.port} or {config.dicom_port} in "
        f"use?); see {config.data_dir / 'server.log'}.",
        log=str(config.data_dir / "server.log"),
    )


def _welcome(summary: DemoSummary, config: DemoConfig) -> str:
    return "\n".join(
        [
            "",
            f"Basira is running. Open {summary.url}/ui/ and sign in:",
            f"  hospital: {HOSPITAL}",
            f"  user:     {RADIOLOGIST}",
            f"  password: {summary.password}",
            f"API key of {HOSPITAL}: {summary.api_key}  (API: {summary.url}/docs)",
            f"DICOM C-STORE: AE title BASIRA at {config.host}:{config.dicom_port}, "
            f"calling AE title {PACS_AE_TITLE}",
            "",
        ]
    )


def _upload(summary: DemoSummary, files: list[Path]) -> str:
    """Submit one study's files; returns its job id."""
    handles = [open(path, "rb") for path in files]  # noqa: SIM115 (closed below)
    try:
        parts = [
            ("files", (path.name, handle, "application/dicom"))
            for path, handle in zip(files, handles, strict=True)
        ]
        response = httpx.post(
            f"{summary.url}/v1/studies",
            files=parts,
            headers={"Authorization": f"Bearer {summary.api_key}"},
            timeout=600,
        )
    finally:
        for handle in handles:
            handle.close()
    response.raise_for_status()
    return str(response.json()["job_id"])


def _follow(
    summary: DemoSummary, jobs: dict[str, str], config: DemoConfig, say: Callable[[str], None]
) -> None:
    """Report each job as it ends."""
    headers = {"Authorization": f"Bearer {summary.api_key}"}
    deadline = time.monotonic() + config.result_timeout_s
    while len(summary.statuses) < len(jobs) and time.monotonic() < deadline:
        for job_id in jobs:
            if job_id in summary.statuses:
                continue
            job = httpx.get(f"{summary.url}/v1/jobs/{job_id}", headers=headers).json()
            if job["status"] in _TERMINAL:
                summary.statuses[job_id] = job["status"]
                say(f"  [{len(summary.statuses)}/{len(jobs)}] {_describe(summary, job)}")
        time.sleep(0.5)


def _describe(summary: DemoSummary, job: dict[str, object]) -> str:
    if job["status"] != "completed":
        codes = ", ".join(str(r["code"]) for r in job["reasons"])  # type: ignore[attr-defined]
        return f"{job['status']} ({codes})"
    result = httpx.get(
        f"{summary.url}{job['result_url']}", headers={"Authorization": f"Bearer {summary.api_key}"}
    ).json()
    diagnosis = result["diagnosis"]
    return (
        f"completed: {diagnosis['label'].replace('_', ' ')}, probability "
        f"{diagnosis['probability']:.2f}, {len(result['findings'])} findings"
    )


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)
