"""``[lottery.NAME]`` tables of a grid file: lottery-ticket studies as chains of jobs (validated here).

::

    [lottery.rotnet_10pct]
    generate = "rotnet"          # a [methods.X] table (no sweeps): the task the tickets are found with
    subset = "imgs_10pct"        # a [subsets.X] table: the data they are found on
    levels = 12                  # pruning rounds after the dense level 0
    prune_fraction = 0.2         # of the remaining prunable weights, per level (0 < f < 1)
    strategy = "global"          # or "layerwise"
    rewind = "3ep"               # "0it", "500it", "3ep"; "start" with a pre-trained start
    start = "scratch"            # or a checkpoint file, or { from = "simclr", subset = "full" }
    evaluate = { method = "supervised", subset = "full" }   # retrain every ticket on this
    baselines = ["random_reinit", "random_prune"]           # the same levels, as controls
    prunable = ["backbone.*"]    # name patterns of prunable Conv/Linear weights; not_prunable = [...]
    seeds = [0, 1]               # default: the grid's seeds
    metric = "val_top1"          # what the lottery report plots (default: [report].metric)

A ``[methods.X]`` table with ``plain_jobs = false`` only serves lottery tables: it gets no jobs of its
own (subsets x seeds). Everything is checked here, before anything is recorded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from orchestrator.grid.combos import split_values
from orchestrator.grid.spec import LotteryGrid, LotterySetting, MethodTable
from orchestrator.grid.validate_values import seed_list
from specs.base import SpecError, check_name, coerce, from_table
from specs.job import TrainConfig
from specs.lottery import BASELINES, DEFAULT_PRUNABLE, REWIND_START, STRATEGIES, Step
from specs.methods import is_vit

KEYS = {"generate", "subset", "levels", "prune_fraction", "strategy", "rewind", "start", "evaluate", "baselines",
        "prunable", "not_prunable", "seeds", "metric"}
REQUIRED = ("generate", "subset", "levels", "evaluate")
PLAIN_JOBS_KEY = "plain_jobs"
MAX_LEVELS = 100  # 0.8^100 of the weights is far below one weight of any model
# methods that only train vision transformers (masked-patch objectives): never on a convolutional backbone
VIT_ONLY_METHODS = {"mae"}


def parse_lottery(raw: dict[str, Any], *, subsets: dict[str, Any], methods: dict[str, MethodTable],
                  train: dict[str, Any], seeds: list[int], metric: str, base: Path) -> LotteryGrid:
    """Validate the grid's ``[lottery.*]`` tables and ``plain_jobs`` flags; :class:`SpecError` on any problem."""
    template_only = set()
    for mname, table in (raw.get("methods") or {}).items():
        if isinstance(table, dict) and PLAIN_JOBS_KEY in table and not coerce(
                table[PLAIN_JOBS_KEY], bool, f"methods.{mname}.{PLAIN_JOBS_KEY}"):
            template_only.add(mname)
    tables = raw.get("lottery", {})
    if not isinstance(tables, dict):
        raise SpecError("lottery", "tables [lottery.NAME]")
    settings = {name: _parse_setting(name, table, subsets, methods, train, seeds, metric, base)
                for name, table in tables.items()}
    used = {s.generate for s in settings.values()} | {s.evaluate_method for s in settings.values()}
    unused = sorted(template_only - used)
    if unused:
        raise SpecError(f"methods.{unused[0]}.{PLAIN_JOBS_KEY}", "true for a table no [lottery.*] table uses "
                        "(it would get no jobs at all)")
    return LotteryGrid(settings, frozenset(template_only))


def _table_ref(value: Any, key: str, have: dict[str, Any], what: str) -> str:
    if not isinstance(value, str) or value not in have:
        raise SpecError(key, f"the name of a {what} table of this grid (have: {', '.join(sorted(have))})")
    return value


def _single_config(name: str, key: str, methods: dict[str, MethodTable]) -> MethodTable:
    mt = methods[name]
    if mt.sweeps:
        raise SpecError(key, f"a [methods.{name}] table without swept values (it sweeps {', '.join(mt.sweeps)})")
    return mt


