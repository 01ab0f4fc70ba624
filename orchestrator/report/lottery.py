"""The lottery section of the report: per generation setting, the evaluation metric of every ticket against
the share of weights remaining (mean and spread over seeds), the random baselines, the sparsest *matching*
level (within one standard deviation of the dense level 0) and the cost of generating the tickets.

Pure statistics (:func:`build_lottery_report`) over :class:`LotteryRow` rows gathered from the store
(:func:`lottery_rows`), and renderers for the terminal, JSON, Markdown and HTML (plus one PNG plot).
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from db import JobState, Store
from specs.lottery import BASELINES, TICKET, parse_label

DASH = "—"
PLOT_FILE = "lottery.png"
PLOT_TITLE = "Lottery tickets: evaluation metric vs weights remaining"


@dataclass(frozen=True)
class LotteryRow:
    """One lottery job as the report sees it."""

    setting: str
    level: int
    ticket: str | None  # None: a level (generation) job; else the evaluated ticket or baseline
    seed: int
    state: str
    subset: str
    method: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class LotteryPoint:
    """One (level, ticket) of a setting over its seeds."""

    level: int
    ticket: str
    weights_remaining: float | None
    mean: float | None
    std: float | None  # sample std (ddof=1); None with fewer than 2 seeds
    values: tuple[float, ...]
    n_done: int
    n_expected: int


@dataclass(frozen=True)
class SettingReport:
    setting: str
    metric: str
    generation: str  # "method on subset"
    evaluation: str
    levels_done: int  # completed level jobs of every seed
    levels_total: int
    points: tuple[LotteryPoint, ...]
    matching_level: int | None  # the sparsest ticket within one std of level 0's
    matching_remaining: float | None
    generation_cost_s: float | None  # training time of all completed levels, mean over seeds
    cost_ratio: float | None  # vs the costliest setting


@dataclass(frozen=True)
class LotteryReport:
    grid: str
    higher_is_better: bool
    settings: tuple[SettingReport, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lottery_rows(store: Store, grid_name: str) -> list[LotteryRow]:
    """The grid's lottery jobs with their final metrics (empty for a grid without lottery tables)."""
    metrics = store.final_metrics(grid_name)
    rows = []
    for j in store.jobs(grid_name):
        parsed = parse_label(j.config_name)
        if parsed is not None:
            rows.append(LotteryRow(parsed[0], parsed[1], parsed[2], j.seed, j.state, j.subset_name, j.method,
                                   metrics.get(j.job_hash, {})))
    return rows


def setting_metrics(grid_raw: dict[str, Any], default: str) -> dict[str, str]:
    """Each ``[lottery.NAME]`` table's ``metric`` (default: the grid's report metric)."""
    return {name: t.get("metric", default) for name, t in (grid_raw.get("lottery") or {}).items()
            if isinstance(t, dict)}


