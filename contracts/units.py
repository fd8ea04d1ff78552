"""Units are normalised at the edge, and values outside physiological range are refused.

Every lab value on `trial.events` is in its analyte's canonical unit, so no consumer converts.
An unknown unit or an impossible value is an error that names the reason; it is never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

CREATININE_UMOL_PER_MG = 88.4  # umol/L per mg/dL
UACR_MG_G_PER_MG_MMOL = 8.84  # mg/g per mg/mmol


class Analyte(StrEnum):
    CREATININE = "creatinine"
    EGFR = "egfr"
    UACR = "uacr"
    TNF_ALPHA = "tnf_alpha"
    IL_10 = "il_10"


@dataclass(frozen=True)
class UnitRule:
    canonical: str
    # accepted unit (canonical spelling) -> (multiply by, divide by) to reach the canonical unit;
    # dividing by 88.4 rather than multiplying by its inverse keeps 88.4 umol/L exactly 1.0 mg/dL
    factors: dict[str, tuple[float, float]]
    low: float  # physiological range in the canonical unit, inclusive
    high: float


# Spellings seen in feeds are folded onto these keys by `_fold` before lookup.
RULES: dict[Analyte, UnitRule] = {
    Analyte.CREATININE: UnitRule(
        "mg/dL", {"mg/dL": (1.0, 1.0), "umol/L": (1.0, CREATININE_UMOL_PER_MG)}, low=0.1, high=30.0
    ),
    Analyte.EGFR: UnitRule("mL/min/1.73m2", {"mL/min/1.73m2": (1.0, 1.0)}, low=1.0, high=250.0),
    Analyte.UACR: UnitRule(
        "mg/g", {"mg/g": (1.0, 1.0), "mg/mmol": (UACR_MG_G_PER_MG_MMOL, 1.0)}, low=0.0, high=30000.0
    ),
    Analyte.TNF_ALPHA: UnitRule("pg/mL", {"pg/mL": (1.0, 1.0)}, low=0.0, high=10000.0),
    Analyte.IL_10: UnitRule("pg/mL", {"pg/mL": (1.0, 1.0)}, low=0.0, high=10000.0),
}

_SPELLINGS: dict[str, str] = {
    "mg/dl": "mg/dL",
    "umol/l": "umol/L",
    "µmol/l": "umol/L",
    "μmol/l": "umol/L",
    "micromol/l": "umol/L",
    "ml/min/1.73m2": "mL/min/1.73m2",
    "ml/min/{1.73_m2}": "mL/min/1.73m2",
    "ml/min/1.73 m2": "mL/min/1.73m2",
    "ml/min/1.73m^2": "mL/min/1.73m2",
    "ml/min/1.73 m^2": "mL/min/1.73m2",
    "mg/g": "mg/g",
    "mg/g{creat}": "mg/g",
    "mg/g creat": "mg/g",
    "mg/mmol": "mg/mmol",
    "mg/mmol{creat}": "mg/mmol",
    "pg/ml": "pg/mL",
    "ng/l": "pg/mL",  # 1 ng/L == 1 pg/mL
}


class UnitError(ValueError):
    """A unit that is not known for the analyte, or a value outside physiological range."""


def canonical_unit(analyte: Analyte) -> str:
    return RULES[analyte].canonical


def fold_unit(unit: str) -> str:
    """The canonical spelling of a unit as written in a feed (UCUM or plain text)."""
    return _SPELLINGS.get(unit.strip().lower(), unit.strip())


def normalise(analyte: Analyte, value: float, unit: str, *, check: bool = True) -> float:
    """`value` in `unit` converted to the analyte's canonical unit, range-checked (`check`).

    Raises UnitError naming the unit or the range that was broken.
    """
    rule = RULES[analyte]
    folded = fold_unit(unit)
    if folded not in rule.factors:
        accepted = ", ".join(sorted(rule.factors))
        raise UnitError(f"unit {unit!r} is not accepted for {analyte.value} (accepted: {accepted})")
    multiply, divide = rule.factors[folded]
    converted = value * multiply / divide
    if check:
        check_range(analyte, converted)
    return converted


def check_range(analyte: Analyte, value: float) -> None:
    rule = RULES[analyte]
    if not rule.low <= value <= rule.high:
        raise UnitError(
            f"{analyte.value} {value:g} {rule.canonical} is outside the physiological range "
            f"{rule.low:g}-{rule.high:g} {rule.canonical}"
        )
