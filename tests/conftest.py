from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public FHIR and SDTM files beside the project; never copied into it."""
    if not SHARED_DATA.is_dir():
        reason = f"../shared/data is absent ({SHARED_DATA}): the external files are not here"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return SHARED_DATA
