"""CDISC SDTM DM, LB, AE, EX and DS rows to contract events. Pure: rows in, Mapped out.

Real exports disagree with themselves, and this says so rather than guessing:
- AESER=N with a seriousness flag set is serious (a Note records it); AESER=Y with no flag is
  serious with `important_medical_event`; AESCAN/AESOD (older SDTM) count as important medical.
- Partial dates (2014-03) stay partial in onset/end dates; where a complete clinical time is
  required (a lab's sample time, an enrolment) a partial date rejects the row.
- Text results (<0.2) are kept as censored values (comparator + value) no numeric rule reads.
- Tests the trial does not monitor are rejected with that reason, and counted.
- Without AETOXGR, AESEV gives the grade (MILD 1, MODERATE 2, SEVERE 3; a fatal AE is grade 5).
- Local or systemic: SDTM has no variable for it. The sponsor column AELOCSYS (LOCAL/SYSTEMIC,
  or L/S) says it; else AELOC (the standard "location of event") names a body site, local when
  it is at the injection (a kidney, the flank, the injection site), systemic elsewhere; else the
  AE is accepted with its locality not recorded (the DSMB report counts those). An AELOCSYS it
  cannot read is a Note, not a rejection: an AE is never lost for a descriptive field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import tzinfo
from typing import Any

from services.ingest.domain.mapping import (
    LOCALITY_WORDS,
    Mapped,
    Note,
    Rejection,
    RowError,
    censored,
    complete_datetime,
    locality_of_site,
    number,
    partial_date,
    stable_id,
)

Row = Mapping[str, str]

LBTESTCD = {
    "CREAT": "creatinine",
    "EGFR": "egfr",
    "GFR": "egfr",
    "GFRE": "egfr",
    "ALBCREAT": "uacr",
    "MALBCRT": "uacr",
    "UACR": "uacr",
    "TNFA": "tnf_alpha",
    "TNFALPHA": "tnf_alpha",
    "IL10": "il_10",
}
VISITS = {"BASELINE": "baseline", "MONTH 1": "M1", "MONTH 3": "M3", "MONTH 6": "M6",
          "MONTH 9": "M9", "MONTH 12": "M12", "M1": "M1", "M3": "M3", "M6": "M6", "M9": "M9",
          "M12": "M12"}  # fmt: skip
SERIOUSNESS = {
    "AESDTH": "death",
    "AESLIFE": "life_threatening",
    "AESHOSP": "hospitalization",
    "AESDISAB": "disability",
    "AESCONG": "congenital_anomaly",
    "AESMIE": "important_medical_event",
    "AESCAN": "important_medical_event",  # "involves cancer": SDTM 3.1.x only
    "AESOD": "important_medical_event",  # "occurred with overdose": SDTM 3.1.x only
}
RELATEDNESS = {
    "NONE": "not_related", "NOT RELATED": "not_related", "N": "not_related",
    "UNRELATED": "not_related", "REMOTE": "unlikely", "UNLIKELY": "unlikely",
    "UNLIKELY RELATED": "unlikely", "POSSIBLE": "possible", "POSSIBLY RELATED": "possible",
    "PROBABLE": "probable", "PROBABLY RELATED": "probable", "DEFINITE": "definite",
    "DEFINITELY RELATED": "definite", "RELATED": "definite", "Y": "definite",
}  # fmt: skip
OUTCOMES = {
    "RECOVERED/RESOLVED": "recovered",
    "RECOVERING/RESOLVING": "recovering",
    "NOT RECOVERED/NOT RESOLVED": "not_recovered",
    "RECOVERED/RESOLVED WITH SEQUELAE": "recovered_with_sequelae",
    "FATAL": "fatal",
    "UNKNOWN": "unknown",
    "": "unknown",
}
SEVERITY_GRADE = {"MILD": 1, "MODERATE": 2, "SEVERE": 3}
# DS: DSDECOD (CDISC's NCOMPLT codelist and its usual sponsor spellings) -> (disposition,
# withdrawal reason); the term itself travels as `source_term`, as the file gives it
DISPOSITIONS: dict[str, tuple[str, str | None]] = {
    "COMPLETED": ("completed", None),
    "DEATH": ("died", None),
    "SCREEN FAILURE": ("screen_failure", None),
    "LOST TO FOLLOW-UP": ("lost_to_follow_up", None),
    "WITHDRAWAL BY SUBJECT": ("withdrew_consent", None),
    "WITHDRAWAL BY PARENT/GUARDIAN": ("withdrew_consent", None),
    "WITHDREW CONSENT": ("withdrew_consent", None),
    "ADVERSE EVENT": ("withdrawn_by_investigator", "adverse_event"),
    "PROTOCOL VIOLATION": ("withdrawn_by_investigator", "protocol_violation"),
    "PROTOCOL DEVIATION": ("withdrawn_by_investigator", "protocol_violation"),
    "LACK OF EFFICACY": ("withdrawn_by_investigator", "lack_of_efficacy"),
    "STUDY TERMINATED BY SPONSOR": ("withdrawn_by_investigator", "sponsor_terminated"),
    "SITE TERMINATED BY SPONSOR": ("withdrawn_by_investigator", "sponsor_terminated"),
    "PHYSICIAN DECISION": ("withdrawn_by_investigator", "other"),
    "NON-COMPLIANCE WITH STUDY DRUG": ("withdrawn_by_investigator", "other"),
    "PREGNANCY": ("withdrawn_by_investigator", "other"),
    "OTHER": ("withdrawn_by_investigator", "other"),
}
# AE: MedDRA levels (name column, code column); AESOC is the primary SOC, AEBODSYS its stand-in
MEDDRA_COLUMNS = {
    "llt": ("AELLT", "AELLTCD"),
    "pt": ("AEDECOD", "AEPTCD"),
    "hlt": ("AEHLT", "AEHLTCD"),
    "hlgt": ("AEHLGT", "AEHLGTCD"),
    "soc": ("AESOC", "AESOCCD"),
}
SUPPORTED = ("DM", "LB", "AE", "EX", "DS")


def _get(row: Row, name: str) -> str:
    return (row.get(name) or "").strip()


def _base(row: Row, domain: str, key: str, at: Any) -> dict[str, Any]:
    study, subject = _get(row, "STUDYID"), _get(row, "USUBJID")
    if not subject:
        raise RowError("USUBJID", "is blank")
    if not study:
        raise RowError("STUDYID", "is blank")
    return {"event_id": stable_id("sdtm", study, domain, subject, key), "trial_id": study,
            "participant_id": subject, "occurred_at": at.isoformat()}  # fmt: skip


def dm(row: Row, zone: tzinfo, notes: list[str]) -> dict[str, Any]:
    sex = _get(row, "SEX")
    if sex not in ("F", "M"):
        raise RowError("SEX", f"{sex!r} is not F or M; CKD-EPI 2021 needs the sex")
    when, used = _get(row, "RFICDTC"), "RFICDTC"
    if not when:
        when, used = _get(row, "RFSTDTC"), "RFSTDTC"
        if not when:
            raise RowError("RFICDTC", "and RFSTDTC are blank: no enrolment date (screen failure?)")
        notes.append("RFICDTC blank: enrolment dated by RFSTDTC (first study treatment)")
    enrolled_at = complete_datetime(when, used, zone)
    event = _base(row, "DM", "enrolled", enrolled_at)
    age, born = number(_get(row, "AGE")), _get(row, "BRTHDTC")
    if age is not None:
        if _get(row, "AGEU") not in ("", "YEARS"):
            raise RowError("AGEU", f"{_get(row, 'AGEU')!r}: only YEARS is accepted")
        event["age_years"] = int(age)
    elif born and len(born) >= 10:
        event["birth_date"] = born[:10]
    else:
        raise RowError("AGE", "is blank and BRTHDTC is not a complete date")
    site = _get(row, "SITEID")
    if not site:
        raise RowError("SITEID", "is blank")
    return {**event, "event_type": "participant.enrolled", "sex": sex, "site_id": site,
            "enrolled_at": enrolled_at.isoformat()}  # fmt: skip


def lb(row: Row, zone: tzinfo, notes: list[str]) -> dict[str, Any]:
    code = _get(row, "LBTESTCD").upper()
    analyte = LBTESTCD.get(code)
    if analyte is None:
        raise RowError("LBTESTCD", f"test {code or '(blank)'} is not monitored by this trial")
    at = complete_datetime(_get(row, "LBDTC"), "LBDTC", zone)
    event = _base(row, "LB", _get(row, "LBSEQ") or _get(row, "LBDTC") + code, at)
    value_fields = [("LBORRES", "LBORRESU"), ("LBSTRESN", "LBSTRESU"), ("LBSTRESC", "LBSTRESU")]
    for result_name, unit_name in value_fields:
        result, unit = _get(row, result_name), _get(row, unit_name)
        if not result:
            continue
        value, limit = number(result), censored(result)
        if value is not None:
            event.update(value=value, unit=unit)
            break
        if limit is not None:
            event.update(comparator=limit[0], value=limit[1], unit=unit)
            notes.append(f"text result {result!r} kept as a censored value")
            break
    else:
        raise RowError("LBORRES", f"result {_get(row, 'LBORRES')!r} is blank or not a number")
    visit = "baseline" if _get(row, "LBBLFL") == "Y" else VISITS.get(_get(row, "VISIT").upper())
    if visit is None and "UNSCHEDULED" in _get(row, "VISIT").upper():
        visit = "unscheduled"
    loinc = _get(row, "LBLOINC")
    return {**event, "event_type": "lab.resulted", "analyte": analyte, "visit": visit,
            **({"loinc": loinc} if loinc else {})}  # fmt: skip


def ae(row: Row, zone: tzinfo, notes: list[str]) -> dict[str, Any]:
    seq = _get(row, "AESEQ")
    if not seq:
        raise RowError("AESEQ", "is blank")
    onset = partial_date(_get(row, "AESTDTC"))
    if onset is None:
        raise RowError("AESTDTC", "is blank: an AE needs its onset date")
    for name in ("AEDTC", "AESTDTC"):
        try:
            at = complete_datetime(_get(row, name), name, zone)
            break
        except RowError:
            continue
    else:
        raise RowError("AEDTC", "neither AEDTC nor AESTDTC is a complete date")
    criteria = sorted({c for flag, c in SERIOUSNESS.items() if _get(row, flag) == "Y"})
    flagged = [flag for flag in SERIOUSNESS if _get(row, flag) == "Y"]
    aeser = _get(row, "AESER")
    if aeser == "N" and flagged:
        notes.append(f"AESER=N but {', '.join(flagged)}=Y: taken as serious")
    if aeser == "Y" and not criteria:
        criteria = ["important_medical_event"]
        notes.append("AESER=Y with no criterion flagged: recorded as important_medical_event")
    outcome = OUTCOMES.get(_get(row, "AEOUT").upper())
    if outcome is None:
        raise RowError("AEOUT", f"{_get(row, 'AEOUT')!r} is not a CDISC outcome term")
    grade_text = _get(row, "AETOXGR")
    if grade_text:
        grade = int(number(grade_text) or 0)
        if not 1 <= grade <= 5:
            raise RowError("AETOXGR", f"{grade_text!r} is not a CTCAE grade 1-5")
    elif _get(row, "AESEV").upper() in SEVERITY_GRADE:
        grade = SEVERITY_GRADE[_get(row, "AESEV").upper()]
        notes.append("no AETOXGR: grade from AESEV (MILD 1, MODERATE 2, SEVERE 3)")
    else:
        raise RowError("AESEV", f"{_get(row, 'AESEV')!r}: no AETOXGR and no usable AESEV")
    if outcome == "fatal" and grade != 5:
        grade = 5
        notes.append("AEOUT=FATAL: CTCAE grade 5")
    if not _get(row, "AEREL"):
        # accepted, never rejected: an unassessed causality counts as related until assessed
        relatedness = "not_assessed"
        notes.append("AEREL blank: relatedness not_assessed")
    else:
        relatedness = RELATEDNESS.get(_get(row, "AEREL").upper()) or ""
        if not relatedness:
            raise RowError("AEREL", f"{_get(row, 'AEREL')!r} is not a known causality term")
    term = _get(row, "AETERM") or _get(row, "AEDECOD")
    if not term:
        raise RowError("AETERM", "is blank")
    if grade == 5 and "death" not in criteria:
        criteria = sorted({*criteria, "death"})
    locality = _locality(row, notes)
    meddra = _meddra(row, notes)
    return {**_base(row, "AE", seq, at), "event_type": "ae.reported", "ae_id": f"AE-{seq}",
            "term": term, "onset_date": onset, "end_date": partial_date(_get(row, "AEENDTC")),
            "ctcae_grade": grade, "serious": bool(criteria), "seriousness_criteria": criteria,
            "relatedness": relatedness, "outcome": outcome,
            **({"local_or_systemic": locality} if locality else {}),
            **({"meddra": meddra} if meddra else {})}  # fmt: skip


def _meddra(row: Row, notes: list[str]) -> dict[str, str] | None:
    """The MedDRA levels the row codes, as given (never looked up: nothing is invented). A
    code that is not MedDRA's 8 digits is left out with a Note: the AE is never lost for it."""
    out: dict[str, str] = {}
    for level, (name_col, code_col) in MEDDRA_COLUMNS.items():
        name = _get(row, name_col) or (_get(row, "AEBODSYS") if level == "soc" else "")
        code = _get(row, code_col) or (_get(row, "AEBDSYCD") if level == "soc" else "")
        if name:
            out[level] = name
        if code:
            digits = code[:-2] if code.endswith(".0") else code  # a number through SAS/pandas
            if len(digits) == 8 and digits.isdigit():
                out[f"{level}_code"] = digits
            else:
                notes.append(f"{code_col} {code!r} is not an 8-digit MedDRA code: left out")
    return out or None


