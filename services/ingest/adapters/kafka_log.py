"""The event log port and its Kafka adapter: a write returns only once the broker acknowledged
it (acks=all, idempotent producer), so an accepted event is durable."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from contracts import ClinicalEvent, key_for, topic_for


class Position(NamedTuple):  # (a tuple: made for every event, at a third of a dataclass's cost)
    topic: str
    partition: int
    offset: int


class LogUnavailable(RuntimeError):
    """The log did not acknowledge: nothing may be reported as accepted. The message (with the
    broker's address and the client's error) is for the logs; `reason` is what the caller is
    told (503): one of the texts below, or a reason of the caller's own."""

    def __init__(self, message: str, reason: str, *, maybe_written: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        # whether what was handed over may have landed all the same (a timeout, a broken
        # connection): its outcome is unknown until the topic is read (`KafkaEventLog.find`)
        self.maybe_written = maybe_written


UNREACHABLE = "Kafka cannot be reached"
NOT_TAKEN = "Kafka did not take the write"
NOT_IN_TIME = "Kafka did not acknowledge in time"


# how far before its hand-over a message's timestamp may be read back (clock steps, the broker's
# clock where a topic stamps at append)
FIND_MARGIN = timedelta(minutes=1)


class EventTooLarge(ValueError):
    """The broker refuses an event this large: a retry cannot succeed (413, not 503)."""


class EventLog(Protocol):
    async def append_many(
        self, events: list[tuple[ClinicalEvent, bytes]]
    ) -> tuple[list[Position | None], Exception | None]: ...

    async def find(self, event: ClinicalEvent, sent_at: datetime) -> Position | None: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


class KeyPartitioner:
    """aiokafka's default partitioner (the Java client's: murmur2 of the key, modulo the
    partitions), each key's hash kept: a participant's key is hashed for each of its events,
    3.9 us in pure Python each time. Up to `kept` keys; a key-less message goes to the default."""

    def __init__(self, kept: int = 100_000) -> None:
        self.kept = kept
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        found = self._hashes.get(key)
        if found is None:
            if len(self._hashes) >= self.kept:
                self._hashes.clear()
            found = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[found % len(all_partitions)]


# One batch's worth of events for a partition, at most (aiokafka's default is 16 KiB, a few dozen
# events: a request's events for one partition then took several batches, each sent only once
# the one before it had gone). Well below the broker's 1 MiB limit of a batch.
BATCH_BYTES = 256 * 2**10
# An event larger than this is refused here (EventTooLarge), as aiokafka's `send` refused one
# larger than its request limit: the broker's limit of a batch is 1 MiB.
MESSAGE_BYTES = 1_000_000


@dataclass
class _Outcome:
    """One call's events on their way: a position for each, or the first failure."""

    positions: list[Position | None]
    left: int
    done: asyncio.Future[None]
    failure: Exception | None = None

    def landed(self, i: int, position: Position) -> None:
        self.positions[i] = position
        self._one_less()

    def failed(self, error: Exception) -> None:
        self.failure = self.failure or error
        self._one_less()

    def _one_less(self) -> None:
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)


Waiting = tuple[bytes | None, bytes, _Outcome, int]  # key, value, whose, its index there


@dataclass
class _PartitionQueue:
    """The events waiting for one partition. aiokafka holds one batch per partition before
    it is sent: while that one waits, every request's events gather here for the next."""

    waiting: list[Waiting]
    sending: asyncio.Task[None] | None = None


def _failure(error: BaseException) -> Exception:
    if isinstance(error, LogUnavailable | EventTooLarge):
        return error
    if isinstance(error, MessageSizeTooLargeError):  # the producer is fine: no reset
        return EventTooLarge(f"the broker refuses an event of this size: {error!r}")
    return LogUnavailable(f"Kafka did not take the write: {error!r}", NOT_TAKEN)


