"""An example or two at the end of every command's ``--help`` (click epilogs), kept in one table.

A command that sets its own ``epilog`` keeps it; :func:`add_examples` fills in the others from
:data:`EXAMPLES` (keyed by the command's path, e.g. ``"db current"``). ``tests/test_cli_docs.py`` checks
that every visible command ends its help with an example.
"""

from __future__ import annotations

import click

EXAMPLES: dict[str, tuple[str, ...]] = {
    "": ("dlth-orch launch examples/quickstart.toml", "dlth-orch status", "dlth-orch report"),
    "launch": ("dlth-orch launch examples/quickstart.toml",
               "dlth-orch launch grid.toml --cluster slurm --profile slurm-local --wait",
               "dlth-orch launch grid.toml --dry-run --json"),
    "status": ("dlth-orch status", "dlth-orch status quickstart --json", "dlth-orch status --all"),
    "report": ("dlth-orch report", "dlth-orch report quickstart --plan 100x3 --out paper/",
               "dlth-orch report --external results.csv --reference full"),
    "logs": ("dlth-orch logs 'full/supervised[lr=0.2]/s0' -f", "dlth-orch logs 3fa2c1 --attempt 2"),
    "watch": ("dlth-orch watch", "dlth-orch watch quickstart --once --json"),
    "advance": ("dlth-orch advance adaptive-study", "dlth-orch advance adaptive-study --cluster slurm"),
    "replay": ("dlth-orch replay quickstart --adaptive", "dlth-orch replay fashion-study --adaptive --seeds-min 2"),
    "du": ("dlth-orch du", "dlth-orch du quickstart --json"),
    "gc": ("dlth-orch gc quickstart --dry-run", "dlth-orch gc lottery-study --keep best"),
    "show": ("dlth-orch show 'full/supervised[lr=0.2]/s0'", "dlth-orch show 3fa2c1 --json"),
    "retry": ("dlth-orch retry quickstart", "dlth-orch retry quickstart --cancelled --subset full"),
    "cancel": ("dlth-orch cancel quickstart --subset full --yes", "dlth-orch cancel --job 3fa2c1"),
    "resume": ("dlth-orch resume quickstart",),
    "export": ("dlth-orch export quickstart --out results/", "dlth-orch export quickstart --out results/ --format csv",
               "dlth-orch export quickstart --to mlflow sqlite:///mlflow.db"),
    "data": ("dlth-orch data prepare digits data/digits", "dlth-orch data write /datasets/imagenet data/in1k"),
    "data write": ("dlth-orch data write /datasets/imagenet data/in1k --max-resolution 256",),
    "data prepare": ("dlth-orch data prepare digits data/digits",
                     "dlth-orch data prepare fashion-mnist data/fmnist --train-per-class 300"),
    "data prepare-digits": ("dlth-orch data prepare-digits data/digits --image-size 32",),
    "data make-synthetic": ("dlth-orch data make-synthetic data/synthetic --classes 10",),
    "subsets": ("dlth-orch subsets show examples/quickstart.toml",),
    "subsets show": ("dlth-orch subsets show examples/quickstart.toml",
                     "dlth-orch subsets show examples/imagenet.toml --json"),
    "subsets class-accuracy": ("dlth-orch subsets class-accuracy 3fa2c1 --out acc.csv",),
    "db": ("dlth-orch db current", "dlth-orch db upgrade"),
    "db upgrade": ("dlth-orch db upgrade", "DLTH_DB=postgresql+psycopg://user:pass@host/db dlth-orch db upgrade"),
    "db current": ("dlth-orch db current", "dlth-orch db current --check"),
    "slurm": ("dlth-orch slurm jobs quickstart", "dlth-orch slurm resubmit quickstart"),
    "slurm jobs": ("dlth-orch slurm jobs quickstart", "dlth-orch slurm jobs --json"),
    "slurm resubmit": ("dlth-orch slurm resubmit quickstart --follow",),
}


def epilog(lines: tuple[str, ...]) -> str:
    """The epilog text: ``Examples:`` and one command per line (``\\b`` keeps click from rewrapping them)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def add_examples(group: click.Group, prefix: str = "") -> None:
    """Give every command under ``group`` (and the group itself) its examples, unless it has an epilog."""
    if not group.epilog and prefix in EXAMPLES:
        group.epilog = epilog(EXAMPLES[prefix])
    for name, cmd in group.commands.items():
        path = f"{prefix} {name}".strip()
        if isinstance(cmd, click.Group):
            add_examples(cmd, path)
        elif not cmd.epilog and path in EXAMPLES:
            cmd.epilog = epilog(EXAMPLES[path])
