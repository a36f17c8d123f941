"""Settings, read from `IMS_*` environment variables.

There is no global instance: `Settings.from_env()` is called by the entry points
(CLI, tests) and the result is passed down explicitly. `from_env` checks every value it
reads and raises `SettingsError`, naming the variable and what it accepts, for one the
service cannot run with; an empty variable counts as unset.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["DEFAULT_BUCKETS_PER_ACCOUNT", "DEFAULT_EXPIRED_TOKEN_RETENTION", "DEFAULT_REGION",
           "DEFAULT_TOKENS_PER_ACCOUNT", "ENVIRONMENT",
           "MIN_URL_SECRET_BYTES", "OTHER_VARIABLES", "Settings", "SettingsError", "is_setting",
           "normalize_database_url", "region_endpoint_variable", "warn_of_unknown_variables"]

DEFAULT_REGION = "region-1"
#: Region ids: they name the service bucket `ims-svc-<region>` (63 bytes at most, so 55 here)
#: and the variable IMS_S3_ENDPOINT_<REGION>.
REGION_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,53}[a-z0-9])?")
#: A URL secret shorter than this could be guessed from the URLs it signs.
MIN_URL_SECRET_BYTES = 16
#: A worker renews its job's lease every third of it: a shorter lease than this is lost to
#: a slow database round trip, and a healthy job is taken over.
MIN_JOB_LEASE_SECONDS = 1.0
#: Buckets an account may have, in all regions together: S3's historical default quota of
#: buckets per AWS account. On a shared S3 account (production) the accounts of the service
#: share that account's quota, so no one account may take it all.
DEFAULT_BUCKETS_PER_ACCOUNT = 100
#: Live API tokens an account may have: `viewer { apiTokens }` lists them all in one answer,
#: so their number is bounded; far more than a person or their scripts need.
DEFAULT_TOKENS_PER_ACCOUNT = 100
#: Seconds an expired API token is kept (listed, refused) before maintenance deletes it: long
#: enough for its owner to see which of their tokens ran out, and why a script stopped.
DEFAULT_EXPIRED_TOKEN_RETENTION = 30 * 86400.0
#: The longest retention: a hundred years, well past any token's life (TOKEN_DAYS_MAX is ten
#: years). Unbounded, a value such as 1e12 would put the pruning cutoff before the year 1, which
#: a datetime cannot hold, and fail every maintenance round.
MAX_EXPIRED_TOKEN_RETENTION = 36500 * 86400.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_ENDPOINT_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?")
_DECIMAL_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_MODULE_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """An `IMS_*` variable holds a value the service cannot run with. The message names the
    variable and what it accepts, and shows the value only when it is no secret."""

    def __init__(self, variable: str, accepts: str, shown: str | None = None) -> None:
        self.variable = variable
        what = variable if shown is None else f"{variable}={shown!r}"
        super().__init__(f"{what} is not valid: expected {accepts}")


def normalize_database_url(url: str) -> str:
    """Map plain driver URLs to the async drivers the service uses. A PostgreSQL URL's
    libpq `sslmode` (what managed databases hand out: `?sslmode=require`) becomes asyncpg's
    `ssl`, which takes the same modes (`sync_url` turns it back for psycopg2)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return _renamed_query_option("postgresql+asyncpg://" + url[len("postgresql://") :], "sslmode", "ssl")
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def _renamed_query_option(url: str, old: str, new: str) -> str:
    """`url` with its query option `old` renamed `new` (unchanged when it has none)."""
    if "?" not in url:
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if old not in parsed.query:
        return url
    query = dict(parsed.query)
    query[new] = query.pop(old)
    return parsed.set(query=query).render_as_string(hide_password=False)


def region_endpoint_variable(region: str) -> str:
    """The variable naming a region's own S3 endpoint: `eu-west-1` → IMS_S3_ENDPOINT_EU_WEST_1."""
    return f"IMS_S3_ENDPOINT_{region.upper().replace('-', '_')}"


