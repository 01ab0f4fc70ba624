"""``dlth-orch show JOB``: one job's settings, parents and children, attempts (state, node, times, code
version, error line), files and final metrics; ``--json`` for scripts."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.cli_common import db_option, open_job


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += _flatten(v, key + ".")
        elif v not in (None, {}, [], ()):
            out.append((key, json.dumps(v) if not isinstance(v, str) else v))
    return out


def _code(code: str | None, versions: dict[str, dict[str, Any]]) -> str:
    if code is None:
        return "live code (no snapshot)"
    v = versions.get(code)
    if not v:
        return code
    commit = (v["commit"] or "no commit")[:12] + (" + diff" if v["dirty"] else "")
    return f"{code} ({commit})"


def _usage(u: dict[str, Any] | None) -> str:
    """``cpu 85%/core, 412 MiB; gpu 40%, 2,100 MiB`` (empty when nothing was measured)."""
    if not u:
        return ""
    parts = []
    if u.get("cpu_util") is not None:
        parts.append(f"cpu {100 * u['cpu_util']:.0f}%/core")
    if u.get("max_rss_mb") is not None:
        parts.append(f"{u['max_rss_mb']:,.0f} MiB")
    gpu = [f"gpu {100 * u['gpu_util']:.0f}%"] if u.get("gpu_util") is not None else []
    gpu += [f"{u['gpu_mem_peak_mb']:,.0f} MiB"] if u.get("gpu_mem_peak_mb") is not None else []
    return ", ".join(parts) + ("; " + ", ".join(gpu) if gpu else "")


def print_job(view: dict[str, Any], console: Console) -> None:
    """The terminal form of :func:`orchestrator.job_view.job_view`."""
    e = escape
    names = "; ".join(f"{g}: {label}" for g, label in view["grids"].items())
    console.print(f"[bold]{e(view['job_hash'])}[/]  {e(names)}  [bold]{view['state']}[/]")
    console.print(f"method {e(view['method'])}, seed {view['seed']}, directory {e(view['job_dir'])}")
    console.print(f"code: {e(_code(view['code'], view['code_versions']))}")
    for code, v in view["code_versions"].items():
        pk = ", ".join(f"{k} {val}" for k, val in v["packages"].items() if val)
        console.print(f"  {e(code)}: launched {v['launched']} by {e(v['command'])} on {e(v['host'])}; "
                      f"python {v['python']}, {e(pk)}")
    for rel in ("parents", "children"):
        for r in view[rel]:
            console.print(f"{rel[:-1] if rel == 'parents' else 'child'}: {r['job_hash'][:12]} {e(r['label'])} "
                          f"{r['state']}")
    t = Table("#", "state", "node", "started", "ended", "code", "use", "error", title="attempts",
              title_justify="left")
    for a in view["attempts"]:
        t.add_row(str(a["number"]), a["state"], e(a["node"] or a["host"] or ""), a["started"] or "",
                  a["ended"] or "", e(_code(a["code"], view["code_versions"])), _usage(a.get("usage")),
                  e(a["error"] or ""))
    console.print(t)
    for name, path in view["files"].items():
        for p in path if isinstance(path, list) else [path]:
            console.print(f"{name}: {e(p)}")
    if view["final_metrics"]:
        console.print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(view["final_metrics"].items())))
    s = Table("setting", "value", title="settings", title_justify="left", show_edge=False)
    for k, v in _flatten(view["settings"]):
        s.add_row(e(k), e(v))
    console.print(s)


@click.command()
@click.argument("job")
@click.option("--grid", default=None, help="Look for the label in this grid only.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@db_option
def show(job: str, grid: str | None, as_json: bool, db_url: str) -> None:
    """Everything about JOB (a hash prefix or a label such as full/supervised[lr=0.2]/s0)."""
    from orchestrator.job_view import job_view

    store, named = open_job(db_url, job, grid)
    view = job_view(store, named)
    if as_json:
        click.echo(json.dumps(view, indent=1, default=str))
        return
    print_job(view, Console(width=160) if not Console().is_terminal else Console())
