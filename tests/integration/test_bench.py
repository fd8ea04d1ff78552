"""`safety-monitor bench` end to end on tiny sizes: it starts its own broker and the real services,
measures every phase but the long ones, prints its table and writes its JSON. Nothing about
speed is asserted (machines here are noisy); what is asserted is that each number is there and
stands for what it says."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_bench_measures_each_phase_and_writes_what_it_printed(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", "--events", "800", "--participants",
         "100", "--only", "engine,e2e,ingest,pipeline", "--json", str(out),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["backlog_events"] == 800  # the backlog it was asked for, all drained
    assert r["engine_events_per_s"] > 0 and r["engine_events_per_s_240_labs"] > 0
    # the engine's rate is the best of its timings, each of them given
    timings = r["engine_timings_events_per_s"]
    assert [len(timings["12_labs"]), len(timings["240_labs"])] == [7, 7]
    assert r["engine_events_per_s"] == max(timings["12_labs"])
    assert r["engine_events_per_s_240_labs"] == max(timings["240_labs"])
    assert r["engine_12_vs_240_labs"] == round(
        r["engine_events_per_s"] / r["engine_events_per_s_240_labs"], 2
    )
    assert r["pipeline_to_ceiling"] == round(
        r["pipeline_events_per_s"] / r["ceiling_events_per_s"], 3
    )
    # every serious AE posted reached the SMTP server, and its latency was measured
    e2e = r["e2e_latency_ms"]
    assert e2e["serious_aes"] == 5 and e2e["emailed"] == 5 and 0 < e2e["p50"] <= e2e["p99"]
    # the slowest email (with 5, the p99) in its two stages: to the alert, then to the email
    slowest = e2e["slowest"]
    assert slowest["total"] == e2e["p99"] and slowest["to_alert"] > 0
    assert abs(slowest["to_alert"] + slowest["alert_to_email"] - slowest["total"]) <= 0.2
    assert r["ingest_batch_1_events_per_s"] > 0 and r["ingest_batch_100_events_per_s"] > 0
    # the ingest process's CPU per event, measured: a request's fixed cost, shared by 100 events
    cpu_1, cpu_100 = r["ingest_batch_1_cpu_us_per_event"], r["ingest_batch_100_cpu_us_per_event"]
    assert cpu_1 > cpu_100 >= 0
    # ahead of the timed requests, untimed ones warmed the broker and ingest up: each accepted
    with sqlite3.connect(tmp_path / "work" / "ingest.db") as db:
        (warmed,) = db.execute(
            "SELECT count(*) FROM ingest_accepted WHERE participant_id LIKE 'WRM-%'"
        ).fetchone()
    assert warmed == r["ingest_warm_up_events"] == 20 * 12
    assert set(r["peak_rss_mib"]) == {"ingest", "notifier", "rules_worker"}
    assert all(mib > 20 for mib in r["peak_rss_mib"].values())  # a Python service, measured
    assert r["machine"]["cores"] and r["machine"]["kafka"]
    # the machine's pace, timed at both ends of the run, and shown in the table
    assert r["pace_ms"]["at_start"] > 0 and r["pace_ms"]["at_end"] > 0
    assert any(x.startswith("pace_ms.at_end") for x in run.stdout.splitlines())
    # the table shows the targets, and says whether each was met
    line = next(x for x in run.stdout.splitlines() if x.startswith("pipeline_to_ceiling"))
    assert ">= 0.5" in line and line.rstrip().endswith(("met", "MISSED"))
    # nothing left running: the services' logs say they stopped
    logs = {p.name: p.read_text() for p in (tmp_path / "work").glob("*.log")}
    assert {"ingest.log", "notifier.log"} <= set(logs)
    assert all('"stopped"' in text or "Finished server process" in text for text in logs.values())