class _Env:
    """Typed, checked reads of one environment."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or not value.strip() else value

    def text(self, name: str, default: str) -> str:
        return self.get(name) or default

    def boolean(self, name: str, default: bool) -> bool:
        value = self.optional_boolean(name)
        return default if value is None else value

    def optional_boolean(self, name: str) -> bool | None:
        raw = self.get(name)
        if raw is None:
            return None
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise SettingsError(name, "true or false (also 1/0, yes/no, on/off)", raw)
        return word in _TRUE

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        raw = self.get(name)
        if raw is None:
            return default
        accepts = f"a whole number from {minimum} to {maximum}" if maximum is not None else \
            f"a whole number, at least {minimum}"
        if not re.fullmatch(r"[+-]?\d+", raw.strip()):
            raise SettingsError(name, accepts, raw)
        value = int(raw)
        if value < minimum or (maximum is not None and value > maximum):
            raise SettingsError(name, accepts, raw)
        return value

    def seconds(self, name: str, default: float, *, minimum: float, inclusive: bool = True,
                maximum: float | None = None) -> float:
        raw = self.get(name)
        if raw is None:
            return default
        accepts = f"a number of seconds, {'at least' if inclusive else 'more than'} {minimum:g}"
        if maximum is not None:
            accepts = f"a number of seconds from {minimum:g} to {maximum:.15g}"  # both ends allowed
        if not _DECIMAL_RE.fullmatch(raw.strip()):  # float() would also take nan, inf and 1_0
            raise SettingsError(name, accepts, raw)
        value = float(raw)
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive) \
                or (maximum is not None and value > maximum):
            raise SettingsError(name, accepts, raw)
        return value

    def endpoint(self, name: str) -> str | None:
        raw = self.get(name)
        if raw is None:
            return None
        value = raw.strip()
        match = _ENDPOINT_RE.fullmatch(value)
        if match is None or (match.group(1) is not None and not 0 < int(match.group(1)) < 65536):
            raise SettingsError(name, "host or host:port, without a scheme or path (e.g. minio:9000)", raw)
        return value


def _database_url(env: _Env) -> str:
    raw = env.get("IMS_DATABASE_URL")
    if raw is None:
        return ""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = raw.strip()
    accepts = "postgresql://user:password@host[:port]/database (or postgres://…) or sqlite:///path"
    # The URL may hold a password: show only its scheme.
    shown = url.split("://", 1)[0] + "://…" if "://" in url else "…"
    normalized = normalize_database_url(url)
    if not normalized.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite:///")):
        raise SettingsError("IMS_DATABASE_URL", accepts, shown)
    try:
        parsed = make_url(normalized)
    except (ArgumentError, ValueError):
        raise SettingsError("IMS_DATABASE_URL", accepts, shown) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        # Every pooled connection to an in-memory database would see a database of its own.
        raise SettingsError("IMS_DATABASE_URL", "a SQLite file path after sqlite:///", shown)
    return url


def _regions(env: _Env) -> tuple[str, ...]:
    raw = env.get("IMS_REGIONS")
    if raw is None:
        return (DEFAULT_REGION,)
    from app.storage.base import InvalidNameError
    from app.storage.names import service_bucket, validate_bucket_name

    regions = tuple(r.strip() for r in raw.split(","))
    accepts = ("comma-separated region ids, each named once: 1-55 lowercase letters, digits and '-', "
               "starting and ending with a letter or digit (e.g. region-1,eu-west-2)")
    if len(set(regions)) != len(regions) or not all(REGION_RE.fullmatch(r) for r in regions):
        raise SettingsError("IMS_REGIONS", accepts, raw)
    for region in regions:
        try:
            validate_bucket_name(service_bucket(region))
        except InvalidNameError as exc:
            raise SettingsError("IMS_REGIONS", f"region ids that make valid bucket names ({exc})", raw) from None
    return regions


def _region_endpoints(env: _Env, regions: tuple[str, ...]) -> dict[str, str]:
    """IMS_S3_ENDPOINT_<REGION> of the regions of IMS_REGIONS. One naming no region (a typo, a
    region taken out of the list) is refused: that region's objects would have gone elsewhere."""
    variables = {region_endpoint_variable(r): r for r in regions}
    for name in sorted(env.env):
        if name.startswith("IMS_S3_ENDPOINT_") and name not in variables and env.get(name) is not None:
            known = ", ".join(f"{r}: {v}" for v, r in variables.items())
            raise SettingsError(name, f"the endpoint of a region of IMS_REGIONS ({known})", env.env[name])
    return {r: url for v, r in variables.items() if (url := env.endpoint(v))}


