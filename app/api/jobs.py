"""Jobs: `job(id)`, `jobs(...)` and the `jobUpdated` subscription (the caller's jobs only)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry
from graphql import GraphQLError
from strawberry.dataloader import DataLoader

from app.api.common import JobStatus, JobType, Node, PageInfo, selects
from app.api.context import Info
from app.api.image_types import Image, image_of
from app.api.storage import StoredObject
from app.db.repositories.images import VisibleImage
from app.db.tables import Job as JobRow
from app.domain import enums as d
from app.domain.jobs import JobQuery, StoredObjectRef
from app.errors import NotFound
from app.services.storage import StoredObjectView

#: Default lifetime of a download URL.
DOWNLOAD_URL_SECONDS = 3600


@strawberry.type
class JobError:
    code: str
    message: str


def _image_loader(info: Info) -> DataLoader[str, VisibleImage | None]:
    """The images of every job of one request, read in one statement, through the caller's eyes."""
    loaders = info.context.loaders
    if "job_images" not in loaders:
        context = info.context

        async def load(image_ids: list[str]) -> list[VisibleImage | None]:
            async with context.services.db.uow(context.me.account_id, write=False) as uow:
                found = await uow.images.get_many_visible(list(image_ids))
            return [found.get(i) for i in image_ids]

        loaders["job_images"] = DataLoader(load)
    return loaders["job_images"]


@strawberry.type
class Job(Node):
    id: strawberry.ID
    type: JobType
    status: JobStatus
    progress: float = strawberry.field(description="0.0 to 1.0.")
    step: str | None = strawberry.field(description="What the job is doing now, in words.")
    error: JobError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    row: strawberry.Private[JobRow]

    @classmethod
    def of(cls, row: JobRow) -> Job:
        error = None
        if row.error_code is not None:
            error = JobError(code=row.error_code, message=row.error_message or "")
        return cls(
            id=strawberry.ID(row.id), type=d.JobType(row.type), status=d.JobStatus(row.status),
            progress=row.progress, step=row.step, error=error, created_at=row.created_at,
            started_at=row.started_at, finished_at=row.finished_at, row=row,
        )

    @strawberry.field(description="Images the job creates or works on, as the caller sees them.")  # type: ignore[untyped-decorator]
    async def images(self, info: Info) -> list[Image]:
        views = await _image_loader(info).load_many(list(self.row.image_ids))
        me = info.context.me
        return [image_of(v, me) for v in views if v is not None]

    @strawberry.field(description="The object an export job wrote.")  # type: ignore[untyped-decorator]
    def object(self, info: Info) -> StoredObject | None:
        ref = StoredObjectRef.from_result(self.row.result)
        if ref is None or getattr(info.context.services, "object_urls", None) is None:
            return None
        view = StoredObjectView(ref.bucket, ref.key, ref.size_bytes, self.row.finished_at or self.row.updated_at, ref.checksum)
        return StoredObject.of(ref.region, view)


@strawberry.input
class JobFilter:
    status: list[JobStatus] | None = None
    type: list[JobType] | None = None
    image_id: strawberry.ID | None = None


@strawberry.type
class JobEdge:
    cursor: str
    node: Job


@strawberry.type
class JobConnection:
    edges: list[JobEdge]
    page_info: PageInfo
    total_count: int


def to_job_query(f: JobFilter | None) -> JobQuery:
    if f is None:
        return JobQuery()
    return JobQuery(
        statuses=frozenset(d.JobStatus(s) for s in f.status) if f.status is not None else None,
        types=frozenset(d.JobType(t) for t in f.type) if f.type is not None else None,
        image_id=str(f.image_id) if f.image_id is not None else None,
    )


@strawberry.type
class JobQueries:
    @strawberry.field
    async def job(self, info: Info, id: strawberry.ID) -> Job | None:
        try:
            return Job.of(await info.context.services.jobs.get(info.context.me, str(id)))
        except NotFound:
            return None

    @strawberry.field
    async def jobs(
        self, info: Info, filter: JobFilter | None = None, first: int | None = None, after: str | None = None
    ) -> JobConnection:
        page = await info.context.services.jobs.list(
            info.context.me, to_job_query(filter), first, after, with_total=selects(info, "totalCount")
        )
        edges = [JobEdge(cursor=c, node=Job.of(j)) for j, c in zip(page.items, page.cursors, strict=True)]
        return JobConnection(
            edges=edges,
            page_info=PageInfo.of(page.cursors, page.has_next, page.has_previous),
            total_count=page.total if page.total is not None else 0,
        )


class JobNotFoundError(GraphQLError):
    """Shown to the client as it is (a NotFound, not a masked internal error)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            "No job with this id is visible to the caller.",
            extensions={"code": "JOB_NOT_FOUND", "resourceId": job_id},
        )


@strawberry.type
class Subscription:
    @strawberry.subscription(  # type: ignore[untyped-decorator]
        description="The job now and at every change of status, step or progress, ending after SUCCESS or FAIL."
    )
    async def job_updated(self, info: Info, id: strawberry.ID) -> AsyncGenerator[Job, None]:
        updates = info.context.services.jobs.watch(info.context.me, str(id))
        try:
            async for row in updates:
                # One context serves the whole websocket: drop cached images so every
                # update shows their current state.
                info.context.clear_loaders()
                yield Job.of(row)
        except NotFound as exc:
            raise JobNotFoundError(str(id)) from exc
        finally:
            await updates.aclose()
