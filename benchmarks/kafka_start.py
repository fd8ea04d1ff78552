"""How long the local broker takes to come up: cold (nothing cached), first start, warm restart.

Prints the numbers and writes them to benchmarks/results/kafka_start.json. Run:
    .venv/bin/python benchmarks/kafka_start.py [--cold-maven]
--cold-maven also times the jar download into an empty Maven repository (network bound).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

from deploy.kafka.launcher import KafkaLauncher, KafkaSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return round(time.perf_counter() - start, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold-maven", action="store_true")
    ap.add_argument("--restarts", type=int, default=3)
    args = ap.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.cold_maven:
            os.environ["MAVEN_OPTS"] = f"-Dmaven.repo.local={root / 'm2'}"
        cold = KafkaLauncher(
            KafkaSettings(
                state_dir=root / "state",
                cache_dir=root / "cache",
                port=free_port(),
                controller_port=free_port(),
            )
        )
        results["fetch_jars_s"] = timed(cold.fetch)
        results["fetch_from"] = "empty Maven repo" if args.cold_maven else "warm ~/.m2"
        os.environ.pop("MAVEN_OPTS", None)
        results["first_up_s (format+start+topics)"] = timed(cold.up)
        results["down_s"] = timed(cold.down)
        warm = [timed(cold.up) for _ in range(args.restarts) if cold.down() or True]
        results["warm_up_s (restart, formatted, topics exist)"] = warm
        cold.down(purge=True)
    results["cpus"] = os.cpu_count()
    out = Path(__file__).parent / "results" / "kafka_start.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for k, v in results.items():
        print(f"{k}: {v}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