def _s3_keys(env: _Env, endpoints: list[str]) -> tuple[str | None, str | None]:
    """IMS_S3_ACCESS_KEY and IMS_S3_SECRET_KEY: both with an endpoint (anonymous requests cannot
    make the service buckets), neither without one (IMS_S3_ENDPOINT misspelt: the objects would
    have gone to the filesystem store)."""
    access, secret = env.get("IMS_S3_ACCESS_KEY"), env.get("IMS_S3_SECRET_KEY")
    if endpoints:
        named = ", ".join(endpoints)
        if access is None:
            raise SettingsError("IMS_S3_ACCESS_KEY", "the S3 access key, with IMS_S3_SECRET_KEY, when an S3 endpoint "
                                f"is set ({named})")
        if secret is None:
            raise SettingsError("IMS_S3_SECRET_KEY", "the S3 secret key, with IMS_S3_ACCESS_KEY, when an S3 endpoint "
                                f"is set ({named})")
    elif access is not None or secret is not None:
        raise SettingsError("IMS_S3_ENDPOINT", "host:port of the S3 store that IMS_S3_ACCESS_KEY and "
                            "IMS_S3_SECRET_KEY are for (or a region's IMS_S3_ENDPOINT_<REGION>); unset them for "
                            "the filesystem store")
    return access, secret


def _admin(env: _Env) -> tuple[str | None, str]:
    from app.domain.rules import ACCOUNT_NAME_RE

    token = env.get("IMS_ADMIN_TOKEN")
    if token is not None and not re.fullmatch(r"[\x21-\x7e]+", token):
        # It travels in an `Authorization: Bearer` header.
        raise SettingsError("IMS_ADMIN_TOKEN", "visible ASCII characters without spaces")
    name = env.text("IMS_ADMIN_NAME", "admin")
    if not ACCOUNT_NAME_RE.fullmatch(name):
        raise SettingsError("IMS_ADMIN_NAME", "an account name: 3-64 lowercase letters, digits, '_' or '-', "
                            "starting with a letter or digit", name)
    return token, name


def _url_secret(env: _Env) -> str | None:
    secret = env.get("IMS_URL_SECRET")
    if secret is not None and len(secret.encode()) < MIN_URL_SECRET_BYTES:
        raise SettingsError("IMS_URL_SECRET", f"at least {MIN_URL_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)")
    return secret


def _public_url(env: _Env, default: str) -> str:
    raw = env.get("IMS_PUBLIC_URL")
    if raw is None:
        return default
    url = raw.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query \
            and not parts.fragment and parts.port != 0
    except ValueError:  # a port that is no number or out of range
        valid = False
    if not valid:
        raise SettingsError("IMS_PUBLIC_URL", "an http:// or https:// URL with a host (e.g. https://ims.example.com)",
                            raw)
    return url


def _test_job_handlers(env: _Env) -> tuple[str, ...]:
    raw = env.get("IMS_TEST_JOB_HANDLERS")
    if raw is None:
        return ()
    modules = tuple(m.strip() for m in raw.split(",") if m.strip())
    if not all(_MODULE_RE.fullmatch(m) for m in modules):
        raise SettingsError("IMS_TEST_JOB_HANDLERS", "comma-separated module names (e.g. tests.jobs.handlers)", raw)
    return modules


