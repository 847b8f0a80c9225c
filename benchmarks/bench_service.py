"""The service under load from hospitals (issue 6), on loopback with 8 concurrent clients.

Measured against the real ``basira serve`` (SQLite, local storage, worker off while uploads are
timed): upload throughput of whole studies (``POST /v1/studies``, multipart), latency of STOW-RS
requests of 10 instances each (p50/p99), and studies completed per hour end to end once a
``basira worker`` process drains the queue with the shipped model. Baselines in the same run:
the same requests sent to a server that only reads and discards the body (HTTP + loopback
cost), and ``basira predict`` on the same studies (the analysis without the service).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_predict import RELEASE, _chest_series
from benchmarks.common import print_table

CLIENTS = 8
SLAB = 10  # instances per STOW-RS request
BASIRA = str(Path(sys.executable).with_name("basira"))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout_s} s")


def _service_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASIRA_")}
    env |= {
        "BASIRA_DATA_DIR": str(data_dir),
        "BASIRA_MODEL_DIR": str(RELEASE),
        "BASIRA_RUN_WORKER": "false",
        "BASIRA_DICOM_PORT": "0",
        "BASIRA_STUDY_QUIET_S": "86400",
        "BASIRA_RATE_LIMIT_PER_MINUTE": "1000000",
        "BASIRA_MIN_FREE_BYTES": "0",
    }
    return env


def _tenant_key(env: dict[str, str], name: str) -> str:
    done = subprocess.run(
        [BASIRA, "tenants", "create", name], env=env, capture_output=True, text=True, check=True
    )
    return next(line.split(": ", 1)[1] for line in done.stdout.splitlines() if "api key" in line)


def _upload(url: str, key: str, files: list[Path]) -> str:
    """Upload one study; returns its Study Instance UID (empty from the baseline sink)."""
    headers = {"Authorization": f"Bearer {key}"}
    handles = [open(path, "rb") for path in files]  # noqa: SIM115 (closed below)
    try:
        parts = [
            ("files", (p.name, h, "application/dicom")) for p, h in zip(files, handles, strict=True)
        ]
        response = httpx.post(url, files=parts, headers=headers, timeout=600)
    finally:
        for handle in handles:
            handle.close()
    if response.status_code not in (202, 200):
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:300]}")
    return str(response.json().get("study_instance_uid", ""))


def _stow_body(files: list[Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for path in files:
        chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        chunks.append(path.read_bytes() + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _stow_latencies(url: str, key: str, studies: list[list[Path]]) -> list[float]:
    """Each client sends its study in slabs of SLAB instances, one request after another."""

    def client(files: list[Path]) -> list[float]:
        seconds = []
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=600) as http:
            for start in range(0, len(files), SLAB):
                body, content_type = _stow_body(files[start : start + SLAB])
                began = time.perf_counter()
                response = http.post(url, content=body, headers={"Content-Type": content_type})
                seconds.append(time.perf_counter() - began)
                if response.status_code not in (200, 202):
                    raise RuntimeError(f"STOW answered {response.status_code}")
        return seconds

    with ThreadPoolExecutor(CLIENTS) as pool:
        return [s for per_client in pool.map(client, studies) for s in per_client]


def _concurrent_uploads(url: str, key: str, studies: list[list[Path]]) -> tuple[float, list[str]]:
    """Wall time for the CLIENTS concurrent uploads of one study each, and the study UIDs."""
    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        uids = list(pool.map(lambda files: _upload(url, key, files), studies))
    return time.perf_counter() - start, uids


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


class _Server:
    """A server subprocess, stopped on exit."""

    def __init__(self, command: list[str], env: dict[str, str], probe: str) -> None:
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_http(probe, self.process)

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(30)


def _drain_seconds(
    env: dict[str, str], url: str, key: str, study_uids: list[str], *, require_completed: bool
) -> float:
    """Time for a ``basira worker`` process to finish the jobs of ``study_uids``."""
    headers = {"Authorization": f"Bearer {key}"}
    start = time.perf_counter()
    worker = subprocess.Popen(
        [BASIRA, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        pending = set(study_uids)
        while pending:
            time.sleep(0.5)
            for uid in list(pending):
                job = httpx.get(f"{url}/v1/studies/{uid}", headers=headers).json()["latest_job"]
                if job["status"] not in ("queued", "running"):
                    if job["status"] == "failed" or (
                        require_completed and job["status"] != "completed"
                    ):
                        raise RuntimeError(f"job ended {job['status']}: {job['reasons']}")
                    pending.discard(uid)
        return time.perf_counter() - start
    finally:
        worker.terminate()
        worker.wait(30)


def _predict_seconds(folders: list[Path], out: Path) -> float:
    """``basira predict`` on ``folders`` in one process, writing what the service writes."""
    command = [BASIRA, "predict", *map(str, folders), "--out", str(out), "--model", str(RELEASE)]
    start = time.perf_counter()
    subprocess.run([*command, "--format", "json,seg,sr,fhir"], check=True, capture_output=True)
    return time.perf_counter() - start


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the table rows (``quick``: small studies)."""
    shape = (40, 128, 128) if quick else (250, 512, 512)
    with tempfile.TemporaryDirectory(prefix="basira-bench-service-") as tmp:
        root = Path(tmp)
        folders = [_chest_series(root / f"study{n}", shape) for n in range(CLIENTS)]
        studies = [sorted(folder.iterdir()) for folder in folders]
        total_mb = sum(p.stat().st_size for files in studies for p in files) / 1e6
        env = _service_env(root / "service")
        sink_port, port = _free_port(), _free_port()
        sink_url = f"http://127.0.0.1:{sink_port}"
        sink_cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.service_sink:app",
            "--port",
            str(sink_port),
            "--no-access-log",
        ]
        with _Server(sink_cmd, env, sink_url):
            sink_upload, _ = _concurrent_uploads(f"{sink_url}/v1/studies", "-", studies)
            sink_stow = _stow_latencies(f"{sink_url}/dicomweb/studies", "-", studies)
        url = f"http://127.0.0.1:{port}"
        with _Server([BASIRA, "serve", "--port", str(port)], env, f"{url}/healthz"):
            upload_key, stow_key = _tenant_key(env, "Uploads"), _tenant_key(env, "STOW")
            upload, uids = _concurrent_uploads(f"{url}/v1/studies", upload_key, studies)
            stow = _stow_latencies(f"{url}/dicomweb/studies", stow_key, studies)
            drain = _drain_seconds(env, url, upload_key, uids, require_completed=not quick)
        predict = _predict_seconds(folders[:2], root / "predict-out")
    return _rows(
        _Measured(total_mb, upload, sink_upload, stow, sink_stow, drain, len(uids), predict, 2)
    )


