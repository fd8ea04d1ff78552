"""Reading import files: a malformed file is a clear error, never a crash (schemathesis found
one)."""

from __future__ import annotations

import pytest

from services.ingest.importer import read_rows


def test_a_bare_carriage_return_ends_a_line_instead_of_crashing() -> None:
    # the body schemathesis sent when it found the 500
    assert read_rows("lb.csv", "\u008f\u008d\r\u00ff".encode()) == [{"\u008f\u008d": "\u00ff"}]


def test_an_unreadable_csv_is_an_error_naming_the_file() -> None:
    with pytest.raises(ValueError, match=r"lb\.csv: not a readable CSV"):
        read_rows("lb.csv", b"A,B\n" + b"x" * 200_000 + b",1\n")  # over the csv field limit
    with pytest.raises(ValueError, match=r"lb\.csv: not a readable CSV"):
        read_rows("lb.csv", b"\xff\xfe not utf-8")


def test_a_broken_transport_file_is_an_error_naming_the_file() -> None:
    with pytest.raises(ValueError, match=r"ae\.xpt: not a readable SAS transport file"):
        read_rows("ae.xpt", b"HEADER RECORD*******LIBRARY garbage")


def test_a_csv_reads_as_text_rows() -> None:
    assert read_rows("dm.csv", b"\xef\xbb\xbfUSUBJID,AGE\nDN-1,50\n") == [
        {"USUBJID": "DN-1", "AGE": "50"}
    ]