def _cors_origins(env: _Env) -> tuple[str, ...]:
    """Origins (`scheme://host[:port]`, as browsers send them) whose pages may call the API,
    or `*` alone for any."""
    raw = env.get("IMS_CORS_ORIGINS")
    if raw is None:
        return ()
    origins = tuple(dict.fromkeys(o.strip().rstrip("/") for o in raw.split(",") if o.strip()))
    if origins == ("*",):
        return origins
    for origin in origins:
        try:
            parts = urlsplit(origin)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.path \
                and not parts.query and not parts.fragment and not parts.username and parts.port != 0 \
                and origin == origin.lower() and "*" not in origin
        except ValueError:  # a port that is no number or out of range
            valid = False
        if not valid:
            raise SettingsError("IMS_CORS_ORIGINS", "comma-separated origins in lowercase, each scheme://host[:port] "
                                "without a path (e.g. https://console.example.com), or * alone", raw)
    return origins


def _log_level(env: _Env) -> str:
    raw = env.get("IMS_LOG_LEVEL")
    if raw is None:
        return "INFO"
    if raw.strip().upper() not in LOG_LEVELS:
        raise SettingsError("IMS_LOG_LEVEL", "one of " + ", ".join(LOG_LEVELS), raw)
    return raw.strip().upper()


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
    #: Longest an attempt of a job may run before its handler is cancelled (JOB_TIMEOUT).
    job_max_seconds: float = 86400.0
    job_poll_interval: float = 0.5
    worker_stop_grace: float = 10.0
    #: Seconds a stopping `ims serve` lets requests in flight finish (a long download, a
    #: stalled upload) before it cancels them and stops its workers.
    http_stop_grace: float = 15.0
    maintenance_interval: float = 300.0
    test_job_handlers: tuple[str, ...] = ()
    #: Run migrations at start; None: only on SQLite (`migrates_at_start`). On PostgreSQL the
    #: schema belongs to `ims migrate`, run once before the processes start.
    auto_migrate: bool | None = None
    log_level: str = "INFO"
    #: Browser origins allowed to call the API cross-origin (CORS); () none, ("*",) any.
    cors_origins: tuple[str, ...] = ()
    region_endpoints: Mapping[str, str] = field(default_factory=dict)
    #: Buckets an account may have, in all regions together (`createBucket` beyond: BUCKET_LIMIT).
    buckets_per_account: int = DEFAULT_BUCKETS_PER_ACCOUNT
    #: Live API tokens an account may have (`createApiToken` beyond: TOO_MANY_TOKENS).
    tokens_per_account: int = DEFAULT_TOKENS_PER_ACCOUNT
    #: Seconds an expired API token stays before the maintenance round deletes it.
    expired_token_retention: float = DEFAULT_EXPIRED_TOKEN_RETENTION

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
        """Settings from `env` (default: the process's environment); raises SettingsError."""
        e = _Env(os.environ if env is None else env)
        d = cls()
        regions = _regions(e)
        s3_endpoint = e.endpoint("IMS_S3_ENDPOINT")
        endpoints = _region_endpoints(e, regions)
        s3_access_key, s3_secret_key = _s3_keys(
            e, (["IMS_S3_ENDPOINT"] if s3_endpoint else []) + [region_endpoint_variable(r) for r in endpoints])
        root_key = e.get("IMS_KMS_ROOT_KEY_FILE")
        admin_token, admin_name = _admin(e)
        return cls(
            data_dir=Path(e.text("IMS_DATA_DIR", str(d.data_dir))),
            database_url=_database_url(e),
            regions=regions,
            admin_token=admin_token,
            admin_name=admin_name,
            kms_root_key_file=Path(root_key) if root_key else None,
            s3_endpoint=s3_endpoint,
            s3_access_key=s3_access_key,
            s3_secret_key=s3_secret_key,
            s3_secure=e.boolean("IMS_S3_SECURE", d.s3_secure),
            url_secret=_url_secret(e),
            public_url=_public_url(e, d.public_url),
            direct_io=e.boolean("IMS_DIRECT_IO", d.direct_io),
            workers=e.integer("IMS_WORKERS", d.workers, minimum=0),
            worker_process=e.boolean("IMS_WORKER_PROCESS", d.worker_process),
            # Niceness tops out at 19; lowering it takes privileges a worker should not have.
            worker_nice=e.integer("IMS_WORKER_NICE", d.worker_nice, minimum=0, maximum=19),
            job_lease_seconds=e.seconds("IMS_JOB_LEASE_SECONDS", d.job_lease_seconds, minimum=MIN_JOB_LEASE_SECONDS),
            job_max_seconds=e.seconds("IMS_JOB_MAX_SECONDS", d.job_max_seconds, minimum=0, inclusive=False),
            job_poll_interval=e.seconds("IMS_JOB_POLL_INTERVAL", d.job_poll_interval, minimum=0, inclusive=False),
            worker_stop_grace=e.seconds("IMS_WORKER_STOP_GRACE", d.worker_stop_grace, minimum=0),
            http_stop_grace=e.seconds("IMS_HTTP_STOP_GRACE", d.http_stop_grace, minimum=0),
            maintenance_interval=e.seconds("IMS_MAINTENANCE_INTERVAL", d.maintenance_interval, minimum=0),
            test_job_handlers=_test_job_handlers(e),
            auto_migrate=e.optional_boolean("IMS_AUTO_MIGRATE"),
            log_level=_log_level(e),
            cors_origins=_cors_origins(e),
            region_endpoints=endpoints,
            buckets_per_account=e.integer("IMS_BUCKETS_PER_ACCOUNT", d.buckets_per_account, minimum=1),
            tokens_per_account=e.integer("IMS_TOKENS_PER_ACCOUNT", d.tokens_per_account, minimum=1),
            expired_token_retention=e.seconds("IMS_EXPIRED_TOKEN_RETENTION", d.expired_token_retention, minimum=0,
                                              maximum=MAX_EXPIRED_TOKEN_RETENTION),
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
            "IMS_JOB_MAX_SECONDS": repr(self.job_max_seconds),
            "IMS_JOB_POLL_INTERVAL": repr(self.job_poll_interval),
            "IMS_WORKER_STOP_GRACE": repr(self.worker_stop_grace),
            "IMS_HTTP_STOP_GRACE": repr(self.http_stop_grace),
            "IMS_MAINTENANCE_INTERVAL": repr(self.maintenance_interval),
            "IMS_TEST_JOB_HANDLERS": ",".join(self.test_job_handlers),
            "IMS_AUTO_MIGRATE": "" if self.auto_migrate is None else "1" if self.auto_migrate else "0",
            "IMS_LOG_LEVEL": self.log_level,
            "IMS_CORS_ORIGINS": ",".join(self.cors_origins),
            "IMS_BUCKETS_PER_ACCOUNT": str(self.buckets_per_account),
            "IMS_TOKENS_PER_ACCOUNT": str(self.tokens_per_account),
            "IMS_EXPIRED_TOKEN_RETENTION": repr(self.expired_token_retention),
        }
        for region, endpoint in self.region_endpoints.items():
            env[region_endpoint_variable(region)] = endpoint
        return env


