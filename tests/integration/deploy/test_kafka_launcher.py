"""The launcher drives a real broker: idempotent up, clean down, a clear message without Java."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.kafka import launcher as launcher_module
from deploy.kafka.launcher import KafkaLauncher, KafkaSettings, LauncherError, _alive
from tests.conftest import free_port


def broker_pids(state_dir: Path) -> list[int]:
    """Every live java process whose command line names this state directory."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if (
                b"kafka.Kafka" in cmdline
                and str(state_dir).encode() in cmdline
                and _alive(int(proc.name))
            ):
                out.append(int(proc.name))
    return out


def cli(state_dir: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAFETY_MONITOR_KAFKA_STATE_DIR": str(state_dir),
           "SAFETY_MONITOR_KAFKA_PORT": str(port),
           "SAFETY_MONITOR_KAFKA_CONTROLLER_PORT": str(free_port())}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "kafka", *args],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_up_twice_is_fine_and_down_leaves_no_process(tmp_path: Path) -> None:
    state, port = tmp_path / "k", free_port()
    first = cli(state, port, "up")
    assert first.returncode == 0, first.stderr
    assert f"bootstrap: 127.0.0.1:{port}" in first.stdout
    (pid,) = broker_pids(state)

    second = cli(state, port, "up")
    assert second.returncode == 0, second.stderr
    assert f"running (pid {pid})" in second.stdout
    assert broker_pids(state) == [pid]

    assert cli(state, port, "status").returncode == 0
    down = cli(state, port, "down", "--purge")
    assert down.returncode == 0 and "kafka stopped" in down.stdout
    assert broker_pids(state) == []
    assert not state.exists()
    assert cli(state, port, "status").returncode == 3
    assert "was not running" in cli(state, port, "down").stdout


def test_missing_maven_or_java_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn
    no_jars = KafkaLauncher(
        KafkaSettings(state_dir=tmp_path / "a", cache_dir=tmp_path / "cache", port=free_port())
    )
    with pytest.raises(LauncherError, match="mvn is not on PATH"):
        no_jars.up()
    jars_cached = KafkaLauncher(KafkaSettings(state_dir=tmp_path / "b", port=free_port()))
    with pytest.raises(LauncherError, match="java is not on PATH"):
        jars_cached.up()


def test_a_taken_port_is_named(tmp_path: Path, kafka: str) -> None:
    taken = int(kafka.rsplit(":", 1)[1])
    launcher = KafkaLauncher(KafkaSettings(state_dir=tmp_path / "k", port=taken))
    with pytest.raises(LauncherError, match=f"port {taken} is already in use"):
        launcher.up()
    assert broker_pids(tmp_path / "k") == []


def test_a_cluster_id_starting_with_a_dash_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # base64url ids start with '-' one time in 64; kafka-storage once took it for an option
    monkeypatch.setattr(launcher_module, "new_cluster_id", lambda: "-" + "A" * 21)
    launcher = KafkaLauncher(KafkaSettings(state_dir=tmp_path / "k", port=free_port()))
    assert launcher.format() is True
    assert "cluster.id=-AAAA" in (tmp_path / "k" / "data" / "meta.properties").read_text()
