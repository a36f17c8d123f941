"""Building the object stores of every region and the URL signer from settings."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from app.config import Settings
from app.storage.base import ObjectStore
from app.storage.filesystem import FilesystemObjectStore
from app.storage.names import service_bucket
from app.storage.s3 import S3ObjectStore
from app.storage.signing import UrlSigner

__all__ = ["build_stores", "close_stores", "create_service_buckets", "service_bucket", "url_secret"]


def url_secret(settings: Settings) -> bytes:
    """IMS_URL_SECRET, or a secret generated once into the data dir (0600). Every process
    that serves signed URLs must share it."""
    if settings.url_secret:
        return settings.url_secret.encode()
    path = settings.data_dir / "url-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def build_stores(settings: Settings, signer: UrlSigner) -> dict[str, ObjectStore]:
    """One store per region. Regions without an endpoint of their own share IMS_S3_ENDPOINT,
    or the filesystem store under `$IMS_DATA_DIR/objects` (bucket names are service-wide)."""
    shared: ObjectStore
    if settings.s3_endpoint:
        shared = S3ObjectStore(
            settings.s3_endpoint, settings.s3_access_key or "", settings.s3_secret_key or "", settings.s3_secure
        )
    else:
        shared = FilesystemObjectStore(Path(settings.data_dir) / "objects", signer, direct_io=settings.direct_io)
    stores: dict[str, ObjectStore] = {}
    for region in settings.regions:
        endpoint = settings.region_endpoints.get(region)
        if endpoint:
            stores[region] = S3ObjectStore(
                endpoint, settings.s3_access_key or "", settings.s3_secret_key or "", settings.s3_secure
            )
        else:
            stores[region] = shared
    return stores


async def create_service_buckets(stores: Mapping[str, ObjectStore]) -> list[str]:
    """Create each region's service bucket where it is missing; return their names."""
    for region, store in stores.items():
        await store.create_bucket(service_bucket(region))
    return [service_bucket(region) for region in stores]


async def close_stores(stores: Mapping[str, ObjectStore]) -> None:
    """Close each distinct store once (regions may share one)."""
    for store in {id(s): s for s in stores.values()}.values():
        close = getattr(store, "close", None)
        if close is not None:
            await close()