#: Environment variables the service reads, with their meaning (README table, compose test).
#: A `<PART>` in a name stands for a family of variables (`is_setting`).
ENVIRONMENT: dict[str, str] = {
    "IMS_DATA_DIR": "Directory of the embedded default (SQLite file, objects, KMS root key). Default `./data`.",
    "IMS_DATABASE_URL": "Database URL: `postgresql://…` (or `postgres://…`) switches to PostgreSQL (libpq's `?sslmode=require` and the like are honoured); `sqlite:///PATH` is a SQLite file. Default: SQLite in IMS_DATA_DIR.",
    "IMS_REGIONS": "Comma-separated region ids, each 1-55 lowercase letters, digits and `-` starting and ending with a letter or digit; the first is the default. Default `region-1`.",
    "IMS_ADMIN_TOKEN": "API token of the bootstrap admin. Unset: generated at first start into `$IMS_DATA_DIR/admin-token` (0600). Changed: the first start with the new value revokes the token the old value put there (see Set-up).",
    "IMS_ADMIN_NAME": "Name of the bootstrap admin account (an account name: 3-64 of `a-z 0-9 _ -`). Default `admin`.",
    "IMS_KMS_ROOT_KEY_FILE": "Root key of the local KMS. Default `$IMS_DATA_DIR/kms-root.key` (created 0600).",
    "IMS_S3_ENDPOINT": "S3/MinIO endpoint `host:port`; unset: the filesystem object store.",
    "IMS_S3_ENDPOINT_<REGION>": "S3/MinIO endpoint `host:port` of one region of IMS_REGIONS, named by its id in capitals with `_` for `-` (`eu-west-2`: `IMS_S3_ENDPOINT_EU_WEST_2`): the region's service bucket and its accounts' buckets live there, reached with the same keys. Unset: IMS_S3_ENDPOINT (or the filesystem store). One naming no region of IMS_REGIONS is refused.",
    "IMS_S3_ACCESS_KEY": "S3 access key: required when an S3 endpoint is set, refused when none is.",
    "IMS_S3_SECRET_KEY": "S3 secret key: required when an S3 endpoint is set, refused when none is.",
    "IMS_S3_SECURE": "Use HTTPS for S3. Default false.",
    "IMS_BUCKETS_PER_ACCOUNT": "Buckets an account may have, in all regions together (a whole number, at least 1); `createBucket` beyond it is `ConflictError BUCKET_LIMIT`. Default 100, S3's historical default quota of buckets per AWS account: on a shared S3 account the service's accounts share that account's bucket quota, and no one of them should use it up.",
    "IMS_TOKENS_PER_ACCOUNT": "Live (unexpired) API tokens an account may have (a whole number, at least 1), its first token included; `createApiToken` beyond it is `ValidationError TOO_MANY_TOKENS` (revoke one with `revokeApiToken`). The bootstrap admin's token (IMS_ADMIN_TOKEN's, or the one written to `admin-token`) is made at start whatever the count. Default 100.",
    "IMS_EXPIRED_TOKEN_RETENTION": "Seconds (0 to 3153600000, a hundred years) an expired API token is kept after its `expiresAt`: listed in `viewer { apiTokens }` and refused at every request, it counts against no limit; then the maintenance round (IMS_MAINTENANCE_INTERVAL) deletes it (0: at the first round after it expires). Default 2592000 (30 days).",
    "IMS_URL_SECRET": "Secret that signs `/objects/…` URLs (at least 16 bytes); shared by every process. Default: generated into IMS_DATA_DIR.",
    "IMS_PUBLIC_URL": "Base URL clients reach the server at (signed URLs). Default `http://127.0.0.1:8000`.",
    "IMS_DIRECT_IO": "The filesystem object store writes objects with O_DIRECT, from the process's buffers to the disk without the page cache (falling back to buffered writes where the filesystem refuses it); 0 always writes buffered. Default true.",
    "IMS_WORKERS": "Job workers `ims serve` runs (0: run `ims worker` separately). Default 2.",
    "IMS_WORKER_PROCESS": "`ims serve` runs its IMS_WORKERS in a child process (an `ims worker` it supervises and restarts) so that data jobs never share the API's interpreter; 0 runs them on the API's own event loop. Default true.",
    "IMS_WORKER_NICE": "Niceness every worker process adds to itself, so data jobs yield the cores to API processes on the same machine (0-19; 0: none). Default 10.",
    "IMS_JOB_LEASE_SECONDS": "Lease of a claimed job, at least 1 second; a job whose worker misses it is taken over. Default 30.",
    "IMS_JOB_MAX_SECONDS": "Seconds (more than 0) an attempt of a job may run: a handler still running then (an I/O call that never returns, while its worker keeps the lease) is cancelled and the job fails `JOB_TIMEOUT`, its images KILLED and what it held given back, without another attempt. Default 86400 (a day: 2 TiB at 25 MiB/s).",
    "IMS_JOB_POLL_INTERVAL": "Seconds (more than 0) an idle worker waits before looking for jobs again. Default 0.5.",
    "IMS_WORKER_STOP_GRACE": "Seconds a stopping worker lets its job finish before releasing it (a job it was still claiming when the stop came is released unstarted). Default 10.",
    "IMS_HTTP_STOP_GRACE": "Seconds a stopping `ims serve` lets requests in flight (a long download, a stalled upload) finish before it cancels them; its own workers then get IMS_WORKER_STOP_GRACE. Default 15.",
    "IMS_TEST_JOB_HANDLERS": "Tests only: comma-separated modules whose `register(registry)` adds job handlers.",
    "IMS_AUTO_MIGRATE": "Run migrations when a command that opens the database starts (`ims serve`, `ims worker`, `ims demo`, `ims admin create-account`, `ims admin maintenance`). Default: true on SQLite, false on PostgreSQL, where `ims migrate` runs once before the processes start (docker-compose's `init`). Concurrent migrations of one database wait for each other.",
    "IMS_MAINTENANCE_INTERVAL": "Seconds between rounds of chunk garbage collection, KMS key purges and the deletion of API tokens expired for longer than IMS_EXPIRED_TOKEN_RETENTION, run by one process at a time in every process with workers (0: never). Default 300.",
    "IMS_LOG_LEVEL": "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL. Default INFO.",
    "IMS_CORS_ORIGINS": "Comma-separated origins (`https://console.example.com`, lowercase, no path) whose web pages may call the API from the browser (CORS: GET and POST with `Authorization` and `Content-Type`, and PUT, `Range`, `If-Range`, `If-Match` and `If-None-Match` for the filesystem store's signed `/objects/` URLs, with their `ETag` and `Content-Range` readable; no cookies are used, so none are allowed), or `*` for any. Default: none (a page of another origin cannot read the answers).",
}


