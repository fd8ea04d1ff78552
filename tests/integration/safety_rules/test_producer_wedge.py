"""A producer the broker answers with OutOfOrderSequenceNumber is replaced, and the alert goes
out (issue 28: after a 10-minute outage aiokafka's idempotent producer answered every send so,
and the worker wedged until its watchdog exited it).

The wedge is made on a real broker of the test's own, not mocked: after the worker's first alert
the test reads the worker producer's id, epoch and last sequence from the alert partition's log
segment on disk (the record batch header) and appends a batch of 10 copies of that alert under
the same producer, as a batch the worker's producer gave up on but the broker kept would. The
broker's sequence for that producer is then 10 ahead of the worker's: its next send is out of
order, for good."""

from __future__ import annotations

import asyncio
import signal
import struct
import time
from pathlib import Path

from aiokafka import AIOKafkaClient, TopicPartition
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from contracts import AlertRaised, decode
from contracts.topics import SAFETY_ALERTS
from tests.conftest import launcher_in
from tests.integration.kafka_io import produce, read_topic
from tests.integration.safety_rules.test_worker import unique
from tests.integration.safety_rules.worker_process import Worker
from tests.unit.safety_rules.builders import a_participant


def last_batch(segment: Path) -> tuple[int, int, int]:
    """(producer id, producer epoch, last sequence) of the segment's last record batch (the v2
    header: baseOffset 8, length 4, leaderEpoch 4, magic 1, crc 4, attributes 2, lastOffsetDelta
    4, two timestamps 16, producerId 8, producerEpoch 2, baseSequence 4)."""
    data, at, found = segment.read_bytes(), 0, None
    while at + 61 <= len(data):
        (length,) = struct.unpack_from(">i", data, at + 8)
        if length <= 0:
            break
        (delta,) = struct.unpack_from(">i", data, at + 23)
        pid, epoch, base = struct.unpack_from(">qhi", data, at + 43)
        found = (pid, epoch, base + delta)
        at += 12 + length
    assert found is not None, f"no record batch in {segment}"
    return found


async def append_as(bootstrap: str, tp: TopicPartition, producer: tuple[int, int, int],
                    key: bytes, value: bytes, count: int) -> None:  # fmt: skip
    pid, epoch, last = producer
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=pid,
        producer_epoch=epoch, base_sequence=last + 1, batch_size=1 << 20,
    )  # fmt: skip
    now = int(time.time() * 1000)
    for i in range(count):
        builder.append(i, timestamp=now, key=key, value=value, headers=[])
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        leader = client.cluster.leader_for_partition(tp)
        request = ProduceRequest(
            transactional_id=None, required_acks=-1, timeout=30000,
            topics=[(tp.topic, [(tp.partition, bytes(builder.build()))])],
        )  # fmt: skip
        response = await client.send(leader, request)
        ((_, partitions),) = response.topics
        assert partitions[0][1] == 0, f"the broker refused the batch: {partitions}"
    finally:
        await client.close()


async def test_a_producer_the_broker_answers_out_of_order_is_replaced_and_the_alert_goes_out(
    tmp_path: Path,
) -> None:
    launcher = launcher_in(tmp_path / "k")
    await asyncio.to_thread(launcher.up)
    pid = unique("WG")
    p = a_participant(pid).enrolled().dosed().ae("AE-1", serious=True, ctcae_grade=3)
    worker = Worker(launcher.bootstrap, unique("rules"), tmp_path)
    try:
        worker.wait_ready()
        await produce(launcher.bootstrap, p.events())

        async def alerts(ae: str) -> list[tuple[bytes | None, bytes]]:
            found = [
                (k, v)
                for k, v in await read_topic(launcher.bootstrap, SAFETY_ALERTS.name)
                if isinstance(a := decode(v), AlertRaised)
                and a.participant_id == pid
                and a.rule_id == "sae.reported"
                and ae in a.title + str(a.facts)
            ]
            return found

        deadline = time.monotonic() + 60
        while not (first := await alerts("AE-1")) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert first, worker.tail()
        key, value = first[0]
        segments = list(launcher.data_dir.glob(f"{SAFETY_ALERTS.name}-*/*.log"))
        (segment,) = [s for s in segments if s.stat().st_size > 0]
        tp = TopicPartition(SAFETY_ALERTS.name, int(segment.parent.name.rsplit("-", 1)[1]))
        await append_as(launcher.bootstrap, tp, last_batch(segment), key or b"", value, 10)
        assert worker.metric("safety_monitor_rules_producer_restarts_total") == 0

        # the second SAE: the worker's producer is now 10 behind the broker's sequence
        p.ae("AE-2", day=9, serious=True, ctcae_grade=4, term="Perirenal haematoma")
        await produce(launcher.bootstrap, p.events()[-1:])
        deadline = time.monotonic() + 90
        while not await alerts("Perirenal") and time.monotonic() < deadline:
            await asyncio.sleep(1)
        assert await alerts("Perirenal"), worker.tail()
        assert worker.metric("safety_monitor_rules_producer_restarts_total") >= 1
        assert worker.proc.poll() is None, "the worker exited instead of replacing its producer"
    finally:
        worker.stop(signal.SIGTERM)
        await asyncio.to_thread(launcher.down, purge=True)
