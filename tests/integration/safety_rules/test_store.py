"""The worker's store on SQLite and PostgreSQL: claims fence, commits are all or nothing, and
groups sharing a database never meet."""

from __future__ import annotations

import uuid

import pytest

from services.safety_rules.adapters.store import Commit, Fenced, RulesStore


async def test_a_claim_fences_the_previous_owner_and_a_refused_commit_writes_nothing(
    database_url: str,
) -> None:
    app = f"g-{uuid.uuid4().hex[:6]}"
    a, b, other = RulesStore(database_url, app), RulesStore(database_url, app), None
    try:
        await a.migrate()
        await b.migrate()  # a second worker migrating the same database changes nothing
        tp = ("trial.events", 3)
        mine = (await a.claim([tp], "a"))[tp]
        assert mine.next_offset is None  # never read: start at the beginning
        await a.commit(Commit({tp: (mine.epoch, 10)}, {"DN-001": (3, b"s1")}, {}))
        theirs = (await b.claim([tp], "b"))[tp]
        assert (theirs.epoch, theirs.next_offset) == (mine.epoch + 1, 10)
        with pytest.raises(Fenced) as refused:  # a worker that lost the partition
            await a.commit(Commit({tp: (mine.epoch, 20)}, {"DN-001": (3, b"stale")}, {"T": b"x"}))
        assert refused.value.lost == [tp]
        assert await b.offsets() == {tp: 10}
        assert await b.load_states(["DN-001", "DN-404"]) == {"DN-001": b"s1"}
        assert await b.participant_ids(3) == ["DN-001"] and await b.participant_ids(4) == []
        assert await b.load_trials() == {}
        await b.commit(Commit({tp: (theirs.epoch, 20)}, {"DN-001": (3, b"s2")}, {"T": b"t"}))
        assert (await b.load_states(["DN-001"]), await b.load_trials()) == (
            {"DN-001": b"s2"},
            {"T": b"t"},
        )
        # another group in the same database sees none of it and fences none of it
        other = RulesStore(database_url, f"{app}-other")
        assert await other.offsets() == {}
        assert await other.load_states(["DN-001"]) == {}
        assert await other.participant_ids(3) == []
        await other.claim([tp], "c")
        await b.commit(Commit({tp: (theirs.epoch, 21)}, {}, {}))
    finally:
        for s in (a, b, other):
            if s is not None:
                await s.close()


async def test_a_batch_with_one_lost_partition_writes_nothing_and_names_that_one(
    database_url: str,
) -> None:
    app = f"g-{uuid.uuid4().hex[:6]}"
    a, b = RulesStore(database_url, app), RulesStore(database_url, app)
    try:
        await a.migrate()
        kept, lost = ("trial.events", 1), ("trial.events", 2)
        mine = await a.claim([kept, lost], "a")
        await b.claim([lost], "b")  # the other worker took partition 2 since
        batch = {kept: (mine[kept].epoch, 7), lost: (mine[lost].epoch, 9)}
        with pytest.raises(Fenced) as refused:
            await a.commit(Commit(batch, {"DN-001": (1, b"s")}, {}))
        assert refused.value.lost == [lost]
        assert await a.offsets() == {}  # partition 1 did not move either: all or nothing
        assert await a.load_states(["DN-001"]) == {}
        await a.commit(Commit({kept: (mine[kept].epoch, 7)}, {"DN-001": (1, b"s")}, {}))
        assert await a.offsets() == {kept: 7}
    finally:
        await a.close()
        await b.close()
