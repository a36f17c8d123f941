"""Buckets, objects and signed URLs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from app.api.common import After, First, PageInfo, selects
from app.api.context import Info
from app.api.errors import ConflictError, NotFoundError, ValidationError, payload
from app.api.scalars import BigInt
from app.config import DEFAULT_BUCKETS_PER_ACCOUNT
from app.db.tables import Bucket as BucketRow
from app.services.storage import URL_EXPIRY_MAX, StoredObjectView
from app.storage.names import MAX_KEY_BYTES, MAX_KEY_SEGMENT_BYTES

#: Default lifetime of a signed URL, in seconds.
URL_SECONDS = 3600
_EXPIRY = f"1 to {URL_EXPIRY_MAX} ({URL_EXPIRY_MAX // 86400} days), default {URL_SECONDS}"


@strawberry.type(description="An object in object storage, e.g. an exported image file or image-list CSV.")
class StoredObject:
    bucket: str = strawberry.field(description="The bucket holding it.")
    key: str = strawberry.field(description="Its key in the bucket, e.g. `exports/disk.qcow2`.")
    size_bytes: BigInt = strawberry.field(description="Its size in bytes.")
    #: None for objects the service wrote (job results): any region's signer serves them.
    region: strawberry.Private[str | None]
    view: strawberry.Private[StoredObjectView]

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="`sha256:<hex>` of the object's bytes: recorded when the service wrote the "
                    "object or served its upload; otherwise (an upload straight to S3) computed by "
                    "reading the object whole the first time it is asked for.")
    async def checksum(self, info: Info) -> str:
        if self.view.checksum:
            return self.view.checksum
        storage = info.context.services.storage
        return await storage.checksum(self.region or storage.default_region, self.view)

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="A time-limited URL that downloads the object with an HTTP GET, without other "
                    "credentials.")
    def download_url(
        self, info: Info,
        expires_in_seconds: Annotated[int | None, strawberry.argument(
            description=f"How long the URL works, in seconds: {_EXPIRY} (also when null). Out of "
                        "range: a top-level error `INVALID_URL_EXPIRY`.",
        )] = URL_SECONDS,
    ) -> str:
        seconds = URL_SECONDS if expires_in_seconds is None else expires_in_seconds
        storage = info.context.services.storage
        if self.region is None:
            storage.check_expiry(seconds, "expiresInSeconds")
            make_url = info.context.services.object_urls
            assert make_url is not None
            return make_url(self.bucket, self.key, seconds)
        return storage.download_url(self.region, self.bucket, self.key, seconds)

    @classmethod
    def of(cls, region: str | None, view: StoredObjectView) -> StoredObject:
        return cls(bucket=view.bucket, key=view.key, size_bytes=BigInt(view.size), region=region, view=view)


@strawberry.type(description="One object of a page of `Bucket.objects`.")
class StoredObjectEdge:
    cursor: str = strawberry.field(
        description="Opaque; pass it as `after` for the objects after this one.")
    node: StoredObject = strawberry.field(description="The object.")


@strawberry.type(description="A page of a bucket's objects, in key order.")
class StoredObjectConnection:
    edges: list[StoredObjectEdge] = strawberry.field(description="This page's objects by key.")
    page_info: PageInfo = strawberry.field(description="Where this page lies in the list.")
    total_count: int = strawberry.field(
        description="Every object under the prefix, whatever the page. The store keeps no count: "
                    "asking for it lists the whole prefix.")


@strawberry.type(description="A bucket of the caller's in object storage, in one region.")
class Bucket:
    name: str = strawberry.field(description="Its name, unique among every account's buckets.")
    region: str = strawberry.field(description="The region whose object store holds it.")
    created_at: datetime = strawberry.field(description="When the bucket was created.")
    row: strawberry.Private[BucketRow]

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The bucket's objects, in key order (by the keys' UTF-8 bytes).")
    async def objects(
        self, info: Info,
        prefix: Annotated[str | None, strawberry.argument(
            description="Only objects whose key starts with this; null or empty: every object.",
        )] = None,
        first: First = None, after: After = None,
    ) -> StoredObjectConnection:
        storage = info.context.services.storage
        views, has_next = await storage.list_objects(self.row, prefix, first, after)
        edges = [StoredObjectEdge(cursor=storage.object_cursor(v.key), node=StoredObject.of(self.region, v))
                 for v in views]
        # Every object under the prefix, as paging reaches them (not this page's): counted
        # only when asked for, the store keeping no count.
        total = await storage.count_objects(self.row, prefix) if selects(info, "totalCount") else 0
        return StoredObjectConnection(
            edges=edges,
            page_info=PageInfo.of([e.cursor for e in edges], has_next, bool(after)),
            total_count=total,
        )

    @classmethod
    def of(cls, row: BucketRow) -> Bucket:
        return cls(name=row.name, region=row.region, created_at=row.created_at, row=row)


@strawberry.input(description="The bucket `createBucket` makes.")
class CreateBucketInput:
    name: str = strawberry.field(
        description="S3's rules: 3-63 lowercase letters, digits, `-` or `.`, starting and ending "
                    "with a letter or digit, not shaped like an IP address; the prefix `ims-` and "
                    "the prefixes and suffixes S3 reserves (`xn--`, `-s3alias`, ...) are refused. "
                    "Unique among every account's buckets.")
    region: str | None = strawberry.field(
        default=None, description="A region's id; null: the default region.")


@strawberry.type(description="The bucket made.")
class CreateBucketSuccess:
    bucket: Bucket = strawberry.field(description="The new, empty bucket.")


CreateBucketPayload = Annotated[
    CreateBucketSuccess | ValidationError | ConflictError,
    strawberry.union(
        "CreateBucketPayload", description="What `createBucket` answers: the bucket or why not."),
]


@strawberry.input(description="The object a `createUploadUrl` URL uploads.")
class CreateUploadUrlInput:
    bucket: str = strawberry.field(description="The name of a bucket of the caller's.")
    key: str = strawberry.field(
        description=f"The object's key: 1-{MAX_KEY_BYTES} bytes of UTF-8 in `/`-separated segments "
                    f"of at most {MAX_KEY_SEGMENT_BYTES} bytes; no empty, `.` or `..` segment, no "
                    "leading `/`, no backslash or control character.")
    expires_in_seconds: int | None = strawberry.field(
        default=URL_SECONDS,
        description=f"How long the URL works, in seconds: {_EXPIRY} (also when null).")


@strawberry.type(description="A signed URL to upload one object with.")
class CreateUploadUrlSuccess:
    url: str = strawberry.field(description="Upload the file with an HTTP PUT of its bytes to this URL.")
    expires_at: datetime = strawberry.field(description="When the URL stops working.")


CreateUploadUrlPayload = Annotated[
    CreateUploadUrlSuccess | NotFoundError | ValidationError,
    strawberry.union(
        "CreateUploadUrlPayload", description="What `createUploadUrl` answers: a URL or why not."),
]


@strawberry.type
class StorageQueries:
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The caller's buckets in every region, by name.")
    async def buckets(self, info: Info) -> list[Bucket]:
        return [Bucket.of(b) for b in await info.context.services.storage.buckets(info.context.me)]


@strawberry.type
class StorageMutations:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Make an empty bucket of the caller's. Errors: `INVALID_BUCKET_NAME`, "
                    "`INVALID_REGION` (`ValidationError`); `BUCKET_EXISTS` (any account's, or one "
                    "the store holds with objects) and `BUCKET_LIMIT` (IMS_BUCKETS_PER_ACCOUNT, "
                    f"default {DEFAULT_BUCKETS_PER_ACCOUNT}, in all regions together) "
                    "(`ConflictError`).")
    async def create_bucket(self, info: Info, input: Annotated[CreateBucketInput, strawberry.argument(description="The new bucket's name and region.")]) -> CreateBucketPayload:
        async def run() -> CreateBucketSuccess:
            row = await info.context.services.storage.create_bucket(info.context.me, input.name, input.region)
            return CreateBucketSuccess(bucket=Bucket.of(row))

        return await payload((ValidationError, ConflictError), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="A time-limited URL to upload one object into a bucket of the caller's, e.g. a "
                    "file to `importImage`. Errors: `BUCKET_NOT_FOUND` (`NotFoundError`); "
                    "`INVALID_OBJECT_KEY`, `INVALID_URL_EXPIRY`, and `OBJECT_KEY_COLLISION` when "
                    "an object stands at a prefix of the key or under it (`ValidationError`).")
    async def create_upload_url(self, info: Info, input: Annotated[CreateUploadUrlInput, strawberry.argument(description="The bucket and key to upload to, and how long the URL is valid.")]) -> CreateUploadUrlPayload:
        async def run() -> CreateUploadUrlSuccess:
            url, expires_at = await info.context.services.storage.upload_url(
                info.context.me, input.bucket, input.key,
                URL_SECONDS if input.expires_in_seconds is None else input.expires_in_seconds,
            )
            return CreateUploadUrlSuccess(url=url, expires_at=expires_at)

        return await payload((NotFoundError, ValidationError), run())
