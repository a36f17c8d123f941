"""`ims admin init-storage`, the compose file's one-shot: every region's service bucket."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from app.cli import cli
from app.storage.factory import service_bucket


def test_creates_each_regions_service_bucket_idempotently(tmp_path: Path) -> None:
    env = {"IMS_DATA_DIR": str(tmp_path), "IMS_REGIONS": "region-1,eu-west-2", "IMS_S3_ENDPOINT": ""}
    for _ in range(2):  # a re-run of `init` finds them and succeeds
        result = CliRunner().invoke(cli, ["admin", "init-storage"], env=env)
        assert result.exit_code == 0, result.output
        assert "ims-svc-region-1" in result.output and "ims-svc-eu-west-2" in result.output
    buckets = sorted(p.name for p in (tmp_path / "objects").iterdir())
    assert buckets == sorted([service_bucket("region-1"), service_bucket("eu-west-2")])
