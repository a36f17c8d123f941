"""Plain types and limits of durable jobs (no storage, no asyncio)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from app.domain.enums import JobStatus, JobType
from app.errors import register_codes

#: A job is run at most this many times; a lease that expires after the last one → WORKER_LOST.
MAX_ATTEMPTS = 3
#: Default lease of a claimed job; the worker renews it every third of it.
LEASE_SECONDS = 30.0
#: Progress is written at most this often (and on every change of step).
PROGRESS_INTERVAL_SECONDS = 0.5
STEP_MAX = 256
ERROR_MESSAGE_MAX = 1024

TERMINAL_STATUSES = frozenset({JobStatus.SUCCESS.value, JobStatus.FAIL.value})

register_codes({
    "INTERNAL_ERROR": "The job failed unexpectedly; the error is logged with the job id.",
    "WORKER_LOST": "The worker running the job stopped answering too many times.",
    "JOB_TIMEOUT": "The job ran longer than the service allows (IMS_JOB_MAX_SECONDS); it kept nothing.",
    "INSUFFICIENT_STORAGE": "The service ran out of disk space; the job kept nothing and can be asked for again later.",
    "STORAGE_UNAVAILABLE": "The object store could not be reached or written; the job kept nothing and can be asked for again later.",
})


@dataclass(frozen=True)
class JobQuery:
    """Every `JobFilter` field, normalized (None = no restriction)."""

    statuses: frozenset[JobStatus] | None = None
    types: frozenset[JobType] | None = None
    image_id: str | None = None


@dataclass(frozen=True)
class StoredObjectRef:
    """The object a job wrote, read from its result dict
    (`{"bucket", "key", "size" | "sizeBytes", "checksum"}`)."""

    bucket: str
    key: str
    size_bytes: int
    checksum: str
    #: The region whose store holds the bucket, when the job recorded it.
    region: str | None = None

    @classmethod
    def from_result(cls, result: dict[str, Any] | None) -> StoredObjectRef | None:
        if not result:
            return None
        source = result.get("object", result)
        if not isinstance(source, dict) or "bucket" not in source or "key" not in source:
            return None
        size = source.get("sizeBytes", source.get("size", 0))
        region = source.get("region")
        return cls(str(source["bucket"]), str(source["key"]), int(size or 0), str(source.get("checksum", "")),
                   str(region) if region else None)


def clamp_progress(fraction: float) -> float:
    if math.isnan(fraction):
        return 0.0
    return min(1.0, max(0.0, float(fraction)))
