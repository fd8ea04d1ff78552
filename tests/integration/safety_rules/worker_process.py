"""Runs `safety-monitor rules worker` as a real process against the test broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import free_port


class Worker:
    """One worker process. Workers with one app id share one database (their group's state):
    a SQLite file under `data_dir` unless `database_url` names another."""

    def __init__(
        self,
        bootstrap: str,
        app_id: str,
        data_dir: Path,
        tick_s: float = 3600,
        *,
        database_url: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.log_path = data_dir / f"worker-{self.port}.log"
        env = {
            **os.environ,
            "SAFETY_MONITOR_RULES_DATABASE_URL": database_url
            or f"sqlite+aiosqlite:///{data_dir / app_id}.db",
            **(extra_env or {}),
            "SAFETY_MONITOR_KAFKA_BOOTSTRAP": bootstrap,
            "SAFETY_MONITOR_RULES_APP_ID": app_id,
            "SAFETY_MONITOR_RULES_DATA_DIR": str(data_dir / f"w{self.port}"),
            "SAFETY_MONITOR_RULES_WEB_PORT": str(self.port),
            "SAFETY_MONITOR_RULES_TICK_SECONDS": str(tick_s),
        }
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "rules", "worker"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout_s}s:\n{self.tail()}")

    def metric(self, name: str) -> float:
        status, text = self.get("/metrics")
        assert status == 200, text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def tail_bytes(self) -> bytes:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_bytes()

    def tail(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]
