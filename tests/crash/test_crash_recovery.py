"""kill -9 the server (API and in-process workers) or a worker process at random points of
running jobs — imports, exports, replications, full-ECS image creations — five trials each (more
while no kill has struck a running job), restart it, and after the last trial check that
nothing was lost: every job ended in SUCCESS, every ACTIVE image reads back with its
checksum and the bytes written, every reference count matches its holders, garbage
collection leaves no orphan or missing chunk object, and no conversion work file is left.

The trials are random (kill points, data); the seed is printed and named in any failure:
replay with IMS_CRASH_SEED=<seed>."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.crash.harness import (
    ADMIN,
    Cluster,
    Lab,
    close_services,
    kill_first_running,
    open_services,
)
from tests.crash.invariants import check_all
from tests.crash.scenarios import SCENARIOS, Scenario

TRIALS = 5
MAX_TRIALS = 10


@pytest.fixture(scope="module")
def seed() -> int:
    chosen = int(os.environ.get("IMS_CRASH_SEED") or secrets.randbelow(2**32))
    print(f"\ncrash trials: IMS_CRASH_SEED={chosen}")
    return chosen


async def _trials(lab: Lab, scenario: Scenario) -> None:
    made = await lab.gql('mutation { createAccount(input: {name: "crash"}) { ... on CreateAccountSuccess { token } } }',
                         token=ADMIN)
    lab.token = made["token"]
    await scenario.setup(lab)
    trial = 0
    # Five trials; more (up to MAX_TRIALS) while no kill has struck a running job, which a
    # fast machine may cause with short jobs: the trials must interrupt something.
    while trial < TRIALS or (trial < MAX_TRIALS and not any(k.struck for k in lab.kills)):
        if trial >= 2 and not any(k.struck for k in lab.kills):
            # Jobs too short to be caught once their requests return: strike while they start.
            starting = asyncio.create_task(scenario.start(lab, trial))
            struck = await kill_first_running(lab, trial, starting)
            job_ids = await starting
            lab.started += job_ids
            if struck is not None:
                await lab.cluster.start(struck.victim)
        else:
            job_ids = await scenario.start(lab, trial)
            lab.started += job_ids
            kill = await lab.kill_somewhere(trial, job_ids)
            await lab.cluster.start(kill.victim)
        await lab.wait_ended(job_ids)
        # Whether this trial's kill interrupted a job is read off the attempt log (a job seen
        # running may still have committed its end before the signal landed).
        if lab.kills and lab.kills[-1].trial == trial:
            async with lab.db.uow(write=False) as uow:
                lost = [a for a in await uow.jobs.attempts_of(job_ids) if a.outcome == "LOST"]
            lab.kills[-1] = replace(lab.kills[-1], struck=bool(lost))
        trial += 1


@pytest.mark.parametrize("make", SCENARIOS, ids=lambda make: make().name)
async def test_kill_9_loses_nothing(make: Callable[[], Scenario], seed: int, tmp_path: Path) -> None:
    scenario = make()
    cluster = Cluster(tmp_path)
    try:
        await cluster.start("server")
        await cluster.start("worker")
        services = await open_services(cluster)
    except BaseException:
        cluster.stop()
        raise
    lab = Lab(cluster, random.Random(f"{seed}:{scenario.name}"), services, httpx.AsyncClient(base_url=cluster.url))
    try:
        try:
            await _trials(lab, scenario)
        finally:
            cluster.stop()
        outcomes = await check_all(lab)
        await scenario.check(lab)
    except AssertionError as exc:
        kills = "\n".join(str(k) for k in lab.kills)
        raise AssertionError(f"{exc}\n{kills}\nreplay: IMS_CRASH_SEED={seed} pytest tests/crash -k {scenario.name}\n"
                             f"server log:\n{cluster.log('server')}\nworker log:\n{cluster.log('worker')}") from exc
    finally:
        await lab.http.aclose()
        await close_services(services)
    victims = [k.victim for k in lab.kills]
    print(f"{scenario.name}: {len(lab.kills)} trials, kill -9 of the server {victims.count('server')}x and of the worker "
          f"{victims.count('worker')}x; attempts by outcome: {dict(outcomes)}")
    for kill in lab.kills:
        print(f"  {kill}")
