"""The crash lab: a real deployment on one data directory (an `ims serve` process with job
workers inside, and an `ims worker` process beside it), a GraphQL client, services of the
test's own over the same database, and the kill -9 of one process at a random point of the
running jobs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.bootstrap import build_database, build_services
from app.config import Settings
from app.db.tables import Job
from app.db.uow import Database
from app.services.registry import Services

ADMIN = "ims_crash-admin-token"
REGIONS = ("region-1", "region-2")
MiB = 1024 * 1024
ENDED = ("SUCCESS", "FAIL")
#: A job's lease: a killed worker's job is taken over this long after its last heartbeat.
LEASE_SECONDS = 1
#: Bounds of waits whose end the system owes us (jobs ending, a server starting); reaching
#: one is a failure of the system, not a measure of its speed.
PATIENCE = 120.0


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    """Still a process (a zombie awaiting its parent's wait counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _pid_of(lease_owner: str | None) -> int | None:
    """The process id inside a worker id `host:pid:index`."""
    parts = (lease_owner or "").split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


class Cluster:
    """`ims serve` (API, and IMS_WORKERS workers in its child process) and one `ims worker` process
    sharing one data directory (SQLite, filesystem object store, local KMS), as the embedded
    default runs, with a worker process added so that either kind of process can be killed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes] | None] = {"server": None, "worker": None}

    def _env(self) -> dict[str, str]:
        return {**os.environ, "IMS_DATA_DIR": str(self.data_dir), "IMS_ADMIN_TOKEN": ADMIN, "IMS_WORKERS": "2",
                "IMS_REGIONS": ",".join(REGIONS), "IMS_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
                "IMS_JOB_POLL_INTERVAL": "0.05", "IMS_MAINTENANCE_INTERVAL": "0", "IMS_WORKER_STOP_GRACE": "1",
                "IMS_PUBLIC_URL": self.url,
                # Log lines reach the file as they are written: kill_first_running watches them.
                "PYTHONUNBUFFERED": "1"}

    def _spawn(self, which: str, *args: str) -> None:
        with open(self.root / f"{which}.log", "ab") as log:
            self.procs[which] = subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=self._env(),
                                                 stdout=log, stderr=subprocess.STDOUT)

    async def start(self, which: str) -> None:
        if which == "worker":
            self._spawn("worker", "worker", "--concurrency", "2")
            return
        self._spawn("server", "serve", "--port", str(self.port))
        deadline = time.monotonic() + PATIENCE
        async with httpx.AsyncClient() as http:
            while True:
                try:
                    if (await http.get(f"{self.url}/health", timeout=1)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert self.procs["server"] is not None and self.procs["server"].poll() is None, self.log("server")
                assert time.monotonic() < deadline, "the server did not start"
                await asyncio.sleep(0.05)

    def pids(self, which: str) -> set[int]:
        """The process and its children: the server runs its job workers in a child process
        (app.jobs.process)."""
        proc = self.procs[which]
        if proc is None or proc.poll() is not None:
            return set()
        return {proc.pid, *_children(proc.pid)}

    def kill(self, which: str) -> None:
        """kill -9 of the process; its worker child dies with it (PR_SET_PDEATHSIG), which is
        checked here."""
        proc = self.procs[which]
        assert proc is not None and proc.poll() is None, f"the {which} died before it was killed:\n{self.log(which)}"
        children = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        deadline = time.monotonic() + PATIENCE
        while any(_alive(pid) for pid in children):
            assert time.monotonic() < deadline, f"the {which}'s children {children} outlived it"
            time.sleep(0.01)

    def pause(self, which: str, paused: bool) -> None:
        """SIGSTOP / SIGCONT of the process and its children: a paused process cannot finish the
        job it runs."""
        proc = self.procs[which]
        assert proc is not None and proc.poll() is None
        for pid in sorted(self.pids(which), reverse=not paused):
            os.kill(pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            if proc is not None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def log_size(self, which: str) -> int:
        path = self.root / f"{which}.log"
        return path.stat().st_size if path.exists() else 0

    def log_since(self, which: str, offset: int) -> tuple[str, int]:
        """The log's complete lines written after `offset`, and the offset after them."""
        path = self.root / f"{which}.log"
        if not path.exists():
            return "", offset
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < offset:  # a restarted process began a new log
                offset = 0
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        return data[:end].decode(errors="replace"), offset + end

    def log(self, which: str) -> str:
        path = self.root / f"{which}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@dataclass(frozen=True)
class Kill:
    """Where one trial's kill -9 landed: the job watched, the progress awaited, what was seen."""

    trial: int
    victim: str
    job_id: str
    threshold: float
    status: str
    progress: float
    #: The victim was running one of the trial's jobs when it died.
    struck: bool

    def __str__(self) -> str:
        when = ("right after the request" if self.threshold < 0 else
                "at the first job seen running, requests still going" if self.threshold > 1 else
                f"when job {self.job_id} ran at {self.threshold:.2f}")
        struck = "running a job" if self.struck else "running none of them"
        return (f"trial {self.trial}: kill -9 {self.victim} {when} (seen {self.job_id} {self.status} "
                f"{self.progress:.2f}), {struck}")


@dataclass
class Lab:
    """What a scenario works with. `expected` maps every image the scenario made to the
    SHA-256 of each of its disks' plaintext, as the scenario knows it from the bytes it wrote."""

    cluster: Cluster
    rng: random.Random
    services: Services
    http: httpx.AsyncClient
    token: str = ""
    expected: dict[str, list[str]] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)

    @property
    def db(self) -> Database:
        return self.services.db

    async def gql(self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None) -> Any:
        r = await self.http.post("/graphql", json={"query": query, "variables": variables or {}},
                                 headers={"authorization": f"Bearer {token or self.token}"}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert "errors" not in body, body
        [value] = body["data"].values()
        return value

    async def ok(self, query: str, variables: dict[str, Any] | None = None, *, success: str) -> Any:
        """Run a mutation whose payload must be the `success` member of its union."""
        payload = await self.gql(query, variables)
        assert payload["__typename"] == success, payload
        return payload

    async def jobs(self, job_ids: Iterable[str]) -> dict[str, Job]:
        async with self.db.uow(write=False) as uow:
            return {job_id: job for job_id in job_ids if (job := await uow.jobs.get(job_id)) is not None}

    async def wait_ended(self, job_ids: list[str]) -> dict[str, Job]:
        deadline = time.monotonic() + PATIENCE
        while True:
            jobs = await self.jobs(job_ids)
            if len(jobs) == len(job_ids) and all(j.status in ENDED for j in jobs.values()):
                return jobs
            assert time.monotonic() < deadline, {j.id: (j.status, j.progress, j.step) for j in jobs.values()}
            await asyncio.sleep(0.05)

    async def kill_somewhere(self, trial: int, job_ids: list[str]) -> Kill:
        """kill -9 a process at a random point of the trial's jobs: right after the request
        (before or as the jobs are claimed), or once a randomly chosen job runs and has
        reached a random progress. Progress is persisted coarsely (on each new step, else
        every PROGRESS_INTERVAL_SECONDS), so a short job may end first; as long as no kill of
        the scenario has landed in a running job, the next one strikes as soon as its job runs.
        The victim is the process running that job (or, when it has ended, another of them),
        either one when no process runs any."""
        target = self.rng.choice(job_ids)
        draw = self.rng.random()
        landed = any(k.struck for k in self.kills)
        threshold = -1.0 if draw < 0.15 else 0.0 if draw < 0.4 or not landed else self.rng.uniform(0.02, 0.95)
        coin = self.rng.choice(("server", "worker"))
        deadline = time.monotonic() + PATIENCE
        while True:
            job = (await self.jobs([target]))[target]
            if threshold < 0 or job.status in ENDED or (job.status == "RUNNING" and job.progress >= threshold):
                break
            assert time.monotonic() < deadline, (job.status, job.progress, job.step)
            await asyncio.sleep(0.005)
        jobs = await self.jobs(job_ids)
        # The watched job may have ended meanwhile: then the process running another one dies.
        running = sorted((j for j in jobs.values() if j.status == "RUNNING"), key=lambda j: j.id != target)
        holder = _pid_of(running[0].lease_owner) if running else None
        pids = {w: self.cluster.pids(w) for w in ("server", "worker")}
        victim = next((w for w in ("server", "worker") if holder in pids[w]), coin)
        self.cluster.kill(victim)
        kill = Kill(trial, victim, target, threshold, job.status, job.progress, holder in pids[victim])
        self.kills.append(kill)
        return kill


async def kill_first_running(lab: Lab, trial: int, starting: asyncio.Task[list[str]]) -> Kill | None:
    """For jobs too short to be caught after their requests return: watch the processes' logs
    (cheaper than the database, so the watch keeps up with jobs of a few hundred ms) while the
    trial's requests are being made; when a process starts a job, freeze it (SIGSTOP) and, if
    the job has not ended, kill -9 it — the worker process at once, the server (which answers
    the requests) once the requests are done. None when every job ended unseen."""
    seen = {w: lab.cluster.log_size(w) for w in ("worker", "server")}
    started: dict[str, list[str]] = {"worker": [], "server": []}
    while True:
        for which in ("worker", "server"):
            fresh, seen[which] = lab.cluster.log_since(which, seen[which])
            for line in fresh.splitlines():
                if ") attempt " in line and line.endswith(" started"):
                    started[which].append(line.split(" job ", 1)[1].split(" ", 1)[0])
        for victim in ("worker", "server"):
            if started[victim] and (victim == "worker" or starting.done()):
                # Frozen first (microseconds), then looked at: if one of its jobs has not ended,
                # the kill lands in the middle of it.
                lab.cluster.pause(victim, True)
                jobs = await lab.jobs(started[victim])
                running = [j for j in jobs.values() if j.status not in ENDED]
                if running:
                    lab.cluster.kill(victim)
                    kill = Kill(trial, victim, running[0].id, 2.0, running[0].status, running[0].progress, True)
                    lab.kills.append(kill)
                    return kill
                lab.cluster.pause(victim, False)
                started[victim].clear()
        if starting.done():
            jobs = await lab.jobs(starting.result())
            if all(j.status in ENDED for j in jobs.values()):
                return None
        await asyncio.sleep(0.001)


async def open_services(cluster: Cluster) -> Services:
    """Services of the test's own over the cluster's database and stores (no workers); built
    once the server has created the KMS root key."""
    settings = Settings(data_dir=cluster.data_dir, admin_token=ADMIN, workers=0, auto_migrate=False, regions=REGIONS)
    return build_services(settings, build_database(settings))


async def close_services(services: Services) -> None:
    await services.close()
    await services.db.dispose()


async def upload(lab: Lab, bucket: str, key: str, body: bytes) -> None:
    url = (await lab.ok('mutation($b: String!, $k: String!) { createUploadUrl(input: {bucket: $b, key: $k}) '
                        '{ __typename ... on CreateUploadUrlSuccess { url } } }', {"b": bucket, "k": key},
                        success="CreateUploadUrlSuccess"))["url"]
    assert (await lab.http.put(url, content=body, timeout=60)).status_code == 200


IMAGE_JOB = "__typename ... on UserError { code message } ... on ImageJobSuccess { job { id } images { ... on ImageBase { id } } }"


async def image_job(lab: Lab, mutation: str, spec: dict[str, Any]) -> tuple[str, str]:
    """Run a mutation answering ImageJobSuccess with one image: (job id, image id)."""
    payload = await lab.ok(f"mutation($s: {mutation[0].upper()}{mutation[1:]}Input!) {{ {mutation}(input: $s) {{ {IMAGE_JOB} }} }}",
                           {"s": spec}, success="ImageJobSuccess")
    [image] = payload["images"]
    return payload["job"]["id"], image["id"]


async def import_image(lab: Lab, bucket: str, key: str, name: str, **fields: Any) -> tuple[str, str]:
    spec = {"bucket": bucket, "key": key, "name": name, "minDiskGb": 1,
            "os": {"type": "LINUX", "platform": "Debian", "version": "12"}, **fields}
    return await image_job(lab, "importImage", spec)


async def create_key(lab: Lab, alias: str) -> str:
    made = await lab.ok('mutation($a: String!) { createKmsKey(input: {alias: $a}) { __typename ... on KmsKeySuccess { key { id } } } }',
                        {"a": alias}, success="KmsKeySuccess")
    return str(made["key"]["id"])
