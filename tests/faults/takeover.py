"""Takeover at each moment of a rebalance (issue 28): worker A owns every partition, worker B
joins, and A is killed with SIGKILL at one moment of the rebalance B's join starts; the
takeover is the seconds from the kill until B is assigned every partition (its own log's
timestamp of aiokafka's "Setting newly assigned partitions" naming all of them).

Moments (A's own log lines, after B was started):
- `steady`: no rebalance: A and B settled, A killed;
- `revoking`: A told of the rebalance, in its revoke callback (before its JoinGroup);
- `joining`: A about to send its JoinGroup;
- `joined`: A's JoinGroup answered (the group's members are fixed), before its SyncGroup;
- `synced`: A's assignment received, before it claimed its partitions;
- `claimed`: A claimed its share of the new generation.

`python -m tests.faults --takeover [--runs N]` prints the table and writes its JSON."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contracts.topics import Topic
from deploy.kafka.launcher import create_topics
from services.bench import produce_backlog
from tests.faults.harness import stream
from tests.faults.workload import workload
from tests.integration.safety_rules.worker_process import Worker

PARTITIONS = 12
STREAM_S = 40.0
MOMENTS = {
    "steady": None,
    "revoking": "Revoking previously assigned partitions",
    "joining": "(Re-)joining group",
    "joined": "Joined group",
    "synced": "Successfully synced group",
    "claimed": "partitions claimed",
}


@dataclass
class Takeover:
    moment: str
    static: bool
    session_s: float
    seed: int
    seconds: float | None  # None: B never got every partition within the timeout

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lines(w: Worker, after: int = 0) -> list[dict[str, Any]]:
    out = []
    for raw in w.tail_bytes()[after:].splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def _took_over(w: Worker, topic: str, after: int) -> datetime | None:
    """When `w`, after byte `after` of its log, claimed its partitions once its newest
    assignment named every partition of `topic` (it then processes them)."""
    full = None
    for line in _lines(w, after):
        msg = str(line.get("msg", ""))
        if msg.startswith("Setting newly assigned partitions"):
            full = msg.count(f"topic='{topic}'") >= PARTITIONS
        elif full and msg == "partitions claimed":
            return datetime.fromisoformat(line["ts"])
    return None


async def _until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (found := check()) is not None and found is not False:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {what} after {timeout_s}s")


async def takeover_once(
    moment: str,
    bootstrap: str,
    workdir: Path,
    *,
    static: bool,
    session_s: float,
    seed: int,
    timeout_s: float = 60,
) -> Takeover:
    tag = f"t{uuid.uuid4().hex[:8]}"
    app_id = f"takeover-{tag}"
    events_topic = f"takeover.{tag}.events"
    await create_topics(
        bootstrap,
        (
            Topic(events_topic, "takeover input", "participant_id", (), PARTITIONS),
            Topic(f"takeover.{tag}.alerts", "takeover alerts", "participant_id", (), PARTITIONS),
            Topic(f"{app_id}-trial-signals", "takeover signals", "trial_id", (), 1),
        ),
    )
    events = workload(tag.upper(), 400, seed)
    await produce_backlog(bootstrap, events_topic, events[:800])
    later = events[800:]
    run_dir = workdir / tag
    run_dir.mkdir(parents=True)
    env = {
        "SAFETY_MONITOR_EVENTS_TOPIC": events_topic,
        "SAFETY_MONITOR_ALERTS_TOPIC": f"takeover.{tag}.alerts",
        "SAFETY_MONITOR_RULES_SESSION_TIMEOUT_S": str(session_s),
    }

    def start(name: str) -> Worker:
        extra = {**env, **({"SAFETY_MONITOR_RULES_INSTANCE_ID": name} if static else {})}
        return Worker(bootstrap, app_id, run_dir, extra_env=extra)

    a = start("rules-a")
    b: Worker | None = None
    feeding: asyncio.Task[None] | None = None
    try:
        await _until(lambda: _took_over(a, events_topic, 0), 60, "claim by A")
        # events keep arriving throughout, so a revoke has writes to flush and a claim state
        feeding = asyncio.create_task(stream(bootstrap, events_topic, later, STREAM_S))
        mark = len(a.tail_bytes())
        b = start("rules-b")
        text = MOMENTS[moment]
        if text is None:  # settled: B claimed its share, then some quiet
            await _until(lambda: b"partitions claimed" in b.tail_bytes(), 60, "claim by B")
            await asyncio.sleep(2)
        else:
            await _until(lambda: text.encode() in a.tail_bytes()[mark:], 60, repr(text))
        b_mark = len(b.tail_bytes())
        a.stop(signal.SIGKILL)
        killed = datetime.now(UTC)
        try:
            at = await _until(lambda: _took_over(b, events_topic, b_mark), timeout_s, "takeover")
            seconds: float | None = round((at - killed).total_seconds(), 2)
        except AssertionError:
            seconds = None
        return Takeover(moment, static, session_s, seed, seconds)
    finally:
        if feeding is not None:
            feeding.cancel()
        a.stop(signal.SIGKILL)
        if b is not None:
            b.stop(signal.SIGTERM, timeout_s=30)


def table(results: list[Takeover]) -> str:
    """One line per configuration and moment: runs, median and worst seconds."""
    lines = [
        f"{'membership':<10} {'session s':>9} {'moment':<9} {'runs':>4} {'median':>7} {'max':>7}"
    ]
    keys = sorted({(r.static, r.session_s) for r in results})
    for static, session in keys:
        for moment in MOMENTS:
            rs = [
                r for r in results if (r.static, r.session_s, r.moment) == (static, session, moment)
            ]
            if not rs:
                continue
            secs = sorted(r.seconds if r.seconds is not None else float("inf") for r in rs)
            lines.append(
                f"{'static' if static else 'dynamic':<10} {session:>9g} {moment:<9} {len(rs):>4} "
                f"{secs[len(secs) // 2]:>7.2f} {secs[-1]:>7.2f}"
            )
    return "\n".join(lines)
