"""What the bench reports of a SIGKILL takeover: a kill it could not time is a miss, not a gap."""

from __future__ import annotations

from services.bench import table, takeover_summary


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
