from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from deploy.kafka.launcher import KafkaLauncher, KafkaSettings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def unavailable(reason: str) -> NoReturn:
    """What a test needs is not here: a failure in CI, where .ci/run provides it; else a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public FHIR and SDTM files beside the project; never copied into it."""
    if not SHARED_DATA.is_dir():
        unavailable(f"../shared/data is absent ({SHARED_DATA}): the external files are not here")
    return SHARED_DATA


POSTGRES_ENV = "SAFETY_MONITOR_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on SQLite and on PostgreSQL (the same SQLAlchemy code)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    return postgres_url()


def postgres_url() -> str:
    """The PostgreSQL that .ci/run starts (or a developer's): SAFETY_MONITOR_TEST_POSTGRES_URL."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        unavailable(f"{POSTGRES_ENV} is not set: no PostgreSQL to test against")
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launcher_in(state_dir: Path) -> KafkaLauncher:
    return KafkaLauncher(
        KafkaSettings(state_dir=state_dir, port=free_port(), controller_port=free_port())
    )


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a running broker with the catalog's topics created."""
    launcher = launcher_in(tmp_path_factory.mktemp("kafka"))
    launcher.up()
    try:
        yield launcher.bootstrap
    finally:
        launcher.down(purge=True)
