"""The event log port and its Kafka adapter: a write returns only once the broker acknowledged
it (acks=all, idempotent producer), so an accepted event is durable."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from contracts import ClinicalEvent, key_for, topic_for


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int


class LogUnavailable(RuntimeError):
    """The log did not acknowledge in time: nothing may be reported as accepted."""


class EventTooLarge(ValueError):
    """The broker refuses an event this large: a retry cannot succeed (413, not 503)."""


class EventLog(Protocol):
    async def append_many(
        self, events: list[tuple[ClinicalEvent, bytes]]
    ) -> tuple[list[Position | None], Exception | None]: ...

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


class KafkaEventLog:
    """Starts its producer lazily and again after a failure, so the service comes up (not
    ready) while the broker is down and recovers when it is back."""

    def __init__(self, bootstrap: str, timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._partitioner = KeyPartitioner()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    enable_idempotence=True,
                    request_timeout_ms=int(self.timeout_s * 1000),
                    partitioner=self._partitioner,
                )
                try:
                    await asyncio.wait_for(producer.start(), self.timeout_s)
                except (KafkaError, OSError, TimeoutError) as e:
                    await producer.stop()
                    raise LogUnavailable(f"Kafka at {self.bootstrap} is unreachable: {e!r}") from e
                self._producer = producer
            return self._producer

    async def _reset(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(producer.stop(), self.timeout_s)

    async def append_many(
        self, events: list[tuple[ClinicalEvent, bytes]]
    ) -> tuple[list[Position | None], Exception | None]:
        """Sends every (event, its encoding) at once and awaits all acknowledgements together
        (the idempotent producer keeps each partition's order). Returns each event's position,
        None for those not acknowledged, and the first failure (LogUnavailable or
        EventTooLarge) if any."""
        if not events:
            return [], None
        producer = await self._started()
        positions: list[Position | None] = [None] * len(events)
        failure: Exception | None = None
        sent: list[asyncio.Future[Any]] = []
        try:
            for e, wire in events:
                sent.append(await producer.send(topic_for(e).name, wire, key=key_for(e)))
        except MessageSizeTooLargeError as e:  # the producer is fine: no reset
            failure = EventTooLarge(f"the broker refuses an event of this size: {e!r}")
        except (KafkaError, OSError) as e:
            failure = LogUnavailable(f"Kafka did not take the write: {e!r}")
        done = await asyncio.wait(sent, timeout=self.timeout_s) if sent else (set(), set())
        for i, future in enumerate(sent):  # what was sent is awaited, whatever failed after it
            if future not in done[0]:
                failure = failure or LogUnavailable("Kafka did not acknowledge in time")
                future.cancel()
            elif isinstance(future.exception(), MessageSizeTooLargeError):
                failure = failure or EventTooLarge(
                    f"the broker refuses an event of this size: {future.exception()!r}"
                )
            elif future.exception() is not None:
                failure = failure or LogUnavailable(
                    f"Kafka did not acknowledge the write: {future.exception()!r}"
                )
            else:
                md = future.result()
                positions[i] = Position(md.topic, md.partition, md.offset)
        if isinstance(failure, LogUnavailable):
            await self._reset()
        return positions, failure

    async def ready(self) -> bool:
        try:
            producer = await self._started()
            await asyncio.wait_for(producer.partitions_for("trial.events"), self.timeout_s)
            return True
        except (LogUnavailable, KafkaError, OSError, TimeoutError):
            await self._reset()
            return False

    async def close(self) -> None:
        await self._reset()
