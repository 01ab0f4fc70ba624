"""kNN evaluation: the vote itself, and the sharded evaluation every DDP rank takes part in.

The distributed tests run two real processes with gloo on the CPU (several GPUs cannot exist here) and
compare them with one process over the same data.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp_mp

from orchestrator.grid import expand, load_grid
from specs.job import JobSpec
from subsets import DatasetMeta, Manifest
from workers.data.jit import configure_jit
from workers.distributed import DistContext, all_gather_rows, all_reduce_sum
from workers.knn import knn_accuracy, knn_votes, nearest
from workers.train import Trainer, build_method, load_manifest, seed_everything

CPU = torch.device("cpu")
SINGLE = DistContext(rank=0, local_rank=0, world_size=1, device=CPU)


def _unit(rows: list[list[float]]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_the_vote_weighs_each_neighbour_by_exp_similarity_over_temperature() -> None:
    bank = _unit([[1, 0], [0.8, 0.6], [0, 1]])
    labels = torch.tensor([0, 1, 1])
    query = _unit([[1, 0]])
    sims, neighbour_labels = nearest(bank, labels, query, k=2)
    assert sims[0].tolist() == pytest.approx([1.0, 0.8]) and neighbour_labels.tolist() == [[0, 1]]
    votes = knn_votes(bank, labels, query, k=2, temperature=0.5, num_classes=3)
    assert votes[0].tolist() == pytest.approx([np.exp(2.0), np.exp(1.6), 0.0])
    # k larger than the bank: every bank feature votes, nothing breaks
    votes = knn_votes(bank, labels, query, k=10, temperature=0.5, num_classes=3)
    assert votes[0].tolist() == pytest.approx([np.exp(2.0), np.exp(1.6) + np.exp(0.0), 0.0])


def test_knn_accuracy_counts_top1_and_top5_over_chunks() -> None:
    bank = _unit([[1, 0], [0, 1], [-1, 0]])
    bank_labels = torch.tensor([0, 1, 2])
    queries = _unit([[1, 0.1], [0.1, 1], [-1, 0.1], [1, -0.1]])
    truth = torch.tensor([0, 1, 0, 2])  # right, right, wrong (nearest is class 2), wrong
    out = knn_accuracy(bank, bank_labels, queries, truth, k=1, temperature=0.1, num_classes=3, chunk=3)
    assert out == {"knn_top1": 0.5, "knn_top5": 1.0}


def _shares(n: int, world: int, rank: int, seed: int) -> np.ndarray:
    """Uneven, interleaved shares like the eval loader's (``order[rank::world]`` of a shuffled order)."""
    return np.random.default_rng(seed).permutation(n)[rank::world]


def _random_problem() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(7, 16, generator=g)
    bank_y = torch.randint(0, 7, (63,), generator=g)
    val_y = torch.randint(0, 7, (41,), generator=g)
    noise = 1.4  # classes overlap: accuracies well away from 0 and 1
    bank = torch.nn.functional.normalize(centres[bank_y] + noise * torch.randn(63, 16, generator=g), dim=1)
    val = torch.nn.functional.normalize(centres[val_y] + noise * torch.randn(41, 16, generator=g), dim=1)
    return {"bank": bank, "bank_y": bank_y, "val": val, "val_y": val_y}


