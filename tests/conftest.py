"""Shared fixtures: the embedded dataset, built once per test session."""

import os

import pytest

from tests.helpers import tmpfs


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    """The embedded default dataset (utils.smoke), as the benchmark's first command builds it."""
    from utils.smoke import prepare

    return prepare(tmp_path_factory.mktemp("smoke"), seed=1234, log=lambda line: None)


@pytest.fixture
def read_only(tmp_path):
    """A folder no one can write into: a read-only tmpfs, else chmod 555 for a non-root user."""
    folder = tmp_path / "ro"
    with tmpfs(folder, "ro,size=64k") as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("root without the right to mount: a read-only folder cannot be made")
            folder.chmod(0o555)
        yield folder
        if not mounted:
            folder.chmod(0o755)
