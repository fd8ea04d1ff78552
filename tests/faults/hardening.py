"""The hardening table: each finding of the hardening issue tried again, as an attacker or an
unlucky operator would, against real processes (`safety-monitor ingest serve`, `audit project`,
`audit verify`, `audit serve`, `rules worker`) on the real broker, through their public
interfaces only: HTTP, the CLI, the topics. Each case states what must happen and what did.

`python -m tests.faults --hardening` prints the table; tests/faults/test_hardening.py runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from contracts import encode
from contracts.clinical import LabResulted, ParticipantEnrolled, Sex
from contracts.common import Source
from contracts.topics import DEAD_LETTER, TRIAL_EVENTS
from services.audit.adapters.store import AuditStore
from services.audit.projection import LagProbe
from services.ingest.domain.mapping import stable_id
from services.ingest.domain.policy import SITE_NAMESPACE
from tests.conftest import free_port
from tests.integration.kafka_io import produce, produce_raw, read_topic

CLI = str(Path(sys.executable).with_name("safety-monitor"))
POISON = "9999-12-31T23:59:59-23:59"  # the exact poison of the issue


@dataclass(frozen=True)
class Case:
    finding: str
    name: str
    expected: str
    actual: str
    ok: bool


def table(cases: list[Case]) -> str:
    widths = (7, 58, 44, 44)
    head = ("finding", "case", "expected", "actual")
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + "  ok"]
    for c in cases:
        cells = (c.finding, c.name, c.expected, c.actual)
        row = "  ".join(v[:w].ljust(w) for v, w in zip(cells, widths, strict=True))
        lines.append(f"{row}  {'yes' if c.ok else 'NO'}")
    passed = sum(c.ok for c in cases)
    lines.append(f"{passed}/{len(cases)} cases hold")
    return "\n".join(lines)


# -- processes ------------------------------------------------------------------------------
def _env(workdir: Path, bootstrap: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SAFETY_MONITOR_KAFKA_BOOTSTRAP": bootstrap,
        "SAFETY_MONITOR_INGEST_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/ingest.db",
        "SAFETY_MONITOR_AUDIT_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/audit.db",
        "SAFETY_MONITOR_AUDIT_SIGNING_KEY_FILE": str(workdir / "audit-signing.key"),
        "SAFETY_MONITOR_AUDIT_ANCHOR_FILE": str(workdir / "anchors.jsonl"),
        "SAFETY_MONITOR_AUDIT_CHECKPOINT_EVERY": "50",
        **extra,
    }


def cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@contextmanager
def serving(env: dict[str, str], *args: str, port: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [CLI, *args, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args} did not come up")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


async def project_until_caught_up(env: dict[str, str], timeout_s: float = 240) -> None:
    """Runs `audit project` until the database holds every audited message, then stops it
    (SIGTERM: it signs and anchors its head on the way out)."""
    proc = subprocess.Popen(
        [CLI, "audit", "project"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    store = AuditStore(env["SAFETY_MONITOR_AUDIT_DATABASE_URL"])
    try:
        probe = LagProbe(env["SAFETY_MONITOR_KAFKA_BOOTSTRAP"])
        async with asyncio.timeout(timeout_s), probe:
            while True:
                await asyncio.sleep(0.5)
                if proc.poll() is not None:
                    raise RuntimeError(f"audit project died: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
                try:
                    if await probe.lag(store) == 0:
                        break
                except Exception:  # the projection has not created its tables yet
                    continue
    finally:
        await store.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def _key(env: dict[str, str], role: str, site: str | None = None) -> str:
    args = ["ingest", "keys", "--role", role] + (["--site", site] if site else [])
    out = cli(env, *args).stdout
    match = re.search(r"secret: (\S+)", out)
    assert match, out
    return match.group(1)


# -- events ---------------------------------------------------------------------------------
TRIAL = "UCMSC-DN-01"
NOW = datetime.now(UTC).replace(microsecond=0)


def enrolment(pid: str, site: str, **kw: Any) -> dict[str, Any]:
    return {
        "event_type": "participant.enrolled",
        "event_id": str(uuid.uuid4()),
        "trial_id": TRIAL,
        "participant_id": pid,
        "occurred_at": (NOW - timedelta(days=30)).isoformat(),
        "sex": "F",
        "age_years": 60,
        "site_id": site,
        "enrolled_at": (NOW - timedelta(days=30)).isoformat(),
        **kw,
    }


def lab(pid: str, **kw: Any) -> dict[str, Any]:
    return {
        "event_type": "lab.resulted",
        "event_id": str(uuid.uuid4()),
        "trial_id": TRIAL,
        "participant_id": pid,
        "occurred_at": (NOW - timedelta(days=1)).isoformat(),
        "analyte": "creatinine",
        "value": 1.1,
        "unit": "mg/dL",
        **kw,
    }


def _pid(tag: str) -> str:
    return f"H{tag}-{uuid.uuid4().hex[:6]}-1"


def _fields(r: httpx.Response) -> str:
    try:
        return ",".join(sorted({e["field"] for e in r.json().get("errors", [])}))
    except ValueError:
        return "?"


# -- cases ----------------------------------------------------------------------------------
async def ingest_cases(bootstrap: str, workdir: Path) -> list[Case]:
    env = _env(workdir, bootstrap, SAFETY_MONITOR_INGEST_BODY_TIMEOUT_S="2")
    site_a, site_b = _key(env, "site", "A"), _key(env, "site", "B")
    cases: list[Case] = []
    with serving(env, "ingest", "serve", port=free_port()) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:

            async def post(key: str, body: Any, **kw: Any) -> httpx.Response:
                return await http.post(
                    "/v1/events", headers={"X-API-Key": key}, **({"json": body} | kw)
                )

            def case(finding: str, name: str, expected: str, actual: str, ok: bool) -> None:
                cases.append(Case(finding, name, expected, actual, ok))

            a_pid, b_pid = _pid("A"), _pid("B")
            assert (await post(site_a, enrolment(a_pid, "A"))).status_code == 201
            b_enrol = enrolment(b_pid, "B")
            assert (await post(site_b, b_enrol)).status_code == 201
            b_lab = lab(b_pid)
            assert (await post(site_b, b_lab)).status_code == 201

            r = await post(site_a, lab(a_pid, occurred_at=POISON))
            case(
                "1",
                f"a lab at {POISON} posted",
                "422 occurred_at",
                f"{r.status_code} {_fields(r)}",
                (r.status_code, _fields(r)) == (422, "occurred_at"),
            )
            r = await post(site_a, lab(a_pid, occurred_at="1850-01-01T00:00:00+00:00"))
            case(
                "1",
                "a lab dated 1850 (before the window)",
                "422 occurred_at",
                f"{r.status_code} {_fields(r)}",
                (r.status_code, _fields(r)) == (422, "occurred_at"),
            )

            # 4: site walls
            r = await post(site_a, enrolment(b_pid, "A", sex="M", age_years=90))
            case(
                "4",
                "site A re-enrols site B's participant",
                "409 participant_id",
                f"{r.status_code} {_fields(r)}",
                (r.status_code, _fields(r)) == (409, "participant_id"),
            )
            foreign = await post(site_a, lab(a_pid, supersedes=b_lab["event_id"], reason="x"))
            unknown = await post(site_a, lab(a_pid, supersedes=str(uuid.uuid4()), reason="x"))
            case(
                "4",
                "site A supersedes site B's lab",
                "403, same answer as an unknown id",
                f"{foreign.status_code} {_fields(foreign)}; "
                f"same={foreign.json() == unknown.json()}",
                foreign.status_code == 403 and foreign.json() == unknown.json(),
            )
            theirs = await post(site_a, lab(b_pid))
            nobody = await post(site_a, lab(_pid("N")))
            case(
                "4",
                "site A writes B's participant / an unknown one",
                "403, the same answer",
                f"{theirs.status_code}/{nobody.status_code} same={theirs.json() == nobody.json()}",
                theirs.status_code == 403 and theirs.json() == nobody.json(),
            )
            r = await post(site_a, lab(a_pid, trial_id="OTHER-TRIAL"))
            case(
                "4",
                "a lab for another trial_id",
                "422 trial_id",
                f"{r.status_code} {_fields(r)}",
                (r.status_code, _fields(r)) == (422, "trial_id"),
            )
            # an SDTM import id claimed first by another site no longer blocks the import
            subject = f"S-{uuid.uuid4().hex[:6]}-1"
            claimed = stable_id("sdtm", TRIAL, "DM", subject, "enrolled")
            await post(site_b, enrolment(_pid("C"), "B", event_id=claimed))
            dm = (
                "STUDYID,DOMAIN,USUBJID,SUBJID,SITEID,BRTHDTC,AGE,AGEU,SEX,RFSTDTC,ARMCD\n"
                f"{TRIAL},DM,{subject},1,A,1960-01-01,64,YEARS,F,2024-01-02,A\n"
            )
            r = await http.post(
                "/v1/imports/sdtm",
                params={"filename": "dm.csv"},
                headers={"X-API-Key": site_a},
                content=dm.encode(),
            )
            got = r.json().get("accepted") if r.status_code == 200 else r.status_code
            case(
                "4",
                "site B claims site A's SDTM import id first",
                "A's import accepted (1)",
                f"accepted={got}",
                got == 1,
            )

            # 5: one writer per event_id
            eid = str(uuid.uuid4())
            racing = [lab(a_pid, event_id=eid, value=1.0 + n / 100) for n in range(20)]
            answers = await asyncio.gather(*(post(site_a, b) for b in racing))
            codes = Counter(r.status_code for r in answers)
            on_topic = await _count_on_topic(bootstrap, eid)
            case(
                "5",
                "20 concurrent posts, one event_id, 20 contents",
                "1 on Kafka; 1x201 19x409",
                f"{on_topic} on Kafka; {_codes(codes)}",
                on_topic == 1 and codes == Counter({201: 1, 409: 19}),
            )
            eid = str(uuid.uuid4())
            same = lab(a_pid, event_id=eid)
            answers = await asyncio.gather(*(post(site_a, same) for _ in range(20)))
            codes = Counter(r.status_code for r in answers)
            on_topic = await _count_on_topic(bootstrap, eid)
            case(
                "5",
                "20 concurrent posts of one identical event",
                "1 on Kafka; 1x201 19x200",
                f"{on_topic} on Kafka; {_codes(codes)}",
                on_topic == 1 and codes == Counter({201: 1, 200: 19}),
            )

            pairs = []
            for _ in range(10):
                pid = _pid("R")
                pairs.append(
                    await asyncio.gather(
                        post(site_a, enrolment(pid, "A")), post(site_b, enrolment(pid, "B"))
                    )
                )
            split = Counter(tuple(sorted(r.status_code for r in pair)) for pair in pairs)
            case(
                "5",
                "sites A and B enrol one participant at once, x10",
                "each: one 201, one 409",
                " ".join(f"{n}x{codes}" for codes, n in split.items()),
                split == Counter({(201, 409): 10}),
            )

            # 6: unbounded input
            huge = lab(
                a_pid, value=1.0, unit="mg/dL", original_value=1.0, original_unit="x" * 2_000_000
            )
            others = [[lab(b_pid) for _ in range(5)] for _ in range(40)]
            big, *rest = await asyncio.gather(
                post(site_a, huge), *(post(site_b, batch) for batch in others)
            )
            case(
                "6",
                "2 MB original_unit, 40 batches of site B at once",
                "422 original_unit; B: 40x201",
                f"{big.status_code} {_fields(big)}; "
                f"B: {_codes(Counter(r.status_code for r in rest))}",
                (big.status_code, _fields(big)) == (422, "original_unit")
                and all(r.status_code == 201 for r in rest),
            )
            deep = b"[" * 100_000 + b"]" * 100_000
            r = await post(site_a, None, content=deep)
            case(
                "6",
                "JSON nested 100,000 deep",
                "400 (body)",
                f"{r.status_code} {_fields(r)}",
                (r.status_code, _fields(r)) == (400, "(body)"),
            )
            digits = json.dumps(lab(a_pid)).replace('"value": 1.1', '"value": ' + "9" * 5000)
            r = await post(site_a, None, content=digits.encode())
            case(
                "6",
                "a 5,000-digit integer",
                "400 (body)",
                f"{r.status_code} {_fields(r)}",
                (r.status_code, _fields(r)) == (400, "(body)"),
            )
            nan = json.dumps(lab(a_pid, original_value=1.1, original_unit="mg/dL")).replace(
                '"original_value": 1.1', '"original_value": NaN'
            )
            r = await post(site_a, None, content=nan.encode())
            case(
                "6",
                "NaN in original_value",
                "400 (body)",
                f"{r.status_code} {_fields(r)}",
                (r.status_code, _fields(r)) == (400, "(body)"),
            )
            status = await _slow_body(url, site_a)
            case(
                "6",
                "a body trickled in slower than the 2 s limit",
                "408",
                str(status),
                status == 408,
            )
            # 27: fail safe at the door
            born = enrolment(_pid("Y"), "A", birth_date="0001-01-01")
            born.pop("age_years", None)
            r = await post(site_a, born)
            case(
                "27",
                "an enrolment born 0001-01-01 (age 2025: eGFR 0.0003)",
                "422 birth_date",
                f"{r.status_code} {_fields(r)}",
                (r.status_code, _fields(r)) == (422, "birth_date"),
            )
            spelled = [await post(site_a, enrolment(p, "A")) for p in
                       (a_pid.lower(), a_pid.replace("-", "_", 1), a_pid + ".")]  # fmt: skip
            case(
                "27",
                f"{a_pid.lower()}, {a_pid.replace('-', '_', 1)}, {a_pid}. beside {a_pid}",
                "422 participant_id each",
                " ".join(f"{x.status_code} {_fields(x)}" for x in spelled),
                all((x.status_code, _fields(x)) == (422, "participant_id") for x in spelled),
            )
            free_pid = _pid("F")
            used = lab(a_pid)
            assert (await post(site_a, used)).status_code == 201
            refused = await post(site_a, [enrolment(free_pid, "A"), {**used, "value": 2.0}])
            elsewhere = await post(site_b, enrolment(free_pid, "B"))
            case(
                "27",
                "a batch refused whole (409) holding an enrolment; then site B enrols them",
                "409, then 201",
                f"{refused.status_code}, then {elsewhere.status_code}",
                (refused.status_code, elsewhere.status_code) == (409, 201),
            )
            # the keyed id: what B can compute from the source (the unkeyed site-scoped id)
            subject = f"S-{uuid.uuid4().hex[:6]}-1"
            record = stable_id("sdtm", TRIAL, "DM", subject, "enrolled")
            computable = str(uuid.uuid5(SITE_NAMESPACE, f"A|{record}"))
            await post(site_b, enrolment(_pid("K"), "B", event_id=computable))
            dm = (
                "STUDYID,DOMAIN,USUBJID,SUBJID,SITEID,BRTHDTC,AGE,AGEU,SEX,RFSTDTC,ARMCD\n"
                f"{TRIAL},DM,{subject},1,A,1960-01-01,64,YEARS,F,2024-01-02,A\n"
            )
            r = await http.post("/v1/imports/sdtm", params={"filename": "dm.csv"},
                                headers={"X-API-Key": site_a}, content=dm.encode())  # fmt: skip
            got = r.json().get("accepted") if r.status_code == 200 else r.status_code
            case(
                "27",
                "site B takes the site-scoped id of A's SDTM record (computable from the source)",
                "A's import accepted (1)",
                f"accepted={got}",
                got == 1,
            )
            cut = await _half_sent_headers(url, 20)
            case(
                "27",
                "20 requests whose headers never end",
                "each connection closed by the server (10 s)",
                f"{cut} of 20 closed",
                cut == 20,
            )
            metrics = (await http.get("/metrics")).text
            fives = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("safety_monitor_ingest_requests_total") and 'status="5' in line
            )
            case("6", "5xx answered over all the cases above", "0", f"{fives:g}", fives == 0)
    return cases


def _codes(codes: Counter[int]) -> str:
    return " ".join(f"{n}x{code}" for code, n in sorted(codes.items()))


async def _count_on_topic(bootstrap: str, event_id: str) -> int:
    return sum(
        json.loads(value).get("event_id") == event_id
        for _, value in await read_topic(bootstrap, TRIAL_EVENTS.name)
    )


async def _half_sent_headers(url: str, n: int) -> int:
    """How many of `n` connections that never finish their headers the server closes."""
    host, port = url.removeprefix("http://").split(":")
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(n)]
    for _, writer in conns:
        writer.write(f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nX-API-K".encode())
        await writer.drain()
    closed = 0
    try:
        async with asyncio.timeout(30):
            for reader, _ in conns:
                closed += await reader.read() == b""
    except TimeoutError:
        pass
    finally:
        for _, writer in conns:
            writer.close()
    return closed


async def _slow_body(url: str, key: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps([{"x": 1}] * 100).encode()
    writer.write(
        f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    await writer.drain()
    try:
        async with asyncio.timeout(30):
            status = await reader.readline()
    finally:
        writer.close()
    return int(status.split()[1]) if status else 0


async def audit_cases(bootstrap: str, workdir: Path) -> list[Case]:
    cases: list[Case] = []

    def case(finding: str, name: str, expected: str, actual: str, ok: bool) -> None:
        cases.append(Case(finding, name, expected, actual, ok))

    # a participant with a +07:00 (FHIR-style) time, and the exact poison straight on the topic
    pid = _pid("P")
    at = datetime.now(UTC).astimezone(ZoneInfo("Asia/Jakarta"))
    enrolled = ParticipantEnrolled(
        event_id=uuid.uuid4(),
        trial_id=TRIAL,
        participant_id=pid,
        occurred_at=at,
        recorded_at=at,
        recorded_by="test",
        source=Source.TEST,
        sex=Sex.FEMALE,
        age_years=61,
        site_id="A",
        enrolled_at=at,
    )
    good = LabResulted(
        event_id=uuid.uuid4(),
        trial_id=TRIAL,
        participant_id=pid,
        occurred_at=at,
        recorded_at=at,
        recorded_by="test",
        source=Source.TEST,
        analyte="creatinine",
        value=1.0,
        unit="mg/dL",
    )
    poison = json.loads(encode(good))
    poison.update(event_id=str(uuid.uuid4()), occurred_at=POISON)
    await produce(bootstrap, [enrolled])
    _, partition, offset = await produce_raw(
        bootstrap, TRIAL_EVENTS.name, pid.encode(), json.dumps(poison).encode()
    )
    await produce(bootstrap, [good])

    env = _env(workdir, bootstrap)
    await project_until_caught_up(env)
    db = workdir / "audit.db"
    with sqlite3.connect(db) as conn:
        kept = conn.execute(
            'SELECT reason FROM audit_undecodable WHERE "partition"=? AND "offset"=?',
            (partition, offset),
        ).fetchone()
        after = conn.execute(
            "SELECT count(*) FROM audit_log WHERE event_id=?", (str(good.event_id),)
        ).fetchone()[0]
    case(
        "1",
        "the poison produced straight onto trial.events",
        "projection goes on: poison kept with reason, next event in the log",
        f"kept={'UTC' in (kept or [''])[0]}, next in log={after}",
        bool(kept) and after == 1,
    )
    case(
        "7",
        "the audit database file's mode",
        "0600",
        oct(db.stat().st_mode & 0o777),
        db.stat().st_mode & 0o777 == 0o600,
    )

    # the rules worker dead-letters the poison and goes on
    wdir = workdir / "worker"
    wdir.mkdir()
    wenv = {
        **env,
        "SAFETY_MONITOR_RULES_APP_ID": f"hard-{uuid.uuid4().hex[:6]}",
        "SAFETY_MONITOR_RULES_DATABASE_URL": f"sqlite+aiosqlite:///{wdir}/rules.db",
        "SAFETY_MONITOR_RULES_WEB_PORT": str(free_port()),
    }
    dead = await _worker_dead_letters(wenv, bootstrap, partition, offset)
    case(
        "1",
        "the rules worker on the same poison",
        "dead letter with the reason; goes on",
        dead,
        dead.startswith("dead letter:"),
    )

    verify = _verify(env, "--against-log", "--deep")
    case(
        "3",
        "verify an untouched trail holding a +07:00 time",
        "ok (chain, anchors, against log, deep)",
        _verdict(verify),
        verify.get("ok") is True,
    )

    # 2: tampering, each on a copy of the database
    for name, tamper, flags in TAMPERS:
        copy = workdir / f"tampered-{len(cases)}.db"
        copy.write_bytes(db.read_bytes())
        with sqlite3.connect(copy) as conn:
            tamper(conn)
        tenv = {**env, "SAFETY_MONITOR_AUDIT_DATABASE_URL": f"sqlite+aiosqlite:///{copy}"}
        v = _verify(tenv, *flags)
        case("2", name, "verify fails", _verdict(v), v.get("ok") is False)

    # 27: the projection never signs over a row it did not write: it stops and says so
    forged = workdir / "forged.db"
    forged.write_bytes(db.read_bytes())
    with sqlite3.connect(forged) as conn:
        _forge_tail(conn)
    fenv = {**env, "SAFETY_MONITOR_AUDIT_DATABASE_URL": f"sqlite+aiosqlite:///{forged}",
            "SAFETY_MONITOR_AUDIT_PROJECTION_PORT": str(free_port())}  # fmt: skip
    done = cli(fenv, "audit", "project", timeout=120)
    with sqlite3.connect(forged) as conn:
        signed = conn.execute(
            "SELECT count(*) FROM audit_checkpoints WHERE seq = (SELECT max(seq) FROM audit_log)"
        ).fetchone()[0]
    said = "did not write" in done.stderr
    case(
        "27",
        "`audit project` started on a trail with a forged row at its tail",
        "exits non-zero, says so; the row never signed",
        f"exit {done.returncode}, said={said}, signed={signed}",
        done.returncode != 0 and said and signed == 0,
    )

    # 27: the signing key is pinned by the anchor topic; a new one only by a signed rotation
    swapped = _verify({**env, "SAFETY_MONITOR_AUDIT_SIGNING_KEY_FILE": str(workdir / "new.key")})
    case(
        "27",
        "the signing key file replaced (no rotation), then `audit verify`",
        "verify fails: not the chain's key",
        _verdict(swapped),
        swapped.get("ok") is False and "not the chain's key" in str(swapped.get("reason")),
    )
    rotated = workdir / "rotated.key"
    done = cli(env, "audit", "rotate-key", "--new-key-file", str(rotated))
    after = _verify({**env, "SAFETY_MONITOR_AUDIT_SIGNING_KEY_FILE": str(rotated)})
    case(
        "27",
        "`audit rotate-key`, then `audit verify` with the new key",
        "exit 0; verify ok",
        f"exit {done.returncode}; {_verdict(after)}",
        done.returncode == 0 and after.get("ok") is True,
    )

    # 5: two projections and the DSMB API started at once on a fresh database
    crashes, refused = 0, 0
    for n in range(4):
        fresh = {
            **env,
            "SAFETY_MONITOR_AUDIT_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/race{n}.db",
        }
        procs = [
            subprocess.Popen(
                [CLI, "audit", *args],
                env=fresh,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            for args in (["project"], ["project"], ["tokens", "--name", "race"])
        ]
        await asyncio.sleep(6)
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        codes = [p.wait(60) for p in procs]
        errs = [p.stderr.read() if p.stderr else "" for p in procs]
        crashes += sum("Traceback" in e or "already exists" in e for e in errs)
        refused += sum(c == 75 for c in codes[:2])
    case(
        "5",
        "two `audit project` + `audit tokens` at once on a new database, x4",
        "no crash; the second projection refused 4/4",
        f"crashes={crashes}, refused={refused}/4",
        crashes == 0 and refused == 4,
    )

    # 6, 7: the DSMB API
    token = re.search(r"token: (\S+)", cli(env, "audit", "tokens", "--name", "board").stdout)
    token_id = re.search(r"token_id: (\S+)", cli(env, "audit", "tokens", "--name", "x").stdout)
    assert token and token_id
    with serving(env, "audit", "serve", port=free_port()) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            auth = {"Authorization": f"Bearer {token.group(1)}"}
            r = await http.get("/audit/events", params={"after_seq": 2**63}, headers=auth)
            shape = set(r.json()) == {"detail", "errors"} and str(2**63) not in r.text
            case(
                "6",
                "after_seq = 2^63",
                "422 in the project's shape, input not echoed",
                f"{r.status_code} shape={shape}",
                r.status_code == 422 and shape,
            )
            r = await http.get("/audit/events", params={"since": POISON}, headers=auth)
            case(
                "27",
                f"since = {POISON}",
                "422 query.since",
                f"{r.status_code} {_fields(r)}",
                (r.status_code, _fields(r)) == (422, "query.since"),
            )
            await http.get(f"/participants/{pid}/timeline", headers=auth)
            with sqlite3.connect(db) as conn:
                logged = conn.execute(
                    "SELECT reader, route FROM audit_access WHERE route LIKE '%timeline'"
                ).fetchall()
            case(
                "7",
                "a DSMB read",
                "logged: who, what",
                str(logged[-1:]),
                ("board", "/participants/{participant_id}/timeline") in logged,
            )
    revoked = cli(env, "audit", "tokens", "--revoke", token_id.group(1))
    second = re.search(r"token: (\S+)", cli(env, "audit", "tokens", "--name", "y").stdout)
    assert second
    cli(env, "audit", "tokens", "--revoke", "nonexistent")
    with serving(env, "audit", "serve", port=free_port()) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            ok = await http.get("/alerts", headers={"Authorization": f"Bearer {second.group(1)}"})
            mine = re.search(r"token_id: (\S+)", cli(env, "audit", "tokens", "--name", "z").stdout)
    case(
        "7",
        "`audit tokens --revoke`",
        "exit 0",
        f"exit {revoked.returncode}",
        revoked.returncode == 0 and ok.status_code == 200 and mine is not None,
    )
    return cases


async def _worker_dead_letters(
    env: dict[str, str], bootstrap: str, partition: int, offset: int
) -> str:
    before = {v for _, v in await read_topic(bootstrap, DEAD_LETTER.name)}
    proc = subprocess.Popen(
        [CLI, "rules", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(180):
            while True:
                await asyncio.sleep(1)
                for _, value in await read_topic(bootstrap, DEAD_LETTER.name):
                    letter = json.loads(value)
                    if value in before or letter.get("topic") != TRIAL_EVENTS.name:
                        continue
                    if (letter["partition"], letter["offset"]) == (partition, offset):
                        return f"dead letter: {letter['reason'][:60]}"
                if proc.poll() is not None:
                    return f"worker exited {proc.returncode}"
    except TimeoutError:
        return "no dead letter in 180 s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)


def _verify(env: dict[str, str], *flags: str) -> dict[str, Any]:
    done = cli(env, "audit", "verify", *flags)
    try:
        out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"ok": None, "reason": f"exit {done.returncode}: {done.stderr[-300:]}"}
    out["exit"] = done.returncode
    return out


def _verdict(v: dict[str, Any]) -> str:
    if v.get("ok"):
        return f"ok, exit {v.get('exit')}"
    for name in ("against_log", "deep"):
        if isinstance(v.get(name), dict) and v[name]["problems"]:
            return f"exit {v.get('exit')}: {name}: {v[name]['problems'][0]}"
    return f"exit {v.get('exit')}: {v.get('reason')}"


def _drop_triggers(conn: sqlite3.Connection) -> None:
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")


def _rehash_from(conn: sqlite3.Connection, seq: int) -> None:
    """What an attacker with the database (not the key) does: rewrite and recompute the chain."""
    from services.audit.domain.chain import GENESIS, row_hash

    prev = conn.execute("SELECT hash FROM audit_log WHERE seq=?", (seq - 1,)).fetchone()
    prev_hash = prev[0] if prev else GENESIS
    rows = conn.execute(
        'SELECT seq, topic, "partition", "offset", event_id, canonical FROM audit_log '
        "WHERE seq >= ? ORDER BY seq",
        (seq,),
    ).fetchall()
    for s, topic, part, off, eid, canonical in rows:
        h = row_hash(prev_hash, s, topic, part, off, eid, canonical)
        conn.execute("UPDATE audit_log SET prev_hash=?, hash=? WHERE seq=?", (prev_hash, h, s))
        prev_hash = h


def _edit_and_rehash(conn: sqlite3.Connection) -> None:
    _drop_triggers(conn)
    conn.execute("DELETE FROM audit_checkpoints")
    seq, canonical = conn.execute(
        "SELECT seq, canonical FROM audit_log WHERE event_type='lab.resulted' ORDER BY seq LIMIT 1"
    ).fetchone()
    edited = json.loads(canonical)
    edited["value"] = round(edited["value"] * 3, 2)
    conn.execute(
        "UPDATE audit_log SET canonical=? WHERE seq=?", (json.dumps(edited, sort_keys=True), seq)
    )
    _rehash_from(conn, seq)


def _delete_tail(conn: sqlite3.Connection) -> None:
    _drop_triggers(conn)
    (top,) = conn.execute("SELECT max(seq) FROM audit_log").fetchone()
    conn.execute("DELETE FROM audit_log WHERE seq > ?", (top - 3,))
    conn.execute("DELETE FROM audit_checkpoints WHERE seq > ?", (top - 3,))


def _empty(conn: sqlite3.Connection) -> None:
    _drop_triggers(conn)
    conn.execute("DELETE FROM audit_log")
    conn.execute("DELETE FROM audit_checkpoints")


def _edit_read_model(conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE rm_labs SET value = value * 3 WHERE rowid = (SELECT min(rowid) FROM rm_labs)"
    )


def _edit_offsets(conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE audit_offsets SET next_offset = next_offset - 1 "
        "WHERE rowid = (SELECT rowid FROM audit_offsets WHERE next_offset > 0 LIMIT 1)"
    )


def _forge_tail(conn: sqlite3.Connection) -> None:
    """A fake lab appended at the tail, correctly chained (the triggers refuse UPDATE and
    DELETE, not INSERT): what someone with the database's password and no key can do."""
    from services.audit.domain.chain import row_hash

    columns = [r[1] for r in conn.execute("PRAGMA table_info(audit_log)")]
    last = dict(zip(columns, conn.execute(
        "SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone(), strict=True))  # fmt: skip
    event = json.loads(last["canonical"])
    event.update(event_id=str(uuid.uuid4()), value=0.2, analyte="creatinine", unit="mg/dL",
                 event_type="lab.resulted")  # fmt: skip
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"))
    row = {**last, "seq": last["seq"] + 1, "event_id": event["event_id"], "canonical": canonical,
           "prev_hash": last["hash"]}  # fmt: skip
    row["hash"] = row_hash(last["hash"], row["seq"], row["topic"], row["partition"],
                           row["offset"], row["event_id"], canonical)  # fmt: skip
    names = ", ".join(f'"{c}"' for c in columns)
    conn.execute(f"INSERT INTO audit_log ({names}) VALUES ({', '.join('?' * len(columns))})",
                 [row[c] for c in columns])  # fmt: skip


TAMPERS: list[tuple[str, Callable[[sqlite3.Connection], None], tuple[str, ...]]] = [
    ("a correctly chained fake lab inserted at the tail", _forge_tail, ()),
    ("drop triggers, delete checkpoints, edit a lab, rehash", _edit_and_rehash, ()),
    ("delete the last 3 rows (and their checkpoints)", _delete_tail, ()),
    ("empty the log and its checkpoints", _empty, ()),
    ("edit a read model (rm_labs value)", _edit_read_model, ("--deep",)),
    ("edit the stored offsets", _edit_offsets, ("--against-log",)),
]

SUITES: dict[str, Callable[[str, Path], Awaitable[list[Case]]]] = {
    "ingest": ingest_cases,
    "audit": audit_cases,
}


async def run_all(bootstrap: str, workdir: Path) -> list[Case]:
    cases: list[Case] = []
    for name, suite in SUITES.items():
        (workdir / name).mkdir(parents=True, exist_ok=True)
        cases += await suite(bootstrap, workdir / name)
    return cases
