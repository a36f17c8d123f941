"""Durable jobs: the queue protocol (claim, lease, heartbeat), workers, handlers, event bus.

    registry.py   JobContext, JobFailed, JobRegistry: handlers by job type
    queue.py      JobQueue: the worker side of the job table, one transaction per step
    worker.py     Worker, WorkerPool: run handlers under a renewed lease
    service.py    JobService: enqueue, and jobs as their account sees them
    events.py     EventBus port, in-process adapter; events_pg.py: LISTEN/NOTIFY adapter

Nothing is imported here: import the module you need (no import-time side effects).
"""
