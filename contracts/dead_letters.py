"""What a consumer does with a message it cannot take: the catalog decides, a dead letter keeps it.

Every consumer accepts on a topic only the event types that topic's catalog entry allows
(`accept`), so an `alert.raised` produced onto `trial.events` is refused like malformed JSON.
What is refused goes to `trial.dead-letter` with the reason, where it came from, and the original
bytes base64-encoded: any bytes survive (not only UTF-8), and past `MAX_INLINE_BYTES` the letter
carries a pointer (topic, partition, offset; the source topic keeps the bytes) so it always fits
in one Kafka request.
"""

from __future__ import annotations

import base64
import hashlib
import json

from contracts.events import AnyEvent, FieldError, InvalidEvent, decode
from contracts.topics import Topic

# base64 grows by 4/3: 600 KiB of original stays well under the broker's 1 MiB message limit
MAX_INLINE_BYTES = 600 * 1024


def accept(raw: bytes | None, topic: Topic) -> AnyEvent:
    """The event in `raw` if the contract and `topic`'s catalog allow it; else InvalidEvent."""
    if raw is None:
        raise InvalidEvent([FieldError("message", "has no value (a tombstone)")])
    try:
        event = decode(raw)
    except InvalidEvent:
        raise
    except (ValueError, UnicodeDecodeError) as e:  # pydantic and json errors are ValueErrors
        raise InvalidEvent([FieldError("message", f"cannot be decoded: {type(e).__name__}")]) from e
    if event.event_type not in topic.event_types:
        raise InvalidEvent(
            [FieldError("event_type", f"{event.event_type} does not belong on {topic.name}")]
        )
    return event


def dead_letter(
    raw: bytes | None, reason: str, *, consumer: str, topic: str, partition: int, offset: int
) -> bytes:
    """The dead letter for one refused message (JSON; the key stays the original key)."""
    original = raw or b""
    letter: dict[str, object] = {
        "reason": reason[:2000],
        "consumer": consumer,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "original_size": len(original),
        "original_sha256": hashlib.sha256(original).hexdigest(),
    }
    if len(original) <= MAX_INLINE_BYTES:
        letter["original_base64"] = base64.b64encode(original).decode()
    else:
        letter["original_base64"] = None  # read it at topic/partition/offset
    return json.dumps(letter, sort_keys=True).encode()


def original(letter: bytes) -> bytes | None:
    """The original bytes a dead letter carries (None when it carries only the pointer)."""
    inline = json.loads(letter)["original_base64"]
    return None if inline is None else base64.b64decode(inline)
