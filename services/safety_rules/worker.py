"""The rules worker: consume, call the pure engine, produce, commit. No rule logic lives here.

Topics: trial.events in; safety.alerts, safety.alert-lifecycle (alert.withdrawn) and
trial.dead-letter out; `<app>-trial-signals` (one partition) carries each AE to the trial-level
stopping rule, which the owner of that partition folds.

Why not faust (issue 13, `tests/faults/`): with faust the worker lost alerts for good after a
SIGKILL in a two-worker group (offsets committed past events never folded into its tables) and
stalled silently on 11 of 12 partitions after restarts (faust-streaming #629 and #523 are open;
#216 and #502 are the same family). The guarantee here is stated and tested instead:

- **One transaction** holds the participants' state and each partition's next offset
  (`adapters/store.py`); Kafka's group offsets are committed after it, for lag monitoring only.
  A worker resumes from the database, so a crash anywhere replays from the last commit.
- **Alerts before state**: every alert, withdrawal, trial signal and dead letter of a batch is
  produced (acks=all, idempotent) and acknowledged before the transaction. A crash in between
  repeats them with the same ids and the same bytes (the engine is deterministic), which every
  consumer drops by event_id. An alert is never lost and never altered.
- **State written behind**: a batch whose produces were all acknowledged leaves its writes (its
  states as they stood then, its offsets) to one writer task and the next batch starts; the
  writer commits, in order, what has queued, several batches in one transaction when the
  database was slow. A commit that waits on the disk (an fsync, a checkpoint: 0.1-0.5 s seen
  under load) holds back no alert. At most `RULES_UNCOMMITTED_MAX` events wait; a failed
  commit drops every batch queued behind it (they were built on it) and the worker goes back
  to what the database holds, as after a crash. Whatever must see the database current (a
  rebalance, a produce that failed, a tick, shutdown) waits for the writer first.
- **Fencing**: a partition's writes are conditional on the epoch its owner claimed at assignment,
  so a worker that lost a partition cannot write it after the new owner started.
- **Liveness**: each owned partition with lag and no progress for `RULES_STALL_S` fails /readyz
  and raises a gauge; the worker seeks it again, and exits for its supervisor after twice that.

Time-based rules run at `RULES_TICK_SECONDS` over the participants the worker owns, under the
same lock as batches, with the same commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
)

from contracts import AlertRaised, AlertWithdrawn, InvalidEvent, encode, key_for
from contracts.dead_letters import accept, dead_letter
from contracts.topics import ALERT_LIFECYCLE, DEAD_LETTER, TRIAL_EVENTS, Topic
from services.safety_rules.adapters.store import TP, Commit, Fenced, RulesStore
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.engine import engine_failed, evaluate, evaluate_trial, tick
from services.safety_rules.domain.state import ParticipantState
from services.safety_rules.domain.trial import TrialSignal, TrialState
from services.safety_rules.metrics import RulesMetrics
from services.safety_rules.settings import RulesSettings
from services.supervise import backoff

log = logging.getLogger("safety_rules.worker")
CONSUMER = "safety_rules"
TICK_CHUNK = 1000  # participants read from the database at once by a tick


def _decoded(r: Any) -> Any:
    """The event a record holds, or the InvalidEvent saying why it holds none."""
    try:
        return accept(r.value, TRIAL_EVENTS)
    except InvalidEvent as e:
        return e


def internal_topics(settings: RulesSettings) -> tuple[Topic, ...]:
    """The worker's own topic, created before it subscribes: a group whose first assignment
    runs before a topic exists ignores that topic until the next rebalance."""
    return (
        Topic(
            settings.signals_topic,
            "AE signals for the stopping rule",
            "trial_id",
            (),
            1,
            {"retention.ms": "-1", "cleanup.policy": "delete"},
        ),
    )


# The longest wait between two tries of a failed batch. An alert waits for it once the broker or
# the database is back: at 30 s, the safety officer heard of a serious AE 34 s after a 10-minute
# outage ended (22 s of it here); a retry is a seek and a re-read, cheap enough every 5 s.
RETRY_CAP_S = 5.0

# what an idempotent producer does not recover from by itself: a new producer is made
PRODUCER_WEDGED = (OutOfOrderSequenceNumber, ProducerFenced, InvalidProducerEpoch)


class BatchFailed(Exception):
    """The batch could not be completed; nothing of it was committed."""


@dataclass
class Processed:
    """A batch whose produces Kafka acknowledged, waiting for its transaction: its writes as
    they stood at the end of the batch, and what to count once they are committed."""

    writes: Commit
    counted: list[tuple[list[tuple[str, Any]], float]]  # (what happened, fetch to acks in s)
    events: int  # records read: what a crash before the commit reads again

    def then(self, later: Processed) -> Processed:
        """This batch's writes followed by a later one's, as one transaction: the later
        offsets and states win."""
        w, v = self.writes, later.writes
        return Processed(
            Commit(
                offsets=w.offsets | v.offsets,
                participants=w.participants | v.participants,
                trials=w.trials | v.trials,
            ),
            self.counted + later.counted,
            self.events + later.events,
        )


@dataclass
class Owned:
    """A partition this worker claimed: the epoch that fences its writes, the next offset."""

    epoch: int
    next_offset: int | None  # None: nothing read yet, start at the beginning; else processed
    committed: int | None = None  # what the database holds (next_offset once written behind)
    progress_at: float = field(default_factory=time.monotonic)
    reseeked_at: int | None = None
    stalled_since: float | None = None
    group_offset: int | None = None  # what Kafka's group offsets say (kept up by _watch)


class RulesWorker(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        settings: RulesSettings,
        cfg: RulesConfig,
        metrics: RulesMetrics,
        store: RulesStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings, self.cfg, self.metrics, self.store, self.clock = (
            settings, cfg, metrics, store, clock,
        )  # fmt: skip
        self.events_topic = settings.events_topic
        self.signals_topic = settings.signals_topic
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.lock = asyncio.Lock()
        self.owned: dict[TP, Owned] = {}
        self.cache: dict[int, dict[str, ParticipantState]] = {}  # events partition -> states
        self.trials: dict[str, TrialState] = {}
        self.unclaimed: set[TP] = set()
        self.rebalancing = True
        # where the engine failed, and the error's class: dead-lettered and alerted on the retry
        self.poisoned: dict[tuple[str, int, int], str] = {}
        self.failures = 0  # consecutive failed steps (the database, the engine)
        self.failing: dict[TP, int] = {}  # partitions whose produce failed, and how many times
        self.mismatched: set[TP] = set()  # the database is ahead of the partition: refused
        self.exit_code = 0
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        # written behind (see the module's docstring): batches processed, not yet committed
        self.queued: list[Processed] = []
        self.writing: list[Processed] = []  # the batches of the transaction in flight
        self.unsaved: dict[str, int] = {}  # participant -> queued or writing batches changing it
        self.writer: asyncio.Task[None] | None = None
        self.write_failed: BaseException | None = None
        self.last_processed = time.monotonic()
        metrics.uncommitted.set_function(self._unwritten)
        metrics.age.set_function(lambda: round(time.monotonic() - self.last_processed, 1))

    # -- readiness ---------------------------------------------------------------------------

    def ready(self) -> bool:
        stalled = any(o.stalled_since is not None for o in self.owned.values())
        ok = (
            self.consumer is not None
            and not self.rebalancing
            and not self.unclaimed
            and not stalled
            and self.failures == 0
            and not self.failing
            and not self.mismatched
        )
        self.metrics.ready.set(1 if ok else 0)
        return ok

    # -- the rebalance listener: called by aiokafka's coordinator around each rebalance --------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # waits for the batch in flight and for the writer: what was processed is committed
        # (or fails, and the next owner reads it again) before the partitions go
        async with self.lock:
            self.rebalancing = True
            await self._written_or_dropped()
            for tp in revoked:
                self.owned.pop((tp.topic, tp.partition), None)
                self.failing.pop((tp.topic, tp.partition), None)
            self.unclaimed.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # No I/O here: aiokafka sends no heartbeat until this returns, and a callback longer
        # than the session timeout gets the worker expelled from the group it just joined.
        # The partitions wait, paused, for the main loop to claim them.
        self.unclaimed = {(tp.topic, tp.partition) for tp in assigned}
        if assigned:
            self._consumer().pause(*assigned)
        self.rebalancing = False

    async def _claim(self) -> None:
        """Claims the unclaimed partitions, loads their state, seeks each to its stored offset."""
        consumer = self._consumer()
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        wanted = self.unclaimed & assigned
        self.unclaimed &= assigned
        if not wanted:
            return
        claims = await self.store.claim(wanted, self.owner)
        ends = await consumer.end_offsets([TopicPartition(*tp) for tp in wanted])
        ahead = {
            tp for tp in wanted
            if (n := claims[tp].next_offset) is not None and n > ends[TopicPartition(*tp)]
        }  # fmt: skip
        for tp in sorted(ahead):
            # the database describes a longer log than this one (the topic was recreated, or
            # the database belongs to another cluster): reading on would skip events silently
            log.critical(
                "%s[%s]: the database has processed up to offset %s but the partition ends at "
                "%s; this partition stays paused (point RULES_DATABASE_URL at this cluster's "
                "database, or start a new one)",
                tp[0], tp[1], claims[tp].next_offset, ends[TopicPartition(*tp)],
            )  # fmt: skip
        self.mismatched |= ahead
        self.unclaimed -= ahead
        wanted -= ahead
        await self._load(wanted)
        at = await self._seek({tp: claims[tp].next_offset for tp in wanted})
        for tp in wanted:
            self.owned[tp] = Owned(claims[tp].epoch, at[tp], committed=at[tp])
        consumer.resume(*(TopicPartition(*tp) for tp in wanted))
        self.unclaimed -= wanted
        self._forget_unowned()
        log.info(
            "partitions claimed",
            extra={"partitions": sorted(f"{t}[{p}]" for t, p in wanted), "owner": self.owner},
        )

    # -- the main loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        s = self.settings
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.rules_app_id,
            group_instance_id=s.rules_instance_id,
            client_id=f"{s.rules_app_id}-{self.owner}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=int(s.rules_session_timeout_s * 1000),
            # the survivor learns of a rebalance at its next heartbeat: a second at most
            heartbeat_interval_ms=int(min(3.0, s.rules_session_timeout_s / 6) * 1000),
            # How long a rebalance waits for members to rejoin. aiokafka's default (the session
            # timeout) let a static member killed in its revoke callback outlast the join: it
            # was assigned partitions it would never take, and a second rebalance followed its
            # session's end (11.75 s; one in 18 kills). Longer than the session, a dead member
            # is always dropped by its session first: one rebalance (Java's default is 5 min).
            rebalance_timeout_ms=int(max(30.0, 3 * s.rules_session_timeout_s) * 1000),
            max_partition_fetch_bytes=2 * 1024 * 1024,
        )
        self.producer = self._make_producer()
        await self.store.migrate()
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([self.events_topic, self.signals_topic], listener=self)
        watcher = asyncio.create_task(self._watch(stop))
        next_tick = time.monotonic() + s.rules_tick_seconds
        try:
            while not stop.is_set():
                backoff = 0.0
                if self.write_failed is not None:
                    async with self.lock:
                        backoff = await self._retry(self._written)
                if self.unclaimed:
                    async with self.lock:
                        backoff = await self._retry(self._claim)
                fetched = await self.consumer.getmany(timeout_ms=200, max_records=s.rules_batch_max)
                async with self.lock:
                    if fetched and not backoff:
                        backoff = await self._retry(partial(self._process, fetched))
                    if time.monotonic() >= next_tick and not backoff:
                        backoff = await self._retry(self._tick)
                        next_tick = time.monotonic() + s.rules_tick_seconds
                if backoff:  # outside the lock: a rebalance need not wait for it
                    await asyncio.sleep(backoff)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            async with self.lock:
                await self._written_or_dropped()
            await self.consumer.stop()  # leaves the group: the partitions move at once
            await self.producer.stop()
        return self.exit_code

    async def _retry(self, step: Callable[[], Awaitable[None]]) -> float:
        """Runs a step; on failure resets what it touched and returns how long to back off
        (exponential, with jitter): progress stops, with a clear error, and nothing is skipped."""
        try:
            await step()
            self.failures = 0
            return 0.0
        except Fenced as e:
            log.warning("fenced: %s", e)
            self.metrics.fenced.inc()
            for tp in e.lost:
                self.owned.pop(tp, None)
                self.failing.pop(tp, None)
            await self._reset()
            return 0.0
        except Exception as e:
            self.failures += 1
            self.metrics.batch_failures.inc()
            delay = backoff(self.failures + 1, RETRY_CAP_S, 0.2)
            if isinstance(e, PRODUCER_WEDGED) or isinstance(e.__cause__, PRODUCER_WEDGED):
                with contextlib.suppress(Exception):
                    await self._new_producer()
            log.error(
                "batch failed, nothing committed; retrying in %.1fs: %s: %s",
                delay, type(e).__name__, e,
            )  # fmt: skip
            await self._reset()
            return delay

    async def _load(self, tps: set[TP]) -> None:
        """Forgets what is in memory of these partitions: each participant's state is read
        from the database when an event of theirs comes (it may have moved on while another
        worker owned them, or while a failed batch changed the copy in memory)."""
        for p in sorted(p for t, p in tps if t == self.events_topic):
            self.cache[p] = {}
        if (self.signals_topic, 0) in tps:
            self.trials = {
                k: TrialState.model_validate_json(v)
                for k, v in (await self.store.load_trials()).items()
            }

    def _forget_unowned(self) -> None:
        mine = {p for t, p in self.owned if t == self.events_topic}
        for p in set(self.cache) - mine:
            del self.cache[p]  # another worker owns it now; its state is theirs

    async def _reset(self) -> None:
        """Back to what the database holds for every owned partition: state and position.
        What is queued to be written is written first (each batch in it was acknowledged)."""
        await self._written_or_dropped()
        self._forget_unowned()
        try:
            stored = await self.store.offsets()
            await self._load(set(self.owned))
        except Exception:
            log.exception("could not read the stored state; every owned partition is re-claimed")
            self.unclaimed |= set(self.owned)
            self.owned.clear()
            self.failing.clear()
            self.cache.clear()
            return
        at = await self._seek({tp: stored.get(tp) for tp in self.owned})
        for tp, o in self.owned.items():
            o.next_offset = o.committed = at.get(tp, stored.get(tp))

    async def _seek(self, positions: dict[TP, int | None]) -> dict[TP, int]:
        """Seeks each assigned partition to its offset (None: its beginning, found in one
        request; seek_to_beginning awaits a fetcher round per call, long enough in a rebalance
        callback for the group to move on without this worker)."""
        consumer = self._consumer()
        assigned = {(t.topic, t.partition) for t in consumer.assignment()}
        positions = {tp: n for tp, n in positions.items() if tp in assigned}
        unknown = [TopicPartition(*tp) for tp, n in positions.items() if n is None]
        begins = await consumer.beginning_offsets(unknown) if unknown else {}
        out = {}
        for tp, n in positions.items():
            out[tp] = n if n is not None else begins[TopicPartition(*tp)]
            consumer.seek(TopicPartition(*tp), out[tp])
        return out

    async def _process(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        """One batch: evaluate every partition's records, wait for every produce, then queue
        the writes of the partitions whose produces all succeeded for the writer
        (`_write_behind`). A partition whose produce failed (a dead letter the broker refuses,
        say) writes nothing, goes back to its stored state and offset once the writer is done,
        and pauses for a backoff; the other partitions carry on."""
        await self._written(wait=self._unwritten() >= self.settings.rules_uncommitted_max)
        received = time.monotonic()  # the batch's events are in hand: processing starts
        reading = 0.0  # of it, reading states from the database
        sends: dict[TP, list[Awaitable[Any]]] = {}
        counted: dict[TP, list[tuple[str, Any]]] = {}
        dirty: dict[str, int] = {}
        trials_dirty: set[str] = set()
        offsets: dict[TP, tuple[int, int]] = {}
        read: dict[TP, int] = {}
        for tp, records in fetched.items():
            key = (tp.topic, tp.partition)
            owned = self.owned.get(key)
            if owned is None:
                continue  # fetched before a rebalance took it away
            if owned.next_offset is not None:
                records = [r for r in records if r.offset >= owned.next_offset]
                if not records:
                    continue
                if records[0].offset > owned.next_offset and owned.reseeked_at != owned.next_offset:
                    # not where the database says to resume: read from there again, once
                    # (a real gap, such as a transaction marker, is accepted the second time)
                    log.warning(
                        "fetched %s[%s] from %s, expected %s; seeking back",
                        tp.topic, tp.partition, records[0].offset, owned.next_offset,
                    )  # fmt: skip
                    owned.reseeked_at = owned.next_offset
                    self._consumer().seek(tp, owned.next_offset)
                    continue
            mine, seen = sends.setdefault(key, []), counted.setdefault(key, [])
            if tp.topic == self.events_topic:
                decoded = [(r, _decoded(r)) for r in records]
                started = time.monotonic()
                await self._recall(tp.partition, decoded)
                reading += time.monotonic() - started
                for r, event in decoded:
                    self._on_event(tp, r, event, mine, dirty, seen)
            else:
                for r in records:
                    self._on_signal(tp, r, mine, trials_dirty, seen)
            offsets[key] = (owned.epoch, records[-1].offset + 1)
            read[key] = len(records)
        if not offsets:
            return
        keys = list(offsets)
        evaluated = time.monotonic()
        results = await asyncio.gather(
            *(asyncio.gather(*sends[k]) for k in keys), return_exceptions=True
        )
        acknowledged = time.monotonic()
        failed = {k: r for k, r in zip(keys, results, strict=True) if isinstance(r, BaseException)}
        for k in failed:
            del offsets[k]
        # a write that failed meanwhile: this batch was built on it, and goes with it
        await self._written()
        self._write_behind(
            Processed(
                self._writes(
                    offsets,
                    {pid: p for pid, p in dirty.items() if (self.events_topic, p) in offsets},
                    trials_dirty if (self.signals_topic, 0) in offsets else set(),
                ),
                [(counted[key], acknowledged - received) for key in offsets],
                sum(read[key] for key in offsets),
            )
        )
        phases = self.metrics.batch_phase_seconds
        phases.labels("read").observe(reading)
        phases.labels("evaluate").observe(evaluated - received - reading)
        phases.labels("produce").observe(acknowledged - evaluated)
        for key, (_, next_offset) in offsets.items():
            self.owned[key].next_offset = next_offset
        self._evict()
        if failed:
            await self._written(wait=True)  # the database current before going back to it
            await self._back_off(failed)

    # -- written behind ----------------------------------------------------------------------

    def _unwritten(self) -> int:
        """Events processed whose state waits to be written (queued, or being written)."""
        return sum(b.events for b in self.queued) + sum(b.events for b in self.writing)

    def _write_behind(self, batch: Processed) -> None:
        """Queues a processed batch for the writer, starting it if it is idle."""
        if not batch.writes.offsets:
            return
        self.queued.append(batch)
        for pid in batch.writes.participants:
            self.unsaved[pid] = self.unsaved.get(pid, 0) + 1
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._writes_behind())

    async def _writes_behind(self) -> None:
        """The writer: commits what is queued, in order, all of it in one transaction, until
        nothing is. A failure is kept for the main loop, which goes back to the database."""
        while self.queued and self.write_failed is None:
            group, self.queued = self.queued, []
            self.writing = group
            batch = group[0]
            for later in group[1:]:
                batch = batch.then(later)
            started = time.monotonic()
            try:
                await self.store.commit(batch.writes)
            except Exception as e:
                self.write_failed = e
                self.queued.clear()  # built on what was not written
                self.writing = []
                self.unsaved.clear()
                return
            self.writing = []
            took = time.monotonic() - started
            for b in group:  # each batch waited for the transaction that wrote it
                self.metrics.batch_phase_seconds.labels("commit").observe(took)
                for pid in b.writes.participants:
                    if (n := self.unsaved.pop(pid, 0) - 1) > 0:
                        self.unsaved[pid] = n
            self._committed(batch)
            try:
                await self._commit_group_offsets(batch.writes.offsets)
            except Exception:  # for lag monitoring only: the database holds the position
                log.exception("group offset commit failed")

    def _committed(self, batch: Processed) -> None:
        """Progress, metrics and logs for writes now in the database."""
        now = time.monotonic()
        for key, (_, next_offset) in batch.writes.offsets.items():
            if (owned := self.owned.get(key)) is not None:
                owned.committed, owned.progress_at, owned.stalled_since = next_offset, now, None
            self.failing.pop(key, None)
        for counted, took in batch.counted:
            self._count(counted, took)
        self.last_processed = now

    async def _written(self, *, wait: bool = False) -> None:
        """Raises the writer's failure, if any (the caller goes back to the database); with
        `wait`, first waits until everything queued is committed."""
        if wait and self.writer is not None:
            await asyncio.shield(self.writer)
        if (e := self.write_failed) is not None:
            self.write_failed = None
            raise e

    async def _written_or_dropped(self) -> None:
        """Waits for the writer; a failure of its is logged, and what it held is dropped (it
        will be read again from Kafka by whoever resumes from the database)."""
        try:
            await self._written(wait=True)
        except Exception as e:
            log.error(
                "a write behind failed; resuming from the database: %s: %s", type(e).__name__, e
            )

    async def _recall(self, partition: int, decoded: list[tuple[Any, Any]]) -> None:
        """Reads from the database the state of this batch's participants not in memory."""
        states = self.cache[partition]
        missing = {
            e.participant_id or ""
            for _, e in decoded
            if not isinstance(e, InvalidEvent) and (e.participant_id or "") not in states
        }
        if missing:
            stored = await self.store.load_states(missing)
            for pid in missing:
                raw = stored.get(pid)
                states[pid] = ParticipantState() if raw is None else ParticipantState.from_json(raw)

    def _evict(self) -> None:
        """Keeps at most RULES_STATE_CACHE participants in memory, dropping the least recently
        used first, from each partition in turn; never one whose state is not yet written."""
        held = sum(len(states) for states in self.cache.values())
        excess = held - self.settings.rules_state_cache
        unsaved = self.unsaved
        scans = {p: (pid for pid in s if pid not in unsaved) for p, s in self.cache.items()}
        victims: list[tuple[int, str]] = []
        while len(victims) < excess and scans:
            for p, scan in list(scans.items()):
                if (pid := next(scan, None)) is None:
                    del scans[p]
                elif len(victims) < excess:
                    victims.append((p, pid))
        for p, pid in victims:
            del self.cache[p][pid]
        self.metrics.in_memory.set(held - len(victims))

    async def _back_off(self, failed: dict[TP, BaseException]) -> None:
        """The failed partitions: back to the database's state and offset, paused for an
        exponential backoff with jitter. Nothing of theirs was committed or counted."""
        consumer = self._consumer()
        await self._load(set(failed))
        await self._seek({k: self.owned[k].next_offset for k in failed})
        if any(isinstance(e, PRODUCER_WEDGED) for e in failed.values()):
            await self._new_producer()
        for key, error in failed.items():
            n = self.failing[key] = self.failing.get(key, 0) + 1
            delay = backoff(n + 1, RETRY_CAP_S, 0.2)
            self.metrics.batch_failures.inc()
            log.error(
                "%s[%s]: a produce failed, nothing committed; retrying in %.1fs: %s: %s",
                key[0], key[1], delay, type(error).__name__, error,
            )  # fmt: skip
            tp = TopicPartition(*key)
            consumer.pause(tp)
            asyncio.get_running_loop().call_later(delay, self._resume, tp)

    async def _new_producer(self) -> None:
        """A fresh producer (a new producer id) in place of one that answers every send with
        OutOfOrderSequenceNumber or is fenced (after a long outage, aiokafka's idempotent
        producer stays so: it wedged the worker until its watchdog exited it). What it had
        not delivered is produced again from the database's offsets; ids make repeats
        harmless downstream."""
        old, self.producer = self.producer, self._make_producer()
        log.error("the producer is wedged (sequence or epoch); starting a fresh one")
        self.metrics.producer_restarts.inc()
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), 10)
        await asyncio.wait_for(self.producer.start(), 30)

    def _make_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            request_timeout_ms=30000,
        )

    def _resume(self, tp: TopicPartition) -> None:
        if tp in self._consumer().assignment() and (tp.topic, tp.partition) in self.owned:
            self._consumer().resume(tp)

    def _writes(
        self, offsets: dict[TP, tuple[int, int]], dirty: dict[str, int], trials_dirty: set[str]
    ) -> Commit:
        """The states and offsets to write, as they stand now (once every produce of theirs
        was acknowledged)."""
        return Commit(
            offsets=offsets,
            participants={pid: (p, self.cache[p][pid].to_json()) for pid, p in dirty.items()},
            trials={k: self.trials[k].model_dump_json().encode() for k in trials_dirty},
        )

    async def _commit_group_offsets(self, offsets: dict[TP, tuple[int, int]]) -> None:
        """Kafka's own record of progress, for lag monitoring; the database is the truth."""
        assigned = {(t.topic, t.partition) for t in self._consumer().assignment()}
        mine = {TopicPartition(*k): n for k, (_, n) in offsets.items() if k in assigned}
        try:
            if mine:
                await self._consumer().commit(mine)
        except KafkaError as e:
            log.info("group offset commit skipped (%s); the database holds the position", e)
            return
        for tp, n in mine.items():
            if (o := self.owned.get((tp.topic, tp.partition))) is not None:
                o.group_offset = n

    def _send(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[Any]:
        async def send() -> Any:
            return await (await self._producer().send(topic, value, key=key))

        return send()

    def _dead_letter(self, tp: TopicPartition, r: Any, reason: str, sends: list[Any]) -> None:
        body = dead_letter(
            r.value, reason, consumer=CONSUMER, topic=tp.topic, partition=tp.partition,
            offset=r.offset,
        )  # fmt: skip
        sends.append(self._send(DEAD_LETTER.name, r.key, body))
        log.warning("dead-lettered %s[%s]@%s: %s", tp.topic, tp.partition, r.offset, reason)

    def _on_event(
        self,
        tp: TopicPartition,
        r: Any,
        event: Any,
        sends: list[Any],
        dirty: dict[str, int],
        counted: list[tuple[str, Any]],
    ) -> None:
        if isinstance(event, InvalidEvent):
            self._dead_letter(tp, r, str(event), sends)
            counted.append(("dead_letter", None))
            return
        where = (tp.topic, tp.partition, r.offset)
        if (error := self.poisoned.get(where)) is not None:
            # fail safe: the event is kept as a dead letter, and a person is told at once by a
            # critical alert (a missed alert is worse than an extra one)
            self._dead_letter(tp, r, "the rules engine failed on this event", sends)
            counted.append(("dead_letter", None))
            self._publish([engine_failed(event, error)], [], sends, counted)
            return
        states = self.cache[tp.partition]
        pid = event.participant_id or ""  # every clinical event names its participant
        state = states.pop(pid)  # read by _recall; put back last: the most recently used
        started = time.perf_counter()
        try:
            out = evaluate(state, event, self.cfg)
        except Exception as e:
            # the state may be half-folded: the batch is reset, and on its retry this one
            # event is dead-lettered instead (a bug must not stop the participants behind it)
            self.poisoned[where] = type(e).__name__
            log.exception("engine failed at %s[%s]@%s", tp.topic, tp.partition, r.offset)
            raise BatchFailed(f"engine error {type(e).__name__}") from e
        counted.append(("evaluate", time.perf_counter() - started))
        states[pid] = out.state
        if out.duplicate:
            counted.append(("duplicate", None))
            return
        dirty[pid] = tp.partition
        counted.append(("event", event.event_type))
        self._publish(out.alerts, out.withdrawn, sends, counted)
        for s in out.signals:
            sends.append(
                self._send(self.signals_topic, s.trial_id.encode(), s.model_dump_json().encode())
            )

    def _on_signal(
        self,
        tp: TopicPartition,
        r: Any,
        sends: list[Any],
        trials_dirty: set[str],
        counted: list[tuple[str, Any]],
    ) -> None:
        try:
            signal = TrialSignal.model_validate_json(r.value or b"")
        except ValueError as e:
            self._dead_letter(tp, r, f"not a trial signal: {type(e).__name__}", sends)
            counted.append(("dead_letter", None))
            return
        current = self.trials.get(signal.trial_id) or TrialState()
        out = evaluate_trial(current, signal, self.cfg)
        if out.changed:  # (a failed batch reloads the trial's state from the database)
            self.trials[signal.trial_id] = out.state
            trials_dirty.add(signal.trial_id)
        self._publish(out.alerts, [], sends, counted)

    def _publish(
        self,
        alerts: Sequence[AlertRaised],
        withdrawn: Sequence[AlertWithdrawn],
        sends: list[Any],
        counted: list[tuple[str, Any]],
    ) -> None:
        for a in alerts:
            sends.append(self._send(self.settings.alerts_topic, key_for(a), encode(a)))
            counted.append(("alert", a))
        for w in withdrawn:
            sends.append(self._send(ALERT_LIFECYCLE.name, key_for(w), encode(w)))
            counted.append(("withdrawn", w))

    def _count(self, counted: list[tuple[str, Any]], took: float | None = None) -> None:
        """Metrics and logs for a committed batch (a failed batch counts nothing); `took`: from
        the batch's fetch to its alerts acknowledged, when they went out (a tick's: None)."""
        m = self.metrics
        for kind, x in counted:
            if kind == "event":
                m.events.labels(x).inc()
            elif kind == "evaluate":
                m.evaluate_seconds.observe(x)
            elif kind == "duplicate":
                m.duplicates.inc()
            elif kind == "dead_letter":
                m.dead_letters.inc()
            elif kind == "withdrawn":
                m.withdrawn.labels(x.rule_id).inc()
            elif kind == "alert":
                m.alerts.labels(x.rule_id, x.severity.value).inc()
                if took is not None:  # processing time, never the age of the data
                    m.event_to_alert_seconds.observe(took)
                log.info(
                    "alert raised",
                    extra={"rule_id": x.rule_id, "severity": x.severity.value,
                           "alert_id": str(x.alert_id)},
                )  # fmt: skip

    async def _tick(self) -> None:
        """Time-based rules over every participant of the owned partitions, at the worker's
        clock: those in memory, then the others read from the database a chunk at a time
        (each chunk committed before the next is read, so memory stays bounded)."""
        await self._written(wait=True)  # the database current: a tick reads it, and commits
        now = self.clock()
        for (t, p), owned in list(self.owned.items()):
            if t != self.events_topic or owned.next_offset is None or p not in self.cache:
                continue
            offsets = {(t, p): (owned.epoch, owned.next_offset)}
            await self._tick_some(p, list(self.cache[p]), now, offsets)
            stored = await self.store.participant_ids(p)
            rest = [pid for pid in stored if pid not in self.cache[p]]
            for i in range(0, len(rest), TICK_CHUNK):
                chunk = rest[i : i + TICK_CHUNK]
                loaded = await self.store.load_states(chunk)
                for pid, raw in loaded.items():
                    self.cache[p].setdefault(pid, ParticipantState.from_json(raw))
                await self._tick_some(p, list(loaded), now, offsets)
                self._evict()

    async def _tick_some(
        self, p: int, pids: list[str], now: datetime, offsets: dict[TP, tuple[int, int]]
    ) -> None:
        sends: list[Any] = []
        dirty: dict[str, int] = {}
        counted: list[tuple[str, Any]] = []
        for pid in pids:
            state = self.cache[p][pid]
            first = state.last_tick is None
            out = tick(state, now, self.cfg)
            self.metrics.ticks.inc()
            if out.alerts or first:
                dirty[pid] = p
            self._publish(out.alerts, [], sends, counted)
        if dirty:
            await asyncio.gather(*sends)
            await self.store.commit(self._writes(offsets, dirty, set()))
            self._count(counted)

    # -- liveness ----------------------------------------------------------------------------

    async def _watch(self, stop: asyncio.Event) -> None:
        """Per partition: lag, and progress. A partition with lag that has not moved for
        RULES_STALL_S is stalled: /readyz fails, the gauge rises, the worker seeks it again;
        still stalled at twice that, the worker exits for its supervisor to restart it."""
        s = self.settings
        while not stop.is_set():
            await asyncio.sleep(min(5.0, s.rules_stall_s / 4))
            try:
                await self._check_progress(stop)
            except KafkaError as e:
                log.warning("could not read end offsets: %s", e)
            except Exception:
                log.exception("progress check failed")

    async def _check_progress(self, stop: asyncio.Event) -> None:
        consumer, s = self._consumer(), self.settings
        owned = dict(self.owned)
        if not owned:
            return
        ends = await consumer.end_offsets([TopicPartition(*tp) for tp in owned])
        lag_by_topic: dict[str, int] = {}
        stalled = 0
        now = time.monotonic()
        for tp, o in owned.items():
            end = ends.get(TopicPartition(*tp), 0)
            lag = max(0, end - (o.committed or 0))  # progress is what the database holds
            lag_by_topic[tp[0]] = lag_by_topic.get(tp[0], 0) + lag
            if lag == 0 or self.rebalancing:
                o.progress_at, o.stalled_since = now, None
                continue
            if now - o.progress_at < s.rules_stall_s:
                continue
            stalled += 1
            if o.stalled_since is None:
                o.stalled_since = now
                log.error(
                    "partition %s[%s] stalled: %s behind, no progress for %.0fs",
                    tp[0], tp[1], lag, now - o.progress_at,
                )  # fmt: skip
                if not self.lock.locked():  # no batch in flight: the fetch itself stopped
                    await self._seek({tp: o.next_offset})
            elif now - o.progress_at >= 2 * s.rules_stall_s and not self.exit_code:
                self._give_up(stop, tp)
        for topic, lag in lag_by_topic.items():
            self.metrics.lag.labels(topic).set(lag)
        self.metrics.stalled.set(stalled)
        # a group commit skipped in a rebalance is made good here, so lag seen from outside
        # (kafka-consumer-groups, Prometheus) reaches 0 when the work is done
        behind = {
            tp: (o.epoch, o.committed)
            for tp, o in owned.items()
            if o.committed is not None and o.group_offset != o.committed
        }
        if behind and not self.lock.locked():
            async with self.lock:
                await self._commit_group_offsets(behind)

    def _give_up(self, stop: asyncio.Event, tp: TP) -> None:
        """Still stalled after a seek: exit for the supervisor to restart the worker. What was
        not committed is rolled back and read again by the next owner; nothing is skipped."""
        log.critical("partition %s[%s] still stalled: exiting (70) for a restart", *tp)
        self.exit_code = 70
        stop.set()
        # a batch stuck in the database or the broker would hold the loop: do not wait for it
        asyncio.get_running_loop().call_later(self.settings.rules_stall_s, os._exit, 70)

    def _consumer(self) -> AIOKafkaConsumer:
        assert self.consumer is not None
        return self.consumer

    def _producer(self) -> AIOKafkaProducer:
        assert self.producer is not None
        return self.producer
