"""A CSV export's cells as a spreadsheet reads them: no formula gets through."""

from __future__ import annotations

import pytest

from services.audit.api import _cell


@pytest.mark.parametrize(
    "value",
    [
        "=1+1",
        "+1",
        "-1+2",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        "\uff1d1+1",
        "\uff0b1",
        " =1+1",
        "\u00a0\u3000=1",
        "\x07beep",
        "\uff20SUM(A1)",
    ],
)
def test_what_a_spreadsheet_would_run_is_made_text(value: str) -> None:
    assert _cell(value) == "'" + value


@pytest.mark.parametrize("value", ["Haematoma", "DN-101", "a=b", "", 3, -1.5, None])
def test_the_rest_is_left_as_it_is(value: object) -> None:
    assert _cell(value) == value
