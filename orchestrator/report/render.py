"""Render a :class:`Report`: rich terminal tables, JSON, and report.md / report.html files with plots.

The three text forms share one set of row builders (:func:`summary_rows`, :func:`ranking_rows`) so the
terminal, Markdown and HTML tables always show the same numbers.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.report import fmt
from orchestrator.report.lottery import PLOT_FILE as LOTTERY_PLOT
from orchestrator.report.lottery import LotteryReport, lottery_html, lottery_markdown, lottery_plot
from orchestrator.report.plots import FORMATS, PLOTS, render_all
from orchestrator.report.ranking import Report
from orchestrator.report.sections import Section, extra_sections, header_lines, recommendation
from orchestrator.report.stamp import Stamp
from orchestrator.report.statistics import ConfigStat, SubsetReport
from specs.atomic import write_bytes_atomic
from specs.job import metric_protocol
from specs.methods import eval_network_words

log = logging.getLogger(__name__)
DASH = "—"
TOP_PLOTS = ("regret",)  # shown with the recommendation at the top of the HTML report
PLOT_TITLES = {"regret": "Regret vs cost (the criterion as a band)",
               "tau": "Kendall tau per subset", "scatter": "Per-configuration means, subset vs reference",
               "cost": "Agreement vs cost"}
NO_PLOTS = "No plots yet: no subset shares enough finished configurations with the reference."


# ---------------------------------------------------------------------------------------------------------
# cells shared by every form


def _bool(x: bool | None) -> str:
    return DASH if x is None else ("yes" if x else "no")


def _size(s: SubsetReport) -> str:
    parts = [f"{x:,.0f}" for x in (s.num_classes, s.num_train_samples) if x is not None]
    return " / ".join(parts) if parts else DASH


def _tau(s: SubsetReport) -> str:
    return "reference" if s.is_reference else fmt.tau_text(s.consistency, fmt.seeds_of(s))


def _cost(s: SubsetReport) -> str:
    return DASH if s.cost_ratio is None else f"{s.cost_ratio:.2f}x"


def _regret(s: SubsetReport) -> str:
    return DASH if s.is_reference else fmt.regret_text(s.consistency, fmt.seeds_of(s))


def _measured(s: SubsetReport) -> str:
    """Measured device-hours per job, with its unit."""
    return fmt.hours_text(s.cost_hours_per_job, s.cost_unit)


def _verdict(report: Report, s: SubsetReport) -> str:
    if s.is_reference:
        return "reference"
    d = report.decision
    v = next((v for v in d.verdicts if v.subset == s.subset), None) if d else None
    if v is None:
        return DASH
    if d is not None and d.recommended == s.subset:
        return "RECOMMENDED"
    return "meets" if v.meets else "misses"


def _name(s: SubsetReport, provisional_mark: bool = True) -> str:
    return s.subset + (" *" if s.provisional and provisional_mark else "")


def _level(report: Report) -> float:
    return report.decision.criterion.level() if report.decision else 0.95


def summary_header(report: Report) -> list[str]:
    """Column names of the summary table (every column; :func:`summary_table` keeps those worth showing)."""
    lvl = f"{_level(report):.0%}"
    return ["subset", "classes / samples", "done/total", f"Kendall tau [{lvl} CI]", "Spearman rho", "top-1 agree",
            f"top-{report.top_k} overlap", "pairwise", f"regret [{lvl} CI]", f"train time vs {report.reference}",
            "measured cost per job", "criterion"]


def summary_rows(report: Report) -> list[list[str]]:
    """One row per subset, in report order, every column."""
    rows = []
    for s in report.subsets:
        c = s.consistency
        rows.append([
            _name(s), _size(s), f"{s.jobs_completed}/{s.jobs_total}", _tau(s),
            fmt.num(c.spearman_rho) if c else DASH, _bool(c.top1_agree) if c else DASH,
            fmt.num(c.top_k_overlap, 2) if c else DASH, fmt.num(c.pairwise_agreement, 2) if c else DASH,
            _regret(s), _cost(s), _measured(s), _verdict(report, s),
        ])
    return rows


def summary_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """The summary table every form shows: the training-time column is left out when every subset has a
    measured cost per job (which says more)."""
    header, rows = summary_header(report), summary_rows(report)
    keep = list(range(len(header)))
    if report.subsets and all(s.cost_hours_per_job is not None for s in report.subsets):
        keep.remove(9)
    return [header[n] for n in keep], [[row[n] for n in keep] for row in rows]


def legend(report: Report, header: Sequence[str]) -> str:
    """What each column shown in ``header`` means (and only those), in the same words in every form."""
    ref, k, lvl = report.reference, report.top_k, f"{_level(report):.0%}"
    tau = (f"Kendall tau-b vs {ref}, with its {lvl} interval from a paired bootstrap over seeds (seed variation "
           "only, not the choice of configurations)")
    if report.decision is not None and report.decision.status == "undecidable":
        tau += ("; the headline's 'Undecidable' comes from scipy's exact Kendall test of a perfect ranking, "
                "not from this bootstrap")
    words = {
        "classes / samples": "classes / training samples",
        "done/total": "jobs completed / jobs of the subset",
        f"Kendall tau [{lvl} CI]": tau,
        "Spearman rho": "Spearman rank correlation",
        "top-1 agree": "the same best configuration",
        f"top-{k} overlap": f"overlap of the top {k}",
        "pairwise": "share of configuration pairs in the same order",
        f"regret [{lvl} CI]": f"{report.metric} lost on {ref} by choosing the subset's best configuration "
                              "(same bootstrap)",
        f"train time vs {ref}": f"summed training time vs {ref}",
        "measured cost per job": "device-hours per job, wall time of every attempt x the devices held",
        "criterion": "meets / misses the criterion (RECOMMENDED: the cheapest subset that meets it)",
    }
    parts = [f"{col}: {words[col]}" for col in header if col in words]
    if any(fmt.COARSE in cell for row in summary_rows(report) for cell in row):
        parts.append(f"{fmt.COARSE}: with 2 seeds the bootstrap has 3 distinct draws, too few for an interval "
                     "(the criterion still uses it); run more seeds")
    if not report.complete:
        parts.append("* = provisional: the subset or the reference has unfinished jobs")
    return "; ".join(parts) + "."


RANKING_HEADER = ["config", "mean ± std", "seeds", "rank", "ref rank"]


def _mean_std(c: ConfigStat) -> str:
    if c.mean is None:
        return DASH
    return f"{c.mean:.4f}" + (f" ± {c.std:.4f}" if c.std is not None else "")


def ranking_rows(s: SubsetReport) -> list[list[str]]:
    """A subset's configurations, best first (configurations without a result last)."""
    order = sorted(s.configs, key=lambda c: (c.rank is None, c.rank or 0, c.config))
    return [[c.config, _mean_std(c), f"{c.n_done}/{c.n_expected}", DASH if c.rank is None else str(c.rank),
             DASH if c.ref_rank is None else str(c.ref_rank)] for c in order]


