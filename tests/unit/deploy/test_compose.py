"""docker-compose.yml cannot be run here (no Docker engine); its structure is checked instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_every_service_has_an_image_or_a_build() -> None:
    for name, svc in compose()["services"].items():
        assert "image" in svc or "build" in svc, name


def test_dependencies_name_services_that_exist() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"


def test_the_stack_has_kafka_postgres_prometheus_grafana_and_a_service_per_folder() -> None:
    services = set(compose()["services"])
    assert {"kafka", "postgres", "prometheus", "grafana"} <= services
    folders = {p.name.replace("_", "-") for p in (ROOT / "services").iterdir() if p.is_dir()}
    folders.discard("--pycache--")
    assert folders <= services


def test_kafka_runs_in_kraft_mode_with_no_auto_created_topics() -> None:
    env = compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