def ds(row: Row, zone: tzinfo, notes: list[str]) -> dict[str, Any]:
    """A DS row of DSCAT DISPOSITION EVENT: how the participant left, and when (DSSTDTC).
    Other categories (protocol milestones, other events) are not dispositions: refused with
    that reason, row by row."""
    category, decod = _get(row, "DSCAT").upper(), _get(row, "DSDECOD")
    if category != "DISPOSITION EVENT":
        raise RowError(
            "DSCAT",
            f"{category or '(blank)'} ({decod or _get(row, 'DSTERM')}): a milestone, not a "
            "disposition; only DISPOSITION EVENT rows end a participant's schedule",
        )
    if decod.upper() not in DISPOSITIONS:
        raise RowError("DSDECOD", f"{decod or '(blank)'} is not a known disposition term")
    disposition, reason = DISPOSITIONS[decod.upper()]
    on = partial_date(_get(row, "DSSTDTC"))
    if on is None or len(on) != 10:
        raise RowError("DSSTDTC", f"{on or '(blank)'}: a disposition needs its complete date")
    at = complete_datetime(on, "DSSTDTC", zone)
    verbatim = _get(row, "DSTERM")
    return {**_base(row, "DS", _get(row, "DSSEQ") or on, at),
            "event_type": "participant.disposition", "disposition": disposition,
            "disposition_date": on, "source_term": decod,
            **({"withdrawal_reason": reason} if reason else {}),
            **({"verbatim": verbatim} if verbatim and verbatim != decod else {})}  # fmt: skip


