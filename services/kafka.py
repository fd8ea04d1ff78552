"""What every service's Kafka code shares."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def partitions(
    bootstrap: str, topics: tuple[str, ...], timeout_s: float = 30.0
) -> list[TopicPartition]:
    """Every partition of `topics`, as the broker describes them now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        async with asyncio.timeout(timeout_s):  # a broker that does not answer: TimeoutError
            await admin.start()
            described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]


def consumer_from_stored(bootstrap: str, **options: object) -> AIOKafkaConsumer:
    """A consumer whose partitions are positioned by `seek_stored`: offsets kept in the
    service's own database, never in Kafka's group offsets."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )


def seek_stored(
    consumer: AIOKafkaConsumer, parts: list[TopicPartition], stored: dict[tuple[str, int], int]
) -> None:
    """Positions each partition at its stored next offset, or at offset 0 when none is stored.

    Never `seek_to_beginning`: that asks the broker for the log start (a ListOffsets request
    resolved in the fetcher's background); in CI a fresh client once never got the metadata it
    needed for it, and its partitions never fetched, in silence. Offset 0 needs no request; on a
    log whose start has moved past it, the fetch is out of range and `auto_offset_reset`
    ("earliest") takes the log start instead."""
    for tp in parts:
        consumer.seek(tp, stored.get((tp.topic, tp.partition), 0))