def _section_title(s: SubsetReport) -> str:
    ext = " [external results]" if s.external else ""
    if s.is_reference:
        return f"{s.subset} (reference){ext}"
    tau = s.consistency.kendall_tau if s.consistency else None
    return f"{s.subset}: tau {fmt.num(tau)}, {s.jobs_completed}/{s.jobs_total} jobs done{ext}"


def subset_notes(s: SubsetReport) -> list[str]:
    """Why numbers are missing, what was left out."""
    c = s.consistency
    if c is None:
        return []
    return ([f"tau/rho undefined: {c.undefined_reason}"] if c.undefined_reason else []) + list(c.notes)


def warning_lines(report: Report) -> list[str]:
    """The incomplete-grid warning first, then failed jobs and left-out results."""
    return ([report.warning] if report.warning else []) + list(report.warnings)


def evaluated_networks(report: Report) -> str | None:
    """Which network a frozen-feature metric (kNN, linear probe) was measured on, per method, e.g.
    ``dino: teacher (EMA of the student); byol, simclr: online backbone``; None for other metrics."""
    if not report.metric.startswith(("knn_", "linear_")):
        return None
    by_words: dict[str, list[str]] = {}
    for method in sorted({c.method for s in report.subsets for c in s.configs if c.method}):
        by_words.setdefault(eval_network_words(method), []).append(method)
    return "; ".join(f"{', '.join(methods)}: {words}" for words, methods in by_words.items()) or None


