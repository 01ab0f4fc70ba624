"""The report's figures (matplotlib, Agg canvas, no pyplot global state), each as PNG, SVG and PDF.

Every figure is titled with the grid's name, and every cost axis is the same measure: measured
device-hours per job (all attempts), with the reference shown on it; where some subset has no measured
cost, the training time relative to the reference stands in (and says so on the axis).
"""

from __future__ import annotations

import io
import math

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from orchestrator.report.ranking import Report
from orchestrator.report.statistics import SubsetReport

DPI = 110
FORMATS = ("png", "svg", "pdf")  # the files each figure is written as; the HTML page embeds the PNG
_BLUE, _GREY, _RED, _ORANGE, _GREEN = "#1f77b4", "#888888", "#d62728", "#ff7f0e", "#2ca02c"


def _color(s: SubsetReport) -> str:
    """Blue: finished; orange: provisional (the subset or the reference has unfinished jobs)."""
    return _ORANGE if s.provisional else _BLUE


def _state_legend(ax: Axes, subs: list[SubsetReport], extra: bool = False) -> None:
    """A legend for the point colours when they differ (finished / provisional), with the axes' own labelled
    lines when ``extra``."""
    handles = ax.get_legend_handles_labels()[0] if extra else []
    if any(s.provisional for s in subs):
        handles += [Line2D([], [], marker="o", ls="", color=_BLUE, label="finished"),
                    Line2D([], [], marker="o", ls="", color=_ORANGE, label="provisional (unfinished jobs)")]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="lower left")


def encode(fig: Figure, fmt: str = "png") -> bytes:
    """The figure as ``fmt`` bytes (png, svg, pdf); SVG and PDF keep their text as text, fit for a paper."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    with rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):  # text stays text (TrueType in the PDF)
        fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def _compared(report: Report) -> list[SubsetReport]:
    return [s for s in report.subsets if not s.is_reference and s.consistency is not None]


def _ci_err(s: SubsetReport) -> tuple[float, float]:
    """(below, above) error bar lengths of tau's CI (0 where there is none)."""
    c = s.consistency
    if c is None or c.kendall_tau is None or c.kendall_tau_ci is None:
        return 0.0, 0.0
    return max(0.0, c.kendall_tau - c.kendall_tau_ci[0]), max(0.0, c.kendall_tau_ci[1] - c.kendall_tau)


def tau_plot(report: Report) -> Figure | None:
    """Kendall tau per subset (report order) with its bootstrap CI and the criterion's ``min_tau`` as a line;
    the axis fitted to the data; None when no subset has a tau."""
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
    lows = [t - _ci_err(s)[0] for s in subs if (t := s.consistency and s.consistency.kendall_tau) is not None]
    d = report.decision
    if d is not None:
        ax.axhline(d.criterion.min_tau, color=_GREEN, lw=1.2, ls="--",
                   label=f"min_tau = {d.criterion.min_tau:g} (the criterion)")
        lows.append(d.criterion.min_tau)
    bottom = min(lows + [1.0])
    if bottom <= 0:
        ax.axhline(0, color=_GREY, lw=0.8)
    ax.axhline(1, color=_GREY, lw=0.8, ls=":")
    ax.set_xticks(range(len(subs)), [s.subset for s in subs], rotation=30 if len(subs) > 4 else 0, ha="right"
                  if len(subs) > 4 else "center")
    ax.set_xlim(-0.6, len(subs) - 0.4)
    ax.set_ylim(max(-1.05, bottom - 0.1 * (1.0 - bottom) - 0.02), 1.05)  # fitted: the data, min_tau, tau = 1
    ax.set_ylabel("Kendall tau vs " + report.reference)
    title = f"{report.grid}: ranking agreement on {report.metric} ({_level(report):.0%} CI over seeds)"
    if not report.complete:
        title += " - provisional"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _state_legend(ax, subs, extra=d is not None)
    return fig


def _level(report: Report) -> float:
    return report.decision.criterion.level() if report.decision else 0.95


