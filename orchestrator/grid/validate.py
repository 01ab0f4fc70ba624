"""Validating a grid file: its tables -> a typed :class:`GridSpec`, everything checked before anything is written.

A grid file looks like ``examples/quickstart.toml``::

    name = "quickstart"          # the grid's name (unique in the database)
    seeds = [0, 1]               # default seeds of every method
    failure_budget = 2           # automatic retries of a failed job

    [dataset]  root = "data/digits"   prepare = "digits"   # prepare: builtin to build if missing
    [train]    backbone, epochs, batch_size, optimizer, lr, ...   (specs.job.TrainConfig)
    [eval]     knn_k, knn_temperature, every_epochs             (specs.job.EvalConfig)
    [resources] nodes, nproc_per_node, cpus_per_task, ...        (specs.job.Resources)
                jobs_per_worker = N: one worker process runs up to N ready jobs (not in the identity)
    [report]   metric = "knn_top1", reference = "full"
    [cluster]  profile = "local" | "slurm-local" | ...
    [subsets.NAME]  strategy = "...", strategy params, fraction   (subsets/)
    [methods.NAME]  method = NAME by default; hyperparameters and train overrides, each a value or a
                    list to sweep; zip = [["lr", "temperature"]] sweeps listed keys together;
                    seeds = [...] overrides the grid's; [methods.NAME.resources] overrides resources;
                    init = { from = "other table" } or { file = "w.pt" } (orchestrator/grid/validate_init.py).

Every error is a :class:`specs.base.SpecError` naming the file, the dotted key and what was expected.

Limits (docs/grid.md, "Limits"): the file is UTF-8 TOML of at most 16 MiB, nested at most 16 tables/lists deep;
names follow :data:`specs.base.NAME_PATTERN`; ``setup``, ``python`` and ``sbatch`` come from cluster profiles
only (``cluster_profiles/*.toml``), never from a grid; a grid of more than ``max_jobs`` jobs is refused
(counted from its axes before anything is expanded).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from orchestrator.adaptive.settings import parse_adaptive
from orchestrator.grid.combos import config_label, count_jobs, method_combinations, split_values
from orchestrator.grid.read import read_toml
from orchestrator.grid.spec import GridSpec, MethodTable, ReportConfig
from orchestrator.grid.validate_init import check_graph, parse_init
from orchestrator.grid.validate_lottery import parse_lottery
from orchestrator.grid.validate_ticket import check_tickets
from orchestrator.grid.validate_values import seed_list
from orchestrator.notify import NotifySettings
from orchestrator.storage.settings import StorageSettings
from specs.base import LABEL_MAX, SpecError, check_name, coerce, from_table
from specs.job import EvalConfig, Resources, TrainConfig
from specs.methods import METHOD_HPARAMS, check_method_config, hparams_class
from subsets import SubsetError, validate_table
from subsets.registry import get_strategy

TOP_KEYS = {"name", "seeds", "failure_budget", "dataset", "train", "eval", "resources", "report", "cluster",
            "subsets", "methods", "breaker", "lottery", "adaptive", "storage", "notify"}
METHOD_META_KEYS = {"method", "seeds", "zip", "resources", "init", "plain_jobs"}
BUILTIN_DATASETS = ("digits", "fashion-mnist")  # workers.data.builtin.BUILTINS
BUILTIN_LIMITS = ("train_per_class", "val_per_class")  # [dataset] sizing of a builtin: first N per class
MAX_FAILURE_BUDGET = 1000
MAX_TABLES = 500  # [subsets.*] / [methods.*] tables of one grid
PROFILE_ONLY_KEYS = ("setup", "python", "sbatch")  # they run on the compute nodes: cluster profiles only


def load_grid(path: str | Path, *, max_jobs: int | None = None) -> GridSpec:
    """Read and validate a grid file; raise :class:`SpecError` (with the file name) on any problem.

    ``max_jobs``: refuse a grid of more jobs (counted from its axes, before the values are validated).
    """
    path = Path(path)
    raw = read_toml(path)
    try:
        return _parse(path.resolve(), raw, max_jobs)
    except SpecError as exc:
        raise exc.in_file(str(path)) from None


def _parse(path: Path, raw: dict[str, Any], max_jobs: int | None = None) -> GridSpec:
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise SpecError(unknown[0], "one of the top-level keys " + ", ".join(sorted(TOP_KEYS)))
    name = coerce(raw.get("name"), str, "name") if "name" in raw else None
    if not name:
        raise SpecError("name", "a non-empty string naming the grid")
    check_name(name, "name")
    StorageSettings.from_table(raw.get("storage"))  # [storage]: orchestrator/storage/settings.py
    NotifySettings.from_table(raw.get("notify"))  # [notify]: orchestrator/notify.py
    seeds = seed_list(raw.get("seeds", [0]), "seeds")
    budget = coerce(raw.get("failure_budget", 2), int, "failure_budget", {"min": 0, "max": MAX_FAILURE_BUDGET})
    base = path.parent

    dataset = raw.get("dataset")
    if not isinstance(dataset, dict) or "root" not in dataset:
        raise SpecError("dataset.root", "the path of a dataset directory (a table [dataset] with root = ...)")
    extra = sorted(set(dataset) - {"root", "prepare", *BUILTIN_LIMITS})
    if extra or (set(dataset) & set(BUILTIN_LIMITS) and "prepare" not in dataset):
        raise SpecError(f"dataset.{(extra or sorted(set(dataset) & set(BUILTIN_LIMITS)))[0]}",
                        "one of root, prepare (and " + ", ".join(BUILTIN_LIMITS) + " with prepare)")
    limits = {k: coerce(dataset[k], int, f"dataset.{k}", {"min": 1}) for k in BUILTIN_LIMITS if k in dataset}
    root = (base / coerce(dataset["root"], str, "dataset.root")).resolve()
    prepare = dataset.get("prepare")
    if prepare is not None and prepare not in BUILTIN_DATASETS:
        raise SpecError("dataset.prepare", "one of " + ", ".join(BUILTIN_DATASETS))
    if prepare is None and not (root / "meta.json").is_file():
        raise SpecError("dataset.root", f"a dataset directory with meta.json ({root} has none)")

    train = raw.get("train", {})
    from_table(TrainConfig, train, "train")  # validate
    eval_cfg = from_table(EvalConfig, raw.get("eval", {}), "eval")
    resources_raw = raw.get("resources", {})
    resources = from_table(Resources, resources_raw, "resources")
    report = from_table(ReportConfig, raw.get("report", {}), "report")
    cluster = _cluster_table(raw.get("cluster", {}))

    subsets_raw = raw.get("subsets")
    if not isinstance(subsets_raw, dict) or not subsets_raw:
        raise SpecError("subsets", "at least one [subsets.NAME] table")
    if len(subsets_raw) > MAX_TABLES:
        raise SpecError("subsets", f"at most {MAX_TABLES} [subsets.NAME] tables")
    subsets: dict[str, dict[str, Any]] = {}
    for sname, table in subsets_raw.items():
        check_name(sname, f"subsets.{ascii(sname)[:60]}")
        if not isinstance(table, dict):
            raise SpecError(f"subsets.{sname}", "a table")
        table = _absolute_paths(table, base)
        try:
            subsets[sname] = validate_table(table)
        except SubsetError as exc:
            raise SpecError(f"subsets.{sname}.{exc.key}", exc.expected) from None
    audit_only = check_tickets(subsets, report.reference, "adaptive" in raw)  # strategy = "ticket"
    if report.reference not in subsets:
        raise SpecError("report.reference", f"the name of a subset to rank against (have {', '.join(subsets)})")

    methods_raw = raw.get("methods")
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise SpecError("methods", "at least one [methods.NAME] table")
    if len(methods_raw) > MAX_TABLES:
        raise SpecError("methods", f"at most {MAX_TABLES} [methods.NAME] tables")
    for mname in methods_raw:
        check_name(mname, f"methods.{ascii(mname)[:60]}")
    if max_jobs is not None:
        count = count_jobs(raw, seeds, len(subsets_raw))
        if count > max_jobs:
            raise SpecError("methods", f"a grid of at most {max_jobs:,} jobs (this one has {count:,}: subsets x "
                            "configurations x seeds); launch --max-jobs N allows more")
    methods = {
        mname: _parse_method(mname, table, train, resources_raw, seeds, base)
        for mname, table in methods_raw.items()
    }
    _check_labels(methods, check_graph(methods, train))
    lottery = parse_lottery(raw, subsets=subsets, methods=methods, train=train, seeds=seeds, metric=report.metric,
                            base=base)
    adaptive = parse_adaptive(raw["adaptive"], [len(m.seeds) for m in methods.values()],
                              report.confidence) if "adaptive" in raw else None
    return GridSpec(
        path=path, name=name, dataset_root=str(root), dataset_prepare=prepare, seeds=seeds, failure_budget=budget,
        train=dict(train), eval=eval_cfg, resources=resources, report=report, cluster=dict(cluster),
        subsets=subsets, methods=methods, raw=raw, lottery=lottery, dataset_limits=limits, adaptive=adaptive,
        audit_only=audit_only,
    )


def _cluster_table(cluster: Any) -> dict[str, Any]:
    """The grid's ``[cluster]`` overrides of its profile: never what runs on the compute nodes."""
    if not isinstance(cluster, dict):
        raise SpecError("cluster", "a table")
    for key in PROFILE_ONLY_KEYS:
        if key in cluster:
            raise SpecError(f"cluster.{key}", "no value in a grid file: setup, python and sbatch are set in a "
                            "cluster profile (cluster_profiles/*.toml, chosen with [cluster] profile = NAME)")
    if "profile" in cluster:
        check_name(cluster["profile"], "cluster.profile")  # a profile name, searched in the profile dirs
    for key, value in cluster.items():
        if isinstance(value, str):
            coerce(value, str, f"cluster.{key}")
    return cluster


