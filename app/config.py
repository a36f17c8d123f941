"""Settings, read from `IMS_*` environment variables.

There is no global instance: `Settings.from_env()` is called by the entry points
(CLI, tests) and the result is passed down explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_REGION = "region-1"


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _optional_bool(value: str | None) -> bool | None:
    return None if value is None or value == "" else _bool(value, False)


def normalize_database_url(url: str) -> str:
    """Map plain driver URLs to the async drivers the service uses."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Field docs are the README's configuration table."""

    data_dir: Path = Path("data")
    database_url: str = ""
    regions: tuple[str, ...] = (DEFAULT_REGION,)
    admin_token: str | None = None
    admin_name: str = "admin"
    kms_root_key_file: Path | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_secure: bool = False
    url_secret: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    #: The filesystem object store writes objects with O_DIRECT (app.storage.direct).
    direct_io: bool = True
    workers: int = 2
    #: `ims serve` runs its `workers` in a child process (`ims worker`) instead of its own
    #: event loop, so data jobs never hold the API's interpreter (app.jobs.process).
    worker_process: bool = True
    #: Niceness a worker process adds to itself: data jobs yield the cores to the API.
    worker_nice: int = 10
    job_lease_seconds: float = 30.0
    job_poll_interval: float = 0.5
    worker_stop_grace: float = 10.0
    maintenance_interval: float = 300.0
    test_job_handlers: tuple[str, ...] = ()
    #: Run migrations at start; None: only on SQLite (`migrates_at_start`). On PostgreSQL the
    #: schema belongs to `ims migrate`, run once before the processes start.
    auto_migrate: bool | None = None
    log_level: str = "INFO"
    region_endpoints: Mapping[str, str] = field(default_factory=dict)

    @property
    def default_region(self) -> str:
        return self.regions[0]

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{self.data_dir / 'ims.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def migrates_at_start(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    @property
    def effective_kms_root_key_file(self) -> Path:
        return self.kms_root_key_file or self.data_dir / "kms-root.key"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        regions = tuple(r.strip() for r in e.get("IMS_REGIONS", DEFAULT_REGION).split(",") if r.strip())
        endpoints = {
            r: e[f"IMS_S3_ENDPOINT_{r.upper().replace('-', '_')}"]
            for r in regions
            if e.get(f"IMS_S3_ENDPOINT_{r.upper().replace('-', '_')}")
        }
        root_key = e.get("IMS_KMS_ROOT_KEY_FILE")
        return cls(
            data_dir=Path(e.get("IMS_DATA_DIR", "data")),
            database_url=e.get("IMS_DATABASE_URL", ""),
            regions=regions or (DEFAULT_REGION,),
            admin_token=e.get("IMS_ADMIN_TOKEN") or None,
            admin_name=e.get("IMS_ADMIN_NAME", "admin"),
            kms_root_key_file=Path(root_key) if root_key else None,
            s3_endpoint=e.get("IMS_S3_ENDPOINT") or None,
            s3_access_key=e.get("IMS_S3_ACCESS_KEY") or None,
            s3_secret_key=e.get("IMS_S3_SECRET_KEY") or None,
            s3_secure=_bool(e.get("IMS_S3_SECURE"), False),
            url_secret=e.get("IMS_URL_SECRET") or None,
            public_url=e.get("IMS_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
            direct_io=_bool(e.get("IMS_DIRECT_IO"), True),
            workers=int(e.get("IMS_WORKERS", "2")),
            worker_process=_bool(e.get("IMS_WORKER_PROCESS"), True),
            worker_nice=int(e.get("IMS_WORKER_NICE", "10")),
            job_lease_seconds=float(e.get("IMS_JOB_LEASE_SECONDS", "30")),
            job_poll_interval=float(e.get("IMS_JOB_POLL_INTERVAL", "0.5")),
            worker_stop_grace=float(e.get("IMS_WORKER_STOP_GRACE", "10")),
            maintenance_interval=float(e.get("IMS_MAINTENANCE_INTERVAL", "300")),
            test_job_handlers=tuple(m.strip() for m in e.get("IMS_TEST_JOB_HANDLERS", "").split(",") if m.strip()),
            auto_migrate=_optional_bool(e.get("IMS_AUTO_MIGRATE")),
            log_level=e.get("IMS_LOG_LEVEL", "INFO").upper(),
            region_endpoints=endpoints,
        )

    def to_env(self) -> dict[str, str]:
        """The `IMS_*` variables `from_env` reads back into these settings (what a child
        process of this one is started with)."""
        env = {
            "IMS_DATA_DIR": str(self.data_dir),
            "IMS_DATABASE_URL": self.database_url,
            "IMS_REGIONS": ",".join(self.regions),
            "IMS_ADMIN_TOKEN": self.admin_token or "",
            "IMS_ADMIN_NAME": self.admin_name,
            "IMS_KMS_ROOT_KEY_FILE": str(self.kms_root_key_file) if self.kms_root_key_file else "",
            "IMS_S3_ENDPOINT": self.s3_endpoint or "",
            "IMS_S3_ACCESS_KEY": self.s3_access_key or "",
            "IMS_S3_SECRET_KEY": self.s3_secret_key or "",
            "IMS_S3_SECURE": "1" if self.s3_secure else "0",
            "IMS_URL_SECRET": self.url_secret or "",
            "IMS_PUBLIC_URL": self.public_url,
            "IMS_DIRECT_IO": "1" if self.direct_io else "0",
            "IMS_WORKERS": str(self.workers),
            "IMS_WORKER_PROCESS": "1" if self.worker_process else "0",
            "IMS_WORKER_NICE": str(self.worker_nice),
            "IMS_JOB_LEASE_SECONDS": repr(self.job_lease_seconds),
            "IMS_JOB_POLL_INTERVAL": repr(self.job_poll_interval),
            "IMS_WORKER_STOP_GRACE": repr(self.worker_stop_grace),
            "IMS_MAINTENANCE_INTERVAL": repr(self.maintenance_interval),
            "IMS_TEST_JOB_HANDLERS": ",".join(self.test_job_handlers),
            "IMS_AUTO_MIGRATE": "" if self.auto_migrate is None else "1" if self.auto_migrate else "0",
            "IMS_LOG_LEVEL": self.log_level,
        }
        for region, endpoint in self.region_endpoints.items():
            env[f"IMS_S3_ENDPOINT_{region.upper().replace('-', '_')}"] = endpoint
        return env


#: Environment variables the service reads, with their meaning (README table, compose test).
ENVIRONMENT: dict[str, str] = {
    "IMS_DATA_DIR": "Directory of the embedded default (SQLite file, objects, KMS root key). Default `./data`.",
    "IMS_DATABASE_URL": "Database URL; `postgresql://…` switches to PostgreSQL. Default: SQLite in IMS_DATA_DIR.",
    "IMS_REGIONS": "Comma-separated region ids; the first is the default. Default `region-1`.",
    "IMS_ADMIN_TOKEN": "API token of the bootstrap admin. Unset: generated at first start into `$IMS_DATA_DIR/admin-token` (0600). Changed: the first start with the new value revokes the token the old value put there (see Set-up).",
    "IMS_ADMIN_NAME": "Name of the bootstrap admin account. Default `admin`.",
    "IMS_KMS_ROOT_KEY_FILE": "Root key of the local KMS. Default `$IMS_DATA_DIR/kms-root.key` (created 0600).",
    "IMS_S3_ENDPOINT": "S3/MinIO endpoint `host:port`; unset: the filesystem object store.",
    "IMS_S3_ACCESS_KEY": "S3 access key.",
    "IMS_S3_SECRET_KEY": "S3 secret key.",
    "IMS_S3_SECURE": "Use HTTPS for S3. Default false.",
    "IMS_URL_SECRET": "Secret that signs `/objects/…` URLs; shared by every process. Default: generated into IMS_DATA_DIR.",
    "IMS_PUBLIC_URL": "Base URL clients reach the server at (signed URLs). Default `http://127.0.0.1:8000`.",
    "IMS_DIRECT_IO": "The filesystem object store writes objects with O_DIRECT, from the process's buffers to the disk without the page cache (falling back to buffered writes where the filesystem refuses it); 0 always writes buffered. Default true.",
    "IMS_WORKERS": "Job workers `ims serve` runs (0: run `ims worker` separately). Default 2.",
    "IMS_WORKER_PROCESS": "`ims serve` runs its IMS_WORKERS in a child process (an `ims worker` it supervises and restarts) so that data jobs never share the API's interpreter; 0 runs them on the API's own event loop. Default true.",
    "IMS_WORKER_NICE": "Niceness every worker process adds to itself, so data jobs yield the cores to API processes on the same machine (0: none). Default 10.",
    "IMS_JOB_LEASE_SECONDS": "Lease of a claimed job; a job whose worker misses it is taken over. Default 30.",
    "IMS_JOB_POLL_INTERVAL": "Seconds an idle worker waits before looking for jobs again. Default 0.5.",
    "IMS_WORKER_STOP_GRACE": "Seconds a stopping worker lets its job finish before releasing it (a job it was still claiming when the stop came is released unstarted). Default 10.",
    "IMS_TEST_JOB_HANDLERS": "Tests only: comma-separated modules whose `register(registry)` adds job handlers.",
    "IMS_AUTO_MIGRATE": "Run migrations when a command that opens the database starts (`ims serve`, `ims worker`, `ims demo`, `ims admin create-account`, `ims admin maintenance`). Default: true on SQLite, false on PostgreSQL, where `ims migrate` runs once before the processes start (docker-compose's `init`). Concurrent migrations of one database wait for each other.",
    "IMS_MAINTENANCE_INTERVAL": "Seconds between rounds of chunk garbage collection and KMS key purges, run by one process at a time in every process with workers (0: never). Default 300.",
    "IMS_LOG_LEVEL": "Log level. Default INFO.",
}
