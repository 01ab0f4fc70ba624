"""A real lottery chain on the digits: levels 0-2 and their ticket evaluations (with both baselines), each
run in-process through the worker (``workers.entry.run``) in dependency order, so that it does not need the
job graph's scheduler; then what the job directories hold, and the lottery report built from them. The
learning rate of every step each job trained is recorded by wrapping the trainer's ``set_lr`` (which still
runs)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from db import AttemptState, JobState, Store
from orchestrator.grid import load_grid
from orchestrator.launch import record_grid
from specs.contract import JobPaths
from specs.job import JobSpec
from specs.lottery import parse_label
from specs.settings import WorkerSettings
from subsets import DatasetMeta
from workers import test_hooks
from workers.distributed import DistContext

pytestmark = pytest.mark.slow  # trains models / runs processes

GRID = """
name = "chain"
seeds = [0]
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = 2
batch_size = 32
lr = 0.05
image_size = 32
[eval]
knn_k = 5
[resources]
loader_workers = 1
[report]
metric = "val_top1"
[subsets.full]
strategy = "full"
[subsets.imgs_10pct]
strategy = "full"
fraction = 0.1
[subsets.even5]
strategy = "uniform"
k = 5
fraction = 0.2
[methods.supervised]
plain_jobs = false
[methods.retrain]
method = "supervised"
epochs = 1
plain_jobs = false
[lottery.sup10]
generate = "supervised"
subset = "imgs_10pct"
levels = 2
prune_fraction = 0.2
rewind = "2it"
evaluate = {{ method = "retrain", subset = "even5" }}
baselines = ["random_reinit", "random_prune"]
"""
CPU = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


LRS: dict[str, list[list[float]]] = {}  # label -> per attempt, the learning rate of every step it trained


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> Iterator[tuple[Store, str, Path]]:
    import workers.train as train
    from workers.entry import run

    home = tmp_path_factory.mktemp("chain_home")
    threads = torch.get_num_threads()
    # one intra-op thread: on a loaded 2-core machine two spinning OpenMP threads make a step ~40x slower
    torch.set_num_threads(1)
    attempt: list[float] = []
    real_set_lr = train.set_lr

    def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
        attempt.append(lr)
        real_set_lr(opt, lr)

    def recorded(label: str, code: int) -> int:
        LRS.setdefault(label, []).append(list(attempt))
        attempt.clear()
        return code

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLTH_HOME", str(home))
        mp.setattr(train, "set_lr", set_lr)
        grid_file = home / "grid.toml"
        grid_file.write_text(GRID.format(root=digits))
        grid = load_grid(grid_file)
        db = f"sqlite:///{home / 'db.sqlite'}"
        store = Store(db)
        record_grid(store, grid, DatasetMeta.load(digits))
        jobs = store.jobs("chain")
        # dependency order: levels by level, then the evaluations of levels 0 and 2 (level 1's stay WAITING:
        # the report must count them as unfinished; skipping them keeps the test short on 2 cores)
        order = sorted(jobs, key=lambda j: (parse_label(j.config_name)[2] is not None, parse_label(j.config_name)[1]))
        for j in order:
            if parse_label(j.config_name)[2] is not None and parse_label(j.config_name)[1] == 1:
                continue
            label = j.config_name
            if label == "lottery:sup10/L2":  # killed after its first epoch, then resumed
                assert recorded(label, _run_killed_after_first_epoch(run, Path(j.job_dir), db)) == 143
            assert recorded(label, run(Path(j.job_dir) / "job.json", WorkerSettings(db_url=db), CPU)) == 0, label
        yield store, db, home
    torch.set_num_threads(threads)


def _run_killed_after_first_epoch(run: Callable[..., int], job_dir: Path, db: str) -> int:
    """Run the job and SIGTERM this process the moment its first epoch checkpoint is saved (the worker's
    test hook, so the signal lands before the second epoch's first batch); keep that attempt's mask."""
    job_hash = JobSpec.from_json((job_dir / "job.json").read_text()).job_hash
    signalled: list[str] = []

    def stop_after_first_epoch(saved: str) -> None:
        if saved == job_hash and not signalled:
            signalled.append(saved)
            shutil.copy(JobPaths.of(job_dir).mask, job_dir / "mask.first_attempt")
            os.kill(os.getpid(), signal.SIGTERM)  # the worker's stop handler: stop before the next batch

    with test_hooks.on(test_hooks.EPOCH_SAVED, stop_after_first_epoch):
        code = run(job_dir / "job.json", WorkerSettings(db_url=db), CPU)
    assert signalled == [job_hash]
    return code


def _by_label(store: Store) -> dict[str, object]:
    return {j.config_name: j for j in store.jobs("chain")}


def test_every_job_of_the_chain_completes_with_the_contract_files(chain: tuple[Store, str, Path]) -> None:
    store, _, _ = chain
    jobs = _by_label(store)
    assert len(jobs) == 3 + 1 + 3 + 3  # levels 0-2, ticket evals 0-2, two baselines at levels 1-2
    for label, j in jobs.items():
        assert j.state == (JobState.WAITING if label.startswith("lottery:sup10/L1/") else JobState.COMPLETED)
    l0 = JobPaths.of(jobs["lottery:sup10/L0"].job_dir)
    assert l0.rewind.is_file() and l0.final_weights.is_file() and not l0.mask.is_file()
    assert torch.load(l0.rewind, weights_only=False)["step"] == "2it"
    for level in (1, 2):
        paths = JobPaths.of(jobs[f"lottery:sup10/L{level}"].job_dir)
        assert paths.mask.is_file() and paths.final_weights.is_file()
        report = json.loads(paths.sparsity.read_text())
        assert report["unpruned"] == round(report["total"] * 0.8 ** level)  # 0.8^L, to one weight
        assert set(report["layers"]) and all(n.startswith("backbone.") for n in report["layers"])


def test_pruned_weights_are_exactly_zero_after_training_and_non_prunable_are_trained(
        chain: tuple[Store, str, Path]) -> None:
    store, _, _ = chain
    jobs = _by_label(store)
    for label in ("lottery:sup10/L2", "lottery:sup10/L2/lottery", "lottery:sup10/L2/random_prune"):
        paths = JobPaths.of(jobs[label].job_dir)
        mask = torch.load(paths.mask, weights_only=True)
        model = torch.load(paths.final_weights, weights_only=False)["model"]
        for name, m in mask.items():
            assert (model[name][~m] == 0).all(), (label, name)
            assert (model[name][m] != 0).float().mean() > 0.99
        assert "head.weight" not in mask and "backbone.bn1.weight" not in mask


def test_level_rewinds_exactly_to_the_saved_point_under_its_mask(chain: tuple[Store, str, Path]) -> None:
    from workers.lottery_job import setup_ticket
    from workers.train import build_method, load_manifest

    store, _, _ = chain
    jobs = _by_label(store)
    l1 = jobs["lottery:sup10/L1"]
    spec = JobSpec.from_json(l1.spec_json)
    _, manifest = load_manifest(spec)
    method = build_method(spec, manifest.num_classes)
    ticket = setup_ticket(spec, Path(l1.job_dir), method, CPU)
    rewind = torch.load(JobPaths.of(jobs["lottery:sup10/L0"].job_dir).rewind, weights_only=False)["model"]
    state = method.state_dict()
    for name, value in rewind.items():
        if name in ticket.mask:
            m = ticket.mask[name]
            assert torch.equal(state[name][m], value[m]) and (state[name][~m] == 0).all()
        else:
            assert torch.equal(state[name], value), name
    trained0 = torch.load(JobPaths.of(jobs["lottery:sup10/L0"].job_dir).final_weights, weights_only=False)["model"]
    first = next(iter(ticket.mask))
    assert not torch.equal(trained0[first], rewind[first])  # level 0 trained on after its rewind point


def _schedule(job: object) -> list[float]:
    """The learning rate of every step of ``job``'s full schedule, as a dense run from step 0 reads it."""
    from orchestrator.grid import steps_per_epoch
    from workers.schedule import lr_at
    from workers.train import load_manifest

    spec = JobSpec.from_json(job.spec_json)  # type: ignore[attr-defined]
    _, manifest = load_manifest(spec)
    steps = steps_per_epoch(spec.train, spec.resources, len(manifest.indices["train"]))
    return [lr_at(spec.train, s, steps) for s in range(spec.train.epochs * steps)]


def test_levels_and_evaluations_continue_the_schedule_from_the_rewind_step(chain: tuple[Store, str, Path]) -> None:
    store, _, _ = chain
    jobs = _by_label(store)
    finals = store.final_metrics("chain")
    k = 2  # rewind = "2it"
    dense = _schedule(jobs["lottery:sup10/L0"])
    assert LRS["lottery:sup10/L0"] == [dense] and len(set(dense)) > k  # a cosine schedule from step 0
    # a pruned level trains T - k steps, the first at the dense run's learning rate at step k
    assert LRS["lottery:sup10/L1"] == [dense[k:]]
    # a level killed after its first epoch: the first attempt from step k, the second from its epoch checkpoint
    first, second = LRS["lottery:sup10/L2"]
    steps = len(dense) // 2
    assert first == dense[k:k + len(first)] and len(first) >= steps - k and second == dense[steps:]
    # every evaluation (ticket and baselines, at level 0 and 2) starts at the rewind step of its own schedule
    for label in ("lottery:sup10/L0/lottery", "lottery:sup10/L2/lottery", "lottery:sup10/L2/random_reinit",
                  "lottery:sup10/L2/random_prune"):
        full = _schedule(jobs[label])
        assert LRS[label] == [full[k:]], label
        m = finals[jobs[label].job_hash]
        assert (m["start_step"], m["train_steps"], m["epochs"]) == (k, len(full) - k, 1.0), label
    m = finals[jobs["lottery:sup10/L2"].job_hash]
    assert (m["start_step"], m["train_steps"], m["epochs"]) == (k, len(dense) - k, 2.0)


def test_evaluations_keep_the_mask_and_baselines_differ_as_they_should(chain: tuple[Store, str, Path]) -> None:
    from workers.lottery_job import setup_ticket
    from workers.train import build_method, load_manifest

    store, _, _ = chain
    jobs = _by_label(store)
    for level in (2,):
        level_mask = torch.load(JobPaths.of(jobs[f"lottery:sup10/L{level}"].job_dir).mask, weights_only=True)
        masks = {t: torch.load(JobPaths.of(jobs[f"lottery:sup10/L{level}/{t}"].job_dir).mask, weights_only=True)
                 for t in ("lottery", "random_reinit", "random_prune")}
        for name, m in level_mask.items():
            assert torch.equal(masks["lottery"][name], m) and torch.equal(masks["random_reinit"][name], m)
            assert int(masks["random_prune"][name].sum()) == int(m.sum())  # each layer's density kept
        assert any(not torch.equal(masks["random_prune"][n], level_mask[n]) for n in level_mask)
    # the ticket and random_prune start from the rewind weights (under their masks); random_reinit from new
    # random weights: neither the rewind point's nor the ones the job's own seed would have built
    rewind = torch.load(JobPaths.of(jobs["lottery:sup10/L0"].job_dir).rewind, weights_only=False)["model"]
    for ticket in ("lottery", "random_prune", "random_reinit"):
        job = jobs[f"lottery:sup10/L2/{ticket}"]
        spec = JobSpec.from_json(job.spec_json)
        _, manifest = load_manifest(spec)
        torch.manual_seed(spec.seed)  # as the trainer before it builds the method
        method = build_method(spec, manifest.num_classes)
        own = {k: v.clone() for k, v in method.state_dict().items()}
        state = setup_ticket(spec, Path(job.job_dir), method, CPU).method.state_dict()
        mask = torch.load(JobPaths.of(job.job_dir).mask, weights_only=True)
        for name, m in mask.items():
            assert (state[name][~m] == 0).all(), (ticket, name)
            same_as_rewind = (state[name][m] == rewind[name][m]).float().mean()
            if ticket == "random_reinit":
                assert same_as_rewind < 0.01 and (state[name][m] == own[name][m]).float().mean() < 0.01, name
            else:
                assert same_as_rewind == 1.0, (ticket, name)
        bn = "backbone.conv1.1.running_var"  # after 2 steps, the rewind point's differs from a new one's
        assert torch.equal(state[bn], torch.ones_like(state[bn]) if ticket == "random_reinit" else rewind[bn]), ticket
    finals = store.final_metrics("chain")
    for label, j in jobs.items():
        if j.state != JobState.COMPLETED:
            continue
        m = finals[j.job_hash]
        _, level, ticket = parse_label(label)
        assert m["weights_remaining"] == pytest.approx(round(0.8 ** level, 3), abs=2e-3)
        if ticket is not None:
            assert m["num_classes"] == 5.0 and 0.0 <= m["val_top1"] <= 1.0  # a new 5-class head


def test_lottery_report_numbers_are_the_trained_jobs_metrics(chain: tuple[Store, str, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from orchestrator.cli import cli
    from orchestrator.report.lottery import lottery_report_for

    store, db, _ = chain
    jobs = _by_label(store)
    finals = store.final_metrics("chain")
    rep = lottery_report_for(store, "chain", "val_top1")
    (setting,) = rep.settings
    assert setting.setting == "sup10" and setting.metric == "val_top1"
    assert setting.generation == "supervised on imgs_10pct" and setting.evaluation == "supervised on even5"
    assert (setting.levels_done, setting.levels_total) == (3, 3)
    points = {(p.level, p.ticket): p for p in setting.points}
    assert set(points) == {(0, "lottery"), (1, "lottery"), (1, "random_reinit"), (1, "random_prune"),
                           (2, "lottery"), (2, "random_reinit"), (2, "random_prune")}
    for (level, ticket), p in points.items():
        j = jobs[f"lottery:sup10/L{level}/{ticket}"]
        if level == 1:
            assert p.values == () and p.mean is None and p.n_expected == 1
            continue
        assert p.values == (finals[j.job_hash]["val_top1"],) and p.mean == finals[j.job_hash]["val_top1"]
        assert p.weights_remaining == finals[j.job_hash]["weights_remaining"]
    cost = sum(finals[jobs[f"lottery:sup10/L{level}"].job_hash]["train_time_s"] for level in range(3))
    assert setting.generation_cost_s == pytest.approx(cost)
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", "chain", "--json", "--db", db, "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["lottery"]["settings"][0]["points"][0]["values"] == [points[(0, "lottery")].mean]
    assert data["subsets"] == []  # lottery jobs are not ranked as configurations
    assert "## Lottery tickets" in (out / "report.md").read_text() and (out / "lottery.png").is_file()
    assert "<h2>Lottery tickets</h2>" in (out / "report.html").read_text()
    # a grid of lottery chains alone: no empty rank-consistency tables, no "has no jobs" warning
    assert "Rank-consistency" not in (out / "report.md").read_text() + (out / "report.html").read_text()
    text = CliRunner().invoke(cli, ["report", "chain", "--db", db, "--out", str(out)]).output
    assert "Lottery tickets" in text and "Rank consistency" not in text and "has no jobs" not in text, text


def test_a_level_killed_mid_way_resumes_from_its_epoch_checkpoint_with_its_mask(
        chain: tuple[Store, str, Path]) -> None:
    store, _, _ = chain
    level2 = _by_label(store)["lottery:sup10/L2"]
    assert [a.state for a in store.attempts(level2.job_hash)] == [AttemptState.PREEMPTED, AttemptState.COMPLETED]
    paths = JobPaths.of(level2.job_dir)
    first = torch.load(Path(level2.job_dir) / "mask.first_attempt", weights_only=True)
    final = torch.load(paths.mask, weights_only=True)
    assert first.keys() == final.keys() and all(torch.equal(first[n], final[n]) for n in first)
    epochs = [json.loads(line)["epoch"] for line in paths.epoch_metrics.read_text().splitlines()]
    assert epochs == [0, 1]  # the resumed attempt trained only the second epoch
