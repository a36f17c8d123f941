"""A file or directory the settings point at that a process cannot use stops it at start with
one line naming the variable or file and what to do, never a traceback: IMS_DATA_DIR that is
a file, a SQLite database under a file, IMS_KMS_ROOT_KEY_FILE that is a directory or of the
wrong size, and a URL secret file too short to sign with."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.config import Settings
from app.kms.envelope import load_root_key
from app.kms.port import KmsSealError
from app.storage.base import StorageError
from app.storage.factory import url_secret
from tests.conftest import free_port, run_ims

COMMANDS = [["serve", "--port", str(free_port())], ["worker"], ["migrate"], ["admin", "maintenance"]]
IDS = ["serve", "worker", "migrate", "maintenance"]


def assert_one_line(result: subprocess.CompletedProcess[str], status: int, line: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == status
    assert result.stderr.splitlines()[-1] == line


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_a_data_dir_that_is_a_file_is_refused_by_name(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory")
    result = run_ims(command, {"IMS_DATA_DIR": str(data)})
    assert_one_line(result, 2, f"ims: IMS_DATA_DIR={str(data)!r} is not valid: expected a directory this process "
                               "can create and use (File exists)")
    assert data.read_text() == "not a directory"


def test_a_sqlite_database_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    database = tmp_path / "file" / "ims.db"
    result = run_ims(["migrate"], {"IMS_DATA_DIR": str(tmp_path / "data"), "IMS_DATABASE_URL": f"sqlite:///{database}"})
    assert_one_line(result, 1, f"ims: cannot create the directory of the SQLite database {database}: "
                               "File exists")


@pytest.mark.parametrize("command", [COMMANDS[0], ["worker"]], ids=["serve", "worker"])
def test_a_root_key_file_that_is_a_directory_is_one_line(tmp_path: Path, command: list[str]) -> None:
    key = tmp_path / "keys"
    key.mkdir()
    result = run_ims(command, {"IMS_DATA_DIR": str(tmp_path / "data"), "IMS_KMS_ROOT_KEY_FILE": str(key)})
    assert_one_line(result, 1, f"ims: the KMS root key file {key} cannot be read (Is a directory): "
                               "point IMS_KMS_ROOT_KEY_FILE at the file")


@pytest.mark.parametrize("command", [COMMANDS[0], ["worker"]], ids=["serve", "worker"])
def test_a_root_key_file_of_the_wrong_size_is_one_line(tmp_path: Path, command: list[str]) -> None:
    key = tmp_path / "root.key"
    key.write_bytes(b"short")
    key.chmod(0o600)
    result = run_ims(command, {"IMS_DATA_DIR": str(tmp_path / "data"), "IMS_KMS_ROOT_KEY_FILE": str(key)})
    assert_one_line(result, 1, f"ims: the KMS root key file {key} must hold exactly 32 bytes, not 5: "
                               "point IMS_KMS_ROOT_KEY_FILE at the file the keys were sealed with")
    assert key.read_bytes() == b"short"


@pytest.mark.parametrize("command", [COMMANDS[0], ["worker"], ["admin", "init-storage"]],
                         ids=["serve", "worker", "init-storage"])
def test_a_short_url_secret_file_is_one_line(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "url-secret").write_text("short\n")
    result = run_ims(command, {"IMS_DATA_DIR": str(data)})
    assert_one_line(result, 1, f"ims: URL secret file {data / 'url-secret'} holds fewer than 16 bytes: "
                               "remove it to generate a new one, or set IMS_URL_SECRET")


def test_the_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(KmsSealError, match="cannot be read"):
        load_root_key(tmp_path)
    (tmp_path / "url-secret").write_text("")
    with pytest.raises(StorageError, match="fewer than 16 bytes"):
        url_secret(Settings(data_dir=tmp_path))
