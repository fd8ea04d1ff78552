"""From an alert produced on safety.alerts to its email accepted by an SMTP server: p50/p99.

On a fresh local broker (its own), a notifier in process (the same code `notifier serve` runs)
and a real SMTP server (aiosmtpd): 1,000 critical alerts (never grouped) for 1,000 participants,
produced at a steady 50 per second; each latency is the SMTP server's acceptance time minus the
alert's produce time. Writes benchmarks/results/notifier_latency.json.

    PYTHONPATH=. .venv/bin/python benchmarks/notifier_latency.py [--alerts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller

from contracts import encode, key_for
from contracts.topics import SAFETY_ALERTS
from services.notifier.bootstrap import build
from tests.conftest import free_port, launcher_in
from tests.integration.notifier.test_notifier import settings_for
from tests.unit.notifier.test_desk import alert

RESULTS = Path(__file__).parent / "results" / "notifier_latency.json"


class Clocked:
    def __init__(self) -> None:
        self.accepted: dict[str, float] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content, policy=policy.default)
        key = str(mail["X-Safety-Monitor-Key"]).strip()
        self.accepted.setdefault(key.split("|")[1], time.time())
        return "250 OK"


async def main(n: int, rate: float, bootstrap: str, workdir: Path) -> dict[str, object]:
    sink, port = Clocked(), free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=port)
    smtp.start()
    s = settings_for(bootstrap, workdir, port, "http://127.0.0.1:9/unused")
    (workdir / "routes.yaml").write_text(
        "recipients:\n  so: {email: so@trial.example}\nroutes:\n  - {to: [so]}\n"
    )
    parts = build(s)
    stop = asyncio.Event()
    running = asyncio.create_task(parts.notifier.run(stop))
    while not parts.notifier.consuming:
        await asyncio.sleep(0.05)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        for i in range(n):
            a = alert("sae.reported", "critical", pid=f"BN-{i:05d}")
            sent[str(a.alert_id)] = time.time()
            await producer.send(SAFETY_ALERTS.name, encode(a), key=key_for(a))
            await asyncio.sleep(1 / rate)
        await producer.flush()
        deadline = time.monotonic() + 120
        while len(sink.accepted.keys() & sent.keys()) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        await producer.stop()
        stop.set()
        await running
        await parts.notifier.store.close()
        smtp.stop()
    ms = sorted(1000 * (sink.accepted[k] - t) for k, t in sent.items() if k in sink.accepted)
    return {
        "alerts": n,
        "offered_per_s": rate,
        "emailed": len(ms),
        "p50_ms": round(ms[len(ms) // 2], 1),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1),
        "max_ms": round(ms[-1], 1),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        launcher = launcher_in(Path(tmp) / "kafka")
        launcher.up()
        try:
            result = asyncio.run(main(args.alerts, args.rate, launcher.bootstrap, Path(tmp)))
        finally:
            launcher.down(purge=True)
    print(json.dumps(result, indent=2))
    Path(args.json).write_text(json.dumps(result, indent=2))
