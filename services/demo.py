"""The local demo on embedded defaults: the whole stack as far as it is built.

1. starts the real Kafka broker (KRaft) and creates the catalog's topics;
2. starts the safety rules worker (faust) as its own process and waits until it is ready;
3. replays the sample trial onto trial.events (idempotent producer, acks=all);
4. waits for the worker's alerts on safety.alerts and checks them against the same engine run
   offline (`safety-monitor evaluate`): the stream and the batch must agree;
5. stops the worker gracefully and leaves the broker running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contracts import (
    CATALOG,
    AlertRaised,
    AnyEvent,
    InvalidEvent,
    decode,
    encode,
    key_for,
    topic_for,
)
from deploy.kafka.launcher import KafkaLauncher, KafkaSettings
from services.safety_rules.evaluate import run as evaluate_offline
from services.safety_rules.rules_config import load_rules
from services.sample import demo_trial

WORKER_PORT = 8002


async def produce(bootstrap: str, events: list[AnyEvent]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sends = [await producer.send(topic_for(e).name, encode(e), key=key_for(e)) for e in events]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return len(events)


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()


async def read_all(bootstrap: str, topic: str) -> tuple[dict[str, AnyEvent], int, int]:
    """Every message on `topic` from the beginning: the distinct events by event_id, how many
    messages there were, and how many did not decode."""
    parts = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        events: dict[str, AnyEvent] = {}
        messages = bad = 0
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    messages += 1
                    try:
                        event = decode(record.value or b"")
                    except InvalidEvent:
                        bad += 1
                        continue
                    events.setdefault(str(event.event_id), event)
        return events, messages, bad
    finally:
        await consumer.stop()


def _start_worker(bootstrap: str, home: Path) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SAFETY_MONITOR_KAFKA_BOOTSTRAP": bootstrap,
        "SAFETY_MONITOR_RULES_TICK_SECONDS": "5",
        "SAFETY_MONITOR_RULES_WEB_PORT": str(WORKER_PORT),
    }
    log = (home / "rules-worker.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "rules", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_ready(proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the rules worker exited; see .local/rules-worker.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{WORKER_PORT}/readyz", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the rules worker was not ready in time; see .local/rules-worker.log")


async def _wait_alerts(
    bootstrap: str, expected: set[str], timeout_s: float = 90
) -> list[AlertRaised]:
    deadline = time.monotonic() + timeout_s
    while True:
        events, _, _ = await read_all(bootstrap, "safety.alerts")
        alerts = [e for e in events.values() if isinstance(e, AlertRaised)]
        if expected <= {str(a.alert_id) for a in alerts} or time.monotonic() > deadline:
            return alerts
        await asyncio.sleep(1)


def run(settings: KafkaSettings) -> int:
    status = KafkaLauncher(settings).up()
    print(f"[demo] {status}")
    worker = _start_worker(status.bootstrap, Path.cwd() / ".local")
    try:
        _wait_ready(worker)
        print(f"[demo] rules worker ready (metrics: http://127.0.0.1:{WORKER_PORT}/metrics)")
        trial = list(demo_trial())
        started = time.monotonic()
        sent = asyncio.run(produce(status.bootstrap, trial))
        print(
            f"[demo] produced {sent} sample events "
            "(run it again: the same event_ids, so nothing new)"
        )
        offline = evaluate_offline(trial, load_rules(), as_of=None)  # type: ignore[arg-type]
        expected = {str(a.alert_id) for a in offline if a.rule_id != "visit.overdue"}
        alerts = asyncio.run(_wait_alerts(status.bootstrap, expected))
        mine = [a for a in alerts if a.trial_id == trial[0].trial_id]
        print(
            f"[demo] {len(mine)} distinct alerts on safety.alerts after "
            f"{time.monotonic() - started:.1f}s:"
        )
        for a in sorted(mine, key=lambda a: (a.participant_id or "", a.rule_id)):
            print(
                f"[demo]   {a.participant_id or 'trial':8} {a.severity.value:8} "
                f"{a.rule_id:20} {a.title}"
            )
        missing = expected - {str(a.alert_id) for a in mine}
        print(
            f"[demo] stream vs `safety-monitor evaluate`: "
            f"{'agree' if not missing else f'{len(missing)} alerts missing'}"
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
    for topic in CATALOG:
        events, messages, bad = asyncio.run(read_all(status.bootstrap, topic.name))
        counts = Counter(e.event_type for e in events.values())
        summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "empty"
        print(
            f"[demo] {topic.name}: {messages} messages, {len(events)} distinct ({summary}); "
            f"undecodable {bad}"
        )
    print("[demo] the broker keeps running; stop it with: .venv/bin/safety-monitor kafka down")
    return 0 if not missing else 1
