"""`ims demo` imports real public images through the ordinary import path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from app.config import Settings
from app.db.tables import Image
from app.db.uow import Database
from app.services.demo import DEMO_IMAGES


async def test_demo_creates_active_public_images(settings: Settings, db: Database, tmp_path: Path) -> None:
    env = {**os.environ, "IMS_DATA_DIR": str(settings.data_dir), "IMS_WORKERS": "1", "IMS_JOB_POLL_INTERVAL": "0.05",
           "IMS_ADMIN_TOKEN": settings.admin_token or "", "IMS_DATABASE_URL": settings.database_url,
           "IMS_AUTO_MIGRATE": "false"}
    result = subprocess.run([sys.executable, "-m", "app.cli", "demo"], env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    async with db.uow(write=False) as uow:
        images = list((await uow.session.execute(select(Image))).scalars())
    assert sorted(i.name for i in images) == sorted(d.name for d in DEMO_IMAGES)
    assert {(i.visibility, i.status) for i in images} == {("PUBLIC", "ACTIVE")}
    formats = {i.name: (i.disk_format, i.quick_provisioning) for i in images}
    assert formats == {d.name: (d.fmt.value, d.fmt.value == "RAW") for d in DEMO_IMAGES}
    assert {i.os_platform for i in images} == {"Ubuntu", "Debian", "Windows", None}
