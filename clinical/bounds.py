"""Censored lab values as intervals, read in the safe direction.

A result `<15` says only that the value is below 15; `>3000` that it is above 3000. A rule fires
when the bound alone proves its condition: `<15` proves an eGFR below 15; `>3000` proves a UACR
at least 3000, so at least 16x a baseline of 180; a baseline `<2` and a result of 80 prove a
ratio of at least 40x. Where a bound proves nothing (`<0.5` for a rise), the rule stays silent
about that value rather than guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from clinical import compare

INF = math.inf


class Bound(NamedTuple):
    """What a result proves about the true value: lo (<)= value (<)= hi. (A named tuple:
    immutable, and built at a third of a frozen dataclass's cost; the engine makes several per
    result.)"""

    lo: float
    hi: float
    lo_open: bool = False  # value > lo rather than value >= lo
    hi_open: bool = False

    @classmethod
    def of(cls, value: float, comparator: str | None = None, floor: float = 0.0) -> Bound:
        """A result as reported: exact, or censored by `<`, `<=`, `>`, `>=`. Lab values are
        never negative, so an upper bound's floor is 0."""
        match comparator:
            case None | "":
                return cls(value, value)
            case "<":
                return cls(floor, value, hi_open=True)
            case "<=":
                return cls(floor, value)
            case ">":
                return cls(value, INF, lo_open=True)
            case ">=":
                return cls(value, INF)
        raise ValueError(f"comparator {comparator!r} is not <, <=, > or >=")

    @property
    def exact(self) -> bool:
        return self.lo == self.hi

    def text(self, digits: int = 3) -> str:
        """`1.2`, `<15`, `>3000`: the value as the site reported it."""
        if self.exact:
            return f"{self.lo:.{digits}g}"
        if self.hi == INF:
            return f"{'>' if self.lo_open else '>='}{self.lo:.{digits}g}"
        return f"{'<' if self.hi_open else '<='}{self.hi:.{digits}g}"

    def map_decreasing(self, f: Callable[[float], float]) -> Bound:
        """The bound of f(value) for a decreasing f (creatinine -> eGFR)."""
        return Bound(f(self.hi), f(self.lo), lo_open=self.hi_open, hi_open=self.lo_open)

    # -- what the bound proves -----------------------------------------------------------------
    def proves_at_least(self, threshold: float) -> bool:
        return compare.at_least(self.lo, threshold)

    def proves_above(self, threshold: float) -> bool:
        if self.lo_open:
            return compare.at_least(self.lo, threshold)
        return compare.above(self.lo, threshold)

    def proves_at_most(self, threshold: float) -> bool:
        return compare.at_most(self.hi, threshold)

    def proves_below(self, threshold: float) -> bool:
        if self.hi_open:
            return compare.at_most(self.hi, threshold)
        return compare.below(self.hi, threshold)


def ratio(a: Bound, b: Bound) -> Bound:
    """What a / b can be, for b > 0. A zero lower bound on b leaves the ratio unbounded above."""
    a_lo, a_hi, a_lo_open, a_hi_open = a
    b_lo, b_hi, b_lo_open, b_hi_open = b
    lo = a_lo / b_hi if b_hi != 0.0 and b_hi != INF else 0.0
    hi = a_hi / b_lo if b_lo > 0 else INF
    return Bound(lo, hi, a_lo_open or b_hi_open, a_hi_open or b_lo_open)


def difference(a: Bound, b: Bound) -> Bound:
    """What a - b can be."""
    return Bound(a.lo - b.hi, a.hi - b.lo, a.lo_open or b.hi_open, a.hi_open or b.lo_open)
