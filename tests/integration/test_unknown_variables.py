"""An IMS_* variable that is no setting is logged as a warning line naming it (with the setting
it is close to) by every command that reads the settings, which then goes on as before. Before,
a misspelt IMS_DATABSE_URL was ignored without a word and the server ran on SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import free_port, run_ims

TYPO = {"IMS_DATABSE_URL": "postgresql://ims:pw-s3cret@127.0.0.1:1/ims"}
WARNING = "IMS_DATABSE_URL is not a setting and is ignored (did you mean IMS_DATABASE_URL?)"
LOGGED = " WARNING app.config request_id=- "


def warnings(stderr: str) -> list[str]:
    """The messages of the settings' warning lines of `stderr`."""
    return [line.split(LOGGED, 1)[1] for line in stderr.splitlines() if LOGGED in line]


@pytest.mark.parametrize("command", [["migrate"], ["admin", "maintenance"], ["admin", "init-storage"]],
                         ids=["migrate", "maintenance", "init-storage"])
def test_a_misspelt_setting_is_one_warning_and_the_command_goes_on(tmp_path: Path, command: list[str]) -> None:
    before = run_ims(command, {"IMS_DATA_DIR": str(tmp_path / "before")})
    result = run_ims(command, {"IMS_DATA_DIR": str(tmp_path / "data"), **TYPO, "IMS_COLOUR": "blue"})
    assert before.returncode == 0, before.stderr[-3000:]
    assert (result.returncode, result.stdout) == (0, before.stdout)
    assert warnings(result.stderr) == ["IMS_COLOUR is not a setting and is ignored", WARNING]
    assert warnings(before.stderr) == []
    # The same files in IMS_DATA_DIR as before (the SQLite database where the command opens one).
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == \
        sorted(p.name for p in (tmp_path / "before").iterdir())
    assert "pw-s3cret" not in result.stderr + result.stdout


def test_create_account_warns_too(tmp_path: Path) -> None:
    # It configures no logging (its output is the account and token): the line is the bare message.
    result = run_ims(["admin", "create-account", "carol"], {"IMS_DATA_DIR": str(tmp_path / "data"), **TYPO})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("account acc-") and "(carol, USER)" in result.stdout
    assert result.stderr == WARNING + "\n"


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]], ids=["serve", "worker"])
def test_serve_and_worker_warn_before_their_start_checks(tmp_path: Path, command: list[str]) -> None:
    # A region's endpoint is one of a family of settings, no unknown variable.
    port = free_port()  # nothing listens there: the process stops at its store check, as before
    result = run_ims(command, {"IMS_DATA_DIR": str(tmp_path / "data"), "IMS_S3_ENDPOINT_REGION_1": f"127.0.0.1:{port}",
                               "IMS_S3_ACCESS_KEY": "ims", "IMS_S3_SECRET_KEY": "secret", "IMS_WORKERS": "0", **TYPO})
    assert result.returncode == 1, result.stderr[-3000:]
    assert warnings(result.stderr) == [WARNING]
    assert result.stderr.splitlines()[-1].startswith(
        f"ims: the object store of region region-1 (the S3 endpoint 127.0.0.1:{port}) cannot be used: ")


def test_the_client_variables_are_no_warning(tmp_path: Path) -> None:
    result = run_ims(["migrate"], {"IMS_DATA_DIR": str(tmp_path / "data"), "IMS_URL": "http://127.0.0.1:8000",
                                   "IMS_TOKEN": "ims_token"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert warnings(result.stderr) == []


def test_the_worker_process_of_serve_does_not_repeat_the_warning(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMS_")}
    env |= {"IMS_DATA_DIR": str(tmp_path / "data"), "IMS_WORKERS": "1", **TYPO}
    lines = []
    with subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())],
                          cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as server:
        timer = threading.Timer(60, server.kill)
        timer.start()
        assert server.stderr is not None
        for line in server.stderr:  # the worker process logs to the same stderr
            lines.append(line)
            if "1 job worker(s) running" in line:
                server.send_signal(signal.SIGTERM)
        timer.cancel()
    assert server.returncode == -signal.SIGTERM, "".join(lines)[-3000:]  # uvicorn's exit on SIGTERM
    assert any("1 job worker(s) running" in line for line in lines)
    assert warnings("".join(lines)) == [WARNING]
