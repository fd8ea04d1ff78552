"""Threshold comparisons with a small relative tolerance (DESIGN: 1e-9), so that a rise of
exactly 1.5x or 0.3 mg/dL meets its threshold whatever the float rounding (1.65 / 1.10 is
1.4999999999999998 in binary floating point)."""

from __future__ import annotations

import math

REL_TOL = 1e-9


def same(x: float, threshold: float) -> bool:
    return math.isclose(x, threshold, rel_tol=REL_TOL, abs_tol=1e-12)


def at_least(x: float, threshold: float) -> bool:
    """x >= threshold, a value within tolerance of it included."""
    return x >= threshold or same(x, threshold)


def at_most(x: float, threshold: float) -> bool:
    return x <= threshold or same(x, threshold)


def above(x: float, threshold: float) -> bool:
    """x > threshold, and not merely by float noise."""
    return x > threshold and not same(x, threshold)


def below(x: float, threshold: float) -> bool:
    return x < threshold and not same(x, threshold)
