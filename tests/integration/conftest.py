"""A real Apache Kafka broker for the whole session, on free ports, removed afterwards."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.kafka.launcher import KafkaLauncher, KafkaSettings


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
