"""Prometheus metrics: requests and latency by GraphQL operation, jobs by type and status
with their durations, bytes moved through the chunk store, and the chunk store's size.

An operation is labelled by its name only when the name is one of a fixed set derived from
the schema (`operation_names`); any other name is `other`. Names are the client's choice,
and `health` needs no token: a label per name would let anyone grow the registry, and every
scrape, without bound.

Each process has its own `Metrics` (its own registry, built by the runtime). Job and
chunk-store figures are read from the database at scrape time, so any API process reports
them for the whole deployment; request and byte counters are the process's own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from strawberry.extensions import SchemaExtension

if TYPE_CHECKING:
    import strawberry

    from app.services.registry import Services

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The `operation` label of a named operation outside `Metrics.operations`.
OTHER_OPERATION = "other"
#: The `operation` label of an operation without a name.
UNNAMED_OPERATION = "anonymous"


def operation_names(schema: strawberry.Schema) -> frozenset[str]:
    """The operation names labelled as themselves: each root field's name as written and
    capitalized (`images`, `Images`). graphql/operations names every document after the root
    field it calls, so the project's own clients keep their names (a test checks)."""
    graphql_schema = schema._schema
    roots = (graphql_schema.query_type, graphql_schema.mutation_type, graphql_schema.subscription_type)
    fields = {name for root in roots if root is not None for name in root.fields}
    return frozenset(fields | {name[:1].upper() + name[1:] for name in fields})


class Metrics:
    def __init__(self) -> None:
        #: Operation names that get a label of their own (`operation_names` of the schema
        #: served); until set, every named operation is `other`.
        self.operations: frozenset[str] = frozenset()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ims_graphql_requests", "GraphQL operations served.",
                                ["operation", "outcome"], registry=r)
        self.latency = Histogram("ims_graphql_request_seconds", "GraphQL operation latency.", ["operation"],
                                 registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.job_seconds = Histogram("ims_job_duration_seconds", "Job run time in this process's workers.",
                                     ["type", "status"], registry=r,
                                     buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400))
        self.bytes = Counter("ims_bytes_moved", "Bytes moved through the chunk store.", ["direction"], registry=r)
        self.jobs = Gauge("ims_jobs", "Jobs by type and status (all processes).", ["type", "status"], registry=r)
        self.chunk_bytes = Gauge("ims_chunk_store_bytes", "Stored bytes of the chunk store.", ["region"], registry=r)
        self.chunks = Gauge("ims_chunk_store_chunks", "Chunk objects in the chunk store.", ["region"], registry=r)
        self.worker_restarts = Counter("ims_worker_process_restarts",
                                       "Job worker processes this server started again after one exited unasked.",
                                       registry=r)

    def moved(self, direction: str, count: int) -> None:
        self.bytes.labels(direction).inc(count)

    def job_finished(self, job_type: str, status: str, seconds: float) -> None:
        self.job_seconds.labels(job_type, status).observe(seconds)

    def operation_label(self, name: str | None) -> str:
        if name is None:
            return UNNAMED_OPERATION
        return name if name in self.operations else OTHER_OPERATION

    def extension(self) -> type[SchemaExtension]:
        """A Strawberry extension class that times every operation into these metrics."""
        metrics = self

        class OperationMetrics(SchemaExtension):
            def on_operation(self) -> Iterator[None]:
                start = time.perf_counter()
                yield
                ctx = self.execution_context
                name = metrics.operation_label(ctx.operation_name)
                errors = bool(ctx.result is not None and ctx.result.errors)
                metrics.requests.labels(name, "error" if errors else "ok").inc()
                metrics.latency.labels(name).observe(time.perf_counter() - start)

        return OperationMetrics

    async def render(self, services: Services) -> bytes:
        from app.db.repositories.jobs import job_counts

        async with services.db.uow(write=False) as uow:
            counts = await job_counts(uow.session)
            sizes = {r: await uow.chunks.referenced_total(r) for r in services.settings.regions}
        self.jobs.clear()
        for job_type, status, n in counts:
            self.jobs.labels(job_type, status).set(n)
        for region, (chunks, stored) in sizes.items():
            self.chunks.labels(region).set(chunks)
            self.chunk_bytes.labels(region).set(stored)
        return bytes(generate_latest(self.registry))


def attach(services: Services, metrics: Any) -> Any:
    """Let the chunk store and the workers report into `metrics` (a `Metrics`, or what stands
    in for the server's in a worker process: app.jobs.process.ParentChannel)."""
    services.metrics = metrics
    if services.chunks is not None:
        services.chunks.meter = metrics.moved
    return services