@dataclass(frozen=True)
class _Measured:
    total_mb: float
    upload_s: float
    sink_upload_s: float
    stow_s: list[float]
    sink_stow_s: list[float]
    drain_s: float
    n_studies: int
    predict_s: float
    n_predicted: int


def _rows(m: _Measured) -> list[dict[str, Any]]:
    p50, p99 = _quantile(m.stow_s, 0.5), _quantile(m.stow_s, 0.99)
    s50, s99 = _quantile(m.sink_stow_s, 0.5), _quantile(m.sink_stow_s, 0.99)
    per_hour = m.n_studies / m.drain_s * 3600
    cli_per_hour = m.n_predicted / m.predict_s * 3600
    row = ["what", "value", "unit", "baseline", "ratio"]
    return [
        dict(zip(row, values, strict=True))
        for values in (
            (
                f"upload {CLIENTS} studies ({m.total_mb:.0f} MB), {CLIENTS} clients",
                m.total_mb / m.upload_s,
                "MB/s",
                m.total_mb / m.sink_upload_s,
                m.sink_upload_s / m.upload_s,
            ),
            (f"STOW-RS request of {SLAB} instances, p50", p50 * 1000, "ms", s50 * 1000, p50 / s50),
            (f"STOW-RS request of {SLAB} instances, p99", p99 * 1000, "ms", s99 * 1000, p99 / s99),
            (
                f"studies completed per hour (a worker drains {m.n_studies} jobs)",
                per_hour,
                "studies/h",
                cli_per_hour,
                per_hour / cli_per_hour,
            ),
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small studies (smoke test)")
    args = parser.parse_args()
    print_table("Service under load (8 clients on loopback)", run(quick=args.quick))


if __name__ == "__main__":
    main()
