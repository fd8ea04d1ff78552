"""One fault-suite run: a backlog on fresh topics, real worker processes, faults injected by
SIGKILL at chosen moments, and the complete alert set compared with the ground truth.

Scenarios:
- `restart`: one worker, killed with SIGKILL three times mid-stream and restarted each time
  (a stable RULES_INSTANCE_ID, as a supervisor would run it);
- `two-workers-one-killed`: two workers in one group, one killed mid-stream; the other finishes;
- `kill-during-rebalance`: one worker mid-stream, a second joins, and the first is killed while
  the group rebalances (on its "Revoking" log line); the newcomer finishes;
(The broker's own outages are the whole stack's: tests/faults/stack.py.)

A run passes when every partition's committed group offset reaches its end, the set of alert
ids equals the ground truth, and every copy of an alert is byte-identical to the engine's.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from contracts import AlertRaised, decode, encode, key_for
from contracts.topics import Topic
from deploy.kafka.launcher import create_topics
from services.bench import Progress, produce_backlog
from tests.faults.workload import TIME_BASED, truth, workload
from tests.integration.kafka_io import read_topic
from tests.integration.safety_rules.worker_process import Worker

SCENARIOS = ("restart", "two-workers-one-killed", "kill-during-rebalance")
PARTITIONS = 12


@dataclass
class RunResult:
    scenario: str
    seed: int
    events: int
    expected: int
    got: int
    lost: int
    unexpected: int
    repeated: int  # alert ids seen more than once (allowed when byte-identical)
    differing: int  # alert ids with bytes other than the engine's (never allowed)
    stalled: bool
    kills: int
    mid_stream_kills: int  # kills that landed with work still to do
    recovery_s: list[float] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    @property
    def passed(self) -> bool:
        return not (self.lost or self.unexpected or self.differing or self.stalled)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


STREAM_S = 10.0


async def stream(bootstrap: str, topic: str, events: list[Any], seconds: float) -> None:
    """Produces `events` evenly over `seconds`, in order, ten chunks a second."""
    chunks = max(1, int(seconds * 10))
    size = -(-len(events) // chunks)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for n in range(0, len(events), size):
            sent = [
                await producer.send(topic, encode(e), key=key_for(e)) for e in events[n : n + size]
            ]
            await asyncio.gather(*sent)
            await asyncio.sleep(seconds / chunks)
    finally:
        await producer.stop()


async def run_once(
    scenario: str,
    bootstrap: str,
    workdir: Path,
    *,
    participants: int,
    seed: int,
    database_url: str | None = None,
    settle_timeout_s: float = 120,
) -> RunResult:
    started = time.monotonic()
    rnd = random.Random(seed)
    tag = f"f{uuid.uuid4().hex[:8]}"
    app_id = f"faults-{tag}"
    events_topic, alerts_topic = f"faults.{tag}.events", f"faults.{tag}.alerts"
    signals_topic = f"{app_id}-trial-signals"
    await create_topics(
        bootstrap,
        (
            Topic(events_topic, "fault-suite input", "participant_id", (), PARTITIONS),
            Topic(alerts_topic, "fault-suite alerts", "participant_id", (), PARTITIONS),
            Topic(signals_topic, "fault-suite signals", "trial_id", (), 1),
        ),
    )
    events = workload(tag.upper(), participants, seed)
    expected = truth(events)
    # the rebalance scenario keeps events arriving while it runs (a fifth as backlog, the rest
    # streamed over STREAM_S), so the worker killed in the rebalance always has work in hand
    streamed = len(events) * 4 // 5 if scenario == "kill-during-rebalance" else 0
    await produce_backlog(bootstrap, events_topic, events[: len(events) - streamed])

    run_dir = workdir / tag
    run_dir.mkdir(parents=True)
    env = {
        "SAFETY_MONITOR_EVENTS_TOPIC": events_topic,
        "SAFETY_MONITOR_ALERTS_TOPIC": alerts_topic,
        "SAFETY_MONITOR_RULES_BATCH_MAX": "100",
        "SAFETY_MONITOR_RULES_STALL_S": "20",
    }
    db = database_url or f"sqlite+aiosqlite:///{run_dir / 'rules.db'}"

    def start(instance: str | None = None) -> Worker:
        extra = {**env, **({"SAFETY_MONITOR_RULES_INSTANCE_ID": instance} if instance else {})}
        return Worker(bootstrap, app_id, run_dir, database_url=db, extra_env=extra)

    workers: list[Worker] = []
    # (when, committed per partition then, work left then)
    kills: list[tuple[float, dict[TopicPartition, int], int]] = []
    async with Progress(bootstrap, app_id, [events_topic, signals_topic]) as progress:

        async def kill(w: Worker) -> None:
            w.stop(signal.SIGKILL)
            committed, ends = await progress.sample()  # after: what the dead worker left
            left = sum(ends.values()) - sum(committed.values())
            kills.append((time.monotonic(), committed, left))

        try:
            if scenario == "restart":
                workers.append(start("rules-0"))
                for _ in range(3):
                    await progress.until(rnd.uniform(0.05, 0.6), 60)
                    await asyncio.sleep(rnd.uniform(0, 0.5))
                    await kill(workers[-1])
                    workers.append(start("rules-0"))
            elif scenario == "two-workers-one-killed":
                workers += [start(), start()]
                await progress.until(rnd.uniform(0.1, 0.5), 90)
                await kill(rnd.choice(workers))
            elif scenario == "kill-during-rebalance":
                first = start()
                workers.append(first)
                await progress.until(0.01, 90)
                feeding = asyncio.create_task(
                    stream(bootstrap, events_topic, events[len(events) - streamed :], STREAM_S)
                )
                mark = len(first.tail_bytes())
                workers.append(start())
                await _log_line(first, "Revoking previously assigned partitions", mark, 60)
                await asyncio.sleep(rnd.uniform(0, 0.3))
                await kill(first)
                kills[-1] = (*kills[-1][:2], kills[-1][2] + (0 if feeding.done() else 1))
                await feeding
            else:
                raise ValueError(scenario)
            finished = await progress.until(1.0, settle_timeout_s)
        finally:
            for w in workers:
                w.stop(signal.SIGTERM, timeout_s=30)
        recovery = [
            r for at, done, _ in kills if (r := progress.recovery_after(at, done)) is not None
        ]
        mid = sum(left > 0 for _, _, left in kills)

    seen: dict[str, set[bytes]] = {}
    copies: Counter[str] = Counter()
    for _, raw in await read_topic(bootstrap, alerts_topic):
        alert = decode(raw)
        assert isinstance(alert, AlertRaised)
        if alert.rule_id in TIME_BASED:
            continue
        seen.setdefault(str(alert.alert_id), set()).add(raw)
        copies[str(alert.alert_id)] += 1
    differing = sum(
        1
        for a, versions in seen.items()
        if len(versions) > 1 or (expected.get(a) is not None and versions != {expected[a]})
    )
    note = "" if finished else f"not finished: {progress.latest()} after {settle_timeout_s}s"
    for a, versions in seen.items():
        if len(versions) > 1 or (expected.get(a) is not None and versions != {expected[a]}):
            note += f" first differing {a}: got {sorted(versions)} expected {expected.get(a)!r}"
            break
    return RunResult(
        scenario=scenario,
        seed=seed,
        events=len(events),
        expected=len(expected),
        got=len(seen),
        lost=len(set(expected) - set(seen)),
        unexpected=len(set(seen) - set(expected)),
        repeated=sum(1 for n in copies.values() if n > 1),
        differing=differing,
        stalled=not finished,
        kills=len(kills),
        mid_stream_kills=mid,
        recovery_s=recovery,
        seconds=round(time.monotonic() - started, 1),
        note=note,
    )


async def _log_line(w: Worker, text: str, after: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text.encode() in w.tail_bytes()[after:]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {text!r} in the worker's log after {timeout_s}s")


def table(results: list[RunResult]) -> str:
    """runs, lost, stalled, repeated, recovery seconds: one line per scenario."""
    lines = [
        f"{'scenario':<24} {'runs':>4} {'passed':>6} {'lost':>5} {'stalled':>7} "
        f"{'repeated':>8} {'differing':>9} {'mid-kills':>9} {'recovery s (median, max)':>25}"
    ]
    for scenario in SCENARIOS:
        rs = [r for r in results if r.scenario == scenario]
        if not rs:
            continue
        rec = sorted(x for r in rs for x in r.recovery_s)
        median = rec[len(rec) // 2] if rec else float("nan")
        worst = rec[-1] if rec else float("nan")
        lines.append(
            f"{scenario:<24} {len(rs):>4} {sum(r.passed for r in rs):>6} "
            f"{sum(r.lost for r in rs):>5} {sum(r.stalled for r in rs):>7} "
            f"{sum(r.repeated for r in rs):>8} {sum(r.differing for r in rs):>9} "
            f"{sum(r.mid_stream_kills for r in rs)}/{sum(r.kills for r in rs):<7} "
            f"{median:>12.1f} {worst:>12.1f}"
        )
    return "\n".join(lines)
