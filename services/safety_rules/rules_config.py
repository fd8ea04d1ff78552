"""Loads the checked-in rules.yaml (or another file) into the engine's RulesConfig."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.safety_rules.domain.config import RulesConfig

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")


def load_rules(path: Path | None = None) -> RulesConfig:
    """The validated thresholds; a wrong or unknown key fails with the key named."""
    data = yaml.safe_load((path or DEFAULT_RULES).read_text()) or {}
    return RulesConfig.model_validate(data)