def _knn_rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank=rank, local_rank=rank, world_size=world, device=CPU)
        p = _random_problem()
        bank_share, val_share = _shares(63, world, rank, 1), _shares(41, world, rank, 2)
        results = {}
        for k in (1, 5, 40):  # 40 > any rank's share of the bank (32 and 31 rows)
            results[k] = knn_accuracy(p["bank"][bank_share], p["bank_y"][bank_share], p["val"][val_share],
                                      p["val_y"][val_share], k=k, temperature=0.07, num_classes=7, chunk=16,
                                      ctx=ctx)
        gathered = all_gather_rows(ctx, torch.arange(rank * 10, rank * 10 + 3 - rank))
        sums = all_reduce_sum(ctx, [1.0, float(rank)])
        torch.save({"knn": results, "gathered": gathered.tolist(), "sums": sums}, Path(out_dir) / f"knn{rank}.pt")
        dist.barrier()  # no rank tears its group down while the other still uses it
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sharded_knn_over_two_ranks_equals_one_process_over_everything(tmp_path: Path) -> None:
    tmp_mp.spawn(_knn_rank_main, args=(2, str(tmp_path / "pg"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"knn{r}.pt") for r in range(2)]
    p = _random_problem()
    for k in (1, 5, 40):
        alone = knn_accuracy(p["bank"], p["bank_y"], p["val"], p["val_y"], k=k, temperature=0.07, num_classes=7)
        assert 0.2 < alone["knn_top1"] < 0.95
        assert ranks[0]["knn"][k] == ranks[1]["knn"][k] == alone, k
    assert ranks[0]["gathered"] == ranks[1]["gathered"] == [0, 1, 2, 10, 11]  # 3 rows + 2 rows
    assert ranks[0]["sums"] == ranks[1]["sums"] == [2.0, 1.0]


GRID = """
name = "knn"
seeds = [0]
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = 1
image_size = 32
[eval]
knn_k = 10
[resources]
loader_workers = 1
[report]
reference = "even5"
[subsets.even5]
strategy = "uniform"
k = 5
[methods.supervised]
"""


def _job(grid_file: str) -> JobSpec:
    grid = load_grid(grid_file)
    (job,) = expand(grid, DatasetMeta.load(grid.dataset_root))
    return job.spec


def _manifest(grid_file: str) -> Manifest:
    return load_manifest(_job(grid_file))[1]


def _evaluate(grid_file: str, ctx: DistContext) -> dict[str, float]:
    """Trainer.evaluate of an untrained supervised model (seeded init) on the grid's one job."""
    spec = _job(grid_file)
    meta, manifest = load_manifest(spec)
    configure_jit(spec.resources.ffcv_jit, len(manifest.indices["train"]))
    seed_everything(0, ctx.rank)
    method = build_method(spec, manifest.num_classes)
    if ctx.rank == 1:  # rank 1's BatchNorm statistics drift from rank 0's, as after DDP training
        for name, buf in method.named_buffers():
            if name.endswith("running_mean"):
                buf.add_(3.0)
    trainer = Trainer(spec, Path(grid_file).parent, ctx, None, threading.Event())
    return trainer.evaluate(method, meta, manifest)


def _evaluate_rank_main(rank: int, world: int, init_file: str, grid_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metrics = _evaluate(grid_file, DistContext(rank=rank, local_rank=rank, world_size=world, device=CPU))
        torch.save(metrics, Path(out_dir) / f"eval{rank}.pt")
        dist.barrier()  # no rank tears its group down while the other still uses it
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_evaluate_their_shares_with_rank0s_model_and_agree_with_one_process(
    tmp_path: Path, digits: Path
) -> None:
    """Real images (digits, 5 classes: 180 val images), a real model: the 2-rank evaluation uses rank 0's
    BatchNorm statistics on both shares and gives one process's metrics. Features computed in batches of
    different composition may differ in the last float bits, so a near-tie may flip: at most one image."""
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(GRID.format(root=digits))
    alone = _evaluate(str(grid_file), SINGLE)
    tmp_mp.spawn(_evaluate_rank_main, args=(2, str(tmp_path / "pg"), str(grid_file), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"eval{r}.pt") for r in range(2)]
    assert set(alone) == {"val_top1", "knn_top1", "knn_top5"}
    assert ranks[0] == ranks[1]
    n_val = len(_manifest(str(grid_file)).indices["val"])
    assert 150 < n_val < 200
    for name, value in alone.items():
        assert abs(ranks[0][name] - value) <= 1 / n_val + 1e-9, (name, ranks[0][name], value)
    assert 0.3 < alone["knn_top1"] < 1.0  # an untrained but informative model: the comparison means something