def _settings_line(report: Report) -> str:
    direction = "higher is better" if report.higher_is_better else "lower is better"
    sources = f"sources: {', '.join(report.sources)}; " if len(report.sources) > 1 else ""
    networks = evaluated_networks(report)
    on = f", evaluated on: {networks}" if networks else ""
    return (f"{sources}metric {report.metric} ({direction}; protocol: {metric_protocol(report.metric)}{on}), "
            f"reference {report.reference}, "
            f"{report.jobs_completed}/{report.jobs_total} jobs completed, tau and regret CIs from "
            f"{report.bootstrap} paired bootstrap samples over seeds (the bootstrap's random seed {report.seed}; each "
            "draws seed indices "
            "once for every configuration and subset, since a seed is the same initialisation everywhere): they "
            "cover seed variation, not the choice of configurations")


# ---------------------------------------------------------------------------------------------------------
# terminal and JSON


def print_report(report: Report, console: Console) -> None:
    """The summary table, one ranking table per subset, then warnings."""
    title = f"Rank consistency: {report.grid}" + ("" if report.complete else " (PROVISIONAL)")
    _print_recommendation(report, console)
    for line in header_lines(report):
        console.print(escape(line))
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    header, rows = summary_table(report)
    for n, name in enumerate(header):
        table.add_column(escape(name), justify="left" if n == 0 else "right", no_wrap=name.endswith("CI]"))
    for row in rows:
        table.add_row(*map(escape, row))
    console.print(table)
    console.print(f"[dim]{escape(legend(report, header))}[/dim]", soft_wrap=True)  # one line: greppable
    console.print(f"[dim]{escape(_settings_line(report))}.[/dim]", soft_wrap=True)
    for sec in extra_sections(report):
        _print_section(sec, console)
    for s in report.subsets:
        t = Table(title=escape(_section_title(s)), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
        for n, name in enumerate(RANKING_HEADER):
            t.add_column(name, justify="left" if n == 0 else "right")
        for row in ranking_rows(s):
            t.add_row(*map(escape, row))
        console.print(t)
        for note in subset_notes(s):
            console.print(f"  [dim]{escape(note)}[/dim]")
    for n, line in enumerate(warning_lines(report)):
        style = "bold red" if n == 0 and not report.complete else "bold yellow"
        console.print(f"[{style}]warning:[/{style}] {escape(line)}")


def _print_recommendation(report: Report, console: Console) -> None:
    sec = recommendation(report)
    status = report.decision.status if report.decision else ""
    style = "bold green" if status == "met" else "bold yellow"
    console.print(f"[{style}]{escape(sec.lines[0])}[/{style}]")
    for line in sec.lines[1:]:
        console.print(f"  {escape(line)}")


def _print_section(sec: Section, console: Console) -> None:
    console.print(f"[bold]{escape(sec.title)}[/bold]")
    for line in sec.lines:
        console.print(f"  {escape(line)}")
    if sec.header:
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for n, name in enumerate(sec.header):
            t.add_column(name, justify="left" if n == 0 else "right")
        for row in sec.rows:
            t.add_row(*map(escape, row))
        console.print(t)


def report_json(report: Report, lottery: LotteryReport | None = None) -> str:
    """The report as JSON (strict: undefined numbers are null, never NaN)."""
    return json.dumps({**report.to_dict(), **({"lottery": lottery.to_dict()} if lottery else {})}, indent=1,
                      allow_nan=False)


# ---------------------------------------------------------------------------------------------------------
# Markdown and HTML files


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join(":---" if n == 0 else "---:" for n in range(len(header))) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: Report, images: dict[str, str]) -> str:
    """report.md; ``images`` maps plot name -> file name next to it."""
    rec = recommendation(report)
    out = [f"# Rank-consistency report: {report.grid}", ""]
    out += [f"**{rec.lines[0]}**", ""] + [f"- {line}" for line in rec.lines[1:]] + [""]
    out += [line + "  " for line in header_lines(report)] + [_settings_line(report) + ".", ""]
    for n, line in enumerate(warning_lines(report)):
        out += [f"> **{'PROVISIONAL' if n == 0 and not report.complete else 'warning'}:** {line}", ""]
    header, rows = summary_table(report)
    out += ["## Summary", "", _md_table(header, rows), "", legend(report, header), ""]
    for name, file in images.items():
        stem = file.rsplit(".", 1)[0]
        out += [f"![{PLOT_TITLES[name]}]({file})", "",
                f"({PLOT_TITLES[name]}, for a paper: [{stem}.svg]({stem}.svg), [{stem}.pdf]({stem}.pdf))", ""]
    if not images:
        out += [NO_PLOTS, ""]
    for sec in extra_sections(report):
        out += [f"## {sec.title}", ""] + [f"{line}  " for line in sec.lines] + [""]
        out += [_md_table(sec.header, sec.rows), ""] if sec.header else []
    for s in report.subsets:
        out += [f"## {_section_title(s)}", "",
                _md_table(RANKING_HEADER, ranking_rows(s)), ""]
        out += [f"- {note}" for note in subset_notes(s)]
        out += [""] if subset_notes(s) else []
    return "\n".join(out).rstrip() + "\n"


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.82em}
th,td{border:1px solid #ddd;padding:.25em .45em;text-align:right}th{background:#f4f4f4}td{white-space:nowrap}
td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafa}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em;margin:.4em 0}
.prov{background:#fdecea;border-left:4px solid #d62728;padding:.5em 1em;margin:.4em 0;font-weight:bold}
.muted{color:#666;font-size:.9em}img{max-width:100%;display:block;margin:1em 0}
.decision{border-left:6px solid #2ca02c;background:#eef8ee;padding:.6em 1.2em;margin:1em 0}
.decision.no{border-left-color:#d62728;background:#fdf0ef}.decision p{margin:.25em 0}
.decision .head{font-size:1.15em;font-weight:bold}.decision ul{margin:.3em 0 .2em 1.2em;padding:0}
.top{display:flex;gap:1.5em;align-items:flex-start}.top>div{flex:1 1 0}.top img{margin:.4em 0}
"""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Report, pngs: dict[str, bytes]) -> str:
    """report.html: self-contained (inline CSS, plots as base64 PNG)."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Rank consistency: {e(report.grid)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>Rank-consistency report: {e(report.grid)}</h1>",
             _html_decision(report, pngs)]
    parts += [f"<p>{e(line)}</p>" for line in header_lines(report)]
    parts.append(f"<p class='muted'>{e(_settings_line(report))}</p>")
    for n, line in enumerate(warning_lines(report)):
        cls = "prov" if n == 0 and not report.complete else "warn"
        parts.append(f"<div class='{cls}'>{e(line)}</div>")
    header, rows = summary_table(report)
    parts += ["<h2>Summary</h2>", _html_table(header, rows), f"<p class='muted'>{e(legend(report, header))}</p>"]
    for name, data in pngs.items():
        if name not in TOP_PLOTS:
            parts.append(f"<h2>{e(PLOT_TITLES[name])}</h2>{_img(name, data)}")
    if not pngs:
        parts.append(f"<p class='muted'>{e(NO_PLOTS)}</p>")
    for sec in extra_sections(report):
        parts.append(f"<h2>{e(sec.title)}</h2>" + "".join(f"<p>{e(line)}</p>" for line in sec.lines))
        if sec.header:
            parts.append(_html_table(sec.header, sec.rows))
    for s in report.subsets:
        parts += [f"<h2>{e(_section_title(s))}</h2>",
                  _html_table(RANKING_HEADER, ranking_rows(s))]
        parts += [f"<p class='muted'>{e(note)}</p>" for note in subset_notes(s)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _img(name: str, data: bytes) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f"<img alt='{html.escape(PLOT_TITLES[name])}' src='data:image/png;base64,{b64}'>"


def _html_decision(report: Report, pngs: dict[str, bytes]) -> str:
    """The recommendation box, with the regret-vs-cost plot beside it."""
    e = html.escape
    rec = recommendation(report)
    met = report.decision is not None and report.decision.status == "met"
    box_ = (f"<div class='decision{'' if met else ' no'}'><p class='head'>{e(rec.lines[0])}</p><ul>"
            + "".join(f"<li>{e(line)}</li>" for line in rec.lines[1:]) + "</ul></div>")
    plots = "".join(_img(name, pngs[name]) for name in TOP_PLOTS if name in pngs)
    return f"<div class='top'><div>{box_}</div><div>{plots}</div></div>" if plots else box_


def has_rank_section(report: Report) -> bool:
    """Whether the report has jobs to rank (a grid of lottery chains alone has none)."""
    return report.jobs_total > 0 or bool(report.subsets)


def write_report_files(report: Report, out_dir: Path | str, lottery: LotteryReport | None = None,
                       stamp: Stamp | None = None) -> list[Path]:
    """Write report.md, report.html (self-contained), report.json and each plot as PNG, SVG and PDF into
    ``out_dir``; every page says what wrote it, when, and the grid's hash (``stamp``).

    Everything is rendered before anything is written, and each file is replaced atomically.
    """
    out = Path(out_dir)
    stamp = stamp or Stamp()
    lottery_only = lottery is not None and not has_rank_section(report)
    figures = {} if lottery_only else render_all(report)
    pngs = {name: fmts["png"] for name, fmts in figures.items()}
    files: dict[str, bytes] = {f"{name}.{kind}": data for name, kinds in figures.items()
                               for kind, data in kinds.items()}
    if lottery_only:  # a grid of lottery chains only: no empty rank-consistency tables
        md = f"# Lottery-ticket report: {report.grid}\n"
        page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Lottery tickets: {html.escape(report.grid)}"
                f"</title><style>{CSS}</style></head><body>\n</body></html>")
    else:
        md, page = render_markdown(report, {name: f"{name}.png" for name in pngs}), render_html(report, pngs)
    if lottery is not None:  # the lottery section (orchestrator/report/lottery.py)
        png = lottery_plot(lottery)
        files.update({LOTTERY_PLOT: png} if png else {})
        md += "\n" + lottery_markdown(lottery, LOTTERY_PLOT if png else None)
        page = page.replace("</body></html>", lottery_html(lottery, png) + "\n</body></html>")
    md += f"\n---\n\n*{stamp.line()}*\n"
    page = page.replace("</body></html>", f"<p class='muted'>{html.escape(stamp.line())}</p>\n</body></html>")
    files["report.md"] = md.encode("utf-8")
    files["report.html"] = page.encode("utf-8")
    doc = {**json.loads(report_json(report, lottery)), "written": stamp.to_dict()}
    files["report.json"] = (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode("utf-8")
    out.mkdir(parents=True, exist_ok=True)
    for file, data in files.items():
        write_bytes_atomic(out / file, data)
    for name in PLOTS.keys() - pngs.keys():  # a plot an earlier report had and this one has not
        for kind in FORMATS:
            (out / f"{name}.{kind}").unlink(missing_ok=True)
    log.info("report of %s written to %s", report.grid, out)
    return [out / file for file in files]
