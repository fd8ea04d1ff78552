"""A real Prometheus (Debian's) scraping the real services: every target up, each service's key
series present, and the alert rules loaded from deploy/prometheus/rules."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.bench import Service
from services.notifier.settings import development_secrets
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]
SUFFIXES = ("total", "bucket", "sum", "count", "created")
KEY_SERIES = {
    "ingest": "safety_monitor_ingest_requests_total",
    "rules-worker": "safety_monitor_rules_ready",
    "notifier": "safety_monitor_notifier_consumer_lag",
    "audit-api": "safety_monitor_audit_requests_total",
    "audit-projection": "safety_monitor_audit_chain_verified",
}


def _api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as r:
        return json.load(r)["data"]


def test_prometheus_scrapes_every_service_and_loads_the_rules(kafka: str, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "prometheus is not installed (Debian: apt-get install prometheus; .ci/run does)"
        )
    db = lambda name: f"sqlite+aiosqlite:///{tmp_path / name}.db"  # noqa: E731
    env = {
        "SAFETY_MONITOR_KAFKA_BOOTSTRAP": kafka,
        "SAFETY_MONITOR_INGEST_DATABASE_URL": db("ingest"),
        "SAFETY_MONITOR_RULES_APP_ID": f"scrape-{free_port()}",
        "SAFETY_MONITOR_RULES_DATA_DIR": str(tmp_path / "rules"),
        "SAFETY_MONITOR_NOTIFIER_DATABASE_URL": db("notifier"),
        "SAFETY_MONITOR_NOTIFIER_SMTP_PORT": str(free_port()),  # nobody there: fine here
        "SAFETY_MONITOR_AUDIT_DATABASE_URL": db("audit"),
        "SAFETY_MONITOR_AUDIT_SIGNING_KEY_FILE": str(tmp_path / "signing.key"),
        **development_secrets(),
    }
    ports = {job: free_port() for job in KEY_SERIES}
    services = [
        Service("audit-projection", ["audit", "project"],
                {**env, "SAFETY_MONITOR_AUDIT_PROJECTION_PORT": str(ports["audit-projection"])},
                tmp_path, ports["audit-projection"]),
        Service("ingest", ["ingest", "serve", "--port", str(ports["ingest"])], env, tmp_path,
                ports["ingest"]),
        Service("rules-worker", ["rules", "worker"],
                {**env, "SAFETY_MONITOR_RULES_WEB_PORT": str(ports["rules-worker"])}, tmp_path,
                ports["rules-worker"]),
        Service("notifier", ["notifier", "serve", "--port", str(ports["notifier"])], env,
                tmp_path, ports["notifier"]),
        Service("audit-api", ["audit", "serve", "--port", str(ports["audit-api"])], env,
                tmp_path, ports["audit-api"]),
    ]  # fmt: skip
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.local.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(ROOT / "deploy/prometheus/rules/safety-monitor.yml")]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    assert {j["job_name"] for j in config["scrape_configs"]} == set(KEY_SERIES)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    web = free_port()
    prometheus = None
    try:
        for s in services:
            s.start().wait_ready("/healthz")
        prometheus = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{web}"],
            stdout=(tmp_path / "prometheus.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline, health, present = time.monotonic() + 90, {}, {}
        while time.monotonic() < deadline:
            try:
                targets = _api(web, "targets")["activeTargets"]
                health = {t["labels"]["job"]: t["health"] for t in targets}
                present = {
                    job: bool(_api(web, f"query?query={name}")["result"])
                    for job, name in KEY_SERIES.items()
                }
            except OSError:
                pass
            if health == dict.fromkeys(KEY_SERIES, "up") and all(present.values()):
                break
            time.sleep(0.5)
        assert health == dict.fromkeys(KEY_SERIES, "up"), health
        assert present == dict.fromkeys(KEY_SERIES, True), present
        # the Grafana dashboard: every panel's query runs on this Prometheus, and every metric
        # it names is one a running service exports
        exported: set[str] = set()
        for port in ports.values():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            for family in re.findall(r"^# TYPE (safety_monitor_\w+) ", text, re.M):
                exported |= {family} | {f"{family}_{s}" for s in SUFFIXES}
        dashboard = json.loads((ROOT / "deploy/grafana/dashboards/safety-monitor.json").read_text())
        datasource = yaml.safe_load(
            (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
        )["datasources"][0]
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
            for target in panel["targets"]:
                expr = target["expr"]
                answer = _api(web, "query?" + urllib.parse.urlencode({"query": expr}))
                assert answer["resultType"] in ("vector", "scalar"), (panel["title"], expr)
                named = set(re.findall(r"\b(safety_monitor_[a-z_]+[a-z])\b", expr))
                for alternatives, rest in re.findall(
                    r"safety_monitor_\(([a-z|]+)\)(_[a-z_]+)", expr
                ):
                    named |= {f"safety_monitor_{a}{rest}" for a in alternatives.split("|")}
                assert named - exported == set(), (panel["title"], named - exported)
        groups = _api(web, "rules")["groups"]
        alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
        assert {"ServiceDown", "AuditChainNotVerified", "RegulatoryDeadlineWithin4h"} <= alerts
        assert len(alerts) == 10
    finally:
        if prometheus is not None:
            os.killpg(prometheus.pid, signal.SIGTERM)
            prometheus.wait(30)
        for s in reversed(services):
            s.stop()
