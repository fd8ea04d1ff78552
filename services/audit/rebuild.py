"""`safety-monitor audit rebuild`: drop the read models and rebuild them from the topics.

The same `changes()` as the live projection, applied to a replay of every audited partition
up to its end at the start of the rebuild; the audit log itself is never touched.
"""

from __future__ import annotations

import sys

from aiokafka import AIOKafkaConsumer
from tqdm import tqdm

from contracts import AnyEvent, InvalidEvent, decode
from services.audit.adapters.store import AuditStore
from services.audit.projection import audited_partitions


async def rebuild(bootstrap: str, store: AuditStore, progress: bool = True) -> int:
    parts = await audited_partitions(bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    applied, seen = 0, set()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        total = sum(ends.values())
        await store.clear_read_models()
        bar = tqdm(total=total, unit="msg", desc="rebuild", file=sys.stderr, disable=not progress)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=1000)
            events: list[AnyEvent] = []
            for tp, records in fetched.items():
                for r in records:
                    if r.offset >= ends[tp]:
                        continue
                    bar.update(1)
                    try:
                        event = decode(r.value or b"")
                    except InvalidEvent:
                        continue
                    if str(event.event_id) not in seen:
                        seen.add(str(event.event_id))
                        events.append(event)
            await store.apply_read_models(events)
            applied += len(events)
        bar.close()
    finally:
        await consumer.stop()
    return applied
