"""KDIGO categories and acute kidney injury staging."""

from __future__ import annotations

from typing import NamedTuple

from clinical import compare
from clinical.bounds import Bound

G_CATEGORIES = ("G1", "G2", "G3a", "G3b", "G4", "G5")
A_CATEGORIES = ("A1", "A2", "A3")


def g_category(egfr: float) -> str:
    """KDIGO GFR category: G1 >= 90, G2 60-89, G3a 45-59, G3b 30-44, G4 15-29, G5 < 15."""
    for floor, name in ((90, "G1"), (60, "G2"), (45, "G3a"), (30, "G3b"), (15, "G4")):
        if compare.at_least(egfr, floor):
            return name
    return "G5"


def a_category(uacr_mg_g: float) -> str:
    """KDIGO albuminuria category: A1 < 30, A2 30-300, A3 > 300 mg/g."""
    if compare.above(uacr_mg_g, 300):
        return "A3"
    return "A2" if compare.at_least(uacr_mg_g, 30) else "A1"


class AkiThresholds(NamedTuple):
    absolute_rise_mg_dl: float = 0.3
    ratio_stage_1: float = 1.5
    ratio_stage_2: float = 2.0
    ratio_stage_3: float = 3.0
    stage_3_mg_dl: float = 4.0


def aki_stage(creatinine: Bound, rise_48h: Bound | None, ratio: Bound | None,
              t: AkiThresholds) -> int | None:  # fmt: skip
    """KDIGO stage proven by the bounds, or None: stage 1 by a rise >= 0.3 mg/dL within 48 h or
    >= 1.5x the reference; 2 at >= 2.0x; 3 at >= 3.0x, or >= 4.0 mg/dL with either rise."""
    by_rise = rise_48h is not None and rise_48h.proves_at_least(t.absolute_rise_mg_dl)
    by_ratio = ratio is not None and ratio.proves_at_least(t.ratio_stage_1)
    if not (by_rise or by_ratio):
        return None
    stage = 1
    if ratio is not None and ratio.proves_at_least(t.ratio_stage_2):
        stage = 2
    if (ratio is not None and ratio.proves_at_least(t.ratio_stage_3)) or (
        creatinine.proves_at_least(t.stage_3_mg_dl)
    ):
        stage = 3
    return stage
