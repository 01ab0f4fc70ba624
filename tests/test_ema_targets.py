"""Momentum (EMA) targets and rewinding in lottery and init chains (issue 19 items 1-3, issue 25).

- A MoCo key encoder, a BYOL target and a DINO teacher equal their online network (parameters and buffers)
  right after every kind of load: an init file, a parent's weights, a pre-trained start, a rewind point, a
  transferred ticket, a random re-initialisation.
- A pruned job's targets hold exact zeros at the masked places at every step.
- A step the fp16 grad scaler skips (inf gradients) moves neither the targets nor the step counter.
- A level rewound to step k trains T - k steps with every schedule at k + i (real BYOL chain on the digits).

The load tests build real jobs of a recorded grid and write their parents' files by hand (perturbed methods
stand in for trained ones: what matters is that the targets then differ from the online network), so they
run no training; the chain test trains for real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from db import Store
from orchestrator.grid import load_grid
from orchestrator.launch import record_grid
from specs.contract import JobPaths
from specs.job import JobSpec
from specs.settings import WorkerSettings
from subsets import DatasetMeta
from tests.method_helpers import views_for
from workers.distributed import DistContext
from workers.methods.base import Method

pytestmark = pytest.mark.slow  # trains models / runs processes

CPU = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
METHODS = ("byol", "mocov2", "dino")
# (online module, its momentum target) per method: named here, not read from the implementation
PAIRS = {"byol": (("backbone", "target_backbone"), ("projector", "target_projector")),
         "mocov2": (("backbone", "key_backbone"), ("head", "key_head")),
         "dino": (("backbone", "teacher_backbone"), ("head", "teacher_head"))}
HEAD = """
name = "{name}"
seeds = [0]
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = 2
batch_size = 32
lr = 0.05
warmup_epochs = 1
image_size = 32
[eval]
knn_k = 5
[resources]
loader_workers = 1
[subsets.full]
strategy = "full"
[subsets.imgs_10pct]
strategy = "full"
fraction = 0.1
"""
TABLES = {"byol": "hidden_dim = 32\ndim = 16", "mocov2": "queue_size = 32\ndim = 16\nbn_splits = 2",
          "dino": "out_dim = 64\nhidden_dim = 32\nbottleneck_dim = 16\nlocal_crops = 0"}
SETTING = """
[lottery.{name}]
generate = "{method}"
subset = "imgs_10pct"
levels = 1
prune_fraction = 0.5
rewind = "{rewind}"
evaluate = {{ method = "{method}", subset = "imgs_10pct" }}
baselines = {baselines}
{extra}
"""


@pytest.fixture(scope="module", autouse=True)  # module scope: before the module's trained fixtures
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a loaded 2-core machine spinning OpenMP threads make a step far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _record(home: Path, digits: Path, name: str, settings: str,
            methods: tuple[str, ...] = METHODS) -> tuple[Store, str, dict[str, Any]]:
    grid_file = home / "grid.toml"
    tables = "".join(f"[methods.{m}]\n{TABLES[m]}\nplain_jobs = false\n" for m in methods)
    grid_file.write_text(HEAD.format(name=name, root=digits) + tables + settings)
    db = f"sqlite:///{home / 'db.sqlite'}"
    store = Store(db)
    record_grid(store, load_grid(grid_file), DatasetMeta.load(digits))
    return store, db, {j.config_name: j for j in store.jobs(name)}


def _build(job: Any, seed: int) -> tuple[JobSpec, Method]:
    from workers.train import build_method, load_manifest

    spec = JobSpec.from_json(job.spec_json)
    _, manifest = load_manifest(spec, Path(job.job_dir))
    torch.manual_seed(seed)
    return spec, build_method(spec, manifest.num_classes)


def _trained_like(method: Method, seed: int) -> dict[str, torch.Tensor]:
    """``method``'s state with its online network and targets apart everywhere, as after training."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, b in method.named_buffers():
            if "running_mean" in name:
                b.add_(torch.randn_like(b))
    return method.state_dict()


