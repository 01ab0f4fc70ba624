"""``init`` of a method table: where a configuration's initial weights come from, and the init edges
between method tables (parents first, no cycle).

    init = { from = "simclr", checkpoint = "final" }      # the same-seed job of config table simclr
    init = { file = "weights.pt", exclude = ["fc.*"], strict = false }   # a checkpoint file on disk

``from``: each seed of the child starts from the job of the named table with the same seed, on the same
subset; a parent table that sweeps N configurations gives N copies of the child. ``file``: a dlth-orch
``checkpoint.pt`` / ``final_weights.pt``, a timm/torchvision state dict or a ``.safetensors`` file; its
sha256 goes into the job identity (a changed file makes new jobs). ``exclude``: fnmatch patterns of
backbone keys not to load; ``strict``: every other backbone key must be loaded (default true).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from orchestrator.grid.combos import method_combinations, split_values
from orchestrator.grid.spec import InitTable, MethodTable
from specs.base import SpecError
from specs.job import TrainConfig

INIT_KEYS = ("from", "file", "checkpoint", "exclude", "strict")
CHECKPOINTS = ("final",)  # the parent artifact a child may start from (specs.contract.FINAL_WEIGHTS_FILE)
FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes (read in blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_init(value: Any, where: str, base: Path) -> InitTable:
    """Validate one method table's ``init`` (``where`` = ``methods.NAME.init``); files relative to ``base``."""
    if not isinstance(value, dict):
        raise SpecError(where, 'a table, e.g. { from = "simclr", checkpoint = "final" } or { file = "w.pt" }')
    unknown = sorted(set(value) - set(INIT_KEYS))
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}", "one of " + ", ".join(INIT_KEYS))
    if ("from" in value) == ("file" in value):
        raise SpecError(where, "exactly one of from = <method table> or file = <checkpoint path>")
    exclude = value.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(p, str) and p for p in exclude):
        raise SpecError(f"{where}.exclude", 'a list of key patterns, e.g. ["fc.*"]')
    strict = value.get("strict", True)
    if not isinstance(strict, bool):
        raise SpecError(f"{where}.strict", "true or false")
    if "from" in value:
        parent = value["from"]
        if not isinstance(parent, str) or not parent:
            raise SpecError(f"{where}.from", "the name of another [methods.NAME] table")
        checkpoint = value.get("checkpoint", "final")
        if checkpoint not in CHECKPOINTS:
            raise SpecError(f"{where}.checkpoint", "one of " + ", ".join(CHECKPOINTS))
        return InitTable(parent, None, None, checkpoint, tuple(exclude), strict)
    if "checkpoint" in value:
        raise SpecError(f"{where}.checkpoint", "only with from = <method table> (a file is its own checkpoint)")
    raw = value["file"]
    if not isinstance(raw, str) or not raw:
        raise SpecError(f"{where}.file", "the path of a checkpoint file")
    path = (base / raw).resolve()
    if not path.is_file():
        raise SpecError(f"{where}.file", f"an existing checkpoint file ({path} does not exist)")
    if path.suffix not in FILE_SUFFIXES:
        raise SpecError(f"{where}.file", "a torch state dict (.pt/.pth/.bin) or a .safetensors file")
    return InitTable(None, str(path), sha256_of(path), "final", tuple(exclude), strict)


def check_graph(methods: dict[str, MethodTable], train: dict[str, Any]) -> list[str]:
    """Check every ``init.from`` of the grid's method tables; return the table names parents first.

    Unknown tables, cycles, seeds the parent does not run and backbones that differ are SpecErrors.
    """
    for name, mt in methods.items():
        if mt.init is None or mt.init.parent is None:
            continue
        where = f"methods.{name}.init.from"
        parent = methods.get(mt.init.parent)
        if parent is None or mt.init.parent == name:
            others = ", ".join(n for n in methods if n != name) or "none"
            raise SpecError(where, f"the name of another [methods.NAME] table (have {others})")
        missing = sorted(set(mt.seeds) - set(parent.seeds))
        if missing:
            raise SpecError(f"methods.{name}.seeds", f"seeds that '{parent.name}' runs too (it has no seed "
                                                      f"{missing[0]})")
        child_bb, parent_bb = _backbones(mt, train), _backbones(parent, train)
        if len(child_bb | parent_bb) != 1:
            raise SpecError(where, f"a table with the same backbone ({', '.join(sorted(parent_bb))} vs "
                                   f"{', '.join(sorted(child_bb))})")
    order: list[str] = []
    state: dict[str, int] = {}  # 1: visiting, 2: done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name):], name])
            raise SpecError(f"methods.{name}.init.from", f"no cycle of init.from ({cycle})")
        state[name] = 1
        init = methods[name].init
        if init is not None and init.parent is not None:
            visit(init.parent, [*path, name])
        state[name] = 2
        order.append(name)

    for name in methods:
        visit(name, [])
    return order


def _backbones(mt: MethodTable, train: dict[str, Any]) -> set[str]:
    out = set()
    for combo in method_combinations(mt):
        _, tr = split_values(mt, combo)
        out.add(str({**train, **tr}.get("backbone", TrainConfig.backbone)))
    return out
