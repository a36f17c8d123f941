"""Client commands of `ims`, talking to a running server over HTTP like any user:
`ims upload FILE --bucket B [--import NAME …]` and `ims jobs watch ID`.

The server URL and token come from `--url`/`--token` or IMS_URL/IMS_TOKEN. Every failure —
a refusal by the server, a server that cannot be reached, a connection lost midway — is one
line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import typer
import websocket  # websocket-client: graphql-transport-ws is a plain websocket protocol
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

console = Console()
errors = Console(stderr=True)
jobs_cli = typer.Typer(help="Follow jobs.", no_args_is_help=True)

URL_OPTION = typer.Option(None, "--url", help="Server URL (IMS_URL, default http://127.0.0.1:8000).")
TOKEN_OPTION = typer.Option(None, "--token", help="API token (IMS_TOKEN).")

JOB_FIELDS = "id type status progress step error { code message } images { ... on ImageBase { id name status } }"


class ApiError(Exception):
    """A failure the CLI reports as one line on stderr, exiting with status 1."""


def _fail(exc: ApiError) -> typer.Exit:
    # markup off: a message quotes the server or the OS ("[Errno 111] …") verbatim.
    errors.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)


@contextmanager
def _reaching(url: str) -> Iterator[None]:
    """Turn a transport failure talking to `url` into an ApiError naming only its origin
    (a signed URL's query carries its signature)."""
    try:
        yield
    except (httpx.HTTPError, websocket.WebSocketException, OSError) as exc:
        parts = urlsplit(url)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ApiError(f"cannot reach {parts.scheme}://{parts.netloc}: {detail}") from exc


def _usable_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number from 0 to 65535 raises ValueError
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _target(url: str | None, token: str | None) -> tuple[str, str]:
    url = (url or os.environ.get("IMS_URL") or "http://127.0.0.1:8000").rstrip("/")
    # Checked here: a URL without a scheme, of another scheme or with a bad port or host made
    # httpx and websocket-client raise ValueError, a traceback instead of a usage error.
    if not _usable_url(url):
        raise typer.BadParameter(f"the server URL must be http://HOST[:PORT] or https://HOST[:PORT], not {url!r}",
                                 param_hint="--url / IMS_URL")
    token = token or os.environ.get("IMS_TOKEN")
    if not token:
        raise typer.BadParameter("an API token is needed: --token or IMS_TOKEN")
    return url, token


def graphql(url: str, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    with _reaching(url):
        response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables},
                              headers={"authorization": f"Bearer {token}"}, timeout=60)
    if response.status_code != 200:
        raise ApiError(f"HTTP {response.status_code}: {' '.join(response.text[:200].split())}")
    try:
        body = response.json()
    except ValueError as exc:
        raise ApiError(f"{url}/graphql answered with something other than JSON") from exc
    if body.get("errors"):
        raise ApiError("; ".join(e.get("message", "?") for e in body["errors"]))
    return body["data"]  # type: ignore[no-any-return]


def _payload(data: dict[str, Any], field: str, success: str) -> dict[str, Any]:
    result = data[field]
    if result["__typename"] != success:
        raise ApiError(f"{result['__typename']} {result.get('code')}: {result.get('message')}")
    return result  # type: ignore[no-any-return]


def _put_file(url: str, path: Path) -> None:
    size = path.stat().st_size
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress, open(path, "rb") as fh:
        task = progress.add_task(f"upload {path.name}", total=size)

        def body() -> Any:
            while piece := fh.read(1024 * 1024):
                progress.advance(task, len(piece))
                yield piece

        with _reaching(url):
            response = httpx.put(url, content=body(), headers={"content-length": str(size)}, timeout=None)
    if response.status_code != 200:
        raise ApiError(f"upload refused: HTTP {response.status_code} {' '.join(response.text[:200].split())}")


def _receive(ws: websocket.WebSocket) -> dict[str, Any] | None:
    """The next graphql-transport-ws message, or None once the server has closed the socket
    (websocket-client returns an empty string for a close frame)."""
    try:
        raw = ws.recv()
    except websocket.WebSocketConnectionClosedException:
        return None
    if not raw:
        return None
    try:
        message = json.loads(raw)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        raise ApiError(f"unexpected websocket message: {' '.join(str(raw)[:200].split())}")
    return message


def watch_job(url: str, token: str, job_id: str) -> dict[str, Any]:
    """Follow `jobUpdated(id)` over graphql-transport-ws with a progress bar; the last state."""
    with _reaching(url):
        return _watch(url, token, job_id)


