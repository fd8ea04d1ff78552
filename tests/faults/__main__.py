"""`python -m tests.faults [--runs 20] [--participants 2000] [--json FILE]`: the fault table.

Starts its own broker (in a temporary directory), runs each scenario `--runs` times, prints
runs / lost / stalled / repeated / recovery seconds, and writes every run to a JSON file.
`python -m tests.faults --hardening` prints the hardening table (tests/faults/hardening.py);
`--stack [--scenario broker-20s ...]` the whole stack's outage table (tests/faults/stack.py,
a broker per run); `--takeover [--session 6 --session 10]` the takeover at each moment of a
rebalance (tests/faults/takeover.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.conftest import launcher_in
from tests.faults.harness import SCENARIOS, RunResult, run_once, table


async def main(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[RunResult]:
    results = []
    for scenario in args.scenario or SCENARIOS:
        for seed in range(args.runs):
            r = await run_once(
                scenario, bootstrap, workdir, participants=args.participants, seed=seed,
                database_url=args.database_url,
            )  # fmt: skip
            results.append(r)
            status = "ok" if r.passed else "FAILED"
            print(
                f"{scenario} #{seed}: {status} expected={r.expected} got={r.got} lost={r.lost} "
                f"repeated={r.repeated} differing={r.differing} stalled={r.stalled} "
                f"kills={r.mid_stream_kills}/{r.kills} recovery={r.recovery_s} {r.seconds}s "
                f"{r.note}",
                flush=True,
            )
    return results


async def stack_or_takeover(args: argparse.Namespace) -> int:
    from tests.faults import stack, takeover

    rows: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.stack:
            for scenario in args.scenario or list(stack.STACK_SCENARIOS)[:-1]:
                for seed in range(args.runs):
                    r = await stack.run_stack_once(
                        scenario, Path(tmp), participants=args.participants, seed=seed
                    )
                    print(f"{'ok' if r.passed else 'FAILED'} {r}", flush=True)
                    rows.append(r)
            print(stack.stack_table(rows))
        else:
            launcher = launcher_in(Path(tmp) / "kafka")
            await asyncio.to_thread(launcher.up)
            try:
                for session in args.session or [6.0]:
                    for seed in range(args.runs):
                        for moment in takeover.MOMENTS:
                            t = await takeover.takeover_once(
                                moment, launcher.bootstrap, Path(tmp), static=not args.dynamic,
                                session_s=session, seed=seed,
                            )  # fmt: skip
                            print(t, flush=True)
                            rows.append(t)
            finally:
                await asyncio.to_thread(launcher.down, purge=True)
            print(takeover.table(rows))
    kind = "stack" if args.stack else "takeover"
    default = "benchmarks/results/faults.json"
    path = f"benchmarks/results/faults-{kind}.json" if args.json == default else args.json
    _write(path, args.participants, kind, rows)
    return 0 if all(getattr(r, "passed", r.seconds is not None) for r in rows) else 1


def _write(path: str, participants: int, kind: str, rows: list[Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                "kind": kind,
                "participants": participants,
                "runs": [r.as_dict() for r in rows],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.faults")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--participants", type=int, default=2000)
    parser.add_argument("--scenario", action="append")
    parser.add_argument("--stack", action="store_true", help="the whole stack's outages")
    parser.add_argument("--takeover", action="store_true", help="takeover at each moment")
    parser.add_argument("--session", action="append", type=float, help="with --takeover")
    parser.add_argument("--dynamic", action="store_true", help="with --takeover: no instance ids")
    parser.add_argument("--database-url", help="a PostgreSQL URL; default a SQLite file per run")
    parser.add_argument("--json", default="benchmarks/results/faults.json")
    parser.add_argument("--hardening", action="store_true", help="the hardening table instead")
    args = parser.parse_args()
    if args.stack or args.takeover:
        raise SystemExit(asyncio.run(stack_or_takeover(args)))
    if args.hardening:
        from tests.faults.hardening import run_all
        from tests.faults.hardening import table as hardening_table

        with tempfile.TemporaryDirectory() as tmp:
            launcher = launcher_in(Path(tmp) / "kafka")
            launcher.up()
            try:
                cases = asyncio.run(run_all(launcher.bootstrap, Path(tmp)))
            finally:
                launcher.down(purge=True)
        print(hardening_table(cases))
        raise SystemExit(0 if all(c.ok for c in cases) else 1)
    with tempfile.TemporaryDirectory() as tmp:
        launcher = launcher_in(Path(tmp) / "kafka")
        launcher.up()
        try:
            results = asyncio.run(main(args, launcher.bootstrap, Path(tmp)))
        finally:
            launcher.down(purge=True)
    print(table(results))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                "participants": args.participants,
                "database": "postgresql" if args.database_url else "sqlite",
                "runs": [r.as_dict() for r in results],
            },
            indent=2,
        )
    )
