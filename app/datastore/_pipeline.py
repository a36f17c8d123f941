"""Asyncio plumbing shared by the writer and the reader."""

from __future__ import annotations

import asyncio
import hashlib
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
    """SHA-256 of a stream whose pieces are fed in order, hashed in worker threads.

    `feed` returns at once; the update runs in a thread after the previous piece's update,
    so the event loop never hashes and the order holds whatever the thread pool does.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._tail: asyncio.Future[None] | None = None

    def feed(self, piece: bytes) -> asyncio.Future[None]:
        self._tail = asyncio.ensure_future(self._update(self._tail, piece))
        return self._tail

    async def _update(self, previous: asyncio.Future[None] | None, piece: bytes) -> None:
        if previous is not None:
            await previous
        await asyncio.to_thread(self._hash.update, piece)

    async def hexdigest(self) -> str:
        if self._tail is not None:
            await self._tail
        return self._hash.hexdigest()

    async def aclose(self) -> None:
        """Stop hashing (after a failure): cancelling the last update cancels the chain."""
        if self._tail is not None:
            await cancel_all([self._tail])


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
