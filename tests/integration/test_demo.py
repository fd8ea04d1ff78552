"""`safety-monitor demo` as a newcomer meets it: it runs the story, then keeps the stack serving
and prints where to look; every printed URL answers 200; Ctrl-C (SIGINT) stops every process it
started, the broker too. In a directory of its own, on a broker port of its own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration


def _ours(cwd: Path) -> list[int]:
    """Processes running in `cwd` (the demo's children keep its working directory)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")) == cwd:
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_the_demo_serves_what_it_prints_until_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SAFETY_MONITOR_KAFKA_PORT": str(free_port()),
        "SAFETY_MONITOR_KAFKA_CONTROLLER_PORT": str(free_port()),
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "demo"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(lines)
        assert "Ctrl-C stops everything" in text, text[-3000:]
        assert "stream vs `safety-monitor evaluate` (every rule, visit.overdue too): agree" in text
        assert "15 of the 15 rules" in text  # the story fires every rule
        assert "hash chain verified" in text
        token = re.search(r"Bearer (\S+)\)", text)
        assert token, text[-2000:]
        urls = re.findall(r"(http://127\.0\.0\.1:\d+/\S*)", text.split("[demo] serving; open:")[1])
        assert len(urls) >= 9
        for url in urls:
            request = urllib.request.Request(
                url, headers={"Authorization": f"Bearer {token.group(1)}"}
            )
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.status == 200, url
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
        assert demo.returncode == 0, rest[-3000:]
        assert "stopped: every process the demo started, and the broker" in rest
        assert _ours(tmp_path) == []
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(30)
        for pid in _ours(tmp_path):  # left behind by a failure: not by the demo's design
            os.kill(pid, signal.SIGKILL)
