"""Settings read from the environment: every value checked, refused by the variable's name,
and defaults that depend on other settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.config import ENVIRONMENT, OTHER_VARIABLES, Settings, SettingsError, is_setting
from app.jobs.process import CHANNEL_FD_ENV, PARENT_PID_ENV

PG = "postgresql://ims@db/ims"


@pytest.mark.parametrize(
    ("env", "migrates"),
    [
        ({}, True),  # the embedded default migrates at start
        ({"IMS_DATABASE_URL": "sqlite:///srv/ims.db"}, True),
        ({"IMS_DATABASE_URL": PG}, False),  # `ims migrate` runs once, before the processes
        ({"IMS_DATABASE_URL": "postgres://ims@db/ims"}, False),
        ({"IMS_DATABASE_URL": PG, "IMS_AUTO_MIGRATE": "true"}, True),
        ({"IMS_AUTO_MIGRATE": "0"}, False),
        ({"IMS_DATABASE_URL": PG, "IMS_AUTO_MIGRATE": ""}, False),
    ],
)
def test_migrations_run_at_start_by_default_on_sqlite_only(env: dict[str, str], migrates: bool) -> None:
    settings = Settings.from_env(env)
    assert settings.migrates_at_start is migrates
    assert Settings.from_env(settings.to_env()).migrates_at_start is migrates


# ---------------------------------------------------------------- values refused by name

BAD_VALUES = [
    ("IMS_WORKERS", "abc", "a whole number, at least 0"),
    ("IMS_WORKERS", "-3", "a whole number, at least 0"),
    ("IMS_WORKERS", "2.5", "a whole number, at least 0"),
    ("IMS_WORKER_NICE", "20", "a whole number from 0 to 19"),
    ("IMS_WORKER_NICE", "-1", "a whole number from 0 to 19"),
    # No bucket at all would leave accounts nowhere to upload to.
    ("IMS_BUCKETS_PER_ACCOUNT", "0", "a whole number, at least 1"),
    ("IMS_BUCKETS_PER_ACCOUNT", "-100", "a whole number, at least 1"),
    ("IMS_BUCKETS_PER_ACCOUNT", "1e3", "a whole number, at least 1"),
    ("IMS_BUCKETS_PER_ACCOUNT", "unlimited", "a whole number, at least 1"),
    # No token at all would leave createApiToken refusing every account.
    ("IMS_TOKENS_PER_ACCOUNT", "0", "a whole number, at least 1"),
    ("IMS_TOKENS_PER_ACCOUNT", "-100", "a whole number, at least 1"),
    ("IMS_TOKENS_PER_ACCOUNT", "1e3", "a whole number, at least 1"),
    ("IMS_TOKENS_PER_ACCOUNT", "unlimited", "a whole number, at least 1"),
    # Past a hundred years the pruning cutoff would fall before the year 1.
    ("IMS_EXPIRED_TOKEN_RETENTION", "-1", "a number of seconds from 0 to 3153600000"),
    ("IMS_EXPIRED_TOKEN_RETENTION", "3153600001", "a number of seconds from 0 to 3153600000"),
    ("IMS_EXPIRED_TOKEN_RETENTION", "1e999", "a number of seconds from 0 to 3153600000"),
    ("IMS_EXPIRED_TOKEN_RETENTION", "30d", "a number of seconds from 0 to 3153600000"),
    # A zero lease is lost at once: a healthy job is taken over until it FAILs.
    ("IMS_JOB_LEASE_SECONDS", "0", "a number of seconds, at least 1"),
    ("IMS_JOB_LEASE_SECONDS", "-1", "a number of seconds, at least 1"),
    ("IMS_JOB_LEASE_SECONDS", "0.2", "a number of seconds, at least 1"),
    ("IMS_JOB_POLL_INTERVAL", "0", "a number of seconds, more than 0"),
    ("IMS_JOB_MAX_SECONDS", "0", "a number of seconds, more than 0"),
    ("IMS_JOB_MAX_SECONDS", "-5", "a number of seconds, more than 0"),
    ("IMS_JOB_MAX_SECONDS", "a day", "a number of seconds, more than 0"),
    ("IMS_JOB_POLL_INTERVAL", "inf", "a number of seconds, more than 0"),
    ("IMS_WORKER_STOP_GRACE", "-5", "a number of seconds, at least 0"),
    ("IMS_MAINTENANCE_INTERVAL", "nan", "a number of seconds, at least 0"),
    ("IMS_MAINTENANCE_INTERVAL", "1e999", "a number of seconds, at least 0"),
    ("IMS_MAINTENANCE_INTERVAL", "5m", "a number of seconds, at least 0"),
    ("IMS_S3_SECURE", "ture", "true or false"),
    ("IMS_AUTO_MIGRATE", "ye", "true or false"),
    ("IMS_DIRECT_IO", "2", "true or false"),
    ("IMS_WORKER_PROCESS", "enabled", "true or false"),
    ("IMS_DATABASE_URL", "mysql://ims:pw@db/ims", "postgresql://"),
    ("IMS_DATABASE_URL", "postgresql://ims:pw@db:port/ims", "postgresql://"),
    ("IMS_DATABASE_URL", "sqlite:///", "a SQLite file path"),
    ("IMS_DATABASE_URL", "sqlite:///:memory:", "a SQLite file path"),
    ("IMS_REGIONS", "EU_West", "region ids"),
    ("IMS_REGIONS", "region-1,region-1", "each named once"),
    ("IMS_REGIONS", "region-1,", "region ids"),
    ("IMS_REGIONS", "-eu", "region ids"),
    ("IMS_REGIONS", "r" * 56, "1-55 lowercase letters"),
    ("IMS_REGIONS", "eu-s3alias", "valid bucket names"),
    ("IMS_URL_SECRET", "fifteen-bytes!!", "at least 16 bytes"),
    ("IMS_LOG_LEVEL", "bogus", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("IMS_S3_ENDPOINT", "http://minio:9000", "host or host:port"),
    ("IMS_S3_ENDPOINT", "minio:99999", "host or host:port"),
    ("IMS_S3_ENDPOINT_REGION_1", "minio/eu", "host or host:port"),
    ("IMS_PUBLIC_URL", "ims.example.com", "an http:// or https:// URL"),
    ("IMS_PUBLIC_URL", "https://ims.example.com:http", "an http:// or https:// URL"),
    ("IMS_ADMIN_NAME", "Admin", "an account name"),
    ("IMS_ADMIN_TOKEN", "ims_two words", "visible ASCII characters without spaces"),
    ("IMS_TEST_JOB_HANDLERS", "tests/jobs/handlers.py", "module names"),
    ("IMS_CORS_ORIGINS", "console.example.com", "scheme://host[:port]"),
    ("IMS_CORS_ORIGINS", "https://console.example.com/app", "scheme://host[:port]"),
    ("IMS_CORS_ORIGINS", "https://Console.example.com", "scheme://host[:port]"),  # browsers send lowercase
    ("IMS_CORS_ORIGINS", "https://*.example.com", "scheme://host[:port]"),
    ("IMS_CORS_ORIGINS", "*,https://console.example.com", "or * alone"),
    ("IMS_CORS_ORIGINS", "https://console.example.com:99999", "scheme://host[:port]"),
    ("IMS_CORS_ORIGINS", "ftp://console.example.com", "scheme://host[:port]"),
]
#: Values the message must not repeat.
SECRETS = {"IMS_URL_SECRET", "IMS_ADMIN_TOKEN", "IMS_DATABASE_URL"}


@pytest.mark.parametrize(("variable", "value", "accepts"), BAD_VALUES, ids=[f"{v}={x[:20]}" for v, x, _ in BAD_VALUES])
def test_a_bad_value_is_refused_naming_the_variable_and_what_it_accepts(variable: str, value: str, accepts: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert caught.value.variable == variable
    assert message.startswith(f"{variable}=" if variable not in SECRETS else variable)
    assert " is not valid: expected " in message and accepts in message
    assert "\n" not in message
    if variable in SECRETS:  # a database URL's secret is its password
        assert ("pw" if variable == "IMS_DATABASE_URL" else value) not in message


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("IMS_WORKERS", " 4 ", ("workers", 4)),
        ("IMS_WORKERS", "0", ("workers", 0)),
        ("IMS_WORKER_NICE", "19", ("worker_nice", 19)),
        ("IMS_JOB_LEASE_SECONDS", "1", ("job_lease_seconds", 1.0)),
        ("IMS_JOB_POLL_INTERVAL", ".05", ("job_poll_interval", 0.05)),
        ("IMS_JOB_MAX_SECONDS", "3600", ("job_max_seconds", 3600.0)),
        ("IMS_WORKER_STOP_GRACE", "0", ("worker_stop_grace", 0.0)),
        ("IMS_MAINTENANCE_INTERVAL", "0", ("maintenance_interval", 0.0)),
        ("IMS_S3_SECURE", "Yes", ("s3_secure", True)),
        ("IMS_DIRECT_IO", "off", ("direct_io", False)),
        ("IMS_WORKERS", "", ("workers", 2)),  # empty: unset
        ("IMS_BUCKETS_PER_ACCOUNT", " 1000 ", ("buckets_per_account", 1000)),
        ("IMS_BUCKETS_PER_ACCOUNT", "1", ("buckets_per_account", 1)),
        ("IMS_BUCKETS_PER_ACCOUNT", "", ("buckets_per_account", 100)),  # S3's historical default quota
        ("IMS_TOKENS_PER_ACCOUNT", " 1000 ", ("tokens_per_account", 1000)),
        ("IMS_TOKENS_PER_ACCOUNT", "1", ("tokens_per_account", 1)),
        ("IMS_TOKENS_PER_ACCOUNT", "", ("tokens_per_account", 100)),
        ("IMS_EXPIRED_TOKEN_RETENTION", "", ("expired_token_retention", 2592000.0)),  # 30 days
        ("IMS_EXPIRED_TOKEN_RETENTION", "0", ("expired_token_retention", 0.0)),
        ("IMS_EXPIRED_TOKEN_RETENTION", " 86400 ", ("expired_token_retention", 86400.0)),
        ("IMS_EXPIRED_TOKEN_RETENTION", "3153600000", ("expired_token_retention", 3153600000.0)),
        ("IMS_DATABASE_URL", "postgres://ims:pw@db:5432/ims", ("database_url", "postgres://ims:pw@db:5432/ims")),
        ("IMS_REGIONS", "region-1, eu-west-2", ("regions", ("region-1", "eu-west-2"))),
        ("IMS_URL_SECRET", "sixteen-bytes!!!", ("url_secret", "sixteen-bytes!!!")),
        ("IMS_LOG_LEVEL", "warning", ("log_level", "WARNING")),
        ("IMS_PUBLIC_URL", "https://ims.example.com/", ("public_url", "https://ims.example.com")),
        ("IMS_CORS_ORIGINS", " https://console.example.com/, http://localhost:5173,https://console.example.com",
         ("cors_origins", ("https://console.example.com", "http://localhost:5173"))),
        ("IMS_CORS_ORIGINS", "*", ("cors_origins", ("*",))),
        ("IMS_CORS_ORIGINS", "", ("cors_origins", ())),
    ],
)
def test_good_values_are_read(variable: str, value: str, expected: tuple[str, object]) -> None:
    attribute, result = expected
    assert getattr(Settings.from_env({variable: value}), attribute) == result


S3_KEYS = {"IMS_S3_ACCESS_KEY": "ims", "IMS_S3_SECRET_KEY": "minio-secret"}


def test_an_endpoint_is_read_with_its_keys() -> None:
    settings = Settings.from_env({"IMS_S3_ENDPOINT": "[::1]:9000", **S3_KEYS})
    assert (settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key) == ("[::1]:9000", "ims",
                                                                                       "minio-secret")


def test_a_region_endpoint_is_checked_and_read_for_listed_regions() -> None:
    env = {"IMS_REGIONS": "region-1,eu-west-2", "IMS_S3_ENDPOINT_EU_WEST_2": "minio-eu:9000", **S3_KEYS}
    assert Settings.from_env(env).region_endpoints == {"eu-west-2": "minio-eu:9000"}


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        # A typo in the region, or a region taken out of IMS_REGIONS: its objects would have gone
        # to the shared store without a word.
        ({"IMS_S3_ENDPOINT_REGION1": "minio-eu:9000", **S3_KEYS}, "IMS_S3_ENDPOINT_REGION1",
         ("IMS_S3_ENDPOINT_REGION1='minio-eu:9000' is not valid: expected the endpoint of a region of IMS_REGIONS "
         "(region-1: IMS_S3_ENDPOINT_REGION_1)")),
        ({"IMS_REGIONS": "region-1,eu-west-2", "IMS_S3_ENDPOINT_US_EAST_1": "minio-us:9000", **S3_KEYS},
         "IMS_S3_ENDPOINT_US_EAST_1",
         ("IMS_S3_ENDPOINT_US_EAST_1='minio-us:9000' is not valid: expected the endpoint of a region of IMS_REGIONS "
         "(region-1: IMS_S3_ENDPOINT_REGION_1, eu-west-2: IMS_S3_ENDPOINT_EU_WEST_2)")),
        # Anonymous requests cannot create the service buckets: refused at start, not at the
        # first bucket.
        ({"IMS_S3_ENDPOINT": "minio:9000"}, "IMS_S3_ACCESS_KEY",
         ("IMS_S3_ACCESS_KEY is not valid: expected the S3 access key, with IMS_S3_SECRET_KEY, when an S3 endpoint "
         "is set (IMS_S3_ENDPOINT)")),
        ({"IMS_S3_ENDPOINT": "minio:9000", "IMS_S3_ACCESS_KEY": "ims"}, "IMS_S3_SECRET_KEY",
         ("IMS_S3_SECRET_KEY is not valid: expected the S3 secret key, with IMS_S3_ACCESS_KEY, when an S3 endpoint "
         "is set (IMS_S3_ENDPOINT)")),
        ({"IMS_REGIONS": "eu-west-2", "IMS_S3_ENDPOINT_EU_WEST_2": "minio-eu:9000", "IMS_S3_SECRET_KEY": "s"},
         "IMS_S3_ACCESS_KEY",
         ("IMS_S3_ACCESS_KEY is not valid: expected the S3 access key, with IMS_S3_SECRET_KEY, when an S3 endpoint "
         "is set (IMS_S3_ENDPOINT_EU_WEST_2)")),
        # Keys without an endpoint (IMS_S3_ENDPOINT misspelt): the objects would have gone to the
        # filesystem under IMS_DATA_DIR.
        (S3_KEYS, "IMS_S3_ENDPOINT",
         ("IMS_S3_ENDPOINT is not valid: expected host:port of the S3 store that IMS_S3_ACCESS_KEY and "
         "IMS_S3_SECRET_KEY are for (or a region's IMS_S3_ENDPOINT_<REGION>); unset them for the filesystem store")),
    ],
    ids=["unknown-region", "unlisted-region", "no-keys", "no-secret-key", "region-no-access-key", "keys-no-endpoint"],
)
def test_s3_settings_that_do_not_fit_together_are_refused(env: dict[str, str], variable: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert (caught.value.variable, str(caught.value)) == (variable, message)
    assert "minio-secret" not in str(caught.value)


def test_an_empty_region_endpoint_of_any_name_counts_as_unset() -> None:
    assert Settings.from_env({"IMS_S3_ENDPOINT_US_EAST_1": ""}).region_endpoints == {}


def test_the_command_line_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMS_")}
    env |= {"IMS_DATA_DIR": str(tmp_path / "data"), "IMS_WORKERS": "abc"}
    for command in (["migrate"], ["serve", "--port", "0"]):
        result = subprocess.run([sys.executable, "-m", "app.cli", *command], env=env, capture_output=True,
                                text=True, timeout=120, check=False)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == "ims: IMS_WORKERS='abc' is not valid: expected a whole number, at least 0\n"
    assert not (tmp_path / "data").exists()  # refused before anything was created


class Recording(dict[str, str]):
    """An environment that notes every variable read from it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def test_every_variable_read_is_documented_and_every_documented_one_is_read() -> None:
    env = Recording({"IMS_REGIONS": "region-1,eu-west-2"})
    settings = Settings.from_env(env)
    assert {"IMS_S3_ENDPOINT_REGION_1", "IMS_S3_ENDPOINT_EU_WEST_2"} <= env.read
    assert sorted(var for var in env.read | set(settings.to_env()) if not is_setting(var)) == []
    assert sorted(set(ENVIRONMENT) - env.read) == ["IMS_S3_ENDPOINT_<REGION>"]


def test_the_project_s_other_variables_are_no_settings() -> None:
    # Those `ims serve` gives its worker process among them: that process must not warn of them.
    assert [name for name in OTHER_VARIABLES if is_setting(name)] == []
    assert {CHANNEL_FD_ENV, PARENT_PID_ENV} <= set(OTHER_VARIABLES)
