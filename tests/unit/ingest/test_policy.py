"""The bytes ingest puts on the log and the content hash it keeps, made from one dump: the same
as each was made alone. The hashes of accepted events are stored; a change here would turn a
resent duplicate into a conflict."""

from __future__ import annotations

import hashlib

from contracts import Source, encode
from contracts.events import canonical_json
from services.ingest.domain.policy import SERVER_FIELDS, content_hash, encoded
from services.sample import story


def test_one_dump_gives_the_logs_bytes_and_the_stored_content_hash_of_every_event() -> None:
    events = [e for chapter in story() for e in chapter.events]
    kinds = {e.event_type for e in events}
    assert {"participant.enrolled", "lab.resulted", "ae.reported", "dose.administered"} <= kinds
    for event in events:
        # the content hash as ingest has always stored it: the dump without the server's fields
        alone = event.model_dump(mode="json", exclude=set(SERVER_FIELDS))
        stored = hashlib.sha256(canonical_json(alone)).hexdigest()
        assert encoded(event) == (encode(event), stored)  # type: ignore[arg-type]
        assert content_hash(event) == stored  # type: ignore[arg-type]


def test_the_content_hash_ignores_what_the_server_stamps_and_nothing_else() -> None:
    event = next(e for c in story() for e in c.events if e.event_type == "lab.resulted")
    restamped = event.model_copy(update={"recorded_by": "site:x/key:y", "source": Source.FHIR})
    assert content_hash(restamped) == content_hash(event)
    changed = event.model_copy(update={"value": 9.9})
    assert content_hash(changed) != content_hash(event)
