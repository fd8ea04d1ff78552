"""The ingest's Kafka log on the real broker: every event acknowledged lands at the position
returned, in its caller's order, however many callers share the batches."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from contracts import ClinicalEvent, encode, key_for
from services.bench import trial
from services.ingest.adapters.kafka_log import (
    BATCH_BYTES,
    MESSAGE_BYTES,
    EventTooLarge,
    KafkaEventLog,
    Position,
)

TOPIC = "trial.events"


async def _stored(bootstrap: str, positions: list[Position]) -> dict[tuple[int, int], bytes]:
    """(partition, offset) -> value on the topic, over the span of the positions given."""
    spans: dict[int, tuple[int, int]] = {}
    for p in positions:
        low, high = spans.get(p.partition, (p.offset, p.offset))
        spans[p.partition] = (min(low, p.offset), max(high, p.offset))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = {p: TopicPartition(TOPIC, p) for p in spans}
        consumer.assign(list(tps.values()))
        ends = await consumer.end_offsets(list(tps.values()))
        past = {p: ends[tps[p]] for p, (_, high) in spans.items() if high >= ends[tps[p]]}
        assert not past, f"positions past the end of their partition: {past}"
        for p, (low, _) in spans.items():
            consumer.seek(tps[p], low)
        out: dict[tuple[int, int], bytes] = {}
        behind = set(spans)
        while behind:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out.update(((r.partition, r.offset), r.value or b"") for r in records)
            behind = {p for p in behind if await consumer.position(tps[p]) <= spans[p][1]}
        return out
    finally:
        await consumer.stop()


async def test_concurrent_callers_each_find_their_events_where_they_were_told(kafka: str) -> None:
    events: list[ClinicalEvent] = list(trial(f"LOG-{uuid.uuid4().hex[:6]}", 40, 6, seed=5))
    callers = [events[n::8] for n in range(8)]  # 8 at once, a few hundred events in all
    log = KafkaEventLog(kafka)
    try:
        answers = await asyncio.gather(
            *(log.append_many([(e, encode(e)) for e in mine]) for mine in callers)
        )
    finally:
        await log.close()
    partitions = sorted({p.partition for answer, _ in answers for p in answer if p})
    assert len(partitions) > 1
    placed = [
        (e, p) for mine, (answer, failure) in zip(callers, answers, strict=True)
        for e, p in zip(mine, answer, strict=True)
        if failure is None and p is not None
    ]  # fmt: skip
    assert len(placed) == len(events)  # every event acknowledged, none failed
    assert len({(p.partition, p.offset) for _, p in placed}) == len(events)  # none shares a place
    stored = await _stored(kafka, [p for _, p in placed])
    default = DefaultPartitioner()
    for event, p in placed:
        assert p.topic == TOPIC
        assert stored[(p.partition, p.offset)] == encode(event)  # that event, at that offset
        assert p.partition == default(key_for(event), list(range(12)), list(range(12)))
    for mine, (answer, _) in zip(callers, answers, strict=True):  # each caller's order kept
        by_key: dict[bytes, list[int]] = {}
        for e, p in zip(mine, answer, strict=True):
            assert p is not None
            by_key.setdefault(key_for(e), []).append(p.offset)
        assert all(offsets == sorted(offsets) for offsets in by_key.values())


async def test_a_partitions_events_past_one_batch_land_in_order(kafka: str) -> None:
    # one participant's 40 events of 20 KiB: more than three batches of BATCH_BYTES
    event = next(iter(trial(f"BIG-{uuid.uuid4().hex[:6]}", 1, 1, seed=6)))
    values = [n.to_bytes(4, "big") * (5 * 2**10) for n in range(40)]
    assert sum(map(len, values)) > 3 * BATCH_BYTES
    log = KafkaEventLog(kafka)
    try:
        positions, failure = await log.append_many([(event, v) for v in values])
    finally:
        await log.close()
    assert failure is None
    assert len({p.partition for p in positions if p}) == 1
    offsets = [p.offset for p in positions if p]
    assert len(offsets) == 40 and offsets == sorted(offsets)
    stored = await _stored(kafka, [p for p in positions if p])
    assert [stored[(p.partition, p.offset)] for p in positions if p] == values


async def test_an_event_too_large_for_kafka_is_refused_and_the_rest_land(kafka: str) -> None:
    event = next(iter(trial(f"HUGE-{uuid.uuid4().hex[:6]}", 1, 1, seed=7)))
    values = [b"before", b"x" * (MESSAGE_BYTES + 1), b"after"]
    log = KafkaEventLog(kafka)
    try:
        positions, failure = await log.append_many([(event, v) for v in values])
        again, failure_again = await log.append_many([(event, b"next call")])
    finally:
        await log.close()
    assert isinstance(failure, EventTooLarge)
    before, huge, after = positions
    assert huge is None and before is not None and after is not None
    assert failure_again is None and again[0] is not None  # the producer was not reset
    stored = await _stored(kafka, [before, after, again[0]])
    assert stored[(before.partition, before.offset)] == b"before"
    assert stored[(after.partition, after.offset)] == b"after"
    assert before.offset < after.offset < again[0].offset
