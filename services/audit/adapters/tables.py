"""The audit tables. The schema itself is created by the Alembic migrations beside this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("topic", String(100), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("event_type", String(40), nullable=False, index=True),
    Column("participant_id", String(64), nullable=True, index=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False, index=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("recorded_by", String(200), nullable=False),
    Column("reason", Text, nullable=True),
    Column("rule_id", String(60), nullable=True, index=True),
    Column("severity", String(20), nullable=True, index=True),
    Column("canonical", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("head_hash", String(64), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
)
audit_offsets = Table(
    "audit_offsets",
    metadata,
    Column("topic", String(100), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)
audit_undecodable = Table(
    "audit_undecodable",
    metadata,
    Column("topic", String(100), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),  # readable text (undecodable bytes replaced)
    Column("raw_base64", Text, nullable=True),  # the exact bytes (from migration 0003)
)
# A message reusing an event_id already in the log with other content: kept beside the log,
# never replacing the first, and reported by `audit verify`.
audit_conflicts = Table(
    "audit_conflicts",
    metadata,
    Column("topic", String(100), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("event_id", String(36), nullable=False, index=True),
    Column("first_seq", BigInteger, nullable=False),
    Column("canonical", Text, nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
)

audit_tokens = Table(
    "audit_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("revoked", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Who read what through the DSMB API: reads are part of a trail (append-only, like the log).
audit_access = Table(
    "audit_access",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("token_id", String(32), nullable=False),
    Column("reader", String(200), nullable=False),
    Column("route", String(200), nullable=False),
    Column("query", Text, nullable=False),
    Column("status", Integer, nullable=False),
)

# -- read models: derived, dropped and rebuilt by `safety-monitor audit rebuild` --------------
rm_participants = Table(
    "rm_participants",
    metadata,
    Column("participant_id", String(64), primary_key=True),
    Column("trial_id", String(200), nullable=False),
    Column("site_id", String(200), nullable=True),
    Column("sex", String(1), nullable=True),
    Column("birth_date", String(10), nullable=True),
    Column("age_years", Integer, nullable=True),
    Column("enrolled_at", DateTime(timezone=True), nullable=True),
    # the enrolment's date at the site (clinical.age counts whole years in the site's calendar)
    Column("enrolled_on", String(10), nullable=True),
    Column("dose_at", DateTime(timezone=True), nullable=True),  # the first dose
    Column("dose_on", String(10), nullable=True),  # its date at the site: study day 0
    Column("cells_per_kg", Float, nullable=True),
    Column("weight_kg", Float, nullable=True),
)
rm_labs = Table(
    "rm_labs",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("participant_id", String(64), nullable=False, index=True),
    Column("analyte", String(20), nullable=False),
    Column("value", Float, nullable=False),
    Column("unit", String(20), nullable=False),
    Column("comparator", String(2), nullable=True),
    Column("visit", String(20), nullable=True),
    Column("loinc", String(10), nullable=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("sample_date", String(10), nullable=True),  # the sample's date at the site
    Column("superseded_by", String(36), nullable=True),
)
rm_visits = Table(
    "rm_visits",
    metadata,
    Column("participant_id", String(64), primary_key=True),
    Column("visit", String(20), primary_key=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
)
rm_aes = Table(
    "rm_aes",
    metadata,
    Column("participant_id", String(64), primary_key=True),
    Column("ae_id", String(200), primary_key=True),
    Column("event_id", String(36), nullable=False),
    Column("term", String(200), nullable=False),
    Column("onset_date", String(10), nullable=False),
    Column("end_date", String(10), nullable=True),
    Column("grade", Integer, nullable=False),
    Column("serious", Boolean, nullable=False),
    Column("criteria", Text, nullable=False),
    Column("relatedness", String(20), nullable=False),
    Column("related", Boolean, nullable=False),
    Column("expectedness", String(20), nullable=True),
    Column("locality", String(20), nullable=True),
    Column("outcome", String(30), nullable=False),
    Column("versions", Integer, nullable=False),
    Column("source", String(20), nullable=True),  # api, fhir, sdtm: what the source could say
    Column("aware_at", DateTime(timezone=True), nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=True),
    Column("meddra", Text, nullable=True),  # JSON: the MedDRA coding as the source gave it
)
# each disposition recorded (a correction marks the one it corrects superseded)
rm_dispositions = Table(
    "rm_dispositions",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("participant_id", String(64), nullable=False, index=True),
    Column("trial_id", String(200), nullable=False),
    Column("disposition", String(40), nullable=False),
    Column("disposition_date", String(10), nullable=False),
    Column("withdrawal_reason", String(40), nullable=True),
    Column("source_term", String(200), nullable=True),
    Column("superseded_by", String(36), nullable=True),
)
rm_alerts = Table(
    "rm_alerts",
    metadata,
    Column("alert_id", String(36), primary_key=True),
    Column("rule_id", String(60), nullable=True),
    Column("rule_version", Integer, nullable=True),
    Column("severity", String(20), nullable=True),
    Column("participant_id", String(64), nullable=True),
    Column("trial_id", String(200), nullable=True),
    Column("title", String(300), nullable=True),
    Column("raised_at", DateTime(timezone=True), nullable=True),  # the trigger's clinical time
    Column("recorded_at", DateTime(timezone=True), nullable=True),  # when the worker raised it
    Column("due_by", DateTime(timezone=True), nullable=True),
    Column("facts", Text, nullable=True),  # JSON: the measured values, awareness, the AE's id
    Column("status", String(20), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("acknowledged_at", DateTime(timezone=True), nullable=True),
    Column("acknowledged_by", String(200), nullable=True),
    Column("escalations", Integer, nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    # JSON {channel: "delivered" | "failed"}: each channel's latest outcome, in log order
    Column("channels", Text, nullable=True),
)

READ_MODELS = (rm_participants, rm_labs, rm_visits, rm_aes, rm_dispositions, rm_alerts)
APPEND_ONLY = ("audit_log", "audit_checkpoints")