def _stats(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _done(rows: Sequence[LotteryRow]) -> list[LotteryRow]:
    return [r for r in rows if r.state == JobState.COMPLETED]


def _setting(name: str, rows: list[LotteryRow], metric: str, higher: bool) -> SettingReport:
    levels = [r for r in rows if r.ticket is None]
    evals = [r for r in rows if r.ticket is not None]
    remaining: dict[int, float] = {}
    for r in _done(rows):
        if "weights_remaining" in r.metrics:
            remaining.setdefault(r.level, r.metrics["weights_remaining"])
    points = []
    for level, ticket in sorted({(r.level, r.ticket) for r in evals},
                                key=lambda k: (k[0], (TICKET, *BASELINES).index(k[1]))):
        group = [r for r in evals if r.level == level and r.ticket == ticket]
        values = tuple(r.metrics[metric] for r in _done(group) if metric in r.metrics)
        mean, std = _stats(values)
        points.append(LotteryPoint(level, ticket, remaining.get(level), mean, std, values, len(values), len(group)))
    dense = next((p for p in points if p.level == 0 and p.ticket == TICKET), None)
    match = None
    if dense is not None and dense.mean is not None:
        slack = dense.std or 0.0
        ok = [p for p in points if p.ticket == TICKET and p.mean is not None and (
            p.mean >= dense.mean - slack if higher else p.mean <= dense.mean + slack)]
        match = max(ok, key=lambda p: p.level) if ok else None
    per_seed: dict[int, float] = {}
    for r in _done(levels):
        per_seed[r.seed] = per_seed.get(r.seed, 0.0) + r.metrics.get("train_time_s", 0.0)
    first = min(levels, key=lambda r: r.level) if levels else None
    ev = evals[0] if evals else None
    return SettingReport(
        setting=name, metric=metric, generation=f"{first.method} on {first.subset}" if first else DASH,
        evaluation=f"{ev.method} on {ev.subset}" if ev else DASH, levels_done=len(_done(levels)),
        levels_total=len(levels), points=tuple(points), matching_level=match.level if match else None,
        matching_remaining=match.weights_remaining if match else None,
        generation_cost_s=statistics.fmean(per_seed.values()) if per_seed else None, cost_ratio=None)


def build_lottery_report(grid_name: str, rows: list[LotteryRow], metrics: dict[str, str], default_metric: str,
                         higher_is_better: bool = True) -> LotteryReport | None:
    """The lottery section of a grid's report; None when the grid has no lottery jobs."""
    if not rows:
        return None
    names = sorted({r.setting for r in rows})
    settings = [_setting(n, [r for r in rows if r.setting == n], metrics.get(n, default_metric), higher_is_better)
                for n in names]
    costliest = max((s.generation_cost_s for s in settings if s.generation_cost_s), default=None)
    if costliest:
        settings = [SettingReport(**{**asdict(s), "points": s.points, "cost_ratio": (
            s.generation_cost_s / costliest if s.generation_cost_s is not None else None)}) for s in settings]
    return LotteryReport(grid_name, higher_is_better, tuple(settings))


def lottery_report_for(store: Store, grid_name: str, default_metric: str,
                       higher_is_better: bool = True) -> LotteryReport | None:
    """:func:`build_lottery_report` from the store and the grid as recorded at launch (the CLI's entry point)."""
    g = store.get_grid(grid_name)
    raw = json.loads(g.spec_json) if g else {}
    return build_lottery_report(grid_name, lottery_rows(store, grid_name), setting_metrics(raw, default_metric),
                                default_metric, higher_is_better)


# ---------------------------------------------------------------------------------------------------------
# rows shared by every form


def _num(x: float | None, digits: int = 3) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def _mean_std(p: LotteryPoint | None) -> str:
    if p is None or p.mean is None:
        return DASH
    return f"{p.mean:.4f}" + (f" ± {p.std:.4f}" if p.std is not None else "") + f" ({p.n_done}/{p.n_expected})"


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}%"


SUMMARY_HEADER = ["setting", "generation", "evaluation", "levels done", "dense (level 0)", "sparsest matching",
                  "generation cost", "cost vs costliest"]
LEVEL_HEADER = ["level", "weights remaining", "ticket", *BASELINES]


def summary_rows(rep: LotteryReport) -> list[list[str]]:
    rows = []
    for s in rep.settings:
        dense = next((p for p in s.points if p.level == 0 and p.ticket == TICKET), None)
        match = DASH if s.matching_level is None else f"level {s.matching_level} ({_pct(s.matching_remaining)})"
        rows.append([s.setting, s.generation, s.evaluation, f"{s.levels_done}/{s.levels_total}", _mean_std(dense),
                     match, DASH if s.generation_cost_s is None else f"{s.generation_cost_s:.1f}s",
                     DASH if s.cost_ratio is None else f"{s.cost_ratio:.2f}x"])
    return rows


