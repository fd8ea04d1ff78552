"""The hash chain and its signed checkpoints. Pure: rows in, hashes and verdicts out.

Each row's hash covers the previous row's hash, its position (seq, topic, partition, offset),
its event_id and its canonical JSON, so changing, removing or reordering any row breaks every
hash after it. A chain alone can be recomputed by whoever rewrites it, so at intervals the head
hash is signed with an Ed25519 key kept outside the database; verification checks both.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64


@dataclass(frozen=True)
class Row:
    seq: int
    topic: str
    partition: int
    offset: int
    event_id: str
    canonical: str
    prev_hash: str
    hash: str
    # The row's queryable columns as stored; each must say what the hashed JSON says.
    columns: dict[str, str | None] = field(default_factory=dict)


# Columns kept beside the canonical JSON for queries and exports (not hashed themselves).
INDEXED = (
    "event_type",
    "participant_id",
    "occurred_at",
    "recorded_at",
    "recorded_by",
    "reason",
    "rule_id",
    "severity",
)


def normal(value: Any) -> str | None:
    """A column value in one comparable form: datetimes as UTC ISO 8601."""
    if value is None:
        return None
    if isinstance(value, datetime):
        at = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return at.isoformat()
    return str(value)


def indexed(canonical: str) -> dict[str, str | None]:
    """What the queryable columns must hold, read from the hashed JSON."""
    data = json.loads(canonical)
    out: dict[str, str | None] = {}
    for name in INDEXED:
        value = data.get(name)
        if name in ("occurred_at", "recorded_at") and value is not None:
            value = datetime.fromisoformat(value)
        out[name] = normal(value)
    return out


@dataclass(frozen=True)
class Checkpoint:
    seq: int  # the last row it covers
    head_hash: str
    key_id: str
    signature: str  # hex


def row_hash(
    prev_hash: str, seq: int, topic: str, partition: int, offset: int, event_id: str, canonical: str
) -> str:
    material = f"{prev_hash}|{seq}|{topic}|{partition}|{offset}|{event_id}|{canonical}"
    return hashlib.sha256(material.encode()).hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _payload(seq: int, head_hash: str) -> bytes:
    return f"safety-monitor-audit|{seq}|{head_hash}".encode()


def sign(private: Ed25519PrivateKey, seq: int, head_hash: str) -> Checkpoint:
    signature = private.sign(_payload(seq, head_hash)).hex()
    return Checkpoint(seq, head_hash, key_id(private.public_key()), signature)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int
    checkpoints: int
    first_broken_seq: int | None = None
    reason: str | None = None
    conflicts: int = 0  # messages that reused an event_id with other content
    anchored_seq: int | None = None  # the newest checkpoint anchored outside the database
    unsigned_tail: int = 0  # rows after the newest checkpoint (signed when the stream idles)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "checkpoints_verified": self.checkpoints,
            "first_broken_seq": self.first_broken_seq,
            "reason": self.reason,
            "conflicts": self.conflicts,
            "anchored_seq": self.anchored_seq,
            "unsigned_tail": self.unsigned_tail,
        }


@dataclass(frozen=True)
class Rotation:
    """A key handing on: the old key (`key_id`) signs the new public key, for the same chain
    (a key change) or, `new_chain`, for a chain projected afresh into a new database (the old
    key's anchors describe the old one). Kept on the anchor topic in order; a key no rotation
    introduces signs nothing trusted."""

    key_id: str  # the old key's
    to_public: str  # the new key's raw public key, hex
    signature: str
    new_chain: bool = False

    @property
    def to_key_id(self) -> str:
        return key_id(Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.to_public)))


def _rotation_payload(to_public: str, new_chain: bool) -> bytes:
    kind = "new-chain" if new_chain else "same-chain"
    return f"safety-monitor-audit-rotation|{to_public}|{kind}".encode()


def rotate(old: Ed25519PrivateKey, new: Ed25519PublicKey, new_chain: bool = False) -> Rotation:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    to_public = new.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    signature = old.sign(_rotation_payload(to_public, new_chain)).hex()
    return Rotation(key_id(old.public_key()), to_public, signature, new_chain)


def trust_chain(
    anchored: Iterable[tuple[Checkpoint | Rotation, Ed25519PublicKey | None]],
    known: dict[str, Ed25519PublicKey],
    signer: str | None = None,
) -> tuple[dict[str, Ed25519PublicKey], list[str]]:
    """The keys the anchor topic vouches for the chain `signer` signs, walked in the topic's
    order, and what does not hold.

    The first key to anchor a checkpoint is pinned (its public key as the anchor gave it, or
    from `known` for an anchor made before anchors carried it); a later key is trusted only
    from a rotation a trusted key signed, for its chain or for a new one. A key that anchors
    checkpoints without one, or a signing key (`signer`) no chain was handed to, is a problem:
    whoever replaced the key can re-sign a rewritten trail, but not the topic's past. Returns
    the keys of `signer`'s chain (all of them, without `signer`)."""
    chains: list[dict[str, Ed25519PublicKey]] = []
    problems: list[str] = []

    def chain_of(kid: str) -> dict[str, Ed25519PublicKey] | None:
        return next((c for c in chains if kid in c), None)

    for entry, public in anchored:
        if isinstance(entry, Rotation):
            old_chain = chain_of(entry.key_id)
            try:
                if old_chain is None:
                    raise InvalidSignature
                old_chain[entry.key_id].verify(
                    bytes.fromhex(entry.signature),
                    _rotation_payload(entry.to_public, entry.new_chain),
                )
                new = Ed25519PublicKey.from_public_bytes(bytes.fromhex(entry.to_public))
            except (InvalidSignature, ValueError):
                problems.append(f"a rotation to {entry.to_public[:16]}... not signed by a key "
                                "the chain trusts")  # fmt: skip
                continue
            if entry.new_chain:
                chains.append({key_id(new): new})
            else:
                old_chain[key_id(new)] = new
            continue
        if not chains:
            pinned = public or known.get(entry.key_id)
            if pinned is None or key_id(pinned) != entry.key_id:
                problems.append(f"the chain's first key {entry.key_id} is not a known key")
                return {}, problems
            chains.append({entry.key_id: pinned})
        elif chain_of(entry.key_id) is None:
            problems.append(f"key {entry.key_id} signs anchored checkpoints, but no rotation "
                            "signed by the chain's key introduces it")  # fmt: skip
    if not chains:
        return {}, problems
    if signer is None:
        return {k: v for c in chains for k, v in c.items()}, problems
    mine = chain_of(signer)
    if mine is None:
        problems.append(f"the signing key {signer} is not the chain's key: no rotation signed by "
                        f"the pinned key {next(iter(chains[0]))} introduces it")  # fmt: skip
        return {}, problems
    return dict(mine), problems


def signed_by(c: Checkpoint, trusted: dict[str, Ed25519PublicKey]) -> bool:
    public = trusted.get(c.key_id)
    if public is None:
        return False
    try:
        public.verify(bytes.fromhex(c.signature), _payload(c.seq, c.head_hash))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(
    rows: Iterable[Row],
    checkpoints: Iterable[Checkpoint],
    trusted: dict[str, Ed25519PublicKey],
    anchored: list[Checkpoint] | None = None,
) -> Verdict:
    """Recomputes the chain in seq order and checks each checkpoint's signature with a trusted
    key; names the first row that does not hold. A chain with rows must have a checkpoint.

    With `anchored` (checkpoints kept outside the database, signatures already checked), every
    anchored checkpoint must be in the database and sign the row it names: a rewritten, cut or
    emptied log, or deleted checkpoints, fail even when the database is consistent with itself."""
    checkpoints = list(checkpoints)
    verdict = _chain(rows, checkpoints, trusted)
    if not verdict.ok:
        return verdict
    newest = max((c.seq for c in checkpoints), default=0)
    verdict = replace(verdict, unsigned_tail=verdict.rows - newest)
    if verdict.rows and not checkpoints:
        return replace(
            verdict, ok=False, first_broken_seq=1,
            reason="no signed checkpoint: nothing outside the database vouches for this chain",
        )  # fmt: skip
    if anchored is None:
        return verdict
    in_db = {(c.seq, c.head_hash) for c in checkpoints}
    verdict = replace(verdict, anchored_seq=max((c.seq for c in anchored), default=0))
    for a in anchored:
        if (a.seq, a.head_hash) in in_db:
            continue
        if a.seq > verdict.rows:
            why = (
                f"a checkpoint anchored outside the database signs row {a.seq}, but the log "
                f"ends at row {verdict.rows} (rows deleted)"
            )
        elif not any(c.seq == a.seq for c in checkpoints):
            why = f"the checkpoint of row {a.seq} is anchored outside the database but missing"
        else:
            why = f"row {a.seq} differs from the checkpoint anchored outside the database"
        return replace(verdict, ok=False, first_broken_seq=a.seq, reason=why)
    return verdict


def segment_start(checkpoints: list[Checkpoint], anchored: list[Checkpoint]) -> int | None:
    """Where a verification of the newest segment starts: the newest checkpoint that is also
    anchored outside the database and is not the newest one (so the segment holds a signed
    checkpoint after its start). None: there is no such place; verify the whole chain."""
    newest = max((c.seq for c in checkpoints), default=0)
    outside = {(a.seq, a.head_hash) for a in anchored}
    starts = [c.seq for c in checkpoints if (c.seq, c.head_hash) in outside and c.seq < newest]
    return max(starts, default=None)


def verify_segment(
    rows: Iterable[Row],
    checkpoints: Iterable[Checkpoint],
    trusted: dict[str, Ed25519PublicKey],
    anchored: list[Checkpoint],
    start: int,
) -> Verdict:
    """The chain from row `start` on, `start` being a checkpoint anchored outside the database
    (`segment_start`): that row must match its signed, anchored hash, and every row after it is
    recomputed as `verify` does; the anchored checkpoints from `start` on must be in the
    database. What lies before `start` is vouched for by the anchor (and by the whole
    verification run less often)."""
    rows = iter(rows)
    first = next(rows, None)
    later = [c for c in checkpoints if c.seq >= start]
    if first is None or first.seq != start:
        return Verdict(False, 0, 0, start, f"row {start}, where the segment starts, is missing")
    if not any(c.seq == start for c in later) or not any(
        (a.seq, a.head_hash) == (start, first.hash) for a in anchored
    ):
        return Verdict(False, 1, 0, start, f"row {start} differs from its anchored checkpoint")
    verdict = _chain(itertools.chain([first], rows), later, trusted, first.prev_hash, start)
    if not verdict.ok:
        return verdict
    verdict = replace(verdict, anchored_seq=max((a.seq for a in anchored), default=0))
    in_db = {(c.seq, c.head_hash) for c in later}
    for a in anchored:
        if a.seq >= start and (a.seq, a.head_hash) not in in_db:
            return replace(
                verdict, ok=False, first_broken_seq=a.seq,
                reason=f"the checkpoint of row {a.seq} is anchored outside the database but "
                "missing or different in it",
            )  # fmt: skip
    return verdict


def _chain(
    rows: Iterable[Row],
    checkpoints: list[Checkpoint],
    trusted: dict[str, Ed25519PublicKey],
    prev: str = GENESIS,
    first_seq: int = 1,
) -> Verdict:
    by_seq = {c.seq: c for c in checkpoints}
    expected_seq, count, verified = first_seq, 0, 0
    for row in rows:
        count += 1
        if row.seq != expected_seq:
            return Verdict(
                False,
                count,
                verified,
                expected_seq,
                f"row {expected_seq} is missing (next is {row.seq})",
            )
        if row.prev_hash != prev:
            return Verdict(
                False, count, verified, row.seq, "prev_hash does not match the row before"
            )
        recomputed = row_hash(
            prev, row.seq, row.topic, row.partition, row.offset, row.event_id, row.canonical
        )
        if recomputed != row.hash:
            return Verdict(False, count, verified, row.seq, "content does not match its hash")
        if row.columns:
            expected = indexed(row.canonical)
            wrong = [k for k, v in row.columns.items() if expected.get(k) != v]
            if wrong:
                return Verdict(
                    False,
                    count,
                    verified,
                    row.seq,
                    f"column {', '.join(wrong)} does not match the hashed event",
                )
        checkpoint = by_seq.pop(row.seq, None)
        if checkpoint is not None:
            why = _check(checkpoint, row.hash, trusted)
            if why:
                return Verdict(False, count, verified, row.seq, why)
            verified += 1
        prev, expected_seq = row.hash, expected_seq + 1
    if by_seq:
        seq = min(by_seq)
        return Verdict(
            False, count, verified, seq, f"a checkpoint signs row {seq}, which is missing"
        )
    return Verdict(True, count, verified)


def _check(c: Checkpoint, head: str, trusted: dict[str, Ed25519PublicKey]) -> str | None:
    if c.head_hash != head:
        return "a signed checkpoint does not match the chain here"
    if c.key_id not in trusted:
        return f"checkpoint signed by untrusted key {c.key_id}"
    if not signed_by(c, trusted):
        return "checkpoint signature is invalid"
    return None
