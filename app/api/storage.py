"""Buckets, objects and signed URLs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from app.api.common import PageInfo, selects
from app.api.context import Info
from app.api.errors import ConflictError, NotFoundError, ValidationError, payload
from app.api.scalars import BigInt
from app.db.tables import Bucket as BucketRow
from app.services.storage import StoredObjectView


@strawberry.type(description="An object in object storage, e.g. an exported image file or image-list CSV.")
class StoredObject:
    bucket: str
    key: str
    size_bytes: BigInt
    #: None for objects the service wrote (job results): any region's signer serves them.
    region: strawberry.Private[str | None]
    view: strawberry.Private[StoredObjectView]

    @strawberry.field(description="`sha256:<hex>` of the object's bytes.")  # type: ignore[untyped-decorator]
    async def checksum(self, info: Info) -> str:
        if self.view.checksum:
            return self.view.checksum
        storage = info.context.services.storage
        return await storage.checksum(self.region or storage.default_region, self.view)

    @strawberry.field(description="A time-limited URL that downloads the object without other credentials.")  # type: ignore[untyped-decorator]
    def download_url(self, info: Info, expires_in_seconds: int | None = 3600) -> str:
        seconds = 3600 if expires_in_seconds is None else expires_in_seconds
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


@strawberry.type
class StoredObjectEdge:
    cursor: str
    node: StoredObject


@strawberry.type
class StoredObjectConnection:
    edges: list[StoredObjectEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class Bucket:
    name: str
    region: str
    created_at: datetime
    row: strawberry.Private[BucketRow]

    @strawberry.field
    async def objects(
        self, info: Info, prefix: str | None = None, first: int | None = None, after: str | None = None
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


@strawberry.input
class CreateBucketInput:
    name: str
    region: str | None = None


@strawberry.type
class CreateBucketSuccess:
    bucket: Bucket


CreateBucketPayload = Annotated[
    CreateBucketSuccess | ValidationError | ConflictError, strawberry.union("CreateBucketPayload")
]


@strawberry.input
class CreateUploadUrlInput:
    bucket: str
    key: str
    expires_in_seconds: int | None = 3600


@strawberry.type
class CreateUploadUrlSuccess:
    url: str = strawberry.field(description="Upload the file with an HTTP PUT of its bytes to this URL.")
    expires_at: datetime


CreateUploadUrlPayload = Annotated[
    CreateUploadUrlSuccess | NotFoundError | ValidationError, strawberry.union("CreateUploadUrlPayload")
]


@strawberry.type
class StorageQueries:
    @strawberry.field
    async def buckets(self, info: Info) -> list[Bucket]:
        return [Bucket.of(b) for b in await info.context.services.storage.buckets(info.context.me)]


@strawberry.type
class StorageMutations:
    @strawberry.mutation
    async def create_bucket(self, info: Info, input: CreateBucketInput) -> CreateBucketPayload:
        async def run() -> CreateBucketSuccess:
            row = await info.context.services.storage.create_bucket(info.context.me, input.name, input.region)
            return CreateBucketSuccess(bucket=Bucket.of(row))

        return await payload((ValidationError, ConflictError), run())

    @strawberry.mutation
    async def create_upload_url(self, info: Info, input: CreateUploadUrlInput) -> CreateUploadUrlPayload:
        async def run() -> CreateUploadUrlSuccess:
            url, expires_at = await info.context.services.storage.upload_url(
                info.context.me, input.bucket, input.key,
                3600 if input.expires_in_seconds is None else input.expires_in_seconds,
            )
            return CreateUploadUrlSuccess(url=url, expires_at=expires_at)

        return await payload((NotFoundError, ValidationError), run())
