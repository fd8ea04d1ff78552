"""SDTM rows to events (pure): what maps, what is refused and why, what is noted."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from contracts import InvalidEvent, parse_event
from services.ingest.domain.mapping import Mapped
from services.ingest.domain.sdtm import domain_of, map_rows

DATA = Path(__file__).resolve().parents[2] / "data" / "sdtm"
SERVER = {"recorded_at": "2026-11-01T00:00:00Z", "recorded_by": "test", "source": "sdtm"}


def mapped(name: str) -> Mapped:
    with (DATA / name).open() as f:
        rows = list(csv.DictReader(f))
    return map_rows(name.split(".")[0].upper(), rows, UTC)


def events(m: Mapped) -> dict[str, dict[str, Any]]:
    return dict(m.events)


def rejected(m: Mapped) -> dict[str, str]:
    return {r.row: f"{r.field}: {r.reason}" for r in m.rejections}


def test_dm_maps_sex_age_site_and_the_consent_date() -> None:
    m = mapped("dm.csv")
    first = events(m)["row 1"]
    assert (first["participant_id"], first["sex"], first["age_years"], first["site_id"]) == (
        "DN-101",
        "F",
        55,
        "sardjito",
    )
    assert first["enrolled_at"] == "2026-01-05T00:00:00+00:00"
    assert events(m)["row 2"]["birth_date"] == "1970-02-03"


def test_dm_refuses_an_unknown_sex_a_missing_date_and_a_partial_one() -> None:
    m = mapped("dm.csv")
    assert "'U' is not F or M" in rejected(m)["row 3"]
    assert "no enrolment date" in rejected(m)["row 4"]
    assert "partial date" in rejected(m)["row 6"]
    assert [n.note for n in m.notes] == [
        "RFICDTC blank: enrolment dated by RFSTDTC (first study treatment)"
    ]


def test_lb_maps_every_monitored_analyte_and_keeps_the_loinc() -> None:
    e = events(mapped("lb.csv"))
    assert [e[f"row {n}"]["analyte"] for n in (1, 3, 4, 5, 6)] == [
        "creatinine",
        "egfr",
        "uacr",
        "tnf_alpha",
        "il_10",
    ]
    assert e["row 1"]["visit"] == "baseline" and e["row 1"]["loinc"] == "2160-0"
    assert (e["row 2"]["value"], e["row 2"]["unit"], e["row 2"]["visit"]) == (150, "umol/L", "M1")
    assert e["row 12"]["visit"] == "unscheduled"


def test_a_text_result_is_kept_as_a_censored_value() -> None:
    row6 = events(mapped("lb.csv"))["row 6"]
    assert (row6["comparator"], row6["value"]) == ("<", 0.5)


def test_lb_rejections_name_their_reason() -> None:
    r = rejected(mapped("lb.csv"))
    assert r["row 7"] == "LBTESTCD: test ALT is not monitored by this trial"
    assert "partial date" in r["row 9"]
    assert "'HEMOLYZED' is blank or not a number" in r["row 11"]


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [("row 8", "value", "physiological range"), ("row 13", "unit", "'mmol/L'")],
)
def test_the_contract_refuses_what_the_mapping_passes_on(row: str, field: str, reason: str) -> None:
    body = events(mapped("lb.csv"))[row]
    with pytest.raises(InvalidEvent) as e:
        parse_event({**body, **SERVER})
    assert e.value.errors[0].field == field and reason in e.value.errors[0].reason


def test_ae_maps_grades_seriousness_partial_dates_and_causality() -> None:
    m = mapped("ae.csv")
    e = events(m)
    assert (e["row 1"]["ctcae_grade"], e["row 1"]["serious"], e["row 1"]["relatedness"]) == (
        2,
        False,
        "probable",
    )
    assert (
        e["row 2"]["serious"],
        e["row 2"]["seriousness_criteria"],
        e["row 2"]["onset_date"],
        e["row 2"]["ctcae_grade"],
    ) == (True, ["hospitalization"], "2026-01", 3)
    assert e["row 3"]["seriousness_criteria"] == ["important_medical_event"]
    assert (e["row 4"]["ctcae_grade"], e["row 4"]["outcome"]) == (5, "fatal")
    assert "death" in e["row 4"]["seriousness_criteria"]
    assert e["row 1"]["end_date"] == "2026-01-12"
    notes = {n.note for n in m.notes}
    assert "AESER=N but AESHOSP=Y: taken as serious" in notes
    assert "AESER=Y with no criterion flagged: recorded as important_medical_event" in notes
    for body in e.values():
        parse_event({**body, **SERVER})  # every mapped AE satisfies the contract


def test_ae_rejections_name_their_reason() -> None:
    r = rejected(mapped("ae.csv"))
    assert list(r) == ["row 6"]
    assert "neither AEDTC nor AESTDTC is a complete date" in r["row 6"]


def test_a_blank_causality_is_accepted_as_not_assessed_never_rejected() -> None:
    m = mapped("ae.csv")
    assert events(m)["row 5"]["relatedness"] == "not_assessed"
    assert ("row 5", "AEREL blank: relatedness not_assessed") in {(n.row, n.note) for n in m.notes}
    parse_event({**events(m)["row 5"], **SERVER})


def test_ex_gives_the_dose_in_cells_from_cells_per_kg_and_the_weight() -> None:
    m = mapped("ex.csv")
    dose = events(m)["row 1"]
    assert dose["cells_total"] == pytest.approx(1.05e6 * 64) and dose["weight_kg"] == 64
    assert "this trial's route is intra-renal" in rejected(m)["row 2"]


def test_the_same_record_always_gets_the_same_event_id() -> None:
    assert (
        events(mapped("lb.csv"))["row 1"]["event_id"]
        == events(mapped("lb.csv"))["row 1"]["event_id"]
    )


def test_the_domain_comes_from_the_domain_column_or_the_file_name() -> None:
    assert domain_of("x.csv", {"DOMAIN": "LB"}) == "LB"
    assert domain_of("path/AE.xpt", None) == "AE"
    assert domain_of("vitals.csv", {"DOMAIN": "VS"}) is None


@pytest.mark.parametrize(
    ("columns", "locality", "note"),
    [
        ({"AELOCSYS": "LOCAL"}, "local", None),
        ({"AELOCSYS": "systemic"}, "systemic", None),
        ({"AELOCSYS": "S", "AELOC": "KIDNEY"}, "systemic", None),  # the sponsor column decides
        ({"AELOC": "KIDNEY"}, "local", "locality local from AELOC 'KIDNEY'"),
        ({"AELOC": "SKIN"}, "systemic", "locality systemic from AELOC 'SKIN'"),
        ({"AELOCSYS": "BOTH"}, None,
         "AELOCSYS 'BOTH' is not LOCAL or SYSTEMIC: locality not recorded"),
        ({}, None, None),
    ],
)  # fmt: skip
def test_locality_from_the_sponsor_column_aelocsys_else_aeloc(
    columns: dict[str, str], locality: str | None, note: str | None
) -> None:
    with (DATA / "ae.csv").open() as f:
        row = next(csv.DictReader(f))
    m = map_rows("AE", [{**row, **columns}], UTC)
    (event,) = events(m).values()  # accepted whatever the locality says: an AE is never lost
    assert event.get("local_or_systemic") == locality
    notes = {n.note for n in m.notes}
    assert (note in notes) if note else not any("locality" in n.lower() for n in notes)
    parse_event({**event, **SERVER})


def _pilot(shared_data: Path, name: str) -> list[dict[str, str]]:
    with (shared_data / "sdtm" / name).open() as f:
        return list(csv.DictReader(f))


@pytest.mark.external
def test_the_pilot_ds_gives_one_disposition_per_subject_and_refuses_each_milestone(
    shared_data: Path,
) -> None:
    rows = _pilot(shared_data, "ds.csv")
    m = map_rows("DS", rows, UTC)
    assert (len(m.events), len(m.rejections)) == (306, 290)
    mapped = [e for _, e in m.events]
    assert len({e["participant_id"] for e in mapped}) == 306
    # the file's own terms, counted as the file gives them
    wanted = Counter(r["DSDECOD"] for r in rows if r["DSCAT"] == "DISPOSITION EVENT")
    assert Counter(e["source_term"] for e in mapped) == wanted
    kinds = Counter(e["disposition"] for e in mapped)
    assert kinds == {
        "completed": 110, "withdrawn_by_investigator": 92 + 7 + 6 + 4 + 3,
        "screen_failure": 52, "withdrew_consent": 27, "died": 3, "lost_to_follow_up": 2,
    }  # fmt: skip
    assert all(
        "a milestone, not a disposition" in r.reason and r.field == "DSCAT" for r in m.rejections
    )
    for e in mapped:
        parse_event({**e, **SERVER})  # every mapped row is a valid event


def test_a_ds_row_with_an_unknown_term_or_a_partial_date_is_refused_naming_the_column() -> None:
    base = {"STUDYID": "S", "DOMAIN": "DS", "USUBJID": "S-001", "DSSEQ": "1",
            "DSCAT": "DISPOSITION EVENT", "DSDECOD": "COMPLETED",
            "DSSTDTC": "2026-05-01"}  # fmt: skip
    m = map_rows("DS", [{**base, "DSDECOD": "ABDUCTED"}, {**base, "DSSTDTC": "2026-05"}], UTC)
    assert rejected(m) == {
        "row 1": "DSDECOD: ABDUCTED is not a known disposition term",
        "row 2": "DSSTDTC: 2026-05: a disposition needs its complete date",
    }


@pytest.mark.external
def test_the_pilot_ae_keeps_every_coded_meddra_level_as_the_file_gives_it(
    shared_data: Path,
) -> None:
    rows = _pilot(shared_data, "ae.csv")
    m = map_rows("AE", rows, UTC)
    assert (len(m.events), len(m.rejections)) == (1191, 0)
    for (_, e), row in zip(m.events, rows, strict=True):
        meddra = e["meddra"]
        assert (meddra["llt"], meddra["pt"], meddra["hlt"], meddra["hlgt"], meddra["soc"]) == (
            row["AELLT"], row["AEDECOD"], row["AEHLT"], row["AEHLGT"], row["AESOC"],
        )  # fmt: skip
        assert not any(k.endswith("_code") for k in meddra)  # the pilot's code columns are blank
        parse_event({**e, **SERVER})


def test_meddra_codes_are_carried_and_a_malformed_one_is_left_out_with_a_note() -> None:
    with (DATA / "ae.csv").open() as f:
        row = next(csv.DictReader(f))
    coded = {"AEDECOD": "Flank pain", "AEPTCD": "10016750.0", "AESOC": "Musculoskeletal",
             "AESOCCD": "1002839", "AELLT": "", "AEHLT": "", "AEHLGT": ""}  # fmt: skip
    m = map_rows("AE", [{**row, **coded}], UTC)
    (event,) = events(m).values()
    assert event["meddra"] == {"pt": "Flank pain", "pt_code": "10016750", "soc": "Musculoskeletal"}
    assert "AESOCCD '1002839' is not an 8-digit MedDRA code: left out" in {n.note for n in m.notes}
    parse_event({**event, **SERVER})


@pytest.mark.external
def test_the_pilot_ds_as_a_sas_transport_file_maps_like_its_csv(
    shared_data: Path, tmp_path: Path
) -> None:
    import pandas as pd
    import pyreadstat

    from services.ingest.importer import read_rows

    xpt = tmp_path / "ds.xpt"
    frame = pd.read_csv(shared_data / "sdtm" / "ds.csv", dtype=str).fillna("")
    pyreadstat.write_xport(frame, str(xpt), table_name="DS", file_format_version=5)
    rows = read_rows("ds.xpt", xpt.read_bytes())
    assert domain_of("ds.xpt", rows[0]) == "DS"
    from_xpt, from_csv = (
        map_rows("DS", rows, UTC),
        map_rows("DS", _pilot(shared_data, "ds.csv"), UTC),
    )
    assert from_xpt.events == from_csv.events
    assert len(from_xpt.events) == 306
