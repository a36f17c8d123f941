"""Asyncio plumbing shared by the writer and the reader."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import NoReturn, TypeVar

T = TypeVar("T")

#: Batch existence check: the digests among those given whose objects already exist.
ExistsCheck = Callable[[list[str]], Awaitable[set[str]]]


async def recut(source: AsyncIterator[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Re-cut pieces of any sizes into `size`-byte pieces, the last one shorter.

    A piece that already is exactly one chunk passes through without a copy; anything else
    costs one memcpy per chunk (into the chunk's own bytes object).
    """
    parts: list[memoryview] = []
    buffered = 0
    async for piece in source:
        if not piece:
            continue
        if not parts and len(piece) == size:
            yield piece
            continue
        view = memoryview(piece)
        while view:
            take = min(size - buffered, len(view))
            parts.append(view[:take])
            buffered += take
            view = view[take:]
            if buffered == size:
                yield b"".join(parts)
                parts.clear()
                buffered = 0
    if parts:
        yield b"".join(parts)


class SequentialHasher:
    """SHA-256 of a stream whose pieces are fed in order, hashed by a thread of its own.

    `feed` queues the piece and returns at once a future that resolves once the piece is
    hashed (its memory may then go). The thread takes queued pieces back to back: unlike a
    chain of `to_thread` calls, no piece waits for the event loop to hand it over, so the
    hash keeps a core busy while the loop is busy elsewhere. The event loop never hashes.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._tail: asyncio.Future[None] | None = None
        self._stopped = False

    def feed(self, piece: bytes) -> asyncio.Future[None]:
        if self._stopped:
            raise RuntimeError("the hasher is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ims-sha256", daemon=True)
            self._thread.start()
        self._tail = self._loop.create_future()
        self._queue.put((piece, self._tail))
        return self._tail

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            piece, done = item
            if self._stopped:
                self._settle(done.cancel)
                continue
            try:
                self._hash.update(piece)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                self._stopped = True
                self._settle(functools.partial(_set_exception, done, exc))
                continue
            del piece, item
            self._settle(functools.partial(_set_result, done))

    def _settle(self, callback: Callable[[], object]) -> None:
        try:
            self._loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    async def hexdigest(self) -> str:
        if self._tail is not None:
            await self._tail
        self._finish()
        return self._hash.hexdigest()

    async def aclose(self) -> None:
        """Stop hashing (after a failure): pieces still queued are dropped, their futures
        cancelled, and the thread ends."""
        self._stopped = True
        self._finish()
        if self._tail is not None and not self._tail.done():
            await cancel_all([self._tail])

    def _finish(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _set_exception(future: asyncio.Future[None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class ExistsBatcher:
    """Coalesces concurrent existence checks into batch calls.

    While one call is in flight, new questions queue up and go out together in the next
    call, so the batch size grows with the latency of the check (as Nagle's algorithm does).
    """

    def __init__(self, check: ExistsCheck) -> None:
        self._check = check
        self._pending: dict[str, list[asyncio.Future[bool]]] = {}
        self._drainer: asyncio.Task[None] | None = None

    async def exists(self, digest: str) -> bool:
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(digest, []).append(answer)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                present = await self._check(list(batch))
            except asyncio.CancelledError:
                for waiter in _waiters(batch, self._pending):
                    waiter.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to the waiters, which raise it
                for waiter in _waiters(batch):
                    waiter.set_exception(exc)
                continue
            for digest, waiters in batch.items():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(digest in present)

    async def aclose(self) -> None:
        """Stop: cancel the call in flight and every question still waiting."""
        if self._drainer is not None:
            await cancel_all([self._drainer])
        # A drainer cancelled before it ran never saw its batch.
        for waiter in _waiters(self._pending):
            waiter.cancel()
        self._pending = {}


def _waiters(*batches: dict[str, list[asyncio.Future[bool]]]) -> Iterator[asyncio.Future[bool]]:
    """The waiters of the batches still waiting for their answer."""
    for batch in batches:
        for waiters in batch.values():
            yield from (waiter for waiter in waiters if not waiter.done())


async def cancel_all(tasks: Iterable[asyncio.Future[T]]) -> None:
    """Cancel tasks and wait until they are done, retrieving their exceptions."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def raise_first(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the first real failure of a task group, not the group."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            raise_first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            raise exc
    raise group
