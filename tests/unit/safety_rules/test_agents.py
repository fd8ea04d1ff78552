"""The faust agents without a broker (agent.test_context, memory store): thin adapters that
decode, call the engine and produce. Outgoing topics get a fake `send` that records."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from contracts import AlertRaised, decode, encode
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.metrics import RulesMetrics
from services.safety_rules.settings import RulesSettings
from services.safety_rules.worker import RulesApp, build_app
from tests.unit.safety_rules.builders import a_participant


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def sender(self, topic: str) -> Any:
        async def send(key: bytes, value: bytes, **_: Any) -> asyncio.Future[None]:
            self.sent.append((topic, key, value))
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        return send

    def alerts(self) -> list[AlertRaised]:
        return [decode(v) for t, _, v in self.sent if t == "alerts"]  # type: ignore[misc]


@pytest.fixture
def rules() -> tuple[RulesApp, Outbox, RulesMetrics]:
    metrics, outbox = RulesMetrics(), Outbox()
    app = build_app(RulesSettings(rules_web_enabled=False), RulesConfig(), metrics)
    for name, topic in app.topics.items():
        topic.send = outbox.sender(name)  # type: ignore[method-assign]
    return app, outbox, metrics


async def test_an_event_agent_produces_the_alerts_the_engine_raises(
    rules: tuple[RulesApp, Outbox, RulesMetrics],
) -> None:
    app, outbox, metrics = rules
    events = a_participant().enrolled().dosed(cells_per_kg=2e6).events()
    async with app.agents["on_event"].test_context() as agent:
        for e in [*events, events[1]]:  # the dose twice: a redelivery
            await agent.put(key=b"DN-001", value=encode(e))
    assert [a.rule_id for a in outbox.alerts()] == ["dose.deviation"]
    assert metrics.duplicates._value.get() == 1
    assert app.tables["participants"].get(b"DN-001") is not None


async def test_a_malformed_message_is_dead_lettered_and_the_agent_carries_on(
    rules: tuple[RulesApp, Outbox, RulesMetrics],
) -> None:
    app, outbox, metrics = rules
    dose = a_participant().enrolled().dosed(cells_per_kg=0.5e6).events()
    async with app.agents["on_event"].test_context() as agent:
        await agent.put(key=b"DN-001", value=b'{"event_type": "lab.resulted", "value": 95}')
        for e in dose:
            await agent.put(key=b"DN-001", value=encode(e))
    (letter,) = [json.loads(v) for t, _, v in outbox.sent if t == "dead_letter"]
    assert "event_id: is required" in letter["reason"]
    assert letter["original"] == '{"event_type": "lab.resulted", "value": 95}'
    assert [a.rule_id for a in outbox.alerts()] == ["dose.deviation"]
    assert metrics.dead_letters._value.get() == 1


async def test_an_ae_sends_a_trial_signal_that_the_trial_agent_folds(
    rules: tuple[RulesApp, Outbox, RulesMetrics],
) -> None:
    app, outbox, _ = rules
    for pid in ("DN-001", "DN-002"):
        events = (
            a_participant(pid)
            .enrolled()
            .ae(serious=True, ctcae_grade=3, relatedness="definite")
            .events()
        )
        async with app.agents["on_event"].test_context() as agent:
            for e in events:
                await agent.put(key=pid.encode(), value=encode(e))
    signals = [v for t, _, v in outbox.sent if t == "signals"]
    assert len(signals) == 2
    async with app.agents["on_signal"].test_context() as agent:
        for s in signals:
            await agent.put(key=b"UCMSC-DN-01", value=s)
    assert "trial.stopping_rule" in [a.rule_id for a in outbox.alerts()]
