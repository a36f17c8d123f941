"""Buckets of accounts, signed upload/download URLs, and object checksums."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.config import DEFAULT_BUCKETS_PER_ACCOUNT
from app.db.tables import Bucket, ObjectChecksum
from app.db.types import utcnow
from app.db.uow import Database, UnitOfWork
from app.domain.images import Caller
from app.domain.pagination import decode_cursor, encode_cursor
from app.domain.rules import validate_page_size
from app.errors import Conflict, Invalid, NotFound, register_codes
from app.storage.base import InvalidNameError, ObjectInfo, ObjectStore, StorageError
from app.storage.names import validate_key, validate_new_bucket_name, validate_new_key

register_codes({
    "INVALID_BUCKET_NAME": ("Bucket names: 3-63 lowercase letters, digits, '-' or '.', as on S3, without the "
                            "prefixes and suffixes S3 reserves; `ims-` is reserved. The message says which rule."),
    "INVALID_OBJECT_KEY": "Object keys: 1-1024 bytes of UTF-8 in '/'-separated segments of at most 255 bytes; "
                          "no empty, '.' or '..' segments, no leading '/', backslash or control characters.",
    "BUCKET_EXISTS": "A bucket with this name exists.",
    "BUCKET_LIMIT": "The account has as many buckets as it may, in all regions together (IMS_BUCKETS_PER_ACCOUNT). "
                    "The message names the limit.",
    "INVALID_URL_EXPIRY": "Signed URLs live 1 second to 7 days.",
    "OBJECT_KEY_COLLISION": "An object's key may not name another object's prefix (`a` beside `a/b`) nor lie under "
                            "another object (`a/b` beside `a`): neither a filesystem nor MinIO holds both.",
})

log = logging.getLogger(__name__)

RESERVED_BUCKET_PREFIX = "ims-"
#: Parents of an export's key looked up for an object standing there (`check_key_free`).
KEY_PARENTS_CHECKED = 16
URL_EXPIRY_MAX = 7 * 24 * 3600


@dataclass(frozen=True)
class StoredObjectView:
    bucket: str
    key: str
    size: int
    modified_at: datetime
    checksum: str | None = None
    etag: str | None = None


#: Objects a process hashes at once for their checksums (objects put straight into S3 have
#: none recorded): a listing of 100 large objects must not read them all at once.
CHECKSUM_CONCURRENCY = 2
#: The object listing's order (its cursors name it).
OBJECTS_ORDERING = "objects:key:ASC"
#: Keys listed a call when counting a bucket's objects (S3 answers at most 1,000 a request).
COUNT_PAGE = 1000


class StorageService:
    def __init__(self, db: Database, stores: dict[str, ObjectStore], default_region: str, *,
                 buckets_per_account: int = DEFAULT_BUCKETS_PER_ACCOUNT) -> None:
        self.db = db
        self.stores = stores
        self.default_region = default_region
        self.buckets_per_account = buckets_per_account
        self._hashing = asyncio.Semaphore(CHECKSUM_CONCURRENCY)
        #: Hashes under way, by object version: requests for the same one share it.
        self._inflight: dict[tuple[Any, ...], asyncio.Task[str]] = {}

    def store(self, region: str) -> ObjectStore:
        return self.stores[region]

    async def create_bucket(self, caller: Caller, name: str, region: str | None) -> Bucket:
        """The caller's new bucket `name` in `region` (the default region when None).

        The store is called outside every write transaction: a creation on S3 is a network
        call (up to 10 s to connect, tried 4 times), and the transaction inserting the row
        holds the account's lock (PostgreSQL), which every image creation of the account
        waits for, or SQLite's one writer lock, which every write waits for. In order:

        1. Read-only checks, the store left untouched but for reads: a name with a row, or
           one the store holds with objects, is BUCKET_EXISTS; an account at its limit is
           BUCKET_LIMIT (`_check_free`).
        2. The store's bucket is made, or found there empty (adopted). A crash from here on
           leaves at worst an empty bucket without a row, which a later creation adopts; a
           store that fails leaves no row.
        3. A short transaction: the account's lock, the row (the unique name: BUCKET_EXISTS),
           the limit counted again under the lock, commit (`_insert`). Never a committed row
           without a bucket: the bucket was there before. The limit stays exact: creations
           racing for the account's last place all pass 1, one row only is counted in.
        4. When 3 refuses, the bucket is removed if this call made it, it is empty and no
           row names it (`_remove_unclaimed`): losing a race leaves nothing in the store,
           whose buckets an S3 account has a quota of.
        5. Once committed, the bucket is made again should it be gone (`_ensure`).

        Creations of one name at once, by one account or several: all pass 1; in 2 one makes
        the bucket, the others find it; in 3 one row wins (on PostgreSQL a losing insert waits
        for the winner's transaction to end), the others are BUCKET_EXISTS, and their 4 finds
        the winner's row and leaves the bucket, whoever made it. 4 and 5 together cover the
        maker refused for another reason (its account's last place taken by another of its
        creations) while an adopter is between 2 and 3: no row names the bucket yet, and the
        maker removes it. So the maker looks for a row once more after removing it and makes
        the bucket again if one appeared, and the adopter, committed, makes it again if it is
        gone: a row committed before the removal is seen by the maker's second look, one
        committed after that look is followed by the adopter's 5, after the removal. Only a
        crash of the one that has to act, in that window, leaves a row without its bucket.
        S3 in us-east-1 tells two makers racing there both that they made the bucket: so
        every creation does 5, adopter or not (on S3 one more HEAD request).
        """
        region = self._validated(name, region)
        store = self.stores[region]
        await self._check_free(caller, name, store)
        made = await store.create_bucket(name)
        try:
            bucket = await self._insert(caller, name, region)
        except Exception:
            if made:
                await self._remove_unclaimed(store, name)
            raise
        await self._ensure(store, name)
        return bucket

    def _validated(self, name: str, region: str | None) -> str:
        """The region a new bucket goes to, once its name and region are valid."""
        region = self.default_region if region is None else region  # "" names no region
        if region not in self.stores:
            raise Invalid("INVALID_REGION", f"Unknown region {region!r}.", field="input.region")
        try:
            validate_new_bucket_name(name)
        except InvalidNameError as exc:
            raise Invalid("INVALID_BUCKET_NAME", f"{str(exc)[0].upper()}{str(exc)[1:]}.", field="input.name") from exc
        if name.startswith(RESERVED_BUCKET_PREFIX):
            raise Invalid("INVALID_BUCKET_NAME", "The `ims-` prefix is reserved.", field="input.name")
        return region

    async def _check_free(self, caller: Caller, name: str, store: ObjectStore) -> None:
        """Refuse early, without writing to the store, what `_insert` would refuse: a taken
        name (also at the limit: a retried creation stays BUCKET_EXISTS), then a full account.
        Unlocked reads: `_insert` decides."""
        async with self.db.uow(caller.account_id, write=False) as uow:
            taken = await uow.storage.bucket(name) is not None
            count = await uow.storage.count_buckets(caller.account_id)
        # A bucket the store holds without a row is adopted only while empty (what a crash
        # after the store's bucket, before the row, leaves): one with objects was made outside
        # the service (an operator's, on a shared S3), and taking it over would hand its
        # objects to the caller.
        if taken or (await store.bucket_exists(name) and await store.list_objects(name, limit=1)):
            raise Conflict("BUCKET_EXISTS")
        if count >= self.buckets_per_account:
            raise self._limit_error(count, self.buckets_per_account)

    async def _insert(self, caller: Caller, name: str, region: str) -> Bucket:
        async with self.db.uow(caller.account_id) as uow:
            # The account's lock before the bucket's row, as every transaction that takes it.
            await uow.accounts.lock_account(caller.account_id)
            bucket = Bucket(name=name, account_id=caller.account_id, region=region, created_at=utcnow())
            if not await uow.storage.add_bucket(bucket):
                raise Conflict("BUCKET_EXISTS")
            await self._check_bucket_limit(uow, caller.account_id)
            await uow.commit()
        return bucket

    async def _named(self, name: str) -> bool:
        async with self.db.uow(write=False) as uow:
            return await uow.storage.bucket(name) is not None

    async def _remove_unclaimed(self, store: ObjectStore, name: str) -> None:
        """Remove the bucket a refused creation made, unless a row names it or it holds
        objects; made again when a row appeared meanwhile (see `create_bucket`). A failure here
        leaves at worst an empty bucket without a row, as a crash does: logged, and the
        creation's own error is the one raised. (A cancelled creation does not get here: it
        leaves what a crash leaves.)"""
        try:
            if await self._named(name) or not await store.delete_empty_bucket(name):
                return
            if await self._named(name):
                await store.create_bucket(name)
        except Exception:  # the creation's own error is its answer: this one is logged
            log.warning("bucket %r: the refused creation's cleanup failed", name, exc_info=True)

    async def _ensure(self, store: ObjectStore, name: str) -> None:
        """The committed bucket in the store again, should a refused creation of the same name
        have removed it (see `create_bucket`). A store failing here fails nothing: the row is
        committed and the bucket was there a moment ago; logged."""
        try:
            await store.create_bucket(name)
        except StorageError:
            log.warning("bucket %r: could not check it is still in the store", name, exc_info=True)

    @staticmethod
    def _limit_error(count: int, limit: int) -> Conflict:
        return Conflict("BUCKET_LIMIT", f"An account may have at most {limit} buckets, in all regions together; "
                                        f"this one has {count}.")

    async def _check_bucket_limit(self, uow: UnitOfWork, account_id: str) -> None:
        """Refuse the bucket just added (its row rolls back with the transaction) when it makes
        the account's buckets, in all regions together, more than `buckets_per_account`.
        Checked after the row, so that a name already taken stays BUCKET_EXISTS (a retried
        creation, the demo's bucket) at the limit too. The account's lock, taken before the
        row and held until the transaction ends, keeps two creations from both taking the
        last place: the quota lock of image creations (PostgreSQL's advisory lock; SQLite's
        BEGIN IMMEDIATE serializes writers already)."""
        count = await uow.storage.count_buckets(account_id)
        if count > self.buckets_per_account:
            raise self._limit_error(count - 1, self.buckets_per_account)

    async def buckets(self, caller: Caller) -> list[Bucket]:
        async with self.db.uow(caller.account_id, write=False) as uow:
            return await uow.storage.buckets_of(caller.account_id)

    async def owned_bucket(self, caller: Caller, name: str, field: str = "input.bucket") -> Bucket:
        """The caller's bucket, or BUCKET_NOT_FOUND (another account's bucket is not told apart)."""
        async with self.db.uow(caller.account_id, write=False) as uow:
            bucket = await uow.storage.bucket(name)
        if bucket is None or bucket.account_id != caller.account_id:
            raise NotFound("BUCKET_NOT_FOUND", resource_id=name)
        return bucket

    async def list_objects(
        self, bucket: Bucket, prefix: str | None, first: int | None, after: str | None
    ) -> tuple[list[StoredObjectView], bool]:
        size = validate_page_size(first)
        infos = await self.stores[bucket.region].list_objects(
            bucket.name, prefix=prefix or "", start_after=self.after_key(after), limit=size + 1
        )
        return [self._view(i) for i in infos[:size]], len(infos) > size

    @staticmethod
    def object_cursor(key: str) -> str:
        """An object listing's cursor: opaque like every connection's (`after_key` reads it)."""
        return encode_cursor(OBJECTS_ORDERING, key, key)

    @staticmethod
    def after_key(after: str | None) -> str:
        """The key an `object_cursor` names ("" for none); one that is not such a cursor is
        INVALID_CURSOR, not a place among the keys."""
        if not after:
            return ""
        value, key = decode_cursor(after, OBJECTS_ORDERING)
        if value != key:
            raise Invalid("INVALID_CURSOR", field="after")
        return key

    async def count_objects(self, bucket: Bucket, prefix: str | None) -> int:
        """How many objects `list_objects` reaches under `prefix`, page after page: an object
        store keeps no count, so the listing is walked (in pages of COUNT_PAGE keys)."""
        store, total, after = self.stores[bucket.region], 0, ""
        while True:
            infos = await store.list_objects(bucket.name, prefix=prefix or "", start_after=after, limit=COUNT_PAGE)
            total += len(infos)
            if len(infos) < COUNT_PAGE:
                return total
            after = infos[-1].key

    @staticmethod
    def _view(info: ObjectInfo) -> StoredObjectView:
        return StoredObjectView(info.bucket, info.key, info.size, info.last_modified, info.checksum, info.etag)

    @staticmethod
    def check_key(key: str, field: str = "input.key", *, new: bool = True) -> str:
        """A key the caller names: of an object to make (`new`: an upload URL, an export),
        whose segments must fit every store, or of one to read (an import), which only has to
        be a key at all (S3 holds objects under longer segments, put there from outside)."""
        try:
            return validate_new_key(key) if new else validate_key(key)
        except InvalidNameError as exc:
            raise Invalid("INVALID_OBJECT_KEY", field=field) from exc

    async def check_key_free(self, bucket: Bucket, key: str, field: str = "input.key") -> None:
        """A new object can stand at `key`: no object of the bucket is one of its prefixes
        (`a` for `a/b`) and none lies under it (`a/b` for `a`). A store on a filesystem (and
        MinIO, which keeps objects as files) refuses such a write, so a job writing there
        would do all its work and then fail; asked first, the request is refused instead."""
        store, segments = self.stores[bucket.region], key.split("/")
        # A store call per parent (a HEAD on S3): a key of hundreds of segments would make a
        # request of hundreds; past the first ones, the job's own failure stays the answer.
        for depth in range(1, min(len(segments), KEY_PARENTS_CHECKED + 1)):
            parent = "/".join(segments[:depth])
            if await store.stat(bucket.name, parent) is not None:
                raise Invalid("OBJECT_KEY_COLLISION", f"The object {parent!r} stands where {key!r} needs a prefix.",
                              field=field)
        if await store.list_objects(bucket.name, prefix=key + "/", limit=1):
            raise Invalid("OBJECT_KEY_COLLISION", f"Objects lie under {key + '/'!r}: {key!r} cannot be an object.",
                          field=field)

    @staticmethod
    def check_expiry(seconds: int, field: str) -> int:
        if not 1 <= seconds <= URL_EXPIRY_MAX:
            raise Invalid("INVALID_URL_EXPIRY", field=field)
        return seconds

    async def upload_url(self, caller: Caller, bucket_name: str, key: str, expires_in: int) -> tuple[str, datetime]:
        self.check_key(key)
        self.check_expiry(expires_in, "input.expiresInSeconds")
        bucket = await self.owned_bucket(caller, bucket_name)
        # A URL no store could take the upload of (`a/b` beside an object `a`) is refused now,
        # not once the bytes are sent. (An object can still come in the way before they are.)
        await self.check_key_free(bucket, key)
        url = self.stores[bucket.region].presigned_url("PUT", bucket.name, key, expires_in)
        return url, utcnow() + timedelta(seconds=expires_in)

    def download_url_for_bucket(self, bucket: str, key: str, expires_in: int) -> str:
        """A download URL for an object the service wrote (buckets are service-wide names;
        every region's store signs for the buckets it holds)."""
        region = next((r for r in self.stores if bucket == f"ims-svc-{r}"[:63]), self.default_region)
        return self.download_url(region, bucket, key, expires_in)

    def download_url(self, region: str, bucket: str, key: str, expires_in: int) -> str:
        self.check_expiry(expires_in, "expiresInSeconds")
        return self.stores[region].presigned_url("GET", bucket, key, expires_in)

    async def record_checksum(self, bucket: str, key: str, info: ObjectInfo) -> None:
        if info.checksum is None:
            return
        async with self.db.uow() as uow:
            await uow.storage.record_checksum(ObjectChecksum(
                bucket=bucket, key=key, size=info.size, modified_at=info.last_modified, checksum=info.checksum,
                etag=info.etag,
            ))
            await uow.commit()

    async def checksum(self, region: str, obj: StoredObjectView) -> str:
        """`sha256:<hex>` of the object: recorded at upload, or computed once by streaming it
        (objects uploaded straight to S3) and recorded for next time.

        A recorded checksum holds while the object's size, modification time and entity tag
        are those recorded: S3 dates have one-second resolution, so a same-size replacement
        within the second differs in its tag only. A row without a tag (recorded before tags
        were kept) is recomputed once the object has one."""
        if obj.checksum:
            return obj.checksum
        if (known := await self._recorded(obj)) is not None:
            return known
        version = (region, obj.bucket, obj.key, obj.size, obj.modified_at, obj.etag)
        task = self._inflight.get(version)
        if task is None:
            task = asyncio.create_task(self._hash_in_turn(region, obj))
            self._inflight[version] = task
            task.add_done_callback(lambda _done: self._inflight.pop(version, None))
        # Shielded: a request that goes away does not cancel the others' answer.
        return await asyncio.shield(task)

    async def _hash_in_turn(self, region: str, obj: StoredObjectView) -> str:
        async with self._hashing:
            # Recorded by another process, or before this one waited its turn.
            if (known := await self._recorded(obj)) is not None:
                return known
            return await self._hash(region, obj)

    async def _recorded(self, obj: StoredObjectView) -> str | None:
        async with self.db.uow(write=False) as uow:
            known = await uow.storage.checksum(obj.bucket, obj.key)
        version = (obj.size, obj.modified_at, obj.etag)
        if known is not None and (known.size, known.modified_at, known.etag) == version:
            return known.checksum
        return None

    async def _hash(self, region: str, obj: StoredObjectView) -> str:
        digest = hashlib.sha256()
        async with aclosing(self.stores[region].open_stream(obj.bucket, obj.key)) as pieces:
            async for piece in pieces:
                await asyncio.to_thread(digest.update, piece)
        checksum = f"sha256:{digest.hexdigest()}"
        info = ObjectInfo(obj.bucket, obj.key, obj.size, obj.modified_at, checksum, obj.etag)
        await self.record_checksum(obj.bucket, obj.key, info)
        return checksum