def scatter_plot(report: Report) -> Figure | None:
    """Per subset: its mean vs the reference's mean per configuration (seed std bars, 'rank/ref rank' labels),
    with a key from the reference rank to the configuration's name under the panels."""
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
    names = sorted((c.rank, c.config) for c in ref.configs if c.rank is not None)
    key = "configurations by rank on " + report.reference + ": " + "; ".join(f"{r} = {n}" for r, n in names)
    fig.tight_layout(rect=(0, 0.04 + 0.012 * math.ceil(len(key) / 140), 1, 1))
    fig.text(0.01, 0.005, "\n".join(_wrap(key, 140)), fontsize=7, va="bottom", ha="left")
    return fig


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most about ``width`` characters, broken after '; '."""
    lines, line = [], ""
    for part in text.split("; "):
        if line and len(line) + len(part) + 2 > width:
            lines.append(line + ";")
            line = part
        else:
            line = f"{line}; {part}" if line else part
    return [*lines, line]


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


def cost_plot(report: Report) -> Figure | None:
    """Kendall tau vs cost per subset (the regret plot's cost axis), the reference at tau = 1: good subsets
    sit top left."""
    subs = [s for s in _compared(report) if s.consistency is not None and s.consistency.kendall_tau is not None]
    xs, xlabel = _cost_axis(report, subs)
    pts = [(s, x) for s, x in zip(subs, xs, strict=True) if x is not None]
    if not pts:
        return None
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    for s, x in pts:
        lo, hi = _ci_err(s)
        tau = s.consistency.kendall_tau if s.consistency else 0.0
        ax.errorbar([x], [tau], yerr=[[lo], [hi]], fmt="o", color=_color(s), capsize=3)
        ax.annotate(s.subset, (x, tau), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ref_x = _reference_cost(report, xlabel)
    if ref_x is not None:
        ax.plot([ref_x], [1.0], marker="s", ls="", color=_GREY, ms=7, label=f"{report.reference} (reference)")
        ax.annotate(report.reference, (ref_x, 1.0), textcoords="offset points", xytext=(5, -10), fontsize=8,
                    color=_GREY)
    positive = [x for x in [*(x for _, x in pts), ref_x] if x is not None and x > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
    lows = [(s.consistency.kendall_tau if s.consistency else 0.0) - _ci_err(s)[0] for s, _ in pts]
    bottom = min(lows + [1.0])
    ax.set_ylim(max(-1.05, bottom - 0.1 * (1.0 - bottom) - 0.02), 1.08)
    if bottom <= 0:
        ax.axhline(0, color=_GREY, lw=0.8)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(f"Kendall tau vs {report.reference}")
    ax.set_title(f"{report.grid}: agreement vs cost", fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(x=0.2)
    _state_legend(ax, [s for s, _ in pts], extra=ref_x is not None)
    return fig


def _cost_axis(report: Report, subs: list[SubsetReport]) -> tuple[list[float | None], str]:
    """x of each subset: measured cost per job when every subset has one, else training time vs the reference."""
    if subs and all(s.cost_hours_per_job is not None for s in subs):
        units = sorted({s.cost_unit for s in subs})
        return [s.cost_hours_per_job for s in subs], f"measured {' / '.join(units)} per job (all attempts)"
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


def regret_plot(report: Report) -> Figure | None:
    """Regret (with its seed CI) vs cost per subset, the reference as a point at regret 0; the criterion's
    allowed regret as a green band; a legend for the colours the points have."""
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
        ax.plot([ref_x], [0.0], marker="s", ls="", color=_GREY, ms=7, label=f"{report.reference} (reference)")
    shown = {_GREEN if (v := verdicts.get(s.subset)) is not None and v.meets else _RED for s in subs}
    for color, words in ((_GREEN, "meets the criterion"), (_RED, "misses it")):
        if color in shown:
            ax.plot([], [], marker="o", ls="", color=color, label=words)
    positive = [x for x in [*xs, ref_x] if x is not None and x > 0]
    if len(positive) == len(xs) + (ref_x is not None) and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
    elif ref_x is not None or "no cost" not in xlabel:
        ax.set_xlim(left=0, right=1.1 * max(positive, default=1.0))  # from zero: savings at their true scale
    ax.set_ylim(-0.05 * (top or 1), 1.25 * (top or 1))
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(f"regret on {report.reference} ({report.metric})", fontsize=9)
    ax.set_title(f"{report.grid}: regret vs cost", fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(x=0.25)
    ax.legend(fontsize=7, loc="best")
    return fig


PLOTS = {"regret": regret_plot, "tau": tau_plot, "scatter": scatter_plot, "cost": cost_plot}


def render_all(report: Report) -> dict[str, dict[str, bytes]]:
    """Every plot the report has, as ``{name: {format: bytes}}`` in :data:`FORMATS`."""
    out: dict[str, dict[str, bytes]] = {}
    for name, build in PLOTS.items():
        fig = build(report)
        if fig is not None:
            out[name] = {fmt: encode(fig, fmt) for fmt in FORMATS}
    return out
