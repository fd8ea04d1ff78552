"""Every event type produced to the real broker and read back, equal through the contracts."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts import AnyEvent, decode, encode, key_for, topic_for
from services.demo import partitions_of
from services.sample import one_of_each


async def consume_from(bootstrap: str, topic: str, offsets: dict[int, int]) -> list[bytes]:
    """The values at the given partition offsets, read back from the broker."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in offsets]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, offsets[tp.partition])
        got: list[bytes] = []
        while len(got) < len(offsets):
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "the broker returned nothing within 5 s"
            for tp, records in batch.items():
                got += [r.value or b"" for r in records if r.offset == offsets[tp.partition]]
        return got
    finally:
        await consumer.stop()


async def test_every_event_type_round_trips_through_the_broker(kafka: str) -> None:
    events = one_of_each("DN-901")
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        placed: list[tuple[AnyEvent, str, int, int]] = []
        for event in events:
            topic = topic_for(event).name
            md = await producer.send_and_wait(topic, encode(event), key=key_for(event))
            placed.append((event, topic, md.partition, md.offset))
    finally:
        await producer.stop()

    for event, topic, partition, offset in placed:
        (raw,) = await consume_from(kafka, topic, {partition: offset})
        assert decode(raw) == event, event.event_type


async def test_a_participants_events_share_one_partition(kafka: str) -> None:
    clinical = [e for e in one_of_each("DN-902") if topic_for(e).name == "trial.events"]
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        partitions = {
            (await producer.send_and_wait("trial.events", encode(e), key=key_for(e))).partition
            for e in clinical
        }
    finally:
        await producer.stop()
    assert len(partitions) == 1


async def test_the_catalog_topics_exist_with_their_partitions(kafka: str) -> None:
    assert len(await partitions_of(kafka, "trial.events")) == 12
    assert len(await partitions_of(kafka, "trial.dead-letter")) == 12
