"""Building the object stores of every region and the URL signer from settings."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from app.config import MIN_URL_SECRET_BYTES, Settings
from app.storage.base import ObjectStore, StorageError
from app.storage.filesystem import FilesystemObjectStore
from app.storage.names import service_bucket
from app.storage.s3 import S3ObjectStore
from app.storage.signing import UrlSigner

__all__ = ["UrlSecretError", "build_stores", "close_stores", "create_service_buckets", "service_bucket",
           "url_secret"]


class UrlSecretError(StorageError):
    """The URL secret file in IMS_DATA_DIR cannot be used (too short to sign with, unreadable):
    a process stops at start with this one line (app.cli.main)."""


def url_secret(settings: Settings) -> bytes:
    """IMS_URL_SECRET, or a secret generated once into the data dir (0600). Every process
    that serves signed URLs must share it.

    The file appears atomically, as the KMS root key does (app.kms.envelope.load_root_key):
    written beside it, then hard-linked into place, so processes starting together on a
    fresh data dir agree on one secret and none reads a file not yet written."""
    if settings.url_secret:
        return settings.url_secret.encode()
    path = settings.data_dir / "url-secret"
    try:
        secret = _secret_file(path)
    except OSError as exc:
        raise UrlSecretError(f"URL secret file {path} cannot be read ({exc.strerror or exc}): "
                             "fix or remove it, or set IMS_URL_SECRET") from None
    if len(secret) < MIN_URL_SECRET_BYTES:
        # Signing with it would let anyone forge URLs (an empty file: left by a crash of a
        # version that wrote the file in place).
        raise UrlSecretError(f"URL secret file {path} holds fewer than {MIN_URL_SECRET_BYTES} bytes: "
                             "remove it to generate a new one, or set IMS_URL_SECRET")
    return secret


def _secret_file(path: Path) -> bytes:
    """The secret in `path`, generated first if the file is missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first: use theirs
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
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


def store_location(settings: Settings, region: str) -> str:
    """Where a region's objects live, as an operator configured it (for messages at start)."""
    endpoint = settings.region_endpoints.get(region) or settings.s3_endpoint
    return f"the S3 endpoint {endpoint}" if endpoint else f"{Path(settings.data_dir) / 'objects'}"


async def create_service_buckets(stores: Mapping[str, ObjectStore], settings: Settings | None = None) -> list[str]:
    """Create each region's service bucket where it is missing; return their names. With
    `settings`, a store that fails is named (region and location) in the error, of the same
    type: the process is starting and an operator reads it."""
    for region, store in stores.items():
        try:
            await store.create_bucket(service_bucket(region))
        except StorageError as exc:
            if settings is None:
                raise
            raise type(exc)(f"the object store of region {region} ({store_location(settings, region)}) "
                            f"cannot be used: {exc}") from exc
    return [service_bucket(region) for region in stores]


async def close_stores(stores: Mapping[str, ObjectStore]) -> None:
    """Close each distinct store once (regions may share one)."""
    for store in {id(s): s for s in stores.values()}.values():
        close = getattr(store, "close", None)
        if close is not None:
            await close()
