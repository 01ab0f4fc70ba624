"""One way to write the report's numbers, for every form (terminal, Markdown, HTML, the decision's lines):
tau with three decimals and its interval with two, regret and costs with three significant digits, and, where
the seed bootstrap has too few seeds to say much (2 seeds: three distinct draws), words instead of a
degenerate interval such as ``0 [0, 0]``."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.report.statistics import Consistency, SubsetReport

DASH = "—"
COARSE_SEEDS = 2  # with this many seeds per configuration the bootstrap interval is too coarse to print
COARSE = "interval coarse: 2 seeds"


def seeds_of(s: SubsetReport) -> int:
    """The fewest finished seeds of any configuration of ``s`` that has a result (0: none)."""
    return min((c.n_done for c in s.configs if c.n_done), default=0)


def num(x: float | None, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals; a dash when undefined."""
    return DASH if x is None else f"{x:.{digits}f}"


def sig(x: float | None) -> str:
    """``x`` with three significant digits (regret, hours); a dash when undefined."""
    return DASH if x is None else f"{x:.3g}"


def tau_text(c: Consistency | None, seeds: int) -> str:
    """``0.889 [0.61, 0.94]``; with 2 seeds ``1.000 (interval coarse: 2 seeds)``."""
    if c is None or c.kendall_tau is None:
        return f"{DASH} (n={c.n_common})" if c else DASH
    return f"{c.kendall_tau:.3f}" + _interval(c.kendall_tau_ci, seeds, lambda x: f"{x:.2f}")


def regret_text(c: Consistency | None, seeds: int) -> str:
    """``0.0047 [0, 0.054]`` in three significant digits; with 2 seeds ``0 (interval coarse: 2 seeds)``."""
    if c is None or c.regret is None:
        return DASH
    return sig(c.regret) + _interval(c.regret_ci, seeds, sig)


def _interval(ci: tuple[float, float] | None, seeds: int, fmt: Callable[[float], str]) -> str:
    if ci is None:
        return ""
    if seeds == COARSE_SEEDS:
        return f" ({COARSE})"
    return f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def hours_text(hours: float | None, unit: str) -> str:
    """``0.0239 CPU-h`` (three significant digits); a dash when unmeasured."""
    return DASH if hours is None else f"{hours:.3g} {unit.replace('-hours', '-h')}"
