"""Service settings: embedded defaults that run anywhere, each overridable by a ``BASIRA_*``
environment variable (documented in ``docs/operations.md``) or by the ``Settings`` a test passes
to :func:`serving.app.create_app`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipelines.errors import ConfigError

__all__ = ["OutputName", "Settings"]

#: The result objects the service can write besides the JSON (values of
#: ``pipelines.reports.OutputFormat``; spelled here so settings load without importing torch).
OutputName = Literal["seg", "sr", "fhir", "keyimages"]


class Settings(BaseSettings):
    """Everything an operator may set; a typo in a ``BASIRA_*`` name of a field fails fast."""

    model_config = SettingsConfigDict(env_prefix="BASIRA_", extra="forbid")

    #: Root of the service's own files (database, stored instances, results) by default.
    data_dir: Path = Path("data/service")
    #: SQLAlchemy URL; empty means a SQLite file ``<data_dir>/basira.db``.
    database_url: str = ""
    #: Where received instances and results are kept; empty means ``<data_dir>/storage``.
    storage_dir: Path | None = None
    #: The model release the worker loads.
    model_dir: Path = Path("models/lung-nodule-unet/release")
    #: ``auto``: the worker times torch and ONNX Runtime on each installed execution provider at
    #: each thread count on this host and serves the fastest (cached in ``engine_cache``);
    #: ``onnx`` or ``torch`` pins the backend (nothing timed).
    inference_engine: Literal["auto", "onnx", "torch"] = "auto"
    #: Inference threads: with ``auto`` the only count timed; pinned, the engine's (None: all
    #: cores).
    inference_threads: int | None = Field(default=None, ge=1)
    #: ONNX Runtime execution providers in order; with ``auto`` only ONNX Runtime with these is
    #: timed; pinned, empty means TensorRT, CUDA, OpenVINO, CPU as installed.
    #: ``CPUExecutionProvider`` alone turns OpenVINO off.
    inference_providers: Annotated[tuple[str, ...], NoDecode] = ()
    #: The engine choice cache (JSON, keyed by CPU and model); None:
    #: ``<data_dir>/engine-choice.json``.
    engine_cache: Path | None = None
    #: Result objects written besides the JSON.
    output_formats: Annotated[tuple[OutputName, ...], NoDecode] = ("seg", "sr", "fhir")

    #: Run the analysis worker inside the service process (off when ``basira worker`` runs apart).
    run_worker: bool = True
    worker_poll_s: float = Field(default=1.0, gt=0)
    #: A running job whose worker stops renewing its lease this long is taken up again.
    job_lease_s: float = Field(default=60.0, gt=0)
    #: Attempts per job before it ends ``failed`` with ``job.retries_exhausted``.
    job_max_attempts: int = Field(default=3, ge=1)
    #: A study received by STOW-RS or C-STORE is analysed once quiet this long.
    study_quiet_s: float = Field(default=30.0, ge=0)

    #: Largest request body accepted (bytes); larger ones are refused before they are read.
    max_request_bytes: int = Field(default=2 * 1024**3, gt=0)
    #: Most files (multipart parts) in one request.
    max_parts: int = Field(default=5000, gt=0)
    #: Limits for zip archives inside an upload.
    max_archive_bytes: int = Field(default=4 * 1024**3, gt=0)
    max_archive_files: int = Field(default=20_000, gt=0)
    #: Refuse new data when the storage volume has less free space than this (bytes).
    min_free_bytes: int = Field(default=1024**3, ge=0)

    #: Requests per minute per API key (a burst of the same size is allowed).
    rate_limit_per_minute: int = Field(default=600, gt=0)
    #: Redis URL for rate limits shared between service processes; empty: in-process limits.
    redis_url: str = ""

    #: DICOM C-STORE listener port (0: no listener) and the service's own AE title.
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    #: Interface of the C-STORE listener: loopback, like the HTTP API, unless an operator
    #: exposes it on purpose (``0.0.0.0`` or one interface's address).
    dicom_host: str = "127.0.0.1"
    dicom_ae_title: str = "BASIRA"

    #: Webhook deliveries: attempts, first retry delay (doubling), request timeout.
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_s: float = Field(default=5.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    #: Review UI: session cookies without ``Secure`` (plain-HTTP localhost development only).
    ui_insecure_cookies: bool = False
    #: A UI session ends after this long without a request, and after ``ui_session_max_s``.
    ui_session_idle_s: float = Field(default=30 * 60, gt=0)
    ui_session_max_s: float = Field(default=12 * 3600, gt=0)
    #: Login attempts per minute per client address and per user name.
    ui_login_per_minute: int = Field(default=10, gt=0)
    #: Series layouts (slice order and geometry from headers, no pixels) the viewer keeps per
    #: process (least recently used dropped).
    ui_volume_cache: int = Field(default=4, ge=1)

    @field_validator("output_formats", "inference_providers", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'basira.db'}"

    @property
    def resolved_engine_cache(self) -> Path:
        return self.engine_cache or self.data_dir / "engine-choice.json"

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"


def load_settings() -> Settings:
    """The settings from the environment, or a ``config.invalid`` error naming each variable
    whose value does not fit (a setting that pydantic refuses would otherwise reach the user as
    an internal error).

    Raises:
        ConfigError: a ``BASIRA_*`` value is not valid for its setting.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = {
            "BASIRA_" + "_".join(str(part) for part in error["loc"]).upper(): error["msg"]
            for error in exc.errors()
        }
        raise ConfigError(
            "Invalid settings: " + "; ".join(f"{k}: {v}" for k, v in problems.items()) + ".",
            variables=sorted(problems),
        ) from None
