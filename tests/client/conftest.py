"""The Python client (clients/python) against a live `gateway serve` process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import Server, start_server


@pytest.fixture(scope="session")
def gateway_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    s = start_server(server_env, tmp_path_factory.mktemp("client"), "client")
    yield s
    s.stop()


@pytest.fixture
def local_file(tmp_path: Path) -> Path:
    path = tmp_path / "report.txt"
    path.write_bytes(b"quarterly numbers\n" * 10)
    return path
