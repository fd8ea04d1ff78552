"""`safety-monitor audit project`: consumes the trial and safety topics into the audit log.

Offsets live in the audit database, written in the same transaction as the rows they cover;
Kafka's consumer-group offsets are not used. A crash at any point replays from the last
committed batch, and rows already there are recognised by event_id: no gap, no duplicate.
One projection process writes a chain (it has one head): a second one started on the same
database stops at once with `Held`. Each signed checkpoint is anchored outside the database
(`Anchors`) once its transaction has committed; after a crash between the two, the start
anchors what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contracts.topics import ALERT_LIFECYCLE, SAFETY_ALERTS, TRIAL_EVENTS
from services.audit.adapters.store import Appended, AuditStore, ForeignRows, Incoming
from services.audit.anchors import Anchors
from services.audit.domain.chain import key_id
from services.kafka import consumer_from_stored, partitions, seek_stored
from services.sql import exclusive
from services.supervise import retrying

AUDITED = (TRIAL_EVENTS.name, SAFETY_ALERTS.name, ALERT_LIFECYCLE.name)
log = logging.getLogger("audit.projection")
ANCHOR_TIMEOUT_S = 30.0
STOP_ANCHOR_TIMEOUT_S = 5.0


async def audited_partitions(bootstrap: str) -> list[TopicPartition]:
    return await partitions(bootstrap, AUDITED)


class LagProbe:
    """Measures how far the store is behind the audited topics, as often as asked, with one
    Kafka client. Its partitions are assigned before any offset is asked for, so the client
    fetches their metadata in one request: a client asked for the end offsets of partitions it
    has never seen learns their topics one at a time, and under load a CI run once spent its
    whole timeout in that loop (StaleMetadata for safety.alerts, every retry)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._parts: list[TopicPartition] = []

    async def __aenter__(self) -> LagProbe:
        self._parts = await audited_partitions(self.bootstrap)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False
        )
        await self._consumer.start()
        self._consumer.assign(self._parts)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def topics(self) -> list[str]:
        return sorted({tp.topic for tp in self._parts})

    async def lag(self, store: AuditStore) -> int:
        """Messages on the audited topics not projected yet (0: caught up)."""
        return sum((await self.behind(store)).values())

    async def behind(self, store: AuditStore) -> dict[str, int]:
        """Messages not projected yet, by partition ("topic[p]"), for those behind."""
        assert self._consumer is not None, "use LagProbe in `async with`"
        ends = await self._consumer.end_offsets(self._parts)
        done = await store.offsets()
        behind = {
            f"{tp.topic}[{tp.partition}]": end - done.get((tp.topic, tp.partition), 0)
            for tp, end in ends.items()
        }
        return {k: n for k, n in behind.items() if n > 0}


PROJECTION_LOCK = "audit-projection"


async def project(
    bootstrap: str,
    store: AuditStore,
    signer: Ed25519PrivateKey,
    stop: asyncio.Event,
    *,
    checkpoint_every: int = 100,
    batch_max: int = 500,
    idle_checkpoint_s: float = 5.0,
    on_batch: Callable[[Appended], None] | None = None,
    anchors: Anchors | None = None,
    locked: bool = False,
) -> None:
    """Projects until `stop`, holding the chain's one-writer lock (or, `locked`, with the
    caller holding it: `Held` is raised when another process does)."""
    async with contextlib.AsyncExitStack() as stack:
        if not locked:
            await stack.enter_async_context(exclusive(store.engine, PROJECTION_LOCK, wait=False))
        try:
            await _project(
                bootstrap, store, signer, stop, checkpoint_every, batch_max, idle_checkpoint_s,
                on_batch, anchors,
            )  # fmt: skip
        finally:
            if anchors is not None:
                await anchors.close()


async def _project(
    bootstrap: str,
    store: AuditStore,
    signer: Ed25519PrivateKey,
    stop: asyncio.Event,
    checkpoint_every: int,
    batch_max: int,
    idle_checkpoint_s: float,
    on_batch: Callable[[Appended], None] | None,
    anchors: Anchors | None,
) -> None:
    """The projection's loop, run again after any failure (the broker or the database away:
    logged with its cause, after a backoff, from the stored offsets), until `stop`. A row it
    did not write (ForeignRows) stops it for good: the process exits and ops are told."""
    me = {key_id(signer.public_key()): signer.public_key()}
    state = _Chain()

    async def anchor(timeout_s: float = ANCHOR_TIMEOUT_S) -> None:
        """Anchors the checkpoints not anchored yet; while the broker does not answer they
        wait (the next call anchors them, as the start does after a crash)."""
        if anchors is None:
            return
        try:
            if state.anchored is None:
                state.anchored = await asyncio.wait_for(
                    anchors.newest(next(iter(me)), me), timeout_s
                )
            fresh = await store.checkpoints(after_seq=state.anchored)
            if fresh:
                await asyncio.wait_for(anchors.publish(fresh), timeout_s)
                state.anchored = fresh[-1].seq
        except Exception as e:  # (not a cancellation: the stop goes on)
            log.warning("checkpoints not anchored yet (%s: %s); anchored once the broker "
                        "answers", type(e).__name__, e)  # fmt: skip
            await anchors.close()

    async def run() -> None:
        if state.head is None:
            state.head = await _own_head(bootstrap, store, me)
        await anchor()
        parts = await audited_partitions(bootstrap)
        consumer = consumer_from_stored(bootstrap, isolation_level="read_committed")
        await asyncio.wait_for(consumer.start(), ANCHOR_TIMEOUT_S)
        try:
            consumer.assign(parts)
            seek_stored(consumer, parts, await store.offsets())
            last_activity, signed_idle = time.monotonic(), True
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=500, max_records=batch_max)
                batch = [
                    Incoming(tp.topic, tp.partition, r.offset, r.value or b"")
                    for tp, records in fetched.items()
                    for r in records
                ]
                if batch:
                    result = await store.append(batch, signer, checkpoint_every, state.head)
                    state.head = (result.head_seq, result.head_hash)
                    last_activity, signed_idle = time.monotonic(), False
                    if result.checkpoints:
                        await anchor()
                    if on_batch:
                        on_batch(result)
                elif not signed_idle and time.monotonic() - last_activity > idle_checkpoint_s:
                    await store.checkpoint_head(signer, state.head)
                    await anchor()
                    signed_idle = True
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), ANCHOR_TIMEOUT_S)

    try:
        await retrying("projecting the trail", run, stop, log, fatal=(ForeignRows,))
    finally:
        if state.head is not None:
            with contextlib.suppress(ForeignRows):
                await store.checkpoint_head(signer, state.head)
            await anchor(STOP_ANCHOR_TIMEOUT_S)  # bounded: a broker away never holds a SIGTERM


@dataclass
class _Chain:
    head: tuple[int, str] | None = None  # the head this projection wrote or checked
    anchored: int | None = None  # the newest seq anchored (None: not read yet)


async def _own_head(
    bootstrap: str, store: AuditStore, trusted: dict[str, Ed25519PublicKey]
) -> tuple[int, str]:
    """The chain's head, once every row after the newest signed checkpoint is found to be the
    message it names on the topics: a row the projection did not write is never signed over
    (ForeignRows, and the process stops)."""
    from services.audit.verification import tail_against_log

    signed = await store.newest_signed(trusted)
    problems = await tail_against_log(bootstrap, store, signed)
    if problems:
        for why in problems[:20]:
            log.critical("a row the projection did not write: %s", why)
        raise ForeignRows(f"{len(problems)} row(s) after checkpoint {signed}: {problems[0]}")
    return await store.head()