def is_setting(name: str) -> bool:
    """Whether the service reads the variable `name`: a name of ENVIRONMENT, or one of a
    family such as IMS_S3_ENDPOINT_<REGION> (region ids in capitals, `_` for `-`)."""
    if name in ENVIRONMENT:
        return True
    families = (re.escape(k).replace("<REGION>", "[A-Z0-9][A-Z0-9_]*") for k in ENVIRONMENT if "<" in k)
    return any(re.fullmatch(family, name) for family in families)


#: IMS_* variables of this project that are no settings of the service: what the `ims` client
#: commands, `ims serve`'s worker process and the tests read.
OTHER_VARIABLES: dict[str, str] = {
    "IMS_URL": "`ims upload`, `ims jobs`: the server's URL.",
    "IMS_TOKEN": "`ims upload`, `ims jobs`: the API token.",
    "IMS_WORKER_CHANNEL_FD": "Set by `ims serve` for its worker process (app.jobs.process).",
    "IMS_WORKER_PARENT_PID": "Set by `ims serve` for its worker process (app.jobs.process).",
    "IMS_TEST_DATABASE_URL": "Tests: the PostgreSQL server to test against.",
    "IMS_CRASH_SEED": "Tests: the seed of the crash trials to replay.",
    "IMS_GRAPHIQL_SCREENSHOT": "Tests: where the browser test keeps its screenshot.",
}


def warn_of_unknown_variables(env: Mapping[str, str] | None = None) -> None:
    """Log a warning for every IMS_* variable of `env` (default: the process's environment)
    that is set, is no setting and none of OTHER_VARIABLES. Such a variable is ignored:
    refusing it would stop the service for another program's variable of the same prefix,
    while saying nothing let a misspelt setting (IMS_DATABSE_URL) pass for its default."""
    e = os.environ if env is None else env
    unknown = sorted(name for name, value in e.items() if name.startswith("IMS_") and value.strip()
                     and not is_setting(name) and name not in OTHER_VARIABLES)
    # Compared without the prefix every name shares, which would make IMS_HOME "close" to IMS_WORKERS.
    known = {setting.removeprefix("IMS_"): setting for setting in ENVIRONMENT}
    for name in unknown:
        near = difflib.get_close_matches(name.removeprefix("IMS_").upper(), known, n=1)
        log.warning("%s is not a setting and is ignored%s", name, f" (did you mean {known[near[0]]}?)" if near else "")