class KafkaEventLog:
    """Starts its producer lazily and again after a failure, so the service comes up (not
    ready) while the broker is down and recovers when it is back.

    Events go to Kafka in batches built here, one partition's waiting events at a time
    (`send_batch`), rather than one `send` each: a `send` cost about 10 us of the event loop's
    time in aiokafka's own Python (a future, a coroutine and the accumulator's bookkeeping for
    each message). A batch is acknowledged whole, and its events' offsets are its base offset
    plus their place in it. The idempotent producer keeps each partition's order, and a
    partition's batches are handed over in the order their events arrived."""

    def __init__(self, bootstrap: str, timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lanes: dict[
            tuple[str, int], _PartitionQueue
        ] = {}  # the producer's, by (topic, partition)
        self._lock = asyncio.Lock()
        self._partitioner = KeyPartitioner()

    async def _started(self) -> tuple[AIOKafkaProducer, dict[tuple[str, int], _PartitionQueue]]:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    enable_idempotence=True,
                    request_timeout_ms=int(self.timeout_s * 1000),
                    partitioner=self._partitioner,
                    max_batch_size=BATCH_BYTES,
                )
                try:
                    await asyncio.wait_for(producer.start(), self.timeout_s)
                except (KafkaError, OSError, TimeoutError) as e:
                    await producer.stop()
                    raise LogUnavailable(
                        f"Kafka at {self.bootstrap} is unreachable: {e!r}",
                        UNREACHABLE,
                        maybe_written=False,
                    ) from e
                self._producer, self._lanes = producer, {}
            return self._producer, self._lanes

    async def _reset(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(producer.stop(), self.timeout_s)

    async def append_many(
        self, events: list[tuple[ClinicalEvent, bytes]]
    ) -> tuple[list[Position | None], Exception | None]:
        """Hands every (event, its encoding) to its partition's lane and awaits all
        acknowledgements together. Returns each event's position, None for those not
        acknowledged, and the first failure (LogUnavailable or EventTooLarge) if any."""
        if not events:
            return [], None
        producer, lanes = await self._started()
        outcome = _Outcome(
            [None] * len(events), len(events), asyncio.get_running_loop().create_future()
        )
        partitions: dict[str, list[int]] = {}
        bound: list[tuple[tuple[str, int], bytes]] = []  # each event's (topic, partition), key
        try:  # every partition known before any event is handed over
            for e, _ in events:
                topic, key = topic_for(e).name, key_for(e)
                known = partitions.get(topic)
                if known is None:
                    known = partitions[topic] = sorted(await producer.partitions_for(topic))
                bound.append(((topic, self._partitioner(key, known, known)), key))
        except (KafkaError, OSError) as e:
            await self._reset()
            failure = LogUnavailable(  # nothing was handed over yet
                f"Kafka did not take the write: {e!r}", NOT_TAKEN, maybe_written=False
            )
            return [None] * len(events), failure
        touched: dict[tuple[str, int], _PartitionQueue] = {}
        for i, ((where, key), (_, wire)) in enumerate(zip(bound, events, strict=True)):
            if len(wire) + len(key) > MESSAGE_BYTES:
                outcome.failed(
                    EventTooLarge(f"{len(wire)} bytes; Kafka takes at most {MESSAGE_BYTES}")
                )
                continue
            lane = lanes.get(where)
            if lane is None:
                lane = lanes[where] = _PartitionQueue([])
            touched[where] = lane
            lane.waiting.append((key, wire, outcome, i))
        for where, lane in touched.items():
            if lane.sending is None or lane.sending.done():
                lane.sending = asyncio.create_task(self._send(producer, *where, lane))
        try:
            await asyncio.wait_for(asyncio.shield(outcome.done), self.timeout_s)
        except TimeoutError:
            for lane in touched.values():  # what was not handed to the producer yet never will be
                lane.waiting = [w for w in lane.waiting if w[2] is not outcome]
            outcome.failure = outcome.failure or LogUnavailable(NOT_IN_TIME, NOT_IN_TIME)
        if isinstance(outcome.failure, LogUnavailable):
            await self._reset()
        return list(outcome.positions), outcome.failure  # (a late acknowledgement changes none)

    async def _send(
        self, producer: AIOKafkaProducer, topic: str, partition: int, lane: _PartitionQueue
    ) -> None:
        """Sends the lane's waiting events, as batches, until none wait; every event taken
        gets its outcome, whatever fails."""
        while lane.waiting:
            taken, lane.waiting = lane.waiting, []
            batches: list[tuple[Any, list[Waiting]]] = []
            try:
                for w in taken:
                    if (
                        not batches
                        or batches[-1][0].append(key=w[0], value=w[1], timestamp=None) is None
                    ):
                        batch = producer.create_batch()
                        batch.append(key=w[0], value=w[1], timestamp=None)  # the first fits
                        batches.append((batch, []))
                    batches[-1][1].append(w)
            except Exception as e:  # nothing of these was handed over
                for w in taken:
                    w[2].failed(_failure(e))
                continue
            for n, (batch, inside) in enumerate(batches):
                batch.close()  # nothing else may join it: its offsets are ours
                try:
                    sent = await producer.send_batch(batch, topic, partition=partition)
                except BaseException as e:
                    for _, others in batches[n:]:
                        for w in others:
                            w[2].failed(_failure(e))
                    if not isinstance(e, Exception):
                        raise
                    break
                sent.add_done_callback(functools.partial(_acknowledged, topic, partition, inside))

    async def find(self, event: ClinicalEvent, sent_at: datetime) -> Position | None:
        """Where `event` landed, if it did, when it was handed over no earlier than `sent_at`:
        its partition is read from the first offset stamped at or after `sent_at` less a
        minute (a message's timestamp is made when it is handed over, so it cannot be
        earlier) to its end. LogUnavailable while the broker cannot answer."""
        producer, _ = await self._started()
        topic, key = topic_for(event).name, key_for(event)
        try:
            known = sorted(await producer.partitions_for(topic))
        except (KafkaError, OSError) as e:
            await self._reset()
            raise LogUnavailable(f"no metadata for {topic}: {e!r}", UNREACHABLE) from e
        tp = TopicPartition(topic, self._partitioner(key, known, known))
        needle = b'"event_id":"' + str(event.event_id).encode() + b'"'
        since = int((sent_at - FIND_MARGIN).timestamp() * 1000)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False,
            request_timeout_ms=int(self.timeout_s * 1000) + 1000,
        )  # fmt: skip
        try:
            await asyncio.wait_for(consumer.start(), self.timeout_s)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            found = (await consumer.offsets_for_times({tp: since}))[tp]
            if found is None or found.offset >= end:
                return None
            consumer.seek(tp, found.offset)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=int(self.timeout_s * 1000))
                records = batch.get(tp, [])
                if not records:
                    raise LogUnavailable(f"{tp} was not read to its end", NOT_IN_TIME)
                for r in records:
                    if r.key == key and needle in (r.value or b""):
                        return Position(tp.topic, tp.partition, r.offset)
                    if r.offset + 1 >= end:
                        return None
        except (KafkaError, OSError, TimeoutError) as e:
            raise LogUnavailable(f"{tp} could not be read: {e!r}", UNREACHABLE) from e
        finally:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(consumer.stop(), self.timeout_s)

    async def ready(self) -> bool:
        try:
            producer, _ = await self._started()
            await asyncio.wait_for(producer.partitions_for("trial.events"), self.timeout_s)
            return True
        except (LogUnavailable, KafkaError, OSError, TimeoutError):
            await self._reset()
            return False

    async def close(self) -> None:
        await self._reset()


def _acknowledged(
    topic: str, partition: int, inside: list[Waiting], sent: asyncio.Future[Any]
) -> None:
    """A batch's outcome, given to each of its events."""
    error = (
        LogUnavailable("the batch was cancelled before Kafka acknowledged it", NOT_IN_TIME)
        if sent.cancelled()
        else sent.exception()
    )
    if error is not None:
        for w in inside:
            w[2].failed(_failure(error))
        return
    base = sent.result().offset  # the batch's first offset; each event's is base + its place
    for n, (_, _, outcome, i) in enumerate(inside):
        outcome.landed(i, Position(topic, partition, base + n))
