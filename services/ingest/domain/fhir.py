"""FHIR R4 Bundles (transaction, batch, collection) of Patient, Observation and AdverseEvent to
contract events. Pure: a parsed Bundle in, Mapped out.

What is unambiguous is mapped; every other entry is rejected with the reason (a resource type
that is not mapped, an unknown code or unit, no date, no subject, a panel without a value...).
Enrolment is a ResearchSubject (period.start) with its Patient in the same Bundle; a Patient alone
only names the subject of the other entries (its enrolment date would have to be guessed).
Real feeds put the value in valueQuantity or in component[], code units in UCUM, SNOMED or text,
carry comparators (kept as censored values), date by effectiveDateTime, effectivePeriod or only
`issued` (noted), and reference the subject as urn:uuid: inside the Bundle or as Patient/ID.

A transaction Bundle is not applied all-or-nothing here: each entry is accepted or rejected on
its own, and the answer lists both. (FHIR servers roll back a whole transaction; a safety
monitor must not drop a valid lab because a Claim beside it was not mapped.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from services.ingest.domain.mapping import (
    Mapped,
    Note,
    Rejection,
    RowError,
    locality_of_site,
    stable_id,
)

ACCEPTED_TYPES = ("transaction", "batch", "collection")
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
# AdverseEvent has no local/systemic element in R4. Read, in this order: an extension whose url
# ends in "ae-locality" (valueCode local|systemic, this project's); a body-site extension (R4's
# openEHR-location, "the anatomical location where the symptoms manifested", or bodySite) with a
# site local when at the injection (services/ingest/domain/mapping.locality_of_site); and
# AdverseEvent.location, a place, which counts only when it names the injected kidney.
BODY_SITE_EXTENSIONS = (
    "http://hl7.org/fhir/StructureDefinition/openEHR-location",
    "http://hl7.org/fhir/StructureDefinition/bodySite",
)

# LOINC -> analyte. eGFR codes of older equations are kept on the event so the DSMB knows which.
ANALYTES = {
    "2160-0": "creatinine",
    "38483-4": "creatinine",
    "14682-9": "creatinine",
    "98979-8": "egfr",
    "62238-1": "egfr",
    "33914-3": "egfr",
    "48642-3": "egfr",
    "48643-1": "egfr",
    "50044-7": "egfr",
    "88293-6": "egfr",
    "88294-4": "egfr",
    "9318-7": "uacr",
    "14959-1": "uacr",
    "14958-3": "uacr",
    "32294-1": "uacr",
    "3074-2": "tnf_alpha",
    "26848-2": "il_10",
}
SERIOUSNESS = {
    "non-serious": None,
    "serious": "important_medical_event",
    "seriousresultsindeath": "death",
    "seriousislifethreatening": "life_threatening",
    "seriousresultsinhospitalization": "hospitalization",
    "seriousresultsinpersistentorsignificantdisability": "disability",
    "seriousresultsincongenitalanomaly": "congenital_anomaly",
    "seriousismedicallyimportant": "important_medical_event",
}
SEVERITY_GRADE = {"mild": 1, "moderate": 2, "severe": 3}
OUTCOMES = {
    "resolved": "recovered",
    "recovering": "recovering",
    "ongoing": "not_recovered",
    "resolvedwithsequelae": "recovered_with_sequelae",
    "fatal": "fatal",
    "unknown": "unknown",
}
CAUSALITY = {
    "certain": "definite",
    "probably/likely": "probable",
    "probable": "probable",
    "likely": "probable",
    "possible": "possible",
    "unlikely": "unlikely",
    "not related": "not_related",
    "not-related": "not_related",
}
REFUSED_STATUS = ("entered-in-error", "cancelled", "registered")
MEDDRA = "http://terminology.hl7.org/CodeSystem/mdr"
# ResearchSubject.status (R4) -> a disposition; R4 gives no reason for off-study (R5's
# `progress` does), so it is read as completed and a Note says so
SUBJECT_DISPOSITIONS = {
    "ineligible": "screen_failure",
    "not-registered": "screen_failure",
    "withdrawn": "withdrew_consent",
    "off-study": "completed",
}
NOT_YET_ENROLLED = ("candidate", "potential-candidate", "screening", "pending-on-study", "eligible")


@dataclass(frozen=True)
class FhirContext:
    trial_id: str
    site_id: str | None  # the site a ResearchSubject enrols at (a site key's own site)
    zone: tzinfo  # for date-only values


def _codes(concept: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [
        (c.get("system", ""), str(c.get("code", ""))) for c in (concept or {}).get("coding", [])
    ]


def _text(concept: dict[str, Any] | None) -> str:
    concept = concept or {}
    if concept.get("text"):
        return str(concept["text"])
    for c in concept.get("coding", []):
        if c.get("display"):
            return str(c["display"])
    return ""


def _instant(value: str, field: str, zone: tzinfo) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise RowError(field, f"{value!r} is not a complete FHIR dateTime") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


class _Bundle:
    def __init__(self, bundle: dict[str, Any], ctx: FhirContext) -> None:
        self.ctx = ctx
        self.entries: list[dict[str, Any]] = [
            e for e in bundle.get("entry", []) if isinstance(e, dict)
        ]
        # A member Observation without a date of its own is dated by the panel listing it.
        self.panel_dates: dict[str, str] = {}
        for e in self.entries:
            r = e.get("resource") or {}
            when = r.get("effectiveDateTime") or (r.get("effectivePeriod") or {}).get("start")
            for member in r.get("hasMember") or [] if when else []:
                ref = str(member.get("reference", ""))
                self.panel_dates.setdefault(ref.rsplit("/", 1)[-1], str(when))
        # urn:uuid:... (and absolute URLs) of the Bundle's own Patients -> their id
        self.patients = {
            e.get("fullUrl"): e["resource"].get("id")
            for e in self.entries
            if isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") == "Patient"
        }

    def participant(self, resource: dict[str, Any]) -> str:
        ref = str((resource.get("subject") or {}).get("reference") or "")
        if not ref:
            raise RowError("subject", "is missing: whose result is this?")
        if self.patients.get(ref):
            return str(self.patients[ref])
        if ref.startswith("urn:uuid:"):
            raise RowError("subject", f"{ref} is not a Patient in this Bundle")
        parts = ref.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == "Patient":
            return parts[-1]
        raise RowError("subject", f"{ref!r} is not a Patient reference")

    def envelope(
        self, resource: dict[str, Any], kind: str, at: datetime, key: str = ""
    ) -> dict[str, Any]:
        version = str((resource.get("meta") or {}).get("versionId") or "")
        return {
            "event_id": stable_id("fhir", kind, str(resource.get("id")), version, key),
            "trial_id": self.ctx.trial_id,
            "occurred_at": at.isoformat(),
        }


def _subject_patient(b: _Bundle, ref: str) -> dict[str, Any] | None:
    for e in b.entries:
        r = e.get("resource") or {}
        if r.get("resourceType") == "Patient" and ref in (
            e.get("fullUrl"),
            f"Patient/{r.get('id')}",
        ):
            return r
    return None


def research_subject(b: _Bundle, r: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """An enrolment: the ResearchSubject's period.start, with sex and birth date from its Patient
    (which must be in the same Bundle); with a status that ends the schedule (withdrawn,
    off-study), a disposition on period.end too; a screen failure (ineligible, not-registered)
    is a disposition alone: never enrolled."""
    status = str(r.get("status") or "")
    if status in NOT_YET_ENROLLED:
        raise RowError("status", f"{status}: not an enrolment (not yet on study)")
    ref = str((r.get("individual") or {}).get("reference") or "")
    person = _subject_patient(b, ref)
    if person is None:
        raise RowError("individual", f"{ref or 'missing'}: the Patient must be in this Bundle")
    pid = person.get("id")
    if not pid:
        raise RowError("individual", "the Patient has no id: it becomes the participant_id")
    left = _disposition(b, r, str(pid), status, notes)
    if status in ("ineligible", "not-registered"):
        return left
    start = (r.get("period") or {}).get("start")
    if not start:
        raise RowError("period.start", "is missing: the enrolment date")
    at = _instant(str(start), "period.start", b.ctx.zone)
    sex = {"female": "F", "male": "M"}.get(str(person.get("gender")))
    if sex is None:
        raise RowError("gender", f"{person.get('gender')!r}: CKD-EPI 2021 needs female or male")
    born = str(person.get("birthDate") or "")
    if len(born) != 10:
        raise RowError("birthDate", f"{born or 'missing'}: a complete birth date gives the age")
    if b.ctx.site_id is None:
        raise RowError("site", "no site to enrol at: use a site key or give ?site_id=")
    return [
        {
            **b.envelope(r, "ResearchSubject", at),
            "event_type": "participant.enrolled",
            "participant_id": str(pid),
            "sex": sex,
            "birth_date": born,
            "site_id": b.ctx.site_id,
            "enrolled_at": at.isoformat(),
        },
        *left,
    ]


def _disposition(
    b: _Bundle, r: dict[str, Any], pid: str, status: str, notes: list[str]
) -> list[dict[str, Any]]:
    disposition = SUBJECT_DISPOSITIONS.get(status)
    if disposition is None:
        return []
    period = r.get("period") or {}
    end = period.get("end") or (period.get("start") if disposition == "screen_failure" else None)
    if not end:
        raise RowError("period.end", f"is missing: the day a subject {status} left the study")
    at = _instant(str(end), "period.end", b.ctx.zone)
    if status == "off-study":
        notes.append("status off-study read as completed: R4 gives no reason for leaving")
    return [
        {
            **b.envelope(r, "ResearchSubject", at, key="disposition"),
            "event_type": "participant.disposition",
            "participant_id": pid,
            "disposition": disposition,
            "disposition_date": str(end)[:10],
            "source_term": status,
        }
    ]


def patient(b: _Bundle, r: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """A Patient is read for the references to it; only a ResearchSubject enrols."""
    if any(
        (e.get("resource") or {}).get("resourceType") == "ResearchSubject"
        and _subject_patient(b, str((e["resource"].get("individual") or {}).get("reference"))) is r
        for e in b.entries
    ):
        notes.append("Patient read for its ResearchSubject (the enrolment)")
        return []
    raise RowError(
        "resourceType",
        "a Patient without a ResearchSubject is not an enrolment; "
        "it only names the subject of the other entries",
    )


def _when(b: _Bundle, r: dict[str, Any], notes: list[str], zone: tzinfo) -> datetime:
    if r.get("effectiveDateTime"):
        return _instant(r["effectiveDateTime"], "effectiveDateTime", zone)
    start = (r.get("effectivePeriod") or {}).get("start")
    if start:
        return _instant(start, "effectivePeriod.start", zone)
    if str(r.get("id")) in b.panel_dates:
        notes.append("no effective[x]: dated by the panel (hasMember) that lists it")
        return _instant(b.panel_dates[str(r.get("id"))], "effective[x]", zone)
    if r.get("issued"):
        notes.append("no effective[x]: dated by issued")
        return _instant(r["issued"], "issued", zone)
    raise RowError("effective[x]", "no effectiveDateTime, effectivePeriod or issued: no date")


def _loinc(concept: dict[str, Any] | None) -> str | None:
    return next((code for system, code in _codes(concept) if system == LOINC), None)


def _quantity(q: dict[str, Any]) -> dict[str, Any]:
    if "value" not in q:
        raise RowError("valueQuantity.value", "is missing")
    unit = q.get("code") if q.get("system") == UCUM and q.get("code") else q.get("unit")
    if not unit:
        raise RowError("valueQuantity.unit", "no unit (neither a UCUM code nor unit text)")
    out = {"value": q["value"], "unit": str(unit)}
    if q.get("comparator"):
        out["comparator"] = q["comparator"]
    return out


def observation(b: _Bundle, r: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    if r.get("status") in REFUSED_STATUS:
        raise RowError("status", f"{r['status']}: not a result")
    pid = b.participant(r)
    at = _when(b, r, notes, b.ctx.zone)
    code = _loinc(r.get("code"))
    if "valueQuantity" in r:
        analyte = ANALYTES.get(code or "")
        if analyte is None:
            raise RowError(
                "code",
                f"{code or _text(r.get('code')) or 'no code'} is not monitored "
                "by this trial (or has no LOINC code)",
            )
        return [
            {
                **b.envelope(r, "Observation", at),
                "event_type": "lab.resulted",
                "participant_id": pid,
                "analyte": analyte,
                "loinc": code,
                **_quantity(r["valueQuantity"]),
            }
        ]
    out = []
    for n, comp in enumerate(r.get("component") or []):
        comp_code = _loinc(comp.get("code"))
        analyte = ANALYTES.get(comp_code or "")
        if analyte is None or "valueQuantity" not in comp:
            continue
        out.append(
            {
                **b.envelope(r, "Observation", at, f"component/{n}"),
                "event_type": "lab.resulted",
                "participant_id": pid,
                "analyte": analyte,
                "loinc": comp_code,
                **_quantity(comp["valueQuantity"]),
            }
        )
    if out:
        return out
    if r.get("hasMember"):
        raise RowError("hasMember", "a panel has no value of its own")
    kinds = [k for k in r if k.startswith("value")]
    raise RowError(kinds[0] if kinds else "value[x]", "no quantity of a monitored analyte")


def _grade(r: dict[str, Any], notes: list[str]) -> int:
    for ext in r.get("extension") or []:
        url = str(ext.get("url", "")).lower()
        if "ctcae" in url or "grade" in url:
            value = ext.get("valueInteger")
            if value is None:
                codes = _codes(ext.get("valueCodeableConcept"))
                value = int(codes[0][1]) if codes and codes[0][1].isdigit() else None
            if isinstance(value, int) and 1 <= value <= 5:
                return value
            raise RowError("extension(ctcae-grade)", f"{value!r} is not a CTCAE grade 1-5")
    severity = next((code.lower() for _, code in _codes(r.get("severity"))), "")
    if severity in SEVERITY_GRADE:
        notes.append("no CTCAE grade extension: grade from severity (mild 1, moderate 2, severe 3)")
        return SEVERITY_GRADE[severity]
    raise RowError("severity", "no CTCAE grade extension and no mild/moderate/severe severity")


def _awareness(detected: Any, zone: tzinfo, notes: list[str]) -> str | None:
    """R4 `detected`, "when the adverse event was first detected": the site's awareness, from
    which the regulatory clocks count. A partial date cannot start a clock; recorded_at does."""
    if not detected:
        return None
    try:
        return _instant(str(detected), "detected", zone).isoformat()
    except RowError:
        notes.append("detected is not a complete dateTime: clocks count from recordedDate")
        return None


def adverse_event(b: _Bundle, r: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    if r.get("actuality") == "potential":
        raise RowError("actuality", "potential: a near miss, not an adverse event")
    pid = b.participant(r)
    when = r.get("date") or r.get("detected") or r.get("recordedDate")
    if not when:
        raise RowError("date", "no date, detected or recordedDate")
    at = _instant(str(when), "date", b.ctx.zone)
    term = _text(r.get("event"))
    if not term:
        raise RowError("event", "no term (event.text or a coding display)")
    criteria: list[str] = []
    for _, code in _codes(r.get("seriousness")):
        key = code.lower()
        if key not in SERIOUSNESS:
            raise RowError("seriousness", f"{code!r} is not an R4 seriousness code")
        criterion = SERIOUSNESS[key]
        if criterion is not None:
            criteria.append(criterion)
    outcome_code = next((c.lower() for _, c in _codes(r.get("outcome"))), "unknown")
    outcome = OUTCOMES.get(outcome_code)
    if outcome is None:
        raise RowError("outcome", f"{outcome_code!r} is not an R4 outcome code")
    assessments = [
        _text(c.get("assessment")).lower()
        for s in r.get("suspectEntity") or []
        for c in s.get("causality") or []
    ]
    if not assessments or not assessments[0]:
        # accepted, never rejected: an unassessed causality counts as related until assessed
        relatedness = "not_assessed"
        notes.append("no suspectEntity.causality assessment: relatedness not_assessed")
    else:
        mapped = CAUSALITY.get(assessments[0])
        if mapped is None:
            raise RowError(
                "suspectEntity.causality.assessment", f"{assessments[0]!r} is not mapped"
            )
        relatedness = mapped
    aware_at = _awareness(r.get("detected"), b.ctx.zone, notes)
    locality = _locality(r, notes)
    grade = _grade(r, notes)
    if outcome == "fatal":
        grade, criteria = 5, sorted({*criteria, "death"})
    identifier = r.get("identifier")
    identifier = identifier[0] if isinstance(identifier, list) and identifier else identifier
    ae_id = str((identifier or {}).get("value") or r.get("id") or "")
    if not ae_id:
        raise RowError("identifier", "an AdverseEvent needs an identifier or an id")
    return [
        {
            **b.envelope(r, "AdverseEvent", at),
            "event_type": "ae.reported",
            "participant_id": pid,
            "ae_id": ae_id,
            "term": term,
            "onset_date": str(when)[:10],
            "ctcae_grade": grade,
            "serious": bool(criteria),
            "seriousness_criteria": sorted(set(criteria)),
            "relatedness": relatedness,
            "outcome": outcome,
            **({"aware_at": aware_at} if aware_at else {}),
            **({"local_or_systemic": locality} if locality else {}),
            **({"meddra": meddra} if (meddra := _meddra(r.get("event"), notes)) else {}),
        }
    ]


def _meddra(concept: dict[str, Any] | None, notes: list[str]) -> dict[str, str] | None:
    """The MedDRA coding of `AdverseEvent.event`, as the reporter coded it: at the lowest level
    (ICH E2B(R3) codes a reaction by its LLT). FHIR names no level, and without the licensed
    dictionary the PT and SOC above it are not looked up: nothing is invented."""
    for c in (concept or {}).get("coding", []):
        if c.get("system") != MEDDRA:
            continue
        code, out = str(c.get("code") or ""), {}
        if c.get("display"):
            out["llt"] = str(c["display"])
        if len(code) == 8 and code.isdigit():
            out["llt_code"] = code
        elif code:
            notes.append(f"MedDRA code {code!r} is not 8 digits: left out")
        if c.get("version") and out:
            out["version"] = str(c["version"])
        return out or None
    return None


def _locality(r: dict[str, Any], notes: list[str]) -> str | None:
    extensions = r.get("extension") or []
    for ext in extensions:
        if str(ext.get("url", "")).lower().endswith("ae-locality"):
            code = str(ext.get("valueCode") or "").lower()
            if code in ("local", "systemic"):
                return code
            notes.append(f"extension(ae-locality) {code!r} is not local or systemic")
    for ext in extensions:
        if ext.get("url") in BODY_SITE_EXTENSIONS:
            concept = ext.get("valueCodeableConcept")
            text = _text(concept) or str((ext.get("valueReference") or {}).get("display") or "")
            if text or _codes(concept):
                return locality_of_site(text, _codes(concept))
    place = str((r.get("location") or {}).get("display") or "")
    if place and locality_of_site(place) == "local":
        return "local"
    if place:
        notes.append(f"location {place!r} is a place, not the injected kidney: locality unknown")
    return None


_MAPPERS = {
    "Patient": patient,
    "ResearchSubject": research_subject,
    "Observation": observation,
    "AdverseEvent": adverse_event,
}


def map_bundle(bundle: Any, ctx: FhirContext) -> Mapped:
    """Enrolments first (a lab needs its participant), then the other entries in Bundle order."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise RowError("resourceType", "the body must be a FHIR Bundle")
    if bundle.get("type") not in ACCEPTED_TYPES:
        raise RowError(
            "type", f"Bundle.type {bundle.get('type')!r}: accepted are {', '.join(ACCEPTED_TYPES)}"
        )
    b = _Bundle(bundle, ctx)
    out = Mapped()
    order = sorted(
        range(len(b.entries)),
        key=lambda i: (b.entries[i].get("resource") or {}).get("resourceType") != "ResearchSubject",
    )
    for i in order:
        resource = b.entries[i].get("resource")
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        where = (
            f"entry {i} ({kind}/{resource.get('id')})"
            if isinstance(resource, dict)
            else f"entry {i}"
        )
        mapper = _MAPPERS.get(str(kind))
        if mapper is None or not isinstance(resource, dict):
            out.rejections.append(
                Rejection(
                    where,
                    "resourceType",
                    f"{kind} is not mapped (only "
                    "ResearchSubject, Patient, Observation, AdverseEvent)",
                )
            )
            continue
        notes: list[str] = []
        try:
            out.events += [(where, e) for e in mapper(b, resource, notes)]
        except RowError as e:
            out.rejections.append(Rejection(where, e.field, e.reason))
            continue
        out.notes += [Note(where, n) for n in notes]
    return out


def map_resource(resource: Any, ctx: FhirContext) -> Mapped:
    """A single resource, as a collection Bundle of one."""
    return map_bundle(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}, ctx
    )
