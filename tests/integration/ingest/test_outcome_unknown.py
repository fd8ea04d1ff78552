"""A write's outcome is unknown until it is known: the broker paused (SIGSTOP) or stopped
mid-batch, every non-2xx retried. Each event is on the topic exactly once, with the bytes of its
first stamping; other content under an id whose write is unknown is a conflict (409), never a
second version. A broker of its own (the suite's shared one is never paused)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from contracts import decode
from deploy.kafka.launcher import KafkaLauncher
from tests.conftest import launcher_in
from tests.integration.ingest.conftest import Api, make_api
from tests.integration.ingest.test_api import enrolment, lab
from tests.integration.safety_rules.test_worker import unique

JSON = {"content-type": "application/json"}


async def on_topic(bootstrap: str) -> dict[str, list[bytes]]:
    """Every trial.events message of the broker, by event_id."""
    consumer = AIOKafkaConsumer(
        "trial.events", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    out: dict[str, list[bytes]] = {}
    try:
        while batch := await consumer.getmany(timeout_ms=2000):
            for records in batch.values():
                for r in records:
                    out.setdefault(str(decode(r.value).event_id), []).append(r.value)
    finally:
        await consumer.stop()
    return out


async def post(api: Api, body: list[dict[str, Any]]) -> Any:
    return await api.client.post(
        "/v1/events", content=json.dumps(body), headers=api.h(api.site_a, **JSON)
    )


@dataclass
class Private:
    """A broker of the test's own (it is paused and stopped), ingest on it, one enrolled
    participant, and the broker's process id."""

    launcher: KafkaLauncher
    api: Api
    pid: str
    broker: int


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[Private]:
    launcher = launcher_in(tmp_path / "k")
    await asyncio.to_thread(launcher.up)
    api = await make_api(launcher.bootstrap, tmp_path / "ingest.db")
    try:
        pid = unique("UNK")
        assert (await post(api, [enrolment(pid)])).status_code == 201
        broker = launcher.status().pid
        assert broker is not None
        yield Private(launcher, api, pid, broker)
    finally:
        await api.client.aclose()
        await api.parts.log.close()
        await api.parts.store.close()
        await asyncio.to_thread(launcher.down, purge=True)


async def test_a_paused_then_stopped_broker_stores_each_retried_event_once_with_its_first_bytes(
    private: Private,
) -> None:
    launcher, api, pid, broker = private.launcher, private.api, private.pid, private.broker

    # paused: the batch waits in the broker's socket, then lands when it resumes
    paused = [lab(pid, value=100 + n) for n in range(5)]
    os.kill(broker, signal.SIGSTOP)
    try:
        r = await post(api, paused)
    finally:
        os.kill(broker, signal.SIGCONT)
    assert r.status_code == 503, r.text
    assert "outcome of what was not acknowledged is unknown" in r.json()["detail"]
    # the same ids with other content: refused, not a second version
    changed = [{**e, "value": 150} for e in paused]
    assert (await post(api, changed)).status_code == 409
    # the same request again: answered from the first attempt
    again = await post(api, paused)
    assert again.status_code in (200, 201), again.text

    # stopped: nothing lands; the retry sends the first attempt's bytes
    stopped = [lab(pid, value=110 + n) for n in range(5)]
    await asyncio.to_thread(launcher.down)
    r = await post(api, stopped)
    assert r.status_code == 503, r.text
    await asyncio.to_thread(launcher.up)
    assert (await post(api, [{**stopped[0], "value": 160}])).status_code == 409
    for _ in range(10):  # a client retrying every non-2xx
        r = await post(api, stopped)
        if r.status_code in (200, 201):
            break
        await asyncio.sleep(1)
    assert r.status_code in (200, 201), r.text

    topic = await on_topic(launcher.bootstrap)
    ids = [e["event_id"] for e in paused + stopped]
    copies = Counter({eid: len(topic.get(eid, [])) for eid in ids})
    assert set(copies.values()) == {1}, copies  # each exactly once
    for e in paused + stopped:  # the first content, not the refused one
        (raw,) = topic[e["event_id"]]
        assert decode(raw).original_value == e["value"]  # type: ignore[union-attr]
    assert (await api.parts.store.counts())["accepted_events"] == 11
    assert await api.parts.store.unknown() == {}


async def test_unknown_writes_that_landed_are_recorded_by_the_reconciler_without_a_retry(
    private: Private,
) -> None:
    api, pid, broker = private.api, private.pid, private.broker
    body = [lab(pid, value=100 + n) for n in range(3)]
    os.kill(broker, signal.SIGSTOP)
    try:
        assert (await post(api, body)).status_code == 503
    finally:
        os.kill(broker, signal.SIGCONT)
    assert len(await api.parts.store.unknown()) == 3
    assert await api.parts.ingest.reconcile() == 0  # all three had landed
    assert (await api.parts.store.counts())["accepted_events"] == 4
    again = await post(api, body)
    assert again.status_code == 200
    assert [x["outcome"] for x in again.json()["results"]] == ["duplicate"] * 3
