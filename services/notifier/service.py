"""`safety-monitor notifier serve`: consume alerts and their lifecycle into the outbox, consult
the desk on a clock, send what is owed, and record every delivery on safety.alert-lifecycle.

Three loops in one process, one SQL database: the consumer (batch, trackers, decided messages
and offsets in one transaction), the desk (on the clock: group windows, escalations, reminders),
the sender (one outbox row at a time: send, then `alert.delivered`, then mark it sent; a failure
backs off exponentially with jitter and says `alert.delivery_failed`). One notifier process per
database: the outbox has one sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts import (
    AlertAcknowledged,
    AlertDelivered,
    AlertDeliveryFailed,
    AlertEscalated,
    AlertRaised,
    Channel,
    Source,
    encode,
    key_for,
)
from contracts.alerts import ALERT_NAMESPACE
from contracts.common import summary
from contracts.topics import ALERT_LIFECYCLE, SAFETY_ALERTS
from services.kafka import consumer_from_stored, partitions, seek_stored
from services.notifier.adapters.channels import Channel as Port
from services.notifier.adapters.store import Incoming, NotifierStore, Owed
from services.notifier.domain.desk import Kind
from services.notifier.domain.routes import Routes
from services.notifier.metrics import NotifierMetrics
from services.notifier.render import Renderer
from services.supervise import retrying, supervise

log = logging.getLogger("notifier")
RECORDED_BY = "service:notifier"
CONSUMED = (SAFETY_ALERTS.name, ALERT_LIFECYCLE.name)
# one at a time: SQLite takes one writer, and a refused "sent" record would resend a message
SEND_CONCURRENCY = 1
PRODUCE_TIMEOUT_S = 15.0  # a produce not acknowledged by then is tried again (by a new producer)
LAG_TIMEOUT_S = 15.0


class Notifier:
    def __init__(
        self,
        bootstrap: str,
        routes: Routes,
        store: NotifierStore,
        renderer: Renderer,
        channels: dict[Channel, Port],
        metrics: NotifierMetrics,
        *,
        tick_s: float = 1.0,
        retry_max_s: float = 300,
        fail_after: int = 3,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.bootstrap, self.routes, self.store, self.renderer = bootstrap, routes, store, renderer
        self.channels, self.metrics, self.tick_s, self.clock = channels, metrics, tick_s, clock
        self.retry_max_s = retry_max_s
        self.fail_after = fail_after  # failed tries of a channel before the others send it
        self.wake = asyncio.Event()
        self.producer: AIOKafkaProducer | None = None
        self.consuming = False
        self.last_processed = time.monotonic()
        metrics.age.set_function(lambda: round(time.monotonic() - self.last_processed, 1))
        self.facts_waiting = asyncio.Event()
        self._stale_producer = False
        self._dead = False
        self.version = 0  # the board's: rises on every change the live page should show
        self._changed = asyncio.Condition()

    async def changed(self) -> None:
        """Tells the live page's streams that the board moved."""
        async with self._changed:
            self.version += 1
            self._changed.notify_all()

    async def wait_change(self, seen: int, timeout_s: float) -> None:
        async with self._changed:
            if self.version == seen:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout_s)

    async def board(self, limit: int = 200) -> list[dict[str, object]]:
        """The live page's rows: open and acknowledged alerts, newest first."""
        rows = [r for r in await self.store.board() if r["status"] in ("open", "acknowledged")]
        failing = await self.store.failing(self.fail_after)
        out = []
        for r in rows[:limit]:
            raised = json.loads(r["raised"])
            out.append(
                {
                    "alert_id": r["alert_id"],
                    "severity": r["severity"],
                    "rule_id": r["rule_id"],
                    "participant": r["participant_id"],
                    "title": raised["title"],
                    "due_by": raised.get("due_by"),
                    "status": r["status"],
                    "acknowledged_by": r["acknowledged_by"],
                    "failing": sorted(failing.get(r["alert_id"], [])),
                }
            )
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Its four loops until `stop`: each retries its own failures (logged with their
        cause, after a backoff); one that ends anyway ends the process (LoopDied), for its
        supervisor to restart. Nothing stops in silence."""
        await self.store.migrate()
        try:
            await supervise(
                {
                    "consume": retrying("consuming alerts", partial(self._consume, stop), stop,
                                        log, on_failure=self._consume_failed),
                    "desk": self._desk(stop),
                    "send": self._send(stop),
                    "publish": retrying("producing lifecycle facts", partial(self._publish, stop),
                                        stop, log, on_failure=self._producer_failed),
                },
                stop,
                log,
            )  # fmt: skip
        except BaseException:
            self._dead = True
            raise
        finally:
            self.wake.set()
            await self._drop_producer()

    def alive(self) -> bool:
        """Liveness: false once a loop that must run has ended (the process is then stopping)."""
        return not self._dead

    # -- in: alerts and lifecycle into the outbox --------------------------------------------

    def _consume_failed(self, error: BaseException) -> None:
        self.consuming = False
        self.metrics.loop_failures.labels("consume").inc()

    async def _consume(self, stop: asyncio.Event) -> None:
        """From the stored offsets: after any failure (the broker gone, the database locked),
        a new consumer starts again from them, so nothing is skipped or applied twice."""
        parts = await partitions(self.bootstrap, CONSUMED)
        consumer = consumer_from_stored(self.bootstrap, isolation_level="read_committed")
        await consumer.start()
        try:
            consumer.assign(parts)
            seek_stored(consumer, parts, await self.store.offsets())
            self.consuming = True
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=500, max_records=500)
                batch = [
                    Incoming(tp.topic, tp.partition, r.offset, r.value,
                             datetime.fromtimestamp(r.timestamp / 1000, UTC))
                    for tp, records in fetched.items()
                    for r in records
                ]  # fmt: skip
                if batch:
                    for why in await self.store.apply(batch, self.routes, self.clock()):
                        self.metrics.refused.inc()
                        log.warning("refused %s", why)
                    self.metrics.consumed.inc(len(batch))
                    self.last_processed = time.monotonic()
                    self.wake.set()
                    await self.changed()
                await asyncio.wait_for(self._lag(consumer, parts), LAG_TIMEOUT_S)
        finally:
            self.consuming = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), LAG_TIMEOUT_S)

    async def _lag(self, consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> None:
        ends = await consumer.end_offsets(parts)
        behind = dict.fromkeys(CONSUMED, 0)
        for tp in parts:
            behind[tp.topic] += max(0, ends[tp] - await consumer.position(tp))
        for topic, n in behind.items():
            self.metrics.lag.labels(topic).set(n)

    async def _desk(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if await self.store.decide(self.routes, self.clock()):
                    self.wake.set()
            except Exception:
                log.exception("the desk could not decide; trying again")
                self.metrics.loop_failures.labels("desk").inc()
            await asyncio.sleep(self.tick_s)

    # -- out: what is owed, sent --------------------------------------------------------------

    async def _send(self, stop: asyncio.Event) -> None:
        gauged = 0.0
        while not stop.is_set():
            try:
                owed = await self.store.owed(self.clock())
                # several at once: each row is its own message, with its own key and record
                for n in range(0, len(owed), SEND_CONCURRENCY):
                    await asyncio.gather(
                        *(self._deliver(o) for o in owed[n : n + SEND_CONCURRENCY])
                    )
                if time.monotonic() - gauged > 1:
                    await self._gauges()
                    gauged = time.monotonic()
            except Exception:
                log.exception("the sender failed; retrying")
                self.metrics.loop_failures.labels("send").inc()
                owed = []
            if not owed:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=self.tick_s)

    async def _deliver(self, o: Owed) -> None:
        m, now = o.message, self.clock()
        alerts = await self.store.alerts(m.alert_ids)
        ordered = [alerts[a] for a in m.alert_ids if a in alerts]
        channel = self.channels[m.delivery.channel]
        try:
            await channel.send(m.key, m.delivery.address, self.renderer.render(m, ordered, now))
        except Exception as e:
            attempt = o.attempts + 1
            delay = min(self.retry_max_s, 2 ** min(attempt, 12)) * random.uniform(0.5, 1.0)
            log.warning(
                "delivery failed, retrying in %.0fs",
                delay,
                extra={"key": m.key, "channel": m.delivery.channel.value, "attempt": attempt},
            )
            self.metrics.deliveries.labels(m.delivery.channel.value, "failed").inc()
            error = f"{type(e).__name__}: {e}"[:2000]
            told = [
                self._fact(
                    AlertDeliveryFailed, a, f"{m.key}|{attempt}", channel=m.delivery.channel,
                    recipient=m.delivery.recipient, attempt=attempt, error=error,
                )
                for a in ordered
            ]  # fmt: skip
            await self.store.retry(m.key, attempt, now + timedelta(seconds=delay), str(e), told)
            self.facts_waiting.set()
            if attempt == self.fail_after:
                # this channel cannot send it: the others must (it is still tried, too)
                ways = self.routes.instead(m.delivery)
                added = await self.store.instead(m, ways, now)
                log.error(
                    "a channel failed %d times: sent by %s instead", attempt,
                    ", ".join(f"{d.recipient} {d.channel.value}" for d in ways) or "nothing else",
                    extra={"key": m.key, "channel": m.delivery.channel.value},
                )  # fmt: skip
                self.metrics.deliveries.labels(m.delivery.channel.value, "gave_way").inc()
                if added:
                    self.wake.set()
                await self.changed()
            return
        # recorded as sent first, with the facts that say so: produced by their own loop, so
        # a broker that does not answer neither holds this back nor sends it again
        told = []
        for a in ordered:
            told.append(self._fact(AlertDelivered, a, m.key, channel=m.delivery.channel,
                                   recipient=m.delivery.recipient))  # fmt: skip
            if m.kind is Kind.ESCALATION:
                told.append(self._fact(AlertEscalated, a, m.key, level=m.level,
                                       escalated_to=m.delivery.recipient))  # fmt: skip
            if m.kind is Kind.ALERT:
                latency = (self.clock() - a.recorded_at).total_seconds()
                self.metrics.latency.labels(m.delivery.channel.value).observe(max(0.0, latency))
        await self.store.sent(m.key, m.alert_ids, self.clock(), told)
        self.facts_waiting.set()
        self.metrics.deliveries.labels(m.delivery.channel.value, "delivered").inc()
        log.info("delivered", extra={"key": m.key, "channel": m.delivery.channel.value})

    def _fact(self, kind: type, alert: AlertRaised, key: str, **fields: object) -> Any:
        """A lifecycle event. Its id covers the moment too: a delivery repeated after a crash
        is a second fact, never a second version of the first (which the audit would flag as
        a conflict)."""
        now = self.clock()
        return kind(
            event_id=uuid.uuid5(
                ALERT_NAMESPACE, f"{kind.__name__}|{key}|{alert.alert_id}|{now.isoformat()}"
            ),
            trial_id=alert.trial_id,
            participant_id=alert.participant_id,
            occurred_at=now,
            recorded_at=now,
            recorded_by=RECORDED_BY,
            source=Source.NOTIFIER,
            alert_id=alert.alert_id,
            **fields,
        )

    # -- the lifecycle facts, produced ---------------------------------------------------------

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                request_timeout_ms=int(PRODUCE_TIMEOUT_S * 1000),
            )  # fmt: skip
            try:
                await asyncio.wait_for(producer.start(), PRODUCE_TIMEOUT_S)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), PRODUCE_TIMEOUT_S)
                raise
            self.producer = producer
        return self.producer

    async def _drop_producer(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), PRODUCE_TIMEOUT_S)

    def _producer_failed(self, error: BaseException) -> None:
        # a fresh producer after any failure: one left after a long outage answers every send
        # with OutOfOrderSequenceNumber (or is fenced); ids make a fact sent twice harmless
        self.metrics.loop_failures.labels("publish").inc()
        self._stale_producer = True

    async def _publish(self, stop: asyncio.Event) -> None:
        """Produces the kept lifecycle facts, oldest first, and forgets each once acknowledged."""
        if self._stale_producer:
            await self._drop_producer()
            self._stale_producer = False
        while not stop.is_set():
            waiting = await self.store.facts()
            self.metrics.facts_waiting.set(len(waiting))
            if waiting:
                producer = await self._producer()
                sent = [
                    await producer.send(ALERT_LIFECYCLE.name, value, key=alert_id.encode())
                    for _, alert_id, value in waiting
                ]
                await asyncio.wait_for(asyncio.gather(*sent), PRODUCE_TIMEOUT_S)
                await self.store.produced([event_id for event_id, _, _ in waiting])
                continue
            self.facts_waiting.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.facts_waiting.wait(), timeout=self.tick_s)

    # -- acknowledge ---------------------------------------------------------------------------

    async def acknowledge(self, alert_id: str, by: str, note: str | None = None) -> bool:
        """Records who acknowledged an open alert: the first of any number at once wins (the
        tracker is claimed in one conditional write, then alert.acknowledged is produced); an
        alert already acknowledged, resolved or unknown changes nothing: False."""
        now = self.clock()
        alerts = await self.store.alerts([alert_id])
        if alert_id not in alerts or not await self.store.acknowledge(alert_id, by, now):
            return False
        alert = alerts[alert_id]
        event = AlertAcknowledged(
            event_id=uuid.uuid5(ALERT_NAMESPACE, f"acknowledged|{alert_id}|{by}|{now.isoformat()}"),
            trial_id=alert.trial_id,
            participant_id=alert.participant_id,
            occurred_at=now,
            recorded_at=now,
            recorded_by=RECORDED_BY,
            source=Source.NOTIFIER,
            alert_id=alert.alert_id,
            acknowledged_by=summary(by),
            note=note,
        )
        try:
            producer = await self._producer()
            await asyncio.wait_for(
                producer.send_and_wait(ALERT_LIFECYCLE.name, encode(event), key=key_for(event)),
                PRODUCE_TIMEOUT_S,
            )
        except BaseException:
            # not recorded on the topic: the alert is open again, for this or another person
            await self.store.unacknowledge(alert_id, by)
            raise
        self.metrics.acknowledged.inc()
        await self.changed()
        return True

    async def _gauges(self) -> None:
        board = await self.store.board()
        now = self.clock()
        open_critical = [r for r in board if r["status"] == "open" and r["severity"] == "critical"]
        self.metrics.open_critical.set(len(open_critical))
        oldest = min((_aware(r["seen_at"]) for r in open_critical), default=None)
        self.metrics.oldest_open_critical.set((now - oldest).total_seconds() if oldest else 0)
        deadlines = [
            d for r in board if r["status"] == "open" and (d := _due_by(r["raised"])) is not None
        ]
        nearest = min(deadlines, default=None)
        self.metrics.next_deadline.set(
            (nearest - now).total_seconds() if nearest is not None else float("nan")
        )
        self.metrics.outbox.set(await self.store.depth())


def _due_by(raised: str) -> datetime | None:
    """The deadline an alert carries (its recorded JSON), if any, in UTC."""
    try:
        due = json.loads(raised).get("due_by")
        return datetime.fromisoformat(due).astimezone(UTC) if due else None
    except (ValueError, TypeError, OverflowError):  # a deadline that is no time is no deadline
        return None


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