def _watch(url: str, token: str, job_id: str) -> dict[str, Any]:
    ws = websocket.create_connection(url.replace("http", "ws", 1) + "/graphql",
                                     subprotocols=["graphql-transport-ws"], timeout=3600)
    last: dict[str, Any] = {}
    try:
        ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        # A bad token is answered by closing the socket (4403), not by a message.
        ack = _receive(ws)
        if ack is None or ack.get("type") != "connection_ack":
            raise ApiError("the server refused the websocket connection (token?)")
        query = f"subscription($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"id": job_id}}}))
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      console=console) as progress:
            task = progress.add_task(f"job {job_id}", total=1.0)
            while True:
                message = _receive(ws)
                if message is None:
                    raise ApiError(f"the server closed the connection before job {job_id} ended")
                if message.get("type") == "next":
                    if message["payload"].get("errors"):
                        raise ApiError(message["payload"]["errors"][0].get("message", "error"))
                    last = message["payload"]["data"]["jobUpdated"]
                    progress.update(task, completed=last["progress"], description=f"{last['status']} {last['step'] or ''}")
                elif message.get("type") == "error":
                    # The operation was refused before it ran (e.g. INVALID_CHARACTER): no job
                    # state came, and this is no success.
                    payload = message.get("payload")
                    errors_ = payload if isinstance(payload, list) else []
                    raise ApiError("; ".join(str(e.get("message", "?")) if isinstance(e, dict) else str(e)
                                             for e in errors_) or "the server refused the subscription")
                elif message.get("type") == "complete":
                    if last.get("status") not in ("SUCCESS", "FAIL"):
                        raise ApiError(f"the server ended the subscription before job {job_id} ended")
                    break
    finally:
        ws.close()
    return last


@jobs_cli.command("watch")
def jobs_watch(job_id: str, url: str | None = URL_OPTION, token: str | None = TOKEN_OPTION) -> None:
    """Follow a job to its end with a progress bar (exit 1 when it FAILs)."""
    base, tok = _target(url, token)
    try:
        job = watch_job(base, tok, job_id)
    except ApiError as exc:
        raise _fail(exc) from exc
    _report(job)


def _report(job: dict[str, Any]) -> None:
    if job.get("status") == "FAIL":
        console.print(f"[red]job {job['id']} FAIL {job['error']['code']}[/red]: {job['error']['message']}")
        raise typer.Exit(1)
    names = ", ".join(f"{i['name']} ({i['id']}, {i['status']})" for i in job.get("images", []) if i)
    console.print(f"job {job.get('id')} {job.get('status')}" + (f": {names}" if names else ""))


UPLOAD_URL = """mutation($b: String!, $k: String!) { createUploadUrl(input: {bucket: $b, key: $k, expiresInSeconds: 86400}) {
  __typename ... on CreateUploadUrlSuccess { url } ... on UserError { code message } } }"""
IMPORT = """mutation($input: ImportImageInput!) { importImage(input: $input) {
  __typename ... on ImageJobSuccess { job { id } } ... on UserError { code message } } }"""


def upload(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    bucket: str = typer.Option(..., "--bucket", "-b", help="Your bucket."),
    key: str | None = typer.Option(None, "--key", help="Object key (default: the file name)."),
    import_as: str | None = typer.Option(None, "--import", help="Then import it as an image with this name."),
    kind: str = typer.Option("SYSTEM_DISK", help="SYSTEM_DISK, DATA_DISK or ISO."),
    min_disk_gb: int = typer.Option(1, "--min-disk-gb"),
    os_type: str = typer.Option("LINUX", "--os-type"),
    os_platform: str | None = typer.Option(None, "--os-platform", help="e.g. Ubuntu (system disk and ISO)."),
    os_version: str | None = typer.Option(None, "--os-version", help="e.g. 'Ubuntu 22.04 server 64bit'."),
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Upload FILE to your bucket through a signed URL (with a progress bar); with --import,
    import it and follow the job."""
    base, tok = _target(url, token)
    object_key = key or file.name
    try:
        signed = _payload(graphql(base, tok, UPLOAD_URL, {"b": bucket, "k": object_key}),
                          "createUploadUrl", "CreateUploadUrlSuccess")
        _put_file(signed["url"], file)
        console.print(f"uploaded {bucket}/{object_key}")
        if import_as is None:
            return
        spec: dict[str, Any] = {"bucket": bucket, "key": object_key, "name": import_as, "kind": kind,
                                "minDiskGb": min_disk_gb}
        if os_platform:
            spec["os"] = {"type": os_type, "platform": os_platform, "version": os_version or os_platform}
        job_id = _payload(graphql(base, tok, IMPORT, {"input": spec}), "importImage", "ImageJobSuccess")["job"]["id"]
        _report(watch_job(base, tok, job_id))
    except ApiError as exc:
        raise _fail(exc) from exc
