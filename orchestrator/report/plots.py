"""The report's figures as PNG bytes (matplotlib, Agg canvas, no pyplot global state)."""

from __future__ import annotations

import io
import math

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from orchestrator.report.ranking import Report
from orchestrator.report.statistics import SubsetReport

DPI = 110
_BLUE, _GREY, _RED, _ORANGE, _GREEN = "#1f77b4", "#888888", "#d62728", "#ff7f0e", "#2ca02c"


def _color(s: SubsetReport) -> str:
    """Blue: finished; orange: provisional (the subset or the reference has unfinished jobs)."""
    return _ORANGE if s.provisional else _BLUE


def _state_legend(ax: Axes, subs: list[SubsetReport]) -> None:
    if any(s.provisional for s in subs):
        handles = [Line2D([], [], marker="o", ls="", color=_BLUE, label="finished"),
                   Line2D([], [], marker="o", ls="", color=_ORANGE, label="provisional (unfinished jobs)")]
        ax.legend(handles=handles, fontsize=7, loc="lower left")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _compared(report: Report) -> list[SubsetReport]:
    return [s for s in report.subsets if not s.is_reference and s.consistency is not None]


def _ci_err(s: SubsetReport) -> tuple[float, float]:
    """(below, above) error bar lengths of tau's CI (0 where there is none)."""
    c = s.consistency
    if c is None or c.kendall_tau is None or c.kendall_tau_ci is None:
        return 0.0, 0.0
    return max(0.0, c.kendall_tau - c.kendall_tau_ci[0]), max(0.0, c.kendall_tau_ci[1] - c.kendall_tau)


def tau_plot(report: Report) -> bytes | None:
    """Kendall tau per subset (report order) with its bootstrap CI; None when no subset has a tau."""
    subs = _compared(report)
    if not any(s.consistency and s.consistency.kendall_tau is not None for s in subs):
        return None
    fig = Figure(figsize=(max(4.5, 0.9 * len(subs) + 2), 3.6))
    ax = fig.add_subplot()
    for x, s in enumerate(subs):
        tau = s.consistency.kendall_tau if s.consistency else None
        if tau is None:
            ax.text(x, 0, "n/a", ha="center", va="center", color=_GREY, fontsize=9)
            continue
        lo, hi = _ci_err(s)
        ax.errorbar([x], [tau], yerr=[[lo], [hi]], fmt="o", color=_color(s), capsize=4, ms=7)
        ax.annotate(f"{tau:.2f}", (x, tau), textcoords="offset points", xytext=(8, -3), fontsize=8)
    ax.axhline(0, color=_GREY, lw=0.8)
    ax.axhline(1, color=_GREY, lw=0.8, ls=":")
    ax.set_xticks(range(len(subs)), [s.subset for s in subs], rotation=30 if len(subs) > 4 else 0, ha="right"
                  if len(subs) > 4 else "center")
    ax.set_xlim(-0.6, len(subs) - 0.4)
    ax.set_ylim(-1.08, 1.08)
    ax.set_ylabel("Kendall tau vs " + report.reference)
    title = f"{report.grid}: ranking agreement on {report.metric} (95% CI over seeds)"
    if not report.complete:
        title += " - provisional"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _state_legend(ax, subs)
    return _png(fig)


