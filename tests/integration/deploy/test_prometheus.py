"""deploy/prometheus: both configurations load, every alert rule has a promtool test case in which
it fires, the cases pass, and every metric a rule reads is one the services export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules" / "safety-monitor.yml"
CASES = PROMETHEUS / "rules" / "tests" / "safety-monitor.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus; .ci/run does)")
    return subprocess.run(
        [tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def test_both_configurations_and_the_rules_load() -> None:
    for config in ("prometheus.yml", "prometheus.local.yml"):
        done = promtool("check", "config", config)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 rule files found" in done.stdout
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0 and "SUCCESS: 10 rules found" in done.stdout, done.stdout


def test_every_rule_fires_in_a_test_case_and_every_case_passes() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    cases = yaml.safe_load(CASES.read_text())["tests"]
    fired = {
        t["alertname"] for case in cases for t in case["alert_rule_test"] if t.get("exp_alerts")
    }
    assert alerts == fired, f"rules without a firing case: {sorted(alerts - fired)}"
    done = promtool("test", "rules", str(CASES))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def exported() -> set[str]:
    """Every metric name the services declare (a histogram's series as Prometheus names them)."""
    names: set[str] = set()
    for source in (ROOT / "services").rglob("*.py"):
        names |= set(re.findall(r'"(safety_monitor_[a-z_]+)"', source.read_text()))
    return names | {f"{n}_{s}" for n in names for s in ("bucket", "sum", "count")}


def test_every_metric_a_rule_reads_is_exported_by_a_service() -> None:
    text = RULES.read_text()
    read = set(re.findall(r"\b(safety_monitor_[a-z_]+)\b", text))
    for alternatives, rest in re.findall(r"safety_monitor_\(([a-z|]+)\)(_[a-z_]+)", text):
        read |= {f"safety_monitor_{a}{rest}" for a in alternatives.split("|")}
    read = {n for n in read if not n.endswith("_")}  # the regex's own prefix
    assert read - exported() == set()
    assert {"safety_monitor_audit_consumer_lag", "safety_monitor_rules_ready"} <= read