def assert_targets_are_online(method: Method, name: str, what: str) -> None:
    for online, target in PAIRS[name]:
        o, t = getattr(method, online).state_dict(), getattr(method, target).state_dict()
        assert o.keys() == t.keys()
        for k in o:
            assert torch.equal(o[k], t[k]), f"{name} {what}: {target}.{k} != {online}.{k}"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Per method: a chain (levels 0-1, evaluations with both baselines) and a level 0 from a start file."""
    from tests.method_helpers import make

    home = tmp_path_factory.mktemp("ema_home")
    settings = ""
    for m in METHODS:
        start = home / f"start_{m}.pt"  # a pre-trained method of the grid's shapes (the grid pins its sha256)
        torch.save({"model": _trained_like(make(m), seed=11)}, start)
        settings += SETTING.format(name=m, method=m, rewind="2it", baselines='["random_reinit", "random_prune"]',
                                   extra="")
        settings += SETTING.format(name=f"{m}_pre", method=m, rewind="start", baselines="[]",
                                   extra=f'start = "{start}"')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLTH_HOME", str(home))
        store, _, jobs = _record(home, digits, "ema", settings)
        for m in METHODS:
            l0 = jobs[f"lottery:{m}/L0"]
            paths = JobPaths.of(l0.job_dir)
            torch.save({"step": "2it", "model": _trained_like(_build(l0, 0)[1], seed=12)}, paths.rewind)
            torch.save({"model": _trained_like(_build(l0, 0)[1], seed=13)}, paths.final_weights)
        yield home, jobs
        store.close()


@pytest.mark.parametrize("name", METHODS)
def test_targets_equal_the_online_network_after_every_kind_of_load(
        recorded: tuple[Path, dict[str, Any]], name: str) -> None:
    from workers.lottery_job import setup_ticket

    home, jobs = recorded
    built_backbone = _build(jobs[f"lottery:{name}/L0"], seed=0)[1].backbone.state_dict()

    def check(method: Method, what: str) -> None:
        first = next(k for k in built_backbone if k.endswith("weight"))
        assert not torch.equal(method.backbone.state_dict()[first], built_backbone[first]), f"{what}: nothing loaded"
        assert_targets_are_online(method, name, what)

    # a pre-trained start (level 0 of the "_pre" setting), a rewind point (level 1), transferred tickets and
    # a random re-initialisation (the evaluations; level 1's first: they read its mask)
    for label in (f"lottery:{name}_pre/L0", f"lottery:{name}/L1", f"lottery:{name}/L0/lottery",
                  f"lottery:{name}/L1/lottery", f"lottery:{name}/L1/random_prune", f"lottery:{name}/L1/random_reinit"):
        spec, method = _build(jobs[label], seed=0)
        setup_ticket(spec, Path(jobs[label].job_dir), method, CPU)
        check(method, label)
    # an init file and a parent's final weights (JobSpec.init), loaded on a fresh start
    from workers.train import load_fresh_start

    l0 = jobs[f"lottery:{name}/L0"]
    raw = json.loads(l0.spec_json)
    for init in ({"file": str(home / f"start_{name}.pt")}, {"job": l0.job_hash}):
        spec = JobSpec.from_dict({**raw, "lottery": None, "init": init})
        method = _build(l0, seed=0)[1]
        load_fresh_start(spec, Path(l0.job_dir), method)
        check(method, f"init {init}")


@pytest.mark.parametrize("name", METHODS)
def test_a_pruned_jobs_targets_are_zero_where_masked_at_every_step(
        recorded: tuple[Path, dict[str, Any]], name: str) -> None:
    import workers.train as train
    from workers.lottery_job import setup_ticket
    from workers.schedule import build_optimizer, optimizer_step

    _, jobs = recorded
    for label in (f"lottery:{name}/L1", f"lottery:{name}/L1/random_prune"):
        job = jobs[label]
        spec, method = _build(job, seed=0)
        ticket = setup_ticket(spec, Path(job.job_dir), method, CPU)
        assert ticket is not None and ticket.mask
        opt = build_optimizer(method, spec.train)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        trainable = [p for p in method.parameters() if p.requires_grad]
        for step in range(-1, 2):  # -1: right after set-up, before any step
            if step >= 0:
                loss = method.training_loss(views_for(method, n=8), torch.zeros(8, dtype=torch.long))
                applied = optimizer_step(opt, scaler, loss, trainable, 0.0)
                train.after_optimizer_step(method, ticket, applied, step, 10)
            for online, target in PAIRS[name][:1]:  # the backbone: what the mask covers
                params = dict(getattr(method, target).named_parameters())
                for n, m in ticket.mask.items():
                    t = params[n.removeprefix(f"{online}.")]
                    assert (t[~m] == 0).all(), (label, step, n)
                    assert (t[m] != 0).float().mean() > 0.9, (label, step, n)  # the kept weights are the ticket's
        assert ticket.finish()["weights_remaining"] == pytest.approx(0.5, abs=1e-3)


def test_a_skipped_fp16_step_moves_neither_the_targets_nor_the_step_counter() -> None:
    from tests.method_helpers import make
    from workers.schedule import optimizer_step
    from workers.train import after_optimizer_step

    method = make("byol")
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=True)  # the real scaler on the CPU (no GPU here)
    trainable = [p for p in method.parameters() if p.requires_grad]
    views, labels = views_for(method), torch.zeros(8, dtype=torch.long)
    with torch.no_grad():  # online and target apart, so that an EMA update would show
        for p in method.projector.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in method.named_parameters()}
    loss = method.training_loss(views, labels) * float("inf")  # inf gradients: the scaler skips the step
    applied = optimizer_step(opt, scaler, loss, trainable, 0.0)
    after_optimizer_step(method, None, applied, 0, 10)
    assert applied is False and scaler.get_scale() < 65536.0
    for k, v in method.named_parameters():  # online and targets (BN statistics move in any forward pass)
        assert torch.equal(v, before[k]), k
    assert int(method.global_step) == 0
    applied = optimizer_step(opt, scaler, method.training_loss(views, labels), trainable, 0.0)
    after_optimizer_step(method, None, applied, 1, 10)
    assert applied is True and int(method.global_step) == 2
    assert not torch.equal(method.target_projector[0].weight, before["target_projector.0.weight"])


CHAIN = SETTING.format(name="byol", method="byol", rewind="2it", baselines="[]", extra="")


@pytest.fixture(scope="module")
def byol_chain(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> Iterator[dict[str, Any]]:
    """A real BYOL chain on the digits: levels 0 and 1 trained in process through the worker, with the learning
    rates, EMA steps and masked targets of every step recorded (by wrapping the trainer's own functions, which
    still run). Evaluation jobs and a resumed level: tests/test_lottery_chain.py."""
    import workers.train as train
    from workers.entry import run

    home = tmp_path_factory.mktemp("ema_chain")
    record: dict[str, Any] = {"lr": [], "ema_steps": [], "unmasked_target_entries": 0, "checked": 0}

    def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
        record["lr"].append(lr)
        real_set_lr(opt, lr)

    def after_step(method: Method, ticket: Any, applied: bool, step: int, total: int) -> None:
        real_after(method, ticket, applied, step, total)
        record["ema_steps"].append(step)
        if ticket is not None and ticket.mask:
            params, twins = dict(method.named_parameters()), method.target_twins()
            record["checked"] += 1
            record["unmasked_target_entries"] += sum(int((params[twins[n]][~m] != 0).sum())
                                                     for n, m in ticket.mask.items())

    real_set_lr, real_after = train.set_lr, train.after_optimizer_step
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLTH_HOME", str(home))
        mp.setattr(train, "set_lr", set_lr)
        mp.setattr(train, "after_optimizer_step", after_step)
        store, db, jobs = _record(home, digits, "emachain", CHAIN, ("byol",))
        out: dict[str, Any] = {"jobs": jobs, "store": store}
        for label in ("lottery:byol/L0", "lottery:byol/L1"):
            record.update(lr=[], ema_steps=[], unmasked_target_entries=0, checked=0)
            assert run(Path(jobs[label].job_dir) / "job.json", WorkerSettings(db_url=db), CPU) == 0, label
            out[label] = dict(record)
        yield out
        store.close()


def test_a_rewound_level_trains_from_the_rewind_step_with_the_schedules_there(byol_chain: dict[str, Any]) -> None:
    from workers.schedule import lr_at

    jobs = byol_chain["jobs"]
    spec = JobSpec.from_json(jobs["lottery:byol/L1"].spec_json)
    dense = byol_chain["lottery:byol/L0"]
    total = len(dense["lr"])
    steps = total // spec.train.epochs
    assert total == spec.train.epochs * steps and dense["ema_steps"] == list(range(total))
    assert dense["lr"] == [lr_at(spec.train, s, steps) for s in range(total)]  # warm-up, then cosine
    k = 2  # rewind = "2it"
    finals = byol_chain["store"].final_metrics("emachain")
    label = "lottery:byol/L1"
    rec = byol_chain[label]
    # T - k steps, the first at the dense run's learning rate at step k; the EMA momentum at k + i
    assert len(rec["lr"]) == total - k and rec["lr"][0] == dense["lr"][k]
    assert rec["lr"] == dense["lr"][k:] and rec["ema_steps"] == list(range(k, total))
    m = finals[jobs[label].job_hash]
    assert (m["start_step"], m["train_steps"], m["epochs"]) == (k, total - k, spec.train.epochs)
    weights = torch.load(JobPaths.of(jobs[label].job_dir).final_weights, weights_only=False)["model"]
    assert int(weights["global_step"]) == total  # the step counter ends where the dense run's does
    # the targets stayed pruned at every step, and after training
    assert rec["checked"] == total - k and rec["unmasked_target_entries"] == 0
    mask = torch.load(JobPaths.of(jobs[label].job_dir).mask, weights_only=True)
    for n, keep in mask.items():
        assert (weights[n.replace("backbone.", "target_backbone.", 1)][~keep] == 0).all(), n
    lines = JobPaths.of(jobs["lottery:byol/L1"].job_dir).epoch_metrics.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]  # the first epoch from its step k on


def test_a_rewind_point_past_the_end_of_a_job_is_refused(recorded: tuple[Path, dict[str, Any]]) -> None:
    from specs.lottery import Step
    from workers.lottery_job import LotteryTicket

    job = recorded[1]["lottery:byol/L1/lottery"]
    spec = JobSpec.from_json(job.spec_json)
    ticket = LotteryTicket(spec, JobPaths.of(job.job_dir), None, CPU, start_at=Step.parse("2ep"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"rewind point 2ep is step 8 of this job, at or past the end of its 8 steps"):
        ticket.start_step(4)
    assert LotteryTicket(spec, JobPaths.of(job.job_dir), None, CPU,  # type: ignore[arg-type]
                         start_at=Step.parse("1ep")).start_step(4) == 4
