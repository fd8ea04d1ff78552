"""Anchors: each signed checkpoint of the chain kept outside the database, so `verify` need not
trust it.

Whoever can write the audit database can drop its triggers, rewrite rows and recompute every
hash, delete the checkpoints, cut the tail or empty the log. None of that reaches a Kafka topic
kept forever (`audit.checkpoints`, keyed by the signing key's id) or an append-only file on
another disk: `verify` compares the database with the newest checkpoint anchored there. An
anchor is only ever believed when a trusted key's signature on it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contracts.topics import AUDIT_CHECKPOINTS
from services.audit.domain.chain import Checkpoint, signed_by


def encode_anchor(c: Checkpoint) -> bytes:
    data = {"seq": c.seq, "head_hash": c.head_hash, "key_id": c.key_id, "signature": c.signature}
    return json.dumps(data, sort_keys=True).encode()


def decode_anchor(raw: bytes) -> Checkpoint | None:
    try:
        d = json.loads(raw)
        return Checkpoint(int(d["seq"]), str(d["head_hash"]), str(d["key_id"]), str(d["signature"]))
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Anchors:
    """Where checkpoints are anchored: the topic (always) and a file (when configured)."""

    bootstrap: str
    file: Path | None = None
    topic: str = AUDIT_CHECKPOINTS.name
    timeout_s: float = 30.0
    _producer: AIOKafkaProducer | None = field(default=None, init=False, repr=False)

    async def publish(self, checkpoints: Iterable[Checkpoint]) -> int:
        """Anchors each checkpoint; returns once the broker acknowledged them all (and the
        file, if any, is on disk). One producer serves every publish until `close`."""
        todo = list(checkpoints)
        if not todo:
            return 0
        if self.file is not None:
            await asyncio.to_thread(_append_lines, self.file, [encode_anchor(c) for c in todo])
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True
            )
            try:
                await asyncio.wait_for(producer.start(), self.timeout_s)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5)
                raise
            self._producer = producer
        sent = [
            await self._producer.send(self.topic, encode_anchor(c), key=c.key_id.encode())
            for c in todo
        ]
        async with asyncio.timeout(self.timeout_s):
            await asyncio.gather(*sent)
        return len(todo)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:  # bounded: a broker away never holds a shutdown
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

    async def read(self, trusted: dict[str, Ed25519PublicKey]) -> list[Checkpoint]:
        """Every anchored checkpoint a trusted key signed (topic and file), by seq; an anchor
        whose signature does not hold is ignored (anyone may write to a topic)."""
        found = await self._from_topic()
        if self.file is not None and self.file.exists():
            found += [
                c
                for line in self.file.read_bytes().splitlines()
                if line.strip() and (c := decode_anchor(line)) is not None
            ]
        good = {(c.seq, c.head_hash): c for c in found if signed_by(c, trusted)}
        return sorted(good.values(), key=lambda c: c.seq)

    async def _from_topic(self) -> list[Checkpoint]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False,
            auto_offset_reset="earliest",
        )  # fmt: skip
        try:
            async with asyncio.timeout(self.timeout_s):
                await consumer.start()
                tp = TopicPartition(self.topic, 0)
                consumer.assign([tp])
                consumer.seek(tp, 0)  # (never seek_to_beginning: services.kafka.seek_stored)
                end = (await consumer.end_offsets([tp]))[tp]
            out: list[Checkpoint] = []
            async with asyncio.timeout(self.timeout_s):
                while await consumer.position(tp) < end:
                    for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                        out += [c for r in records if (c := decode_anchor(r.value or b""))]
            return out
        finally:
            await consumer.stop()

    async def newest(self, key_id: str, trusted: dict[str, Ed25519PublicKey]) -> int:
        """The highest seq anchored for `key_id` (0: none)."""
        return max((c.seq for c in await self.read(trusted) if c.key_id == key_id), default=0)


def _append_lines(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"".join(line + b"\n" for line in lines))
        os.fsync(fd)
    finally:
        os.close(fd)
