"""docker-compose.yml cannot be run here (no Docker engine); it is checked against the code instead:
every command is a subcommand the CLI accepts, every service listens (on all interfaces) where
Prometheus scrapes it, every service has a health check on its own port, and what is mounted
exists."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.audit.settings import AuditSettings
from services.cli import parser
from services.safety_rules.settings import RulesSettings

ROOT = Path(__file__).resolve().parents[3]
OURS = {"topics", "ingest", "rules-worker", "notifier", "audit-projection", "audit-api"}


def compose(path: Path = ROOT / "docker-compose.yml") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def listening(svc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[str, int] | None:
    """(host, port) the service's command serves HTTP on, as the code reads its arguments and
    its environment; None for a command that serves nothing."""
    args = parser().parse_args(svc["command"])  # SystemExit(2): not a real subcommand
    with monkeypatch.context() as env:
        for name, value in (svc.get("environment") or {}).items():
            env.setenv(name, str(value))
        if (args.command, getattr(args, "action", None)) == ("rules", "worker"):
            s = RulesSettings()
            return s.rules_web_bind, s.rules_web_port
        if (args.command, args.action) == ("audit", "project"):
            a = AuditSettings()
            return args.host or a.audit_projection_host, args.port or a.audit_projection_port
    if args.command in ("ingest", "notifier", "audit") and args.action == "serve":
        return args.host, args.port
    return None


def test_every_command_is_a_real_subcommand_of_the_cli() -> None:
    services = compose()["services"]
    assert set(services) >= OURS
    for name in OURS:
        try:
            parser().parse_args(services[name]["command"])
        except SystemExit:
            pytest.fail(f"{name}: {services[name]['command']} is not a command the CLI accepts")


def test_every_scrape_target_is_a_service_listening_on_that_port_on_all_interfaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    assert len(targets) == 5
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert host in services, f"{target}: no service {host}"
        assert listening(services[host], monkeypatch) == ("0.0.0.0", int(port)), target


def test_every_service_of_ours_is_scraped_and_has_a_health_check_on_its_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    scraped = {
        t.split(":")[0]
        for job in config["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    }
    for name in OURS - {"topics"}:
        where = listening(services[name], monkeypatch)
        assert where is not None and name in scraped, name
        check = " ".join(services[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{where[1]}/readyz" in check or f"127.0.0.1:{where[1]}/healthz" in check
    for name in ("kafka", "postgres", "prometheus"):
        assert services[name]["healthcheck"]["test"], name


def test_what_is_mounted_exists_and_the_image_holds_every_package() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_dir(), f"{name} mounts {source}"
    assert (ROOT / "deploy/grafana/dashboards/safety-monitor.json").is_file()
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    assert "clinical" in packages
    for package in packages:  # what setuptools installs must be in the image to install
        assert f"COPY {package} {package}" in dockerfile, package


def test_dependencies_name_services_that_exist() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"


def test_kafka_runs_in_kraft_mode_with_no_auto_created_topics() -> None:
    env = compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_the_notifier_reads_its_secrets_from_compose_secrets_and_has_no_default() -> None:
    from services.notifier.settings import NotifierSettings

    data = compose()
    notifier = data["services"]["notifier"]
    env = notifier["environment"]
    for name in ("notifier_link_secret", "notifier_webhook_secret"):
        assert env[f"SAFETY_MONITOR_{name.upper()}_FILE"] == f"/run/secrets/{name}"
        assert name in notifier["secrets"] and name in data["secrets"]
        assert f"SAFETY_MONITOR_{name.upper()}" not in env  # never a value in the file
    assert {"SAFETY_MONITOR_KAFKA_BOOTSTRAP"} <= set(env)  # the shared environment kept
    assert len(NotifierSettings(_env_file=None).weak_secrets()) == 2  # type: ignore[call-arg]


def test_every_systemd_unit_runs_a_real_command_and_restarts_whenever_it_exits() -> None:
    import configparser

    units = sorted((ROOT / "deploy" / "systemd").glob("safety-monitor-*.service"))
    assert len(units) == 5
    for unit in units:
        parsed = configparser.ConfigParser(strict=False, interpolation=None)
        parsed.optionxform = str  # type: ignore[assignment,method-assign]
        parsed.read_string(unit.read_text())
        service = parsed["Service"]
        command = service["ExecStart"].split()
        assert command[0].endswith("/safety-monitor"), unit.name
        parser().parse_args(command[1:])  # SystemExit: not a subcommand the CLI accepts
        assert service["Restart"] == "always", unit
        assert parsed["Unit"]["StartLimitIntervalSec"] == "0", unit
