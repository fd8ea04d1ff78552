"""The notifier's doors as a security reviewer tries them, through its HTTP app on the real
broker: one acknowledgement per alert however many arrive at once, sessions that die with their
token, sign-in throttled per address and only from the page's own origin."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from contracts import decode, encode, key_for
from contracts.topics import SAFETY_ALERTS
from services.notifier.bootstrap import NotifierParts, build
from tests.conftest import free_port
from tests.integration.kafka_io import produce_raw, wait_for
from tests.integration.notifier.test_notifier import settings_for, unique_alert, unique_rule

PEOPLE = [f"person-{n}" for n in range(8)]


def parts_for(kafka: str, tmp_path: Path, rule: str, tokens: str) -> NotifierParts:
    settings = settings_for(kafka, tmp_path, free_port(), "http://127.0.0.1:9/none", rule)
    settings.notifier_api_tokens = tokens  # type: ignore[assignment]
    return build(settings.model_validate(settings.model_dump()))


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def client(
    parts: NotifierParts, address: str = "127.0.0.1", cookie: str | None = None
) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=parts.app, client=(address, 40000))
    cookies = {"sm_session": cookie} if cookie else None
    return httpx.AsyncClient(transport=transport, base_url="http://notifier", cookies=cookies)


async def test_eight_people_acknowledging_at_once_give_one_acknowledgement(
    kafka: str, tmp_path: Path
) -> None:
    rule = unique_rule()
    parts = parts_for(kafka, tmp_path, rule, ",".join(f"{p}:token-{p}" for p in PEOPLE))
    await parts.notifier.store.migrate()  # (the tracker is polled below before run() would)
    stop = asyncio.Event()
    running = asyncio.create_task(parts.notifier.run(stop))
    try:
        a = unique_alert(rule)
        mine = str(a.alert_id)
        await produce_raw(kafka, SAFETY_ALERTS.name, key_for(a), encode(a))
        while await parts.notifier.store.tracker(mine) is None:
            await asyncio.sleep(0.05)
        async with client(parts) as http:
            answers = await asyncio.gather(
                *(
                    http.post(f"/alerts/{mine}/ack", headers={"Authorization": f"Bearer token-{p}"})
                    for p in PEOPLE
                )
            )
        bodies = [r.json() for r in answers]
        winners = [b for b in bodies if b["acknowledged"]]
        assert len(winners) == 1
        first = winners[0]["acknowledged_by"]
        # the rest are told who was first, and when
        assert {(b["acknowledged_by"], b["acknowledged_at"]) for b in bodies} == {
            (first, winners[0]["acknowledged_at"])
        }
        life = await wait_for(
            kafka, "safety.alert-lifecycle",
            lambda m: any(k == mine.encode() and b'"alert.acknowledged"' in v for k, v in m),
        )  # fmt: skip
        await asyncio.sleep(1)  # (a second acknowledgement, if produced, would be there now)
        life = await wait_for(kafka, "safety.alert-lifecycle", lambda m: True)
        acks = [decode(v) for k, v in life if k == mine.encode() and b"acknowledged" in v]
        assert [x.acknowledged_by for x in acks] == [first]  # type: ignore[union-attr]
    finally:
        stop.set()
        await running
        await parts.notifier.store.close()


async def test_a_session_dies_with_its_token_and_sign_in_is_throttled_and_same_origin(
    kafka: str, tmp_path: Path
) -> None:
    rule = unique_rule()
    parts = parts_for(kafka, tmp_path, rule, "safety-officer:officer-token")
    (tmp_path / "again").mkdir()
    revoked = parts_for(kafka, tmp_path / "again", rule, "safety-officer:new-token")
    for p in (parts, revoked):
        await p.notifier.store.migrate()
    async with client(parts) as http:
        cross = await http.post("/login", content="token=officer-token",
                                headers={"Origin": "https://evil.example", **FORM})  # fmt: skip
        assert cross.status_code == 403
        signed = await http.post("/login", content="token=officer-token",
                                 headers={"Origin": "http://notifier", **FORM})  # fmt: skip
        assert signed.status_code == 303
        cookie = signed.cookies["sm_session"]
    async with client(parts, cookie=cookie) as http:
        assert "Signed in as safety-officer" in (await http.get("/")).text.replace(
            "<strong>", ""
        ).replace("</strong>", "")

    # the token revoked (the notifier restarted without it): its session shows the sign-in page
    async with client(revoked, cookie=cookie) as http:
        page = await http.get("/")
        assert 'name="token"' in page.text and "Signed in as" not in page.text
        assert (await http.get("/events")).status_code == 401

    # five wrong tokens from one address, then even the right one waits; another address may
    async with client(parts, "10.0.0.7") as http:
        codes = [(await http.post("/login", content=f"token=guess-{n}")).status_code
                 for n in range(5)]  # fmt: skip
        assert codes == [401] * 5
        held = await http.post("/login", content="token=officer-token")
        assert held.status_code == 429 and int(held.headers["Retry-After"]) > 0
    async with client(parts, "10.0.0.8") as http:
        assert (await http.post("/login", content="token=officer-token")).status_code == 303
    await parts.notifier.store.close()
    await revoked.notifier.store.close()
