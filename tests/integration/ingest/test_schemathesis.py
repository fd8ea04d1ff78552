"""Schemathesis against the served OpenAPI spec of a real `safety-monitor ingest serve` process
(uvicorn, SQLite, the test broker): generated requests must never get a server error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import free_port


@pytest.fixture(scope="module")
def ingest_server(
    kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    home = tmp_path_factory.mktemp("ingest-server")
    port = free_port()
    env = {
        **os.environ,
        "SAFETY_MONITOR_KAFKA_BOOTSTRAP": kafka,
        "SAFETY_MONITOR_INGEST_DATABASE_URL": f"sqlite+aiosqlite:///{home / 'ingest.db'}",
        "SAFETY_MONITOR_INGEST_KAFKA_TIMEOUT_S": "5",
    }
    cli = [sys.executable, "-m", "services.cli", "ingest"]
    keys = subprocess.run(
        [*cli, "keys", "--role", "admin"], env=env, capture_output=True, text=True, check=True
    )
    secret = re.search(r"secret: (\S+)", keys.stdout).group(1)  # type: ignore[union-attr]
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [*cli, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield base, secret
    finally:
        proc.terminate()  # uvicorn's graceful shutdown, then it re-raises SIGTERM
        assert proc.wait(30) in (0, -15)
        log.close()
        text = (home / "server.log").read_text()
        assert "Application shutdown complete" in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]


def test_generated_requests_never_get_a_server_error(ingest_server: tuple[str, str]) -> None:
    # Driven by hand rather than by schemathesis' pytest plugin, which does not load on pytest 9.
    base, secret = ingest_server
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/events", "/fhir/Bundle", "/v1/imports/sdtm"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def no_server_error(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": secret}, checks=[not_a_server_error])

        no_server_error()
