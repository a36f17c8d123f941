"""Jobs: `job(id)`, `jobs(...)` and the `jobUpdated` subscription (the caller's jobs only)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated

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


@strawberry.type(description="Why a job failed.")
class JobError:
    code: str = strawberry.field(
        description="Stable and machine-readable (the README's error table): the operation's own, "
        "e.g. `FORMAT_MISMATCH`, or `INTERNAL_ERROR`, `WORKER_LOST`, `JOB_TIMEOUT`, "
        "`INSUFFICIENT_STORAGE`, `STORAGE_UNAVAILABLE`.")
    message: str = strawberry.field(
        description="What went wrong, in words (at most 1024 characters).")


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


@strawberry.type(description="A long operation of the caller (an import, export, replication or "
                  "image creation), durable across restarts: INIT, then RUNNING, then SUCCESS or "
                  "FAIL.")
class Job(Node):
    id: strawberry.ID = strawberry.field(description="Opaque id, starting `job-`.")
    type: JobType = strawberry.field(description="What the job does.")
    status: JobStatus = strawberry.field(
        description="Where the job is: INIT, RUNNING, then SUCCESS or FAIL.")
    progress: float = strawberry.field(
        description="0.0 to 1.0; it never goes back, even when another worker takes the job over.")
    step: str | None = strawberry.field(
        description="What the job is doing now, in words (at most 256 characters); null until it "
        "reports one.")
    error: JobError | None = strawberry.field(
        description="Why the job failed; null unless its status is FAIL.")
    created_at: datetime = strawberry.field(description="When the job was asked for (UTC).")
    started_at: datetime | None = strawberry.field(
        description="When a worker first started it (UTC); null while INIT.")
    finished_at: datetime | None = strawberry.field(
        description="When it reached SUCCESS or FAIL (UTC); null before.")
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

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="Images the job creates or works on, as the caller sees them; one deleted or "
        "no longer visible is left out.")
    async def images(self, info: Info) -> list[Image]:
        views = await _image_loader(info).load_many(list(self.row.image_ids))
        me = info.context.me
        return [image_of(v, me) for v in views if v is not None]

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The object an export job (EXPORT_IMAGE, EXPORT_IMAGE_LIST) wrote; null until "
        "it succeeds, and for other jobs.")
    def object(self, info: Info) -> StoredObject | None:
        ref = StoredObjectRef.from_result(self.row.result)
        if ref is None or getattr(info.context.services, "object_urls", None) is None:
            return None
        view = StoredObjectView(ref.bucket, ref.key, ref.size_bytes, self.row.finished_at or self.row.updated_at, ref.checksum)
        return StoredObject.of(ref.region, view)


@strawberry.input(description="Which of the caller's jobs `jobs` lists: those matching every "
                   "field given.")
class JobFilter:
    status: list[JobStatus] | None = strawberry.field(
        default=None, description="Jobs in any of these statuses (an empty list matches none); "
        "null: any.")
    type: list[JobType] | None = strawberry.field(
        default=None, description="Jobs of any of these types (an empty list matches none); null: "
        "any.")
    image_id: strawberry.ID | None = strawberry.field(
        default=None, description="Jobs that create or work on this image; null: any.")


@strawberry.type(description="A job of `jobs`, with its cursor.")
class JobEdge:
    cursor: str = strawberry.field(
        description="Opaque; pass it as `after` for the jobs after this one.")
    node: Job = strawberry.field(description="The job.")


@strawberry.type(description="A page of the caller's jobs, newest first.")
class JobConnection:
    edges: list[JobEdge] = strawberry.field(description="The jobs of this page, newest first.")
    page_info: PageInfo = strawberry.field(
        description="This page's first and last cursors, and whether more pages follow.")
    total_count: int = strawberry.field(
        description="How many of the caller's jobs match the filter, in all.")


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
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="One of the caller's jobs; null when the caller has none with this id "
        "(another account's jobs are never visible, an administrator's included).")
    async def job(
        self, info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The job's id.")],
    ) -> Job | None:
        try:
            return Job.of(await info.context.services.jobs.get(info.context.me, str(id)))
        except NotFound:
            return None

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The caller's jobs, newest first (by `createdAt`, then `id`). A bad `first` or "
        "`after` is a top-level error: `INVALID_PAGE_SIZE`, `INVALID_CURSOR`.")
    async def jobs(
        self, info: Info,
        filter: Annotated[JobFilter | None, strawberry.argument(
            description="Null: every job of the caller.")] = None,
        first: Annotated[int | None, strawberry.argument(
            description="Page size, 0 to 1000; null: 50.")] = None,
        after: Annotated[str | None, strawberry.argument(
            description="The `cursor` of the last job of the previous page (its "
            "`pageInfo.endCursor`); null: from the newest.")] = None,
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


@strawberry.type(description="Changes pushed over a WebSocket (graphql-transport-ws, at `/graphql`).")
class Subscription:
    @strawberry.subscription(  # type: ignore[untyped-decorator]
        description="The job now and at every change of status, step or progress, ending after "
        "SUCCESS or FAIL (over graphql-transport-ws). A job the caller cannot see is an error with "
        "code `JOB_NOT_FOUND`."
    )
    async def job_updated(
        self, info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The job's id.")],
    ) -> AsyncGenerator[Job, None]:
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