def level_rows(s: SettingReport) -> list[list[str]]:
    by = {(p.level, p.ticket): p for p in s.points}
    rows = []
    for level in sorted({p.level for p in s.points}):
        rem = next((p.weights_remaining for p in s.points if p.level == level), None)
        rows.append([str(level), _pct(rem), *(_mean_std(by.get((level, t))) for t in (TICKET, *BASELINES))])
    return rows


def _legend(rep: LotteryReport) -> str:
    better = "higher" if rep.higher_is_better else "lower"
    return (f"mean ± std over seeds (done/expected); {better} is better; matching: within one std of level 0; "
            "generation cost: training time of the levels, mean over seeds")


def print_lottery(rep: LotteryReport, console: Console) -> None:
    """The summary table, then one table per setting (terminal)."""
    t = Table(title=escape(f"Lottery tickets: {rep.grid}"), box=box.SIMPLE_HEAD, pad_edge=False)
    for n, name in enumerate(SUMMARY_HEADER):
        t.add_column(name, justify="left" if n < 3 else "right")
    for row in summary_rows(rep):
        t.add_row(*map(escape, row))
    console.print(t)
    console.print(f"[dim]{escape(_legend(rep))}[/dim]")
    for s in rep.settings:
        st = Table(title=escape(f"{s.setting}: {s.metric}"), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for n, name in enumerate(LEVEL_HEADER):
            st.add_column(name, justify="right" if n else "left")
        for row in level_rows(s):
            st.add_row(*map(escape, row))
        console.print(st)


def lottery_markdown(rep: LotteryReport, plot_file: str | None) -> str:
    def table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join(":---" if n == 0 else "---:" for n in
                                                              range(len(header))) + "|"]
        return out + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]

    out = ["## Lottery tickets", "", _legend(rep) + ".", "", *table(SUMMARY_HEADER, summary_rows(rep)), ""]
    if plot_file:
        out += [f"![{PLOT_TITLE}]({plot_file})", ""]
    for s in rep.settings:
        out += [f"### {s.setting}: {s.metric}", "", *table(LEVEL_HEADER, level_rows(s)), ""]
    return "\n".join(out)


def lottery_html(rep: LotteryReport, png: bytes | None) -> str:
    e = html.escape

    def table(header: Sequence[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = ["<h2>Lottery tickets</h2>", f"<p class='muted'>{e(_legend(rep))}</p>",
             table(SUMMARY_HEADER, summary_rows(rep))]
    if png:
        parts.append(f"<img alt='{e(PLOT_TITLE)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    for s in rep.settings:
        parts += [f"<h2>{e(s.setting)}: {e(s.metric)}</h2>", table(LEVEL_HEADER, level_rows(s))]
    return "\n".join(parts)


def lottery_json(rep: LotteryReport) -> str:
    return json.dumps(rep.to_dict(), indent=1, allow_nan=False)


def lottery_plot(rep: LotteryReport) -> bytes | None:
    """Metric vs weights remaining (log x, sparser to the right), one line per setting, baselines dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = False
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    styles = {TICKET: ("-", "o"), "random_reinit": ("--", "x"), "random_prune": (":", "s")}
    for n, s in enumerate(rep.settings):
        for ticket, (ls, marker) in styles.items():
            pts = sorted((p for p in s.points if p.ticket == ticket and p.mean is not None
                          and p.weights_remaining), key=lambda p: -p.weights_remaining)
            if not pts:
                continue
            drawn = True
            ax.errorbar([100 * p.weights_remaining for p in pts], [p.mean for p in pts],
                        yerr=[p.std or 0.0 for p in pts], ls=ls, marker=marker, ms=4, capsize=3,
                        color=colors[n % len(colors)], label=s.setting if ticket == TICKET else f"{s.setting} "
                        f"({ticket})")
    if not drawn:
        return None
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel(", ".join(sorted({s.metric for s in rep.settings})))
    ax.set_title(f"{rep.grid}: {PLOT_TITLE.split(': ')[1]} (bars: std over seeds)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()