def _check_labels(methods: dict[str, MethodTable], order: list[str]) -> None:
    """Every configuration label (``name[k=v,...]@parent``) fits the database's String(200) column."""
    labels: dict[str, list[str]] = {}
    for name in order:
        mt = methods[name]
        own = [config_label(name, combo) for combo in method_combinations(mt)]
        parents = labels[mt.init.parent] if mt.init is not None and mt.init.parent is not None else [""]
        labels[name] = [f"{label}@{p}" if p else label for label in own for p in parents]
        too_long = next((label for label in labels[name] if len(label) > LABEL_MAX), None)
        if too_long is not None:
            raise SpecError(f"methods.{name}", f"configuration labels of at most {LABEL_MAX} characters (got "
                            f"{len(too_long)}: {too_long[:60]}...; shorten the table name or the swept values)")


def _absolute_paths(table: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the strategy's file parameters (e.g. accuracy_file) absolute, relative to the grid file."""
    try:
        keys = set(get_strategy(table.get("strategy")).path_params)
    except SubsetError:
        return table  # validate_table names the bad strategy
    return {k: (str((base / v).resolve()) if k in keys and isinstance(v, str) else v) for k, v in table.items()}


def _parse_method(
    name: str, table: Any, train: dict[str, Any], resources_raw: dict[str, Any], seeds: list[int],
    base: Path = Path("."),
) -> MethodTable:
    where = f"methods.{name}"
    if not isinstance(table, dict):
        raise SpecError(where, "a table")
    method = table.get("method", name)
    try:
        hp_cls = hparams_class(method)
    except SpecError:
        raise SpecError(f"{where}.method", _method_choices()) from None
    hp_fields = {f.name for f in dataclasses.fields(hp_cls)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    fixed: dict[str, Any] = {}
    sweeps: dict[str, list[Any]] = {}
    for key, value in table.items():
        if key in METHOD_META_KEYS:
            continue
        if key not in hp_fields and key not in train_fields:
            allowed = ", ".join(sorted(hp_fields | train_fields | METHOD_META_KEYS))
            raise SpecError(f"{where}.{key}", f"a hyperparameter of '{method}' or a training key ({allowed})")
        if isinstance(value, list):
            if not value:
                raise SpecError(f"{where}.{key}", "a value or a non-empty list of values to sweep")
            sweeps[key] = value
        else:
            fixed[key] = value
    zips = table.get("zip", [])
    if not isinstance(zips, list) or not all(isinstance(z, list) and len(z) >= 2 for z in zips):
        raise SpecError(f"{where}.zip", "a list of lists of at least two swept keys, e.g. [[\"lr\", \"wd\"]]")
    seen: set[str] = set()
    for group in zips:
        for key in group:
            if key not in sweeps:
                raise SpecError(f"{where}.zip", f"swept keys (lists) only; '{key}' is not a list here")
            if key in seen:
                raise SpecError(f"{where}.zip", f"each key in at most one group; '{key}' repeats")
            seen.add(key)
        lengths = {len(sweeps[k]) for k in group}
        if len(lengths) != 1:
            raise SpecError(f"{where}.zip", f"lists of equal length for {group}")
    method_seeds = seed_list(table["seeds"], f"{where}.seeds") if "seeds" in table else seeds
    res_override = table.get("resources", {})
    if not isinstance(res_override, dict):
        raise SpecError(f"{where}.resources", "a table")
    resources = from_table(Resources, {**resources_raw, **res_override}, f"{where}.resources")
    init = parse_init(table["init"], f"{where}.init", base) if "init" in table else None
    mt = MethodTable(name=name, method=method, fixed=fixed, sweeps=sweeps, zips=zips, seeds=method_seeds,
                     resources=resources, init=init)
    # validate every combination's values now, so expansion cannot fail later
    for combo in method_combinations(mt):
        hp, tr = split_values(mt, combo)
        from_table(hp_cls, hp, where)
        from_table(TrainConfig, {**train, **tr}, where)
        try:  # rules between hyperparameters and training keys (MAE needs a ViT, MoCo's queue...)
            check_method_config(method, hp, {**train, **tr})
        except SpecError as exc:
            raise exc.under(where) from None
    return mt


def _method_choices() -> str:
    return "one of " + ", ".join(sorted(METHOD_HPARAMS))