def _patterns(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(key, 'a list of parameter-name patterns, e.g. ["backbone.*"]')
    return tuple(value)


def _parse_setting(name: str, table: Any, subsets: dict[str, Any], methods: dict[str, MethodTable],
                   train: dict[str, Any], seeds: list[int], metric: str, base: Path) -> LotterySetting:
    check_name(name, f"lottery.{ascii(name)[:60]}")
    where = f"lottery.{name}"
    if not isinstance(table, dict):
        raise SpecError(where, "a table")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}", "one of " + ", ".join(sorted(KEYS)))
    for key in REQUIRED:
        if key not in table:
            raise SpecError(f"{where}.{key}", "a value (required)")
    generate = _table_ref(table["generate"], f"{where}.generate", methods, "[methods.X]")
    gen = _single_config(generate, f"{where}.generate", methods)
    subset = _table_ref(table["subset"], f"{where}.subset", subsets, "[subsets.X]")
    levels = coerce(table["levels"], int, f"{where}.levels", {"min": 1, "max": MAX_LEVELS})
    fraction = coerce(table.get("prune_fraction", 0.2), float, f"{where}.prune_fraction")
    if not 0.0 < fraction < 1.0:
        raise SpecError(f"{where}.prune_fraction", f"a number strictly between 0 and 1 (got {fraction})")
    strategy = coerce(table.get("strategy", "global"), str, f"{where}.strategy", {"choices": STRATEGIES})
    gen_train = from_table(TrainConfig, {**train, **split_values(gen, {})[1]}, where)
    if gen.method in VIT_ONLY_METHODS and not is_vit(gen_train.backbone):
        raise SpecError(f"{where}.generate", f"a method that can train backbone {gen_train.backbone!r} "
                        f"('{gen.method}' needs a vision transformer)")
    start = _parse_start(table.get("start", "scratch"), f"{where}.start", methods, subsets, base)
    rewind = table.get("rewind", "0it")
    if rewind == REWIND_START:
        if start is None:
            raise SpecError(f"{where}.rewind", 'a training step such as "3ep": "start" needs a pre-trained start '
                            "(start = a checkpoint file or { from = ... })")
    else:
        step = Step.parse(rewind, f"{where}.rewind")
        if step.unit == "ep" and step.count >= gen_train.epochs:
            raise SpecError(f"{where}.rewind", f"a point before the end of training ({gen_train.epochs} epochs of "
                            f"[methods.{generate}]; got {rewind})")
    evaluate = table["evaluate"]
    if not isinstance(evaluate, dict) or set(evaluate) - {"method", "subset"}:
        raise SpecError(f"{where}.evaluate", '{ method = "<[methods.X] table>", subset = "<[subsets.X] table>" }')
    ev_method = _table_ref(evaluate.get("method"), f"{where}.evaluate.method", methods, "[methods.X]")
    ev = _single_config(ev_method, f"{where}.evaluate.method", methods)
    ev_epochs = from_table(TrainConfig, {**train, **split_values(ev, {})[1]}, where).epochs
    if rewind != REWIND_START and Step.parse(rewind).unit == "ep" and Step.parse(rewind).count >= ev_epochs:
        raise SpecError(f"{where}.rewind", f"a point before the end of the evaluation too (it starts there: "
                        f"{ev_epochs} epochs of [methods.{ev_method}]; got {rewind})")
    ev_subset = _table_ref(evaluate.get("subset"), f"{where}.evaluate.subset", subsets, "[subsets.X]")
    baselines = table.get("baselines", [])
    if not isinstance(baselines, list) or any(b not in BASELINES for b in baselines) or len(set(baselines)) != len(
            baselines):
        raise SpecError(f"{where}.baselines", "a list of distinct baselines out of " + ", ".join(BASELINES))
    prunable = _patterns(table.get("prunable", list(DEFAULT_PRUNABLE)), f"{where}.prunable")
    not_prunable = _patterns(table.get("not_prunable", []), f"{where}.not_prunable") if table.get(
        "not_prunable") else ()
    own_seeds = seed_list(table["seeds"], f"{where}.seeds") if "seeds" in table else seeds
    return LotterySetting(
        name=name, generate=generate, subset=subset, levels=levels, prune_fraction=fraction, strategy=strategy,
        rewind=rewind, start=start, evaluate_method=ev_method, evaluate_subset=ev_subset, baselines=tuple(baselines),
        prunable=prunable, not_prunable=not_prunable, seeds=own_seeds,
        metric=coerce(table.get("metric", metric), str, f"{where}.metric"),
    )


def _parse_start(value: Any, key: str, methods: dict[str, MethodTable], subsets: dict[str, Any],
                 base: Path) -> dict[str, Any] | None:
    """None (scratch), a checkpoint file (absolute path + sha256), or another config of this grid."""
    if value == "scratch":
        return None
    if isinstance(value, str):
        path = (base / value).resolve()
        if not path.is_file():
            raise SpecError(key, f'"scratch", an existing checkpoint file ({path} is not one) or {{ from = ... }}')
        return {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    if isinstance(value, dict) and "from" in value and not set(value) - {"from", "subset"}:
        src = _table_ref(value["from"], f"{key}.from", methods, "[methods.X]")
        _single_config(src, f"{key}.from", methods)
        out = {"from": src}
        if "subset" in value:
            out["subset"] = _table_ref(value["subset"], f"{key}.subset", subsets, "[subsets.X]")
        return out
    raise SpecError(key, '"scratch", a checkpoint file, or { from = "<[methods.X] table>", subset = "<name>" }')
