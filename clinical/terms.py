"""What the words of an AE report mean for safety: related, serious, fatal, unexpected.

Unassessed fields count against safety until assessed (DESIGN, "Clinical semantics"): causality
not yet assessed counts as related for the SUSAR clock and the stopping rule; expectedness not
yet assessed counts as unexpected, since no reference safety information exists yet for this
product. A fatal AE is serious with the `death` criterion whatever else the report says.
"""

from __future__ import annotations

from collections.abc import Iterable

from contracts import AeOutcome, Expectedness, Relatedness, SeriousnessCriterion

RELATED = frozenset({Relatedness.POSSIBLE, Relatedness.PROBABLE, Relatedness.DEFINITE})
GRAVE = frozenset({SeriousnessCriterion.DEATH, SeriousnessCriterion.LIFE_THREATENING})


def is_related(relatedness: Relatedness) -> bool:
    """Related as assessed: possible, probable or definite."""
    return relatedness in RELATED


def counts_as_related(relatedness: Relatedness) -> bool:
    """Related, or not yet assessed: what the SUSAR clock and the stopping rule read."""
    return relatedness in RELATED or relatedness is Relatedness.NOT_ASSESSED


def counts_as_unexpected(expectedness: Expectedness | None) -> bool:
    """Unexpected, or not yet assessed."""
    return expectedness is None or expectedness is Expectedness.UNEXPECTED


def is_fatal(outcome: AeOutcome, grade: int, criteria: Iterable[SeriousnessCriterion]) -> bool:
    return outcome is AeOutcome.FATAL or grade == 5 or SeriousnessCriterion.DEATH in set(criteria)


def seriousness(
    serious: bool, criteria: Iterable[SeriousnessCriterion], fatal: bool
) -> frozenset[SeriousnessCriterion]:
    """The criteria an AE meets: as reported, plus `death` when it is fatal. Empty: not serious."""
    met = frozenset(criteria) if serious else frozenset()
    return met | {SeriousnessCriterion.DEATH} if fatal else met


def unassessed(relatedness: Relatedness, expectedness: Expectedness | None) -> list[str]:
    """The assessment fields still open, by name, for an alert to say so."""
    out = []
    if relatedness is Relatedness.NOT_ASSESSED:
        out.append("relatedness")
    if expectedness is None:
        out.append("expectedness")
    return out
