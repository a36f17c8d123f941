"""The job workers of `ims serve` in a child process.

`ims serve` with IMS_WORKERS > 0 (and IMS_WORKER_PROCESS on, the default) starts
`ims worker --concurrency IMS_WORKERS` as its child and supervises it:

* the child lowers its own priority by IMS_WORKER_NICE, so a job's hashing, sealing and
  streaming yield the cores to the API whenever it has a request to answer;
* it dies with the server (PR_SET_PDEATHSIG): a kill -9 of the server leaves no orphan
  running its jobs; their leases expire and the next server's worker takes them over, exactly
  as when the workers ran inside the server;
* it runs in a session of its own, so a terminal's Ctrl-C reaches the server only, which then
  stops the child the graceful way (IMS_WORKER_STOP_GRACE);
* when it exits unasked, the server starts another after a pause (1 s, doubling up to 30 s,
  back to 1 s once one has run for a minute);
* what the child's workers report reaches the server through a pipe, one JSON line per
  message: job changes for `jobUpdated` subscribers (on SQLite; PostgreSQL has LISTEN/NOTIFY),
  job durations and bytes moved for /metrics. The child never blocks on the pipe: a message
  that finds it full is dropped (a subscriber re-reads its job after a quiet period anyway).

Before, the workers ran on the API's event loop: a job's Python-level work and its threads
shared the API's interpreter, and the API's p99 during a data job was 3–14× its idle p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import orjson

from app.config import Settings
from app.jobs.worker import CANCEL_WAIT_SECONDS

log = logging.getLogger(__name__)

#: The child's write end of the pipe to the server, and the server's pid.
CHANNEL_FD_ENV = "IMS_WORKER_CHANNEL_FD"
PARENT_PID_ENV = "IMS_WORKER_PARENT_PID"
PR_SET_PDEATHSIG = 1
FIRST_PAUSE_SECONDS = 1.0
LONGEST_PAUSE_SECONDS = 30.0
#: A child that ran this long was healthy: the next restart pauses FIRST_PAUSE_SECONDS again.
HEALTHY_SECONDS = 60.0

Message = dict[str, Any]


class WorkerProcess:
    """The server's side: starts, supervises and stops the child; hands its messages to
    `on_message` on the event loop."""

    def __init__(self, settings: Settings, on_message: Callable[[Message], None],
                 on_restart: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.on_message = on_message
        self.on_restart = on_restart
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._read_fd = self._write_fd = -1
        self._pending = b""

    async def start(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        asyncio.get_running_loop().add_reader(self._read_fd, self._readable)
        self._proc = await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="worker process supervisor")

    async def _spawn(self) -> asyncio.subprocess.Process:
        s = self.settings
        env = {**os.environ, **s.to_env(),
               # The server has migrated; the child's own settings must not try again.
               "IMS_AUTO_MIGRATE": "0",
               CHANNEL_FD_ENV: str(self._write_fd), PARENT_PID_ENV: str(os.getpid())}
        # Started from the event loop's thread: PR_SET_PDEATHSIG follows the thread that forks.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "worker", "--concurrency", str(s.workers),
            env=env, pass_fds=(self._write_fd,), start_new_session=True,
        )
        log.info("job worker process %d started (%d workers, nice +%d)", proc.pid, s.workers, s.worker_nice)
        return proc

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        pause = FIRST_PAUSE_SECONDS
        while True:
            assert self._proc is not None
            started = loop.time()
            code = await self._proc.wait()
            if self._stopping.is_set():
                return
            if loop.time() - started >= HEALTHY_SECONDS:
                pause = FIRST_PAUSE_SECONDS
            log.error("job worker process %d exited with %s; starting another in %.0f s", self._proc.pid, code, pause)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
                    return
                pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
                try:
                    self._proc = await self._spawn()
                    break
                except OSError:
                    log.exception("could not start a job worker process; trying again in %.0f s", pause)
            if self.on_restart is not None:
                self.on_restart()

    def _readable(self) -> None:
        """Everything the pipe holds now (the server keeps the write end open too: an empty
        pipe answers EAGAIN, never end-of-file)."""
        while True:
            try:
                data = os.read(self._read_fd, 65536)
            except BlockingIOError:
                return
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            try:
                self.on_message(orjson.loads(line))
            except Exception:  # one bad message must not stop the others
                log.exception("job worker process: message %r not understood", line[:200])

    async def stop(self, grace: float) -> None:
        """SIGTERM the child (its workers get `grace` seconds, then an attempt they cancel gets
        CANCEL_WAIT_SECONDS before its job is released without it), SIGKILL it if it is still
        there 10 s after that; then read what it wrote last."""
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                # Killed sooner, a child whose attempt is stuck in a thread never releases the
                # job: it waits out its lease instead, the attempt counted.
                await asyncio.wait_for(proc.wait(), grace + CANCEL_WAIT_SECONDS + 10)
            except TimeoutError:
                log.warning("job worker process %d did not stop; killing it", proc.pid)
                proc.kill()
                await proc.wait()
        if self._supervisor is not None:
            await self._supervisor
        if self._read_fd >= 0:
            asyncio.get_running_loop().remove_reader(self._read_fd)
            self._readable()
            os.close(self._read_fd)
            os.close(self._write_fd)
            self._read_fd = self._write_fd = -1


class ParentChannel:
    """The child's side: messages to the server that started this worker process. It stands in
    for the server's metrics (`moved`, `job_finished`) and forwards job changes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ParentChannel | None:
        """The channel this process was started with by `ims serve`; None for a worker started
        on its own. Also makes this process die with that server."""
        e = os.environ if env is None else env
        if CHANNEL_FD_ENV not in e:
            return None
        die_with_parent(int(e[PARENT_PID_ENV]))
        return cls(int(e[CHANNEL_FD_ENV]))

    def send(self, message: Message) -> None:
        try:
            os.write(self.fd, orjson.dumps(message) + b"\n")  # < PIPE_BUF: written whole or not at all
        except BlockingIOError:  # the server is behind: this message is dropped
            pass
        except BrokenPipeError:  # the server is gone; this process follows it
            pass

    def job_changed(self, job_id: str) -> None:
        self.send({"job": job_id})

    def moved(self, direction: str, count: int) -> None:
        self.send({"moved": [direction, count]})

    def job_finished(self, job_type: str, status: str, seconds: float) -> None:
        self.send({"job_finished": [job_type, status, seconds]})


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent ends (Linux); end now if it already
    has (this process then belongs to init)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("PR_SET_PDEATHSIG failed (errno %d)", ctypes.get_errno())
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def lower_priority(nice: int) -> None:
    """Add `nice` to this process's niceness (never raises it: that needs privileges)."""
    if nice > 0:
        os.nice(nice)