def _locality(row: Row, notes: list[str]) -> str | None:
    said = _get(row, "AELOCSYS")
    if said:
        if said.lower() in LOCALITY_WORDS:
            return LOCALITY_WORDS[said.lower()]
        notes.append(f"AELOCSYS {said!r} is not LOCAL or SYSTEMIC: locality not recorded")
        return None
    site = _get(row, "AELOC")
    if not site:
        return None
    locality = locality_of_site(site)
    notes.append(f"locality {locality} from AELOC {site!r}")
    return locality


def ex(row: Row, zone: tzinfo, notes: list[str]) -> dict[str, Any]:
    """EX with EXDOSE in cells or cells/kg (EXDOSU 'cells', '10^6 cells', 'cells/kg',
    '10^6 cells/kg') and the body weight in EXWTKG (or WEIGHT): SDTM EX has no weight column of
    its own, and the dose per kg cannot be checked without one."""
    dose, unit = number(_get(row, "EXDOSE")), _get(row, "EXDOSU").lower()
    if dose is None or dose <= 0:
        raise RowError("EXDOSE", f"{_get(row, 'EXDOSE')!r} is not a positive number")
    weight = number(_get(row, "EXWTKG") or _get(row, "WEIGHT"))
    if weight is None:
        raise RowError("EXWTKG", "is blank: the dose in cells/kg needs the body weight")
    factors = {"cells": 1.0, "10^6 cells": 1e6, "cells/kg": weight, "10^6 cells/kg": 1e6 * weight}
    if unit not in factors:
        raise RowError("EXDOSU", f"{unit!r} is not one of {', '.join(factors)}")
    route = _get(row, "EXROUTE").upper()
    if route and route not in ("INTRARENAL", "INTRA-RENAL"):
        raise RowError("EXROUTE", f"{route!r}: this trial's route is intra-renal")
    at = complete_datetime(_get(row, "EXSTDTC"), "EXSTDTC", zone)
    return {**_base(row, "EX", _get(row, "EXSEQ") or "1", at), "event_type": "dose.administered",
            "cells_total": dose * factors[unit], "weight_kg": weight,
            "lot": _get(row, "EXLOT") or "unknown"}  # fmt: skip


_MAPPERS = {"DM": dm, "LB": lb, "AE": ae, "EX": ex, "DS": ds}


def map_rows(domain: str, rows: Iterable[Row], zone: tzinfo, first_row: int = 1) -> Mapped:
    """Each row an event or a rejection (row numbers count data rows from `first_row`)."""
    mapper = _MAPPERS[domain]
    out = Mapped()
    for n, row in enumerate(rows, start=first_row):
        where, notes = f"row {n}", list[str]()
        try:
            out.events.append((where, mapper(row, zone, notes)))
        except RowError as e:
            out.rejections.append(Rejection(where, e.field, e.reason))
            continue
        out.notes += [Note(where, note) for note in notes]
    return out


def domain_of(name: str, first_row: Row | None) -> str | None:
    """DM/LB/AE/EX/DS from the DOMAIN column, else from the file name (dm.csv, LB.xpt)."""
    if first_row is not None and _get(first_row, "DOMAIN").upper() in SUPPORTED:
        return _get(first_row, "DOMAIN").upper()
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0].upper()
    return stem if stem in SUPPORTED else None
