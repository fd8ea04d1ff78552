"""Small helpers the integration tests use to talk to the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts import AnyEvent, InvalidEvent, encode, key_for, topic_for
from contracts.dead_letters import accept
from contracts.topics import topic_named
from services.demo import partitions_of


async def produce(bootstrap: str, events: list[AnyEvent], topic: str | None = None) -> None:
    """Each event in order onto its catalog topic, or onto `topic` (a test's own)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(topic or topic_for(e).name, encode(e), key=key_for(e))
    finally:
        await producer.stop()


async def produce_raw(bootstrap: str, topic: str, key: bytes, value: bytes) -> tuple[str, int, int]:
    """Produces one message as given; returns where it landed (topic, partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=key)
        return topic, meta.partition, meta.offset
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) on the topic right now, from the beginning."""
    parts = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[tuple[bytes | None, bytes]] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out += [(r.key, r.value or b"") for r in records]
        return out
    finally:
        await consumer.stop()


async def wait_for(
    bootstrap: str,
    topic: str,
    done: Callable[[list[tuple[bytes | None, bytes]]], bool],
    timeout_s: float = 60,
) -> list[tuple[bytes | None, bytes]]:
    """Reads the topic until `done` holds for what is there; fails after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await read_topic(bootstrap, topic)
        if done(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic}: condition not met after {timeout_s}s; saw {len(got)}")
        await asyncio.sleep(0.5)


def events_in(messages: list[tuple[bytes | None, bytes]], topic: str) -> list[AnyEvent]:
    """The events every consumer would take from `topic`'s messages. The shared broker's topics
    also hold what tests put there on purpose (garbage, a poison timestamp: tests/faults/
    hardening.py, the notifier's poison test); a reader skips them as every consumer does."""
    catalog = topic_named(topic)
    assert catalog is not None, topic
    out = []
    for _, raw in messages:
        try:
            out.append(accept(raw, catalog))
        except InvalidEvent:
            continue
    return out