def scatter_plot(report: Report) -> bytes | None:
    """Per subset: its mean vs the reference's mean per configuration (seed std bars, 'rank/ref rank' labels)."""
    subs = _compared(report)
    try:
        ref = report.subset(report.reference)
    except KeyError:
        return None
    ref_by_key = {c.config_key: c for c in ref.configs if c.mean is not None}
    panels = [(s, [(c, ref_by_key[c.config_key]) for c in s.configs
                   if c.mean is not None and c.config_key in ref_by_key]) for s in subs]
    panels = [(s, pts) for s, pts in panels if pts]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.8 * nrows))
    for n, (s, pts) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, n + 1)
        _scatter_panel(ax, s, pts, report)
    fig.suptitle(f"{report.grid}: {report.metric} per configuration, subset vs {report.reference}\n"
                 "labels: rank on subset / rank on reference (red where they differ); bars: std over seeds",
                 fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _scatter_panel(ax: Axes, s: SubsetReport, pts: list, report: Report) -> None:
    xs = [r.mean for _, r in pts]
    ys = [c.mean for c, _ in pts]
    ax.errorbar(xs, ys, xerr=[r.std or 0.0 for _, r in pts], yerr=[c.std or 0.0 for c, _ in pts], fmt="o",
                color=_color(s), ecolor=_GREY, capsize=3, ms=5)
    small = 7 if len(pts) <= 12 else 6
    for (c, r), x, y in zip(pts, xs, ys, strict=True):
        ax.annotate(f"{c.rank}/{r.rank}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=small,
                    color=_RED if c.rank != r.rank else "black")
    tau = s.consistency.kendall_tau if s.consistency else None
    title = f"{s.subset}: tau = {tau:.2f}" if tau is not None else f"{s.subset}: tau n/a"
    ax.set_title(title + (" (provisional)" if s.provisional else ""), fontsize=9)
    ax.set_xlabel(f"{report.reference} mean", fontsize=8)
    ax.set_ylabel(f"{s.subset} mean", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.margins(0.15)


def cost_plot(report: Report) -> bytes | None:
    """Cost ratio (subset's train time / reference's) vs Kendall tau: good tickets sit top left."""
    subs = [s for s in _compared(report)
            if s.cost_ratio is not None and s.consistency is not None and s.consistency.kendall_tau is not None]
    if not subs:
        return None
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    xs = [s.cost_ratio for s in subs]
    for s, x in zip(subs, xs, strict=True):
        lo, hi = _ci_err(s)
        tau = s.consistency.kendall_tau if s.consistency else 0.0
        ax.errorbar([x], [tau], yerr=[[lo], [hi]], fmt="o", color=_color(s), capsize=3)
        ax.annotate(s.subset, (x, tau), textcoords="offset points", xytext=(5, 4), fontsize=8)
    positive = [x for x in xs if x > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
    ax.set_ylim(-1.08, 1.08)
    ax.axhline(0, color=_GREY, lw=0.8)
    ax.set_xlabel(f"training time vs {report.reference} (ratio)")
    ax.set_ylabel("Kendall tau")
    ax.set_title(f"{report.grid}: agreement vs cost", fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(x=0.2)
    _state_legend(ax, subs)
    return _png(fig)


def _cost_axis(report: Report, subs: list[SubsetReport]) -> tuple[list[float | None], str]:
    """x of each subset: measured cost per job when every subset has one, else training time vs the reference."""
    if subs and all(s.cost_hours_per_job is not None for s in subs):
        units = sorted({s.cost_unit for s in subs})
        return [s.cost_hours_per_job for s in subs], f"measured cost per job ({', '.join(units)}, all attempts)"
    return [s.cost_ratio for s in subs], f"training time vs {report.reference} (ratio)"


def _reference_cost(report: Report, xlabel: str) -> float | None:
    """The reference's x on the regret plot's cost axis (None when it has none there)."""
    try:
        ref = report.subset(report.reference)
    except KeyError:
        return None
    if xlabel.startswith("measured"):
        return ref.cost_hours_per_job
    return 1.0 if xlabel.startswith("training time") and ref.cost_ratio is not None else None


def regret_plot(report: Report) -> bytes | None:
    """Regret (with its seed CI) vs cost per subset; the criterion's allowed regret as a green band."""
    subs = [s for s in _compared(report) if s.consistency is not None and s.consistency.regret is not None]
    if not subs:
        return None
    d = report.decision
    verdicts = {v.subset: v for v in d.verdicts} if d else {}
    xs, xlabel = _cost_axis(report, subs)
    if any(x is None for x in xs):  # no cost at all for some: put every subset at its index
        xs, xlabel = list(range(len(subs))), "subset (no cost measured)"
    fig = Figure(figsize=(5.6, 3.9))
    ax = fig.add_subplot()
    top = max(max((s.consistency.regret_ci or (0, s.consistency.regret))[1] for s in subs if s.consistency), 0.0)
    if d is not None:
        top = max(top, d.criterion.max_regret)
        ax.axhspan(0, d.criterion.max_regret, color=_GREEN, alpha=0.15, lw=0,
                   label=f"allowed regret (<= {d.criterion.max_regret:g})")
    for s, x in zip(subs, xs, strict=True):
        c = s.consistency
        assert c is not None and c.regret is not None and x is not None
        lo, hi = (c.regret - c.regret_ci[0], c.regret_ci[1] - c.regret) if c.regret_ci else (0.0, 0.0)
        v = verdicts.get(s.subset)
        rec = d is not None and d.recommended == s.subset
        color = _GREEN if v is not None and v.meets else _RED
        ax.errorbar([x], [c.regret], yerr=[[max(0.0, lo)], [max(0.0, hi)]], fmt="*" if rec else "o",
                    ms=14 if rec else 7, color=color, capsize=3)
        tau = f" (tau {c.kendall_tau:.2f})" if c.kendall_tau is not None else ""
        right = x == max(xs) and len(xs) > 1  # the rightmost label goes to the left of its point
        ax.annotate(s.subset + tau + (" - recommended" if rec else ""), (x, c.regret), textcoords="offset points",
                    xytext=(-6 if right else 6, 5), ha="right" if right else "left", fontsize=8,
                    fontweight="bold" if rec else "normal")
    ref_x = _reference_cost(report, xlabel)
    if ref_x is not None:
        ax.axvline(ref_x, color=_GREY, ls="--", lw=1, label=f"{report.reference} (reference)")
    positive = [x for x in [*xs, ref_x] if x is not None and x > 0]
    if len(positive) == len(xs) + (ref_x is not None) and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
    elif ref_x is not None or "no cost" not in xlabel:
        ax.set_xlim(left=0, right=1.1 * max(positive, default=1.0))  # from zero: savings at their true scale
    ax.set_ylim(-0.05 * (top or 1), 1.25 * (top or 1))
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(f"regret on {report.reference} ({report.metric})", fontsize=9)
    ax.set_title("green: meets the criterion, red: misses it", fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.25)
    if d is not None:
        ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


PLOTS = {"regret": regret_plot, "tau": tau_plot, "scatter": scatter_plot, "cost": cost_plot}
