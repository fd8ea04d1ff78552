"""The hash chain and signed checkpoints (pure)."""

from __future__ import annotations

from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit.domain.chain import (
    GENESIS,
    Row,
    key_id,
    row_hash,
    segment_start,
    sign,
    verify,
    verify_segment,
)

KEY = Ed25519PrivateKey.generate()
TRUSTED = {key_id(KEY.public_key()): KEY.public_key()}


def chain(n: int, salt: str = "") -> list[Row]:
    rows, prev = [], GENESIS
    for seq in range(1, n + 1):
        canonical = f'{{"n":{seq}{salt}}}'
        h = row_hash(prev, seq, "trial.events", 0, seq - 1, f"id-{seq}", canonical)
        rows.append(Row(seq, "trial.events", 0, seq - 1, f"id-{seq}", canonical, prev, h))
        prev = h
    return rows


def test_an_untouched_chain_with_its_checkpoints_verifies() -> None:
    rows = chain(10)
    verdict = verify(rows, [sign(KEY, 5, rows[4].hash), sign(KEY, 10, rows[9].hash)], TRUSTED)
    assert verdict.ok and verdict.rows == 10 and verdict.checkpoints == 2


def test_an_altered_row_is_named() -> None:
    rows = chain(10)
    rows[6] = replace(rows[6], canonical='{"n":999}')
    verdict = verify(rows, [], TRUSTED)
    assert (verdict.ok, verdict.first_broken_seq) == (False, 7)
    assert verdict.reason == "content does not match its hash"


def test_a_recomputed_chain_fails_on_the_signed_checkpoint() -> None:
    rows = chain(10)
    signed = [sign(KEY, 10, rows[9].hash)]
    forged, prev = [], GENESIS
    for r in rows:  # rewrite row 3 and recompute every hash after it
        canonical = '{"n":"forged"}' if r.seq == 3 else r.canonical
        h = row_hash(prev, r.seq, r.topic, r.partition, r.offset, r.event_id, canonical)
        forged.append(replace(r, canonical=canonical, prev_hash=prev, hash=h))
        prev = h
    verdict = verify(forged, signed, TRUSTED)
    assert (verdict.ok, verdict.first_broken_seq) == (False, 10)
    assert "does not match the chain" in (verdict.reason or "")


def test_a_deleted_row_and_an_untrusted_signer_are_caught() -> None:
    rows = chain(5)
    assert verify(rows[:2] + rows[3:], [], TRUSTED).first_broken_seq == 3
    other = Ed25519PrivateKey.generate()
    verdict = verify(rows, [sign(other, 5, rows[4].hash)], TRUSTED)
    assert not verdict.ok and "untrusted key" in (verdict.reason or "")


def test_a_chain_with_rows_and_no_checkpoint_fails() -> None:
    rows = chain(3)
    verdict = verify(rows, [], TRUSTED)
    assert not verdict.ok and "no signed checkpoint" in (verdict.reason or "")
    assert verify([], [], TRUSTED).ok  # an empty chain with nothing anchored is consistent


def test_anchors_outside_the_database_catch_a_cut_an_emptied_log_and_lost_checkpoints() -> None:
    rows = chain(6)
    checkpoints = [sign(KEY, 3, rows[2].hash), sign(KEY, 6, rows[5].hash)]
    anchored = list(checkpoints)
    ok = verify(rows, checkpoints, TRUSTED, anchored)
    assert ok.ok and ok.anchored_seq == 6 and ok.unsigned_tail == 0
    cut = verify(rows[:4], checkpoints[:1], TRUSTED, anchored)  # tail and its checkpoint deleted
    assert (cut.ok, cut.first_broken_seq) == (False, 6) and "rows deleted" in (cut.reason or "")
    empty = verify([], [], TRUSTED, anchored)
    assert not empty.ok and "ends at row 0" in (empty.reason or "")
    lost = verify(rows, checkpoints[1:], TRUSTED, anchored)  # a checkpoint deleted
    assert (lost.ok, lost.first_broken_seq) == (False, 3)
    # a rewritten chain, re-signed by nobody: its own checkpoints cannot match the anchors
    rewritten = chain(6, salt="forged")
    forged = verify(rewritten, [], TRUSTED, anchored)
    assert not forged.ok
    # rows appended after the newest checkpoint are reported, not failed
    tail = verify(rows, checkpoints[:1], TRUSTED, anchored[:1])
    assert tail.ok and tail.unsigned_tail == 3


def _rehashed(rows: list[Row], start: int) -> list[Row]:
    """What someone with the database but not the key does: edit row `start`, recompute after."""
    out, prev = list(rows[: start - 1]), rows[start - 2].hash if start > 1 else GENESIS
    for r in rows[start - 1 :]:
        canonical = '{"n":-1}' if r.seq == start else r.canonical
        h = row_hash(prev, r.seq, r.topic, r.partition, r.offset, r.event_id, canonical)
        out.append(replace(r, canonical=canonical, prev_hash=prev, hash=h))
        prev = h
    return out


def test_the_newest_segment_is_verified_from_the_newest_anchored_checkpoint() -> None:
    rows = chain(30)
    checkpoints = [sign(KEY, s, rows[s - 1].hash) for s in (10, 20, 30)]
    anchored = checkpoints[:2]  # 30 is not anchored yet
    start = segment_start(checkpoints, anchored)
    assert start == 20  # the newest anchored one below the newest
    assert segment_start(checkpoints[:1], anchored[:1]) is None  # only the newest: whole chain
    segment = rows[start - 1 :]
    verdict = verify_segment(segment, checkpoints, TRUSTED, anchored, start)
    assert verdict.ok and verdict.rows == 11 and verdict.checkpoints == 2

    edited = list(segment)
    edited[5] = replace(edited[5], canonical='{"n":999}')  # row 25
    v = verify_segment(edited, checkpoints, TRUSTED, anchored, start)
    assert (v.ok, v.first_broken_seq, v.reason) == (False, 25, "content does not match its hash")

    # rewritten from row 20 on and its checkpoints re-signed by another key: the anchored hash
    # of row 20 (outside the database) no longer matches
    other = Ed25519PrivateKey.generate()
    forged = _rehashed(rows, 20)
    forged_checkpoints = [checkpoints[0]] + [sign(other, s, forged[s - 1].hash) for s in (20, 30)]
    v = verify_segment(forged[19:], forged_checkpoints, TRUSTED, anchored, 20)
    assert (v.ok, v.first_broken_seq) == (False, 20)

    # the checkpoint of the segment's start deleted from the database
    v = verify_segment(segment, [checkpoints[0], checkpoints[2]], TRUSTED, anchored, start)
    assert (v.ok, v.first_broken_seq) == (False, 20)

    # an edit before the segment is the whole verification's to find (it runs daily)
    early = list(rows)
    early[3] = replace(early[3], canonical='{"n":999}')
    assert verify_segment(early[start - 1 :], checkpoints, TRUSTED, anchored, start).ok
    assert not verify(early, checkpoints, TRUSTED, anchored).ok
