"""Generates the checked-in JSON Schemas and the AsyncAPI document from the models.

They are never written by hand: `safety-monitor contracts export` regenerates them and
`safety-monitor contracts check` (run in CI) fails when the checked-in copies are stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from contracts.common import SCHEMA_VERSION
from contracts.events import EVENT_TYPES
from contracts.topics import CATALOG

HERE = Path(__file__).parent
SCHEMA_DIR = HERE / "schemas"
ASYNCAPI_PATH = HERE / "asyncapi.yaml"
SCHEMA_BASE = "https://trial-safety-monitor.example/contracts/schemas"


def event_schema(event_type: str) -> dict[str, Any]:
    cls = EVENT_TYPES[event_type]
    schema = cls.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}/{event_type}.json",
        "x-schema-version": SCHEMA_VERSION,
        **schema,
    }


def asyncapi() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in CATALOG:
        channel_id = topic.name.replace(".", "_").replace("-", "_")
        messages = {
            t.replace(".", "_"): {"$ref": f"#/components/messages/{t.replace('.', '_')}"}
            for t in topic.event_types
        }
        channels[channel_id] = {
            "address": topic.name,
            "description": topic.holds,
            "messages": messages,
            "bindings": {
                "kafka": {
                    "partitions": topic.partitions,
                    "topicConfiguration": {
                        "cleanup.policy": topic.config["cleanup.policy"].split(","),
                        "retention.ms": int(topic.config["retention.ms"]),
                    },
                    "bindingVersion": "0.5.0",
                }
            },
            "x-key": topic.key,
        }
        if messages:
            operations[f"publish_{channel_id}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel_id}"},
            }
    messages_components = {
        t.replace(".", "_"): {
            "name": t,
            "contentType": "application/json",
            "payload": {"$ref": f"schemas/{t}.json"},
        }
        for t in sorted(EVENT_TYPES)
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Trial safety monitor events",
            "version": str(SCHEMA_VERSION),
            "description": "Generated from contracts/ by `safety-monitor contracts export`.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages_components},
    }


def rendered() -> dict[Path, str]:
    """Every generated file's path and its exact text."""
    out = {
        SCHEMA_DIR / f"{t}.json": json.dumps(event_schema(t), indent=2, sort_keys=True) + "\n"
        for t in sorted(EVENT_TYPES)
    }
    out[ASYNCAPI_PATH] = yaml.safe_dump(asyncapi(), sort_keys=False, width=100)
    return out


def export() -> list[Path]:
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for path, text in rendered().items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


def stale() -> list[str]:
    """Generated files that differ from the models, and checked-in schemas no model makes."""
    files = rendered()
    problems = [
        f"{p.relative_to(HERE.parent)} is stale"
        for p, text in files.items()
        if not p.exists() or p.read_text() != text
    ]
    problems += [
        f"{p.relative_to(HERE.parent)} has no model"
        for p in SCHEMA_DIR.glob("*.json")
        if p not in files
    ]
    return problems
