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
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contracts.topics import AUDIT_CHECKPOINTS
from services.audit.domain.chain import Checkpoint, Rotation, signed_by, trust_chain


def encode_anchor(c: Checkpoint, public_key: str | None = None) -> bytes:
    """An anchored checkpoint; with the signing key's public key (hex), so that the first one
    on the topic pins the chain's key whatever the verifier is configured with."""
    data: dict[str, object] = {"seq": c.seq, "head_hash": c.head_hash, "key_id": c.key_id,
                               "signature": c.signature}  # fmt: skip
    if public_key is not None:
        data["public_key"] = public_key
    return json.dumps(data, sort_keys=True).encode()


def encode_rotation(r: Rotation) -> bytes:
    data = {"rotation": r.to_public, "key_id": r.key_id, "signature": r.signature,
            "new_chain": r.new_chain}  # fmt: skip
    return json.dumps(data, sort_keys=True).encode()


def decode_anchor(raw: bytes) -> Checkpoint | None:
    try:
        d = json.loads(raw)
        return Checkpoint(int(d["seq"]), str(d["head_hash"]), str(d["key_id"]), str(d["signature"]))
    except (ValueError, KeyError, TypeError):
        return None


def decode_entry(raw: bytes) -> tuple[Checkpoint | Rotation, Ed25519PublicKey | None] | None:
    """A record of the anchor topic: a checkpoint (with the public key it names, if any) or a
    rotation; None for anything else (anyone may write to a topic)."""
    try:
        d = json.loads(raw)
        if "rotation" in d:
            rotation = Rotation(
                str(d["key_id"]),
                str(d["rotation"]),
                str(d["signature"]),
                d.get("new_chain") is True,
            )
            return rotation, None
        public = d.get("public_key")
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)) if public else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    c = decode_anchor(raw)
    return (c, key) if c is not None and (key is None or signed_by(c, {c.key_id: key})) else None


@dataclass
class Anchors:
    """Where checkpoints are anchored: the topic (always) and a file (when configured)."""

    bootstrap: str
    file: Path | None = None
    topic: str = AUDIT_CHECKPOINTS.name
    timeout_s: float = 30.0
    public_key: str | None = None  # the signing key's, hex: written into each anchor
    _producer: AIOKafkaProducer | None = field(default=None, init=False, repr=False)

    async def publish(self, checkpoints: Iterable[Checkpoint]) -> int:
        """Anchors each checkpoint; returns once the broker acknowledged them all (and the
        file, if any, is on disk). One producer serves every publish until `close`."""
        todo = list(checkpoints)
        if not todo:
            return 0
        if self.file is not None:
            await asyncio.to_thread(
                _append_lines, self.file, [encode_anchor(c, self.public_key) for c in todo]
            )
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
            await self._producer.send(
                self.topic, encode_anchor(c, self.public_key), key=c.key_id.encode()
            )
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

    async def publish_rotation(self, r: Rotation) -> None:
        """Anchors a key rotation (the old key hands the chain to the new one)."""
        if self.file is not None:
            await asyncio.to_thread(_append_lines, self.file, [encode_rotation(r)])
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True
        )
        await asyncio.wait_for(producer.start(), self.timeout_s)
        try:
            await asyncio.wait_for(
                producer.send_and_wait(self.topic, encode_rotation(r), key=r.key_id.encode()),
                self.timeout_s,
            )
        finally:
            await producer.stop()

    async def trust(
        self, known: dict[str, Ed25519PublicKey], signer: str | None = None
    ) -> tuple[dict[str, Ed25519PublicKey], list[str]]:
        """The keys the topic vouches for, in its order (`chain.trust_chain`), and problems."""
        raw = await self._from_topic(raw=True)
        entries = [e for value in raw if (e := decode_entry(value)) is not None]
        return trust_chain(entries, known, signer)

    async def _from_topic(self, raw: bool = False) -> Any:
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
            values: list[bytes] = []
            async with asyncio.timeout(self.timeout_s):
                while await consumer.position(tp) < end:
                    for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                        if raw:
                            values += [r.value or b"" for r in records]
                        else:
                            out += [c for r in records if (c := decode_anchor(r.value or b""))]
            return values if raw else out
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
