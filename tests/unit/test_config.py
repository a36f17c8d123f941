"""Settings read from the environment: defaults that depend on other settings."""

from __future__ import annotations

import pytest

from app.config import Settings

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
