"""The rules worker draining a backlog, against a plain aiokafka loop over the same events.

On a fresh local broker (its own, in a temporary directory): a backlog on trial.events (the fault
suite's workload: about 8 events per participant), then
- `pipeline_events_per_s`: a `safety-monitor rules worker` process draining it, measured from
  its group's committed offsets (from the first commit to the last, so start-up is left out);
- `ceiling_events_per_s`: a plain aiokafka loop that consumes, decodes (the contract) and
  produces one message per event to a scratch topic with acks=all, awaiting every ack;
- the ratio of the two, from the same run on the same machine.

`--worker-cwd DIR` runs the worker from another checkout (e.g. a worktree of an older commit),
so an old and a new design are measured against the same ceiling in one run. Writes
benchmarks/results/pipeline_throughput.json.

    PYTHONPATH=. .venv/bin/python benchmarks/pipeline_throughput.py [--participants N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts import decode
from contracts.topics import Topic
from deploy.kafka.launcher import create_topics
from tests.conftest import free_port, launcher_in
from tests.faults.harness import Progress, produce_backlog
from tests.faults.workload import workload

RESULTS = Path(__file__).parent / "results" / "pipeline_throughput.json"


async def pipeline(bootstrap: str, events: int, workdir: Path, cwd: Path) -> dict[str, float]:
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(cwd),
        "SAFETY_MONITOR_KAFKA_BOOTSTRAP": bootstrap,
        "SAFETY_MONITOR_RULES_APP_ID": app_id,
        "SAFETY_MONITOR_RULES_DATA_DIR": str(workdir / app_id),
        "SAFETY_MONITOR_RULES_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / app_id}.db",
        "SAFETY_MONITOR_RULES_WEB_PORT": str(free_port()),
        "SAFETY_MONITOR_RULES_TICK_SECONDS": "3600",
    }
    log = (workdir / f"{app_id}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "rules", "worker"],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        async with Progress(bootstrap, app_id, ["trial.events"]) as progress:
            first: tuple[float, int] | None = None
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                done, end = progress.latest()
                if done and first is None:
                    first = (progress.samples[-1][0], done)
                if end and done >= end:
                    break
            else:
                raise SystemExit(f"the worker did not drain the backlog; see {log.name}")
            assert first is not None
            last = next(t for t, c, _ in progress.samples if sum(c.values()) >= end)
            seconds = last - first[0]
            return {"events": end - first[1], "seconds": round(seconds, 2),
                    "events_per_s": round((end - first[1]) / seconds, 1)}  # fmt: skip
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        log.close()


async def ceiling(bootstrap: str, events: int) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        "trial.events",
        bootstrap_servers=bootstrap,
        group_id=f"ceiling-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    await consumer.start()
    await producer.start()
    try:
        seen, started = 0, None
        while seen < events:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            started = started or time.perf_counter()
            acks = []
            for records in batch.values():
                for r in records:
                    decode(r.value or b"")
                    acks.append(await producer.send("bench.scratch", r.value, key=r.key))
            await asyncio.gather(*acks)
            await consumer.commit()
            seen += len(acks)
        seconds = time.perf_counter() - (started or time.perf_counter())
        return {"events": seen, "seconds": round(seconds, 2),
                "events_per_s": round(seen / seconds, 1)}  # fmt: skip
    finally:
        await consumer.stop()
        await producer.stop()


async def main(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, object]:
    events = workload("BENCH", args.participants, seed=1)
    await create_topics(bootstrap, (Topic("bench.scratch", "the ceiling's output", "", (), 12),))
    await produce_backlog(bootstrap, "trial.events", events)
    top = await ceiling(bootstrap, len(events))
    worker = await pipeline(bootstrap, len(events), workdir, Path(args.worker_cwd).resolve())
    return {
        "participants": args.participants,
        "events": len(events),
        "pipeline": worker,
        "ceiling": top,
        "pipeline_events_per_s": worker["events_per_s"],
        "ceiling_events_per_s": top["events_per_s"],
        "pipeline_to_ceiling": round(worker["events_per_s"] / top["events_per_s"], 3),
        "worker_cwd": args.worker_cwd,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--participants", type=int, default=2000)
    parser.add_argument("--worker-cwd", default=".")
    parser.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        launcher = launcher_in(Path(tmp) / "kafka")
        launcher.up()
        try:
            result = asyncio.run(main(args, launcher.bootstrap, Path(tmp)))
        finally:
            launcher.down(purge=True)
    print(json.dumps(result, indent=2))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
