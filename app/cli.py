"""The `ims` command line: serve, worker, migrate, admin (accounts, storage), schema."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console

from app.cli_client import jobs_cli, upload
from app.config import Settings, SettingsError, warn_of_unknown_variables
from app.db import DatabaseNotReadyError
from app.domain.enums import AccountRole
from app.kms.port import KmsSealError
from app.storage.base import StorageError

cli = typer.Typer(help="Image Management Service", no_args_is_help=True, add_completion=False)
admin_cli = typer.Typer(help="Administration: accounts, storage.", no_args_is_help=True)
schema_cli = typer.Typer(help="The GraphQL schema.", no_args_is_help=True)
cli.add_typer(admin_cli, name="admin")
cli.add_typer(schema_cli, name="schema")
cli.add_typer(jobs_cli, name="jobs")
cli.command("upload")(upload)
console = Console()

DEFAULT_SCHEMA_PATH = Path("graphql/schema.graphql")


def _settings(*, logs: bool = True, warn: bool = True) -> Settings:
    """The environment's settings (SettingsError for a value they cannot hold); with `logs`,
    logging configured from them; with `warn`, a warning for each IMS_* variable that is
    no setting (a misspelt one is otherwise ignored without a word)."""
    settings = Settings.from_env()
    if logs:
        from app.logs import configure

        configure(settings.log_level)
    if warn:
        warn_of_unknown_variables()
    return settings


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    # Bounded here: a port over 65535 was found out by bind() only after the migrations and
    # the start of the service, as an OverflowError's traceback.
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free one)."),
) -> None:
    """Run the API server (and, with IMS_WORKERS > 0, job workers)."""
    import uvicorn

    from app.bootstrap import make_data_dir, preflight
    from app.db.migrate import prepare
    from app.http import MAX_BODY_BYTES
    from app.main import create_app
    from app.runtime import tune_allocator

    settings = _settings()
    make_data_dir(settings)
    # Here, not only in the app's start: uvicorn would report a database that is down or
    # behind as a traceback of its lifespan.
    prepare(settings.effective_database_url, migrate=settings.migrates_at_start)
    asyncio.run(preflight(settings))
    tune_allocator()
    app = create_app(settings)
    app.state.freeze_after_start = True  # this process is the server's own: see freeze_startup_objects
    if not settings.admin_token:
        console.print(f"Admin token file: [bold]{(settings.data_dir / 'admin-token').resolve()}[/bold]")
    console.print(f"GraphiQL: [bold]http://{host}:{port}/graphql[/bold]")
    # A websocket message is held to the request-body limit: the edge's limit reads HTTP
    # bodies only, and a subscribe message carries a document and variables just as they do.
    # A stop waits for requests in flight at most IMS_HTTP_STOP_GRACE: without a bound, one
    # slow download held the process (and its job workers) until the client went away.
    uvicorn.run(app, host=host, port=port, log_config=None, proxy_headers=False, limit_concurrency=1000,
                ws_max_size=MAX_BODY_BYTES, timeout_graceful_shutdown=math.ceil(settings.http_stop_grace))


@cli.command()
def worker(
    concurrency: int = typer.Option(
        0, "--concurrency", "-c", min=0, help="Jobs run at once (default: IMS_WORKERS, at least 1)."
    ),
) -> None:
    """Run job workers in this process until SIGTERM or SIGINT (the current jobs get
    IMS_WORKER_STOP_GRACE seconds to finish, then their leases are released)."""
    from app.jobs.process import PARENT_PID_ENV, lower_priority
    from app.runtime import tune_allocator

    # Started by `ims serve`, whose environment it has: the server has warned already.
    settings = _settings(warn=PARENT_PID_ENV not in os.environ)
    tune_allocator()
    lower_priority(settings.worker_nice)
    count = concurrency or max(settings.workers, 1)
    asyncio.run(_run_workers(replace(settings, workers=count)))


async def _run_workers(settings: Settings) -> None:
    from app.bootstrap import Runtime
    from app.jobs.process import ParentChannel
    from app.runtime import freeze_startup_objects

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = Runtime(settings, api=False, channel=ParentChannel.from_env())
    await runtime.start()
    freeze_startup_objects()
    logging.getLogger("app.cli").info("%d job worker(s) running", settings.workers)
    try:
        await stop.wait()
    finally:
        await runtime.stop()


@cli.command()
def demo() -> None:
    """Create a handful of real public images (raw and qcow2, Linux and Windows) to try
    every feature with."""
    from app.bootstrap import Runtime
    from app.domain.images import Caller
    from app.services.demo import create_demo_images

    settings = _settings()
    settings = replace(settings, workers=max(settings.workers, 1), worker_process=False)

    async def run() -> list[str]:
        runtime = Runtime(settings)
        await runtime.start()
        try:
            services = runtime.services
            async with services.db.uow(write=False) as uow:
                admin = await uow.accounts.get_by_name(settings.admin_name)
            assert admin is not None
            return await create_demo_images(services, Caller(admin.id, admin.name, admin.role))
        finally:
            await runtime.stop()

    statuses = asyncio.run(run())
    console.print(f"demo images: {statuses.count('SUCCESS')} of {len(statuses)} imported as PUBLIC")
    if any(s != "SUCCESS" for s in statuses):
        raise typer.Exit(1)


@admin_cli.command("maintenance")
def maintenance() -> None:
    """Run one round of garbage collection, KMS purges and expired API token deletion now
    (skipped while another process holds the maintenance lock)."""
    from app.bootstrap import Runtime
    from app.jobs.maintenance import run_once

    settings = replace(_settings(), workers=0)

    async def run() -> object:
        runtime = Runtime(settings, api=False)
        await runtime.start()
        try:
            return await run_once(runtime.services)
        finally:
            await runtime.stop()

    report = asyncio.run(run())
    console.print("another process holds the maintenance lock" if report is None else str(report))


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from app.bootstrap import make_data_dir
    from app.db.migrate import prepare

    settings = _settings()
    make_data_dir(settings)
    prepare(settings.effective_database_url, migrate=True)
    console.print("database is up to date")


@admin_cli.command("create-account")
def create_account(
    name: str,
    role: AccountRole = typer.Option(AccountRole.USER, "--role", case_sensitive=False, help="USER or ADMIN."),
) -> None:
    """Create an account and print its first API token (shown once)."""
    from app.bootstrap import Runtime

    settings = _settings(logs=False)  # its output is the account and its token (a warning still reaches stderr)

    async def run() -> tuple[str, str]:
        runtime = Runtime(replace(settings, workers=0))
        await runtime.start()
        try:
            account, token = await runtime.services.accounts.create_account(None, name, AccountRole(role))
            return account.id, token
        finally:
            await runtime.stop()

    from app.errors import ImsError

    try:
        account_id, token = asyncio.run(run())
    except ImsError as exc:
        console.print(f"[red]{exc.code}[/red]: {exc.message}")
        raise typer.Exit(1) from exc
    console.print(f"account {account_id} ({name}, {role.value})")
    print(token)


@admin_cli.command("init-storage")
def init_storage() -> None:
    """Create every region's service bucket (idempotent); run once per deployment, after
    `ims migrate`, so that API and worker processes start against ready storage."""
    from app.bootstrap import make_data_dir
    from app.storage.factory import build_stores, close_stores, create_service_buckets, url_secret
    from app.storage.signing import UrlSigner

    settings = _settings()
    make_data_dir(settings)  # the URL secret is generated there unless IMS_URL_SECRET is set

    async def run() -> list[str]:
        stores = build_stores(settings, UrlSigner(url_secret(settings), settings.public_url))
        try:
            return await create_service_buckets(stores, settings)
        finally:
            await close_stores(stores)

    for bucket in asyncio.run(run()):
        console.print(f"service bucket {bucket} is ready")


@schema_cli.command("export")
def schema_export(
    output: Path = typer.Option(DEFAULT_SCHEMA_PATH, "--output", "-o", help="Where to write the SDL."),
) -> None:
    """Write the served schema as sorted SDL."""
    from app.api.schema import export_sdl

    sdl = export_sdl()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(sdl)
    except OSError as exc:  # a path that cannot be written: one line, not a traceback
        print(f"ims: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    console.print(f"wrote {output}")


def main() -> None:
    logging.captureWarnings(True)
    try:
        cli()
    except SettingsError as exc:
        # A configuration mistake, not a crash: one line naming the variable, and click's
        # exit status for bad usage.
        print(f"ims: {exc}", file=sys.stderr)
        sys.exit(2)
    except (DatabaseNotReadyError, KmsSealError, StorageError) as exc:
        # What the process depends on is down, unreachable, behind or not the one the data
        # was made with: one line saying which (the database, a region's object store, the
        # KMS root key file) and what to do, not a traceback.
        print(f"ims: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
