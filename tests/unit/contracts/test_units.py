from __future__ import annotations

import pytest

from contracts.units import Analyte, UnitError, normalise


@pytest.mark.parametrize(
    ("analyte", "value", "unit", "expected"),
    [
        (Analyte.CREATININE, 88.4, "umol/L", 1.0),
        (Analyte.CREATININE, 176.8, "µmol/L", 2.0),
        (Analyte.CREATININE, 1.1, "mg/dl", 1.1),
        (Analyte.UACR, 3.0, "mg/mmol", 26.52),
        (Analyte.UACR, 30.0, "mg/g{creat}", 30.0),
        (Analyte.EGFR, 60, "mL/min/{1.73_m2}", 60.0),
        (Analyte.TNF_ALPHA, 8.5, "ng/L", 8.5),
    ],
)
def test_units_are_converted_to_the_canonical_unit(
    analyte: Analyte, value: float, unit: str, expected: float
) -> None:
    assert normalise(analyte, value, unit) == pytest.approx(expected)


def test_a_unit_of_another_analyte_is_refused() -> None:
    with pytest.raises(UnitError, match="'mg/g' is not accepted for creatinine"):
        normalise(Analyte.CREATININE, 1.0, "mg/g")


@pytest.mark.parametrize(
    ("analyte", "value", "unit"),
    [
        (Analyte.CREATININE, 0.05, "mg/dL"),
        (Analyte.CREATININE, 31, "mg/dL"),
        (Analyte.CREATININE, 3000, "umol/L"),
        (Analyte.EGFR, 0, "mL/min/1.73m2"),
        (Analyte.UACR, -1, "mg/g"),
        (Analyte.IL_10, 20000, "pg/mL"),
    ],
)
def test_values_outside_physiological_range_are_refused(
    analyte: Analyte, value: float, unit: str
) -> None:
    with pytest.raises(UnitError, match="outside the physiological range"):
        normalise(analyte, value, unit)
