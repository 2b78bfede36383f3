"""Shared fixtures: the embedded dataset, built once per test session."""

import pytest


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    """The embedded default dataset (utils.smoke), as the benchmark's first command builds it."""
    from utils.smoke import prepare

    return prepare(tmp_path_factory.mktemp("smoke"), seed=1234, log=lambda line: None)
