"""``[lottery.*]`` tables: validation (one line, exit 2, nothing recorded) and expansion into job chains."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from db import Store
from orchestrator.grid import expand, load_grid
from specs.base import SpecError
from specs.lottery import parse_label
from subsets import DatasetMeta

BASE = """
name = "lt"
seeds = [0, 1]
[dataset]
root = "ds"
[train]
epochs = 4
batch_size = 8
image_size = 32
[subsets.full]
strategy = "full"
[subsets.imgs_30pct]
strategy = "full"
fraction = 0.3
[methods.supervised]
plain_jobs = false
[methods.simclr]
epochs = 2
"""
LOTTERY = """
[lottery.sup30]
generate = "supervised"
subset = "imgs_30pct"
levels = {levels}
prune_fraction = 0.2
rewind = "1ep"
evaluate = {{ method = "supervised", subset = "full" }}
baselines = ["random_reinit", "random_prune"]
"""


def write(tmp: Path, text: str) -> Path:
    p = tmp / "grid.toml"
    p.write_text(text)
    return p


def lottery_jobs(tmp: Path, meta_dir: Path, text: str) -> list:
    grid = load_grid(write(tmp, text))
    return expand(grid, DatasetMeta.load(meta_dir))


def test_a_lottery_table_expands_into_chains_with_evaluations_and_baselines(tmp_path: Path, meta_dir: Path) -> None:
    jobs = lottery_jobs(tmp_path, meta_dir, BASE + LOTTERY.format(levels=3))
    plain = [j for j in jobs if j.spec.lottery is None]
    assert {j.config_name for j in plain} == {"simclr"}  # plain_jobs = false: supervised only serves the lottery
    assert len(plain) == 2 * 2  # 2 subsets x 2 seeds
    lot = [j for j in jobs if j.spec.lottery is not None]
    # per seed: 4 levels + 4 ticket evaluations + 2 baselines x 3 pruned levels
    assert len(lot) == 2 * (4 + 4 + 6)
    by_hash = {j.spec.job_hash: j for j in jobs}
    assert len(by_hash) == len(jobs)
    for seed in (0, 1):
        levels = {parse_label(j.config_name)[1]: j for j in lot
                  if j.spec.seed == seed and parse_label(j.config_name)[2] is None}
        assert sorted(levels) == [0, 1, 2, 3]
        h0 = levels[0].spec.job_hash
        assert levels[0].spec.depends_on == () and levels[0].spec.lottery == {"role": "level", "level": 0,
                                                                               "rewind": "1ep"}
        for level in (1, 2, 3):
            spec = levels[level].spec
            assert spec.depends_on == (levels[level - 1].spec.job_hash,)
            assert spec.subset_name == "imgs_30pct" and spec.method == "supervised"
            assert spec.lottery["rewind_job"] == h0 and spec.lottery["level"] == level
            assert spec.lottery["prunable"] == ["backbone.*"]
        evals = [j for j in lot if j.spec.seed == seed and parse_label(j.config_name)[2] is not None]
        for j in evals:
            _, level, ticket = parse_label(j.config_name)
            assert j.spec.depends_on == (levels[level].spec.job_hash,)
            assert j.spec.subset_name == "full" and j.spec.lottery["ticket"] == ticket
        assert sorted(parse_label(j.config_name)[2] for j in evals if parse_label(j.config_name)[1] == 2) == [
            "lottery", "random_prune", "random_reinit"]
        assert [parse_label(j.config_name)[2] for j in evals if parse_label(j.config_name)[1] == 0] == ["lottery"]


def test_raising_levels_keeps_every_earlier_identity(tmp_path: Path, meta_dir: Path) -> None:
    short = {j.spec.job_hash for j in lottery_jobs(tmp_path, meta_dir, BASE + LOTTERY.format(levels=2))}
    long = {j.spec.job_hash for j in lottery_jobs(tmp_path, meta_dir, BASE + LOTTERY.format(levels=4))}
    assert short < long
    assert len(long - short) == 2 * 2 * 4  # 2 seeds x 2 new levels x (level + ticket eval + 2 baselines)


def test_start_from_another_config_depends_on_its_job(tmp_path: Path, meta_dir: Path) -> None:
    text = BASE + LOTTERY.format(levels=1).replace('rewind = "1ep"', 'rewind = "start"\nstart = { from = "simclr" }')
    jobs = lottery_jobs(tmp_path, meta_dir, text)
    pre = {(j.spec.subset_name, j.spec.seed): j.spec.job_hash for j in jobs if j.config_name == "simclr"}
    for j in jobs:
        if j.config_name == "lottery:sup30/L0":
            assert j.spec.depends_on == (pre[("imgs_30pct", j.spec.seed)],)
            assert j.spec.lottery["start"] == {"job": pre[("imgs_30pct", j.spec.seed)]}


def test_start_from_a_checkpoint_file_is_pinned_by_its_digest(tmp_path: Path, meta_dir: Path) -> None:
    (tmp_path / "pre.pt").write_bytes(b"weights")
    text = BASE + LOTTERY.format(levels=1).replace('rewind = "1ep"', 'rewind = "start"\nstart = "pre.pt"')
    level0 = [j for j in lottery_jobs(tmp_path, meta_dir, text) if j.config_name == "lottery:sup30/L0"]
    assert level0[0].spec.lottery["start"]["file"] == str((tmp_path / "pre.pt").resolve())
    assert len(level0[0].spec.lottery["start"]["sha256"]) == 64 and level0[0].spec.depends_on == ()


BAD = [
    ('generate = "supervised"', 'generate = "rotnet_nope"', "lottery.sup30.generate: expected the name of a"),
    ('subset = "imgs_30pct"', 'subset = "half"', "lottery.sup30.subset: expected the name of a [subsets.X]"),
    ("prune_fraction = 0.2", "prune_fraction = 1.0", "lottery.sup30.prune_fraction: expected a number strictly"),
    ("prune_fraction = 0.2", "prune_fraction = 0", "lottery.sup30.prune_fraction: expected a number strictly"),
    ('rewind = "1ep"', 'rewind = "4ep"', "lottery.sup30.rewind: expected a point before the end of training"),
    ('rewind = "1ep"', 'rewind = "start"', 'lottery.sup30.rewind: expected a training step such as "3ep": "start"'),
    ('rewind = "1ep"', 'rewind = "early"', "lottery.sup30.rewind: expected a training step"),
    ('baselines = ["random_reinit", "random_prune"]', 'baselines = ["shuffle"]', "lottery.sup30.baselines"),
    ('evaluate = { method = "supervised", subset = "full" }', 'evaluate = { method = "supervised", subset = "x" }',
     "lottery.sup30.evaluate.subset"),
    ("levels = 2", "levels = 0", "lottery.sup30.levels: expected an integer >= 1"),
    ('rewind = "1ep"\nevaluate = { method = "supervised"', 'rewind = "2ep"\nevaluate = { method = "simclr"',
     "lottery.sup30.rewind: expected a point before the end of the evaluation too (it starts there: 2 epochs of "
     "[methods.simclr]; got 2ep)"),
    ('rewind = "1ep"', 'rewind = "1ep"\nstart = "missing.pt"', "lottery.sup30.start: expected"),
    ("levels = 2", 'levels = 2\nstrategy = "magnitude"', "lottery.sup30.strategy"),
    ("levels = 2", "levels = 2\nlevel_count = 3", "lottery.sup30.level_count: expected one of"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD, ids=[b[2].split(":")[0] + b[1][:12] for b in BAD])
def test_bad_lottery_tables_are_one_clear_error(tmp_path: Path, meta_dir: Path, old: str, new: str,
                                                message: str) -> None:
    text = BASE + LOTTERY.format(levels=2)
    assert old in text
    with pytest.raises(SpecError) as err:
        load_grid(write(tmp_path, text.replace(old, new, 1)))
    assert str(tmp_path / "grid.toml") in str(err.value) and message in str(err.value)


def test_sweeping_generation_table_and_unused_template_are_refused(tmp_path: Path, meta_dir: Path) -> None:
    swept = BASE.replace("plain_jobs = false", "plain_jobs = false\nlr = [0.1, 0.2]") + LOTTERY.format(levels=2)
    with pytest.raises(SpecError, match="lottery.sup30.generate: expected a \\[methods.supervised\\] table without"):
        load_grid(write(tmp_path, swept))
    with pytest.raises(SpecError, match="methods.supervised.plain_jobs: expected true for a table no"):
        load_grid(write(tmp_path, BASE))


def _mae_lottery(backbone: str) -> str:
    """A lottery whose winning tickets MAE generates, on ``backbone``."""
    return (BASE.replace("[methods.supervised]\nplain_jobs = false",
                         f'[methods.supervised]\n[methods.mae]\nbackbone = "{backbone}"\nplain_jobs = false')
            + LOTTERY.format(levels=2).replace('generate = "supervised"', 'generate = "mae"'))


def test_mae_generation_on_a_resnet_is_refused(tmp_path: Path, meta_dir: Path) -> None:
    with pytest.raises(SpecError) as err:
        load_grid(write(tmp_path, _mae_lottery("resnet18")))
    assert str(tmp_path / "grid.toml") in str(err.value)
    assert "methods.mae.backbone: expected a Vision Transformer for mae" in str(err.value)
    assert "'resnet18'" in str(err.value)
    # on a ViT the same lottery is a valid grid whose chains MAE generates
    jobs = lottery_jobs(tmp_path, meta_dir, _mae_lottery("test_vit"))
    levels = [j.spec for j in jobs if j.spec.lottery is not None and j.spec.lottery.get("role") == "level"]
    assert len(levels) == 2 * 3 and {s.method for s in levels} == {"mae"}
    assert {s.train.backbone for s in levels} == {"test_vit"}


@pytest.mark.slow  # trains, or compiles FFCV pipelines
def test_iteration_rewind_past_the_end_fails_at_launch_with_exit_2_and_nothing_recorded(tmp_path: Path,
                                                                                       meta_dir: Path) -> None:
    # 30% of 60 training images = 18, batch 8: 2 steps per epoch, 8 iterations in 4 epochs
    text = BASE + LOTTERY.format(levels=2).replace('rewind = "1ep"', 'rewind = "8it"')
    grid = write(tmp_path, text)
    db = tmp_path / "db.sqlite"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--db", f"sqlite:///{db}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "lottery.sup30.rewind: expected a point before the end of training (8 iterations" \
        in lines[0] and str(grid) in lines[0]
    assert not db.exists() or Store(f"sqlite:///{db}").get_grid("lt") is None  # nothing recorded
    ok = text.replace('rewind = "8it"', 'rewind = "7it"')
    assert len(lottery_jobs(tmp_path, meta_dir, ok)) > 0
    # the evaluation starts at the rewind point too: 2 epochs of simclr on 30% = 4 iterations
    short = ok.replace('evaluate = { method = "supervised", subset = "full" }',
                       'evaluate = { method = "simclr", subset = "imgs_30pct" }')
    assert len(lottery_jobs(tmp_path, meta_dir, short.replace('rewind = "7it"', 'rewind = "3it"'))) > 0
    with pytest.raises(SpecError, match=r"rewind: expected a point before the end of the evaluation too \(it starts "
                       r"there\) \(4 iterations of \[methods.simclr\] on imgs_30pct; got 4it\)"):
        lottery_jobs(tmp_path, meta_dir, short.replace('rewind = "7it"', 'rewind = "4it"'))




def test_lottery_digits_example_is_the_study_it_describes(tmp_path: Path) -> None:
    from tests.conftest import REPO, write_meta_dir

    meta = write_meta_dir(tmp_path / "digits", num_classes=10, train_per_class=140, val_per_class=30)
    text = (REPO / "examples" / "lottery_digits.toml").read_text()
    grid = load_grid(write(tmp_path, text.replace('root = "../data/digits"', f'root = "{meta.root}"')))
    jobs = expand(grid, meta)
    assert len(jobs) == 104 and all(j.spec.lottery is not None for j in jobs)
    assert {j.spec.method for j in jobs} == {"supervised", "rotnet", "byol"}
    evaluations = [j for j in jobs if j.spec.lottery["role"] == "eval"]
    assert {j.spec.train.epochs for j in evaluations} == {3}  # 1 epoch to the rewind point, 2 of retraining


def test_lottery_imagenet_example_is_the_study_it_describes(tmp_path: Path) -> None:
    from tests.conftest import REPO
    from tests.test_examples import imagenet_meta_dir

    meta = imagenet_meta_dir(tmp_path / "imagenet-ffcv", train_per_class=10, val_per_class=1)
    text = (REPO / "examples" / "lottery_imagenet.toml").read_text()
    grid = load_grid(write(tmp_path, text.replace('root = "/datasets/imagenet-ffcv"', f'root = "{meta.root}"')))
    jobs = expand(grid, meta)
    assert len(jobs) == 624  # 5 settings x 2 seeds x 62 + SimCLR on both subsets x 2 seeds
    level0 = [j for j in jobs if j.config_name == "lottery:simclr_pretrained/L0"]
    assert all(j.spec.lottery["rewind"] == "start" and len(j.spec.depends_on) == 1 for j in level0)
