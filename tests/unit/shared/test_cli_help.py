"""`safety-monitor --help` reads as an operator's tool: what the product is, each job with
examples that the command itself accepts, and `--version` with the Kafka it runs."""

from __future__ import annotations

import argparse
import shlex
from importlib.metadata import version

import pytest

from deploy.kafka.launcher import DEFAULT_VERSION
from services.cli import main, parser


def _jobs() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_version_names_the_release_and_the_kafka_it_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out.strip()
    ours = version("trial-safety-monitor")
    assert out == f"safety-monitor {ours} (Apache Kafka {DEFAULT_VERSION}, KRaft)"


def test_the_top_help_describes_the_product_and_lists_every_job() -> None:
    text = parser().format_help()
    assert "diabetic nephropathy" in text and "safety officer" in text and "DSMB" in text
    assert "developer" not in text.lower()  # it once printed the module's developer note
    for name, job in _jobs().items():
        assert f"\n    {name}" in text, name  # listed, with its one-line summary
        assert job.description, name


def test_every_example_in_every_jobs_help_is_accepted_by_the_command() -> None:
    jobs = _jobs()
    for name, job in jobs.items():
        help_text = job.format_help()
        assert "examples:" in help_text, name
        examples = help_text.split("examples:\n", 1)[1].strip().splitlines()
        assert examples, name
        for line in examples:
            command = line.split(" > ")[0]  # what the shell redirects is not an argument
            words = [w for w in shlex.split(command) if "=" not in w.split("/")[0]]  # env
            if words[:2] == ["make", "demo"]:
                continue
            assert words[0] == "safety-monitor" and words[1] == name, line
            parser().parse_args(words[1:])  # raises SystemExit(2) if the example is wrong


def test_bench_refuses_no_ingest_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--only", "ingest", "--ingest-processes", "0"]) == 2
    assert "--ingest-processes must be > 0" in capsys.readouterr().err
