"""The local demo on embedded defaults: a real broker, the sample trial, and what came back.

It grows with each service; for now it starts Kafka, replays the sample trial onto its topics
(idempotent producer, acks=all) and reads every topic back through the contracts.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contracts import CATALOG, AnyEvent, InvalidEvent, decode, encode, key_for, topic_for
from deploy.kafka.launcher import KafkaLauncher, KafkaSettings
from services.sample import demo_trial


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


def run(settings: KafkaSettings) -> int:
    status = KafkaLauncher(settings).up()
    print(f"[demo] {status}")
    sent = asyncio.run(produce(status.bootstrap, list(demo_trial())))
    print(f"[demo] produced {sent} sample events (replaying them again changes no event_id)")
    for topic in CATALOG:
        events, messages, bad = asyncio.run(read_all(status.bootstrap, topic.name))
        counts = Counter(e.event_type for e in events.values())
        summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "empty"
        print(
            f"[demo] {topic.name}: {messages} messages, {len(events)} distinct events "
            f"({summary}); undecodable {bad}"
        )
    print("[demo] the broker keeps running; stop it with: safety-monitor kafka down")
    return 0
