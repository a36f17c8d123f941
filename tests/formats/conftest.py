"""Real images for the format tests, generated once per session with qemu-img."""

from __future__ import annotations

import pytest

from tests.hostile_files import HostileCase, ValidImage, build_hostile_corpus, build_valid_images


@pytest.fixture(scope="session")
def valid_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ValidImage]:
    return build_valid_images(tmp_path_factory.mktemp("valid"))


@pytest.fixture(scope="session")
def hostile_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, HostileCase]:
    return build_hostile_corpus(tmp_path_factory.mktemp("hostile"))
