"""What the bench reports of a SIGKILL takeover (a kill it could not time is a miss, not a gap),
and where a slow alert waited."""

from __future__ import annotations

from typing import Any

from services.bench import table, takeover_summary, worker_waits


def test_every_kill_timed_gives_the_median_and_the_worst() -> None:
    assert takeover_summary([1.5, 2.06, 1.21]) == {
        "kills": 3,
        "each": [1.5, 2.06, 1.21],
        "median": 1.5,
        "max": 2.06,
    }
    line = next(x for x in table({"takeover_s": takeover_summary([1.5, 2.06])}).splitlines()
                if x.startswith("takeover_s.max"))  # fmt: skip
    assert line.rstrip().endswith("met")


def test_a_kill_after_which_no_alert_came_leaves_the_worst_unknown_and_the_target_missed() -> None:
    # the earlier bench's first kill of three was never timed, and its maximum was of the other two
    summary = takeover_summary([None, 2.06, 1.29])
    assert summary["max"] is None and summary["median"] == 1.68
    line = next(x for x in table({"takeover_s": summary}).splitlines()
                if x.startswith("takeover_s.max"))  # fmt: skip
    assert line.rstrip().endswith("MISSED (not measured)")


def test_a_slow_alert_is_placed_inside_the_worker_or_not_and_its_pauses_counted() -> None:
    def hist(name: str, counts: dict[str, float], labels: tuple[tuple[str, str], ...] = ()) -> Any:
        out = {(f"{name}_count", labels): counts["+Inf"]}
        out |= {
            (f"{name}_bucket", tuple(sorted((*labels, ("le", le))))): n for le, n in counts.items()
        }
        return out

    alerts, pauses = (
        "safety_monitor_rules_event_to_alert_seconds",
        "safety_monitor_gc_pause_seconds",
    )
    g2 = (("generation", "2"),)
    before = hist(alerts, {"0.1": 10, "0.25": 10, "+Inf": 10}) | hist(
        pauses, {"0.1": 5, "+Inf": 5}, g2
    )
    # 40 alerts more, 3 of them processed in over 0.25 s; 2 full collections, 1 over 0.1 s
    after = hist(alerts, {"0.1": 45, "0.25": 47, "+Inf": 50}) | hist(
        pauses, {"0.1": 6, "+Inf": 7}, g2
    )
    waits = worker_waits(before, after)
    assert waits["alerts_processed_over_250ms"] == 3
    assert waits["gc_pauses"] == {"0": 0, "1": 0, "2": 2}
    assert waits["gc_pauses_over_100ms"] == {"0": 0, "1": 0, "2": 1}
    assert waits["batches_over_100ms_by_phase"] == {
        "read": 0,
        "evaluate": 0,
        "produce": 0,
        "commit": 0,
    }
    # a batch whose commit took over 0.1 s is placed there
    phase = "safety_monitor_rules_batch_phase_seconds"
    c = (("phase", "commit"),)
    slow = worker_waits(
        before | hist(phase, {"0.1": 20, "+Inf": 20}, c),
        after | hist(phase, {"0.1": 24, "+Inf": 25}, c),
    )
    assert slow["batches_over_100ms_by_phase"]["commit"] == 1
