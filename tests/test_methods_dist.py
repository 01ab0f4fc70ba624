"""Cross-rank parts of the methods under a real 2-process gloo group (CPU), all from one spawn: MoCo's queue
is filled with the keys gathered from every rank and its shuffle-BN restores each key to its own sample;
DINO's center is the all-reduced teacher mean; SimCLR's 2-rank loss and DDP gradients equal one process's
on the concatenated batch (its negatives are gathered across ranks, with their gradients)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from tests.method_helpers import make, views_for

pytestmark = pytest.mark.slow  # trains models / runs processes

WORLD, PER_RANK = 2, 4
SIMCLR = {"proj_hidden_dim": 16, "proj_dim": 8, "temperature": 0.5}


def _simclr_views(rank: int) -> list[torch.Tensor]:
    """Rank ``rank``'s share of the global batch (different images on each rank)."""
    return [v * (1 + rank) + rank for v in views_for(make("simclr", **SIMCLR), n=PER_RANK)]


def _moco(rank: int) -> dict[str, Any]:
    m = make("mocov1", queue_size=32, bn_splits=1)  # same seed: same weights and queue on both ranks
    # eval-mode BN in the key encoder: a key depends on its own sample only, whatever the batch it is in, so
    # after shuffle-BN's unshuffle every key must be the one of the same sample encoded without shuffling
    m.key_backbone.eval()
    m.key_head.eval()
    captured: dict[str, torch.Tensor] = {}
    original = m.contrastive_logits

    def spy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        captured["k"] = k.detach().clone()
        return original(q, k)

    m.contrastive_logits = spy  # type: ignore[method-assign]
    encoded: list[torch.Tensor] = []
    m.key_backbone.register_forward_hook(lambda _m, inp, _o: encoded.append(inp[0].detach().clone()))
    views = [v + rank for v in views_for(m, n=PER_RANK)]  # different images on each rank
    with torch.no_grad():
        unshuffled = F.normalize(m.key_head(m.key_backbone(views[1])), dim=1)
    encoded.clear()
    m(views, torch.zeros(PER_RANK, dtype=torch.long))
    return {"k": captured["k"].tolist(), "queue": m.queue.tolist(), "ptr": int(m.queue_ptr),
            "k_unshuffled": unshuffled.tolist(), "key_input_is_mine": torch.equal(encoded[0], views[1])}


def _simclr(rank: int, out_dir: str) -> None:
    m = make("simclr", **SIMCLR).eval()  # eval-mode BN: a sample's output does not depend on its batch
    ddp = DistributedDataParallel(m)  # as workers/train.py: gradients averaged over the ranks
    loss = ddp(_simclr_views(rank), torch.zeros(PER_RANK, dtype=torch.long))
    loss.backward()
    torch.save({"loss": loss.detach(), "grads": {n: p.grad for n, p in m.named_parameters() if p.grad is not None}},
               Path(out_dir, f"simclr{rank}.pt"))


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        out = _moco(rank)
        d = make("dino", local_crops=0)
        teacher = torch.full((3, d.center.shape[1]), float(rank + 1))  # rank 0: ones, rank 1: twos
        d.update_center(teacher)
        out["center"] = d.center[0, :3].tolist()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
        _simclr(rank, out_dir)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory where each of the two ranks left what it saw."""
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank_main, args=(WORLD, str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return out


def _rank_json(ranks: Path) -> list[dict[str, Any]]:
    return [json.loads((ranks / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_moco_queue_gathers_every_rank_and_dino_center_all_reduces(ranks: Path) -> None:
    r0, r1 = _rank_json(ranks)
    keys = torch.tensor(r0["k"] + r1["k"])  # rank order
    assert not torch.allclose(torch.tensor(r0["k"]), torch.tensor(r1["k"]))
    for r in (r0, r1):
        queue = torch.tensor(r["queue"])
        torch.testing.assert_close(queue[:, :8], keys.t())  # the global batch's keys, on every rank
        assert r["ptr"] == 8
        # center: 0.9 * 0 + 0.1 * mean over both ranks' teacher outputs (1.5)
        torch.testing.assert_close(torch.tensor(r["center"]), torch.full((3,), 0.15))
    torch.testing.assert_close(torch.tensor(r0["queue"]), torch.tensor(r1["queue"]))


def test_moco_shuffle_bn_returns_each_key_to_its_own_sample(ranks: Path) -> None:
    outs = _rank_json(ranks)
    # the key encoder saw a shuffled global batch, not this rank's own samples in their order ...
    assert not all(r["key_input_is_mine"] for r in outs)
    for r in outs:  # ... and the unshuffled keys are the keys of this rank's samples, sample by sample
        torch.testing.assert_close(torch.tensor(r["k"]), torch.tensor(r["k_unshuffled"]), atol=1e-5, rtol=1e-4)


def test_simclr_on_two_ranks_is_one_process_on_the_concatenated_batch(ranks: Path) -> None:
    torch.manual_seed(0)
    m = make("simclr", **SIMCLR).eval()
    shares = [_simclr_views(r) for r in range(WORLD)]
    views = [torch.cat([s[v] for s in shares]) for v in range(2)]  # the global batch in rank order
    loss = m(views, torch.zeros(WORLD * PER_RANK, dtype=torch.long))
    loss.backward()
    grads = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
    assert grads["backbone.conv1.0.weight"].abs().sum() > 0 and grads["projector.0.weight"].abs().sum() > 0
    for r in range(WORLD):
        got = torch.load(ranks / f"simclr{r}.pt")
        # the loss over all 2 x 8 samples: every negative of the other rank is in it
        torch.testing.assert_close(got["loss"], loss.detach())
        assert got["grads"].keys() == grads.keys()
        for name, g in grads.items():  # gradients reach the other rank's samples through the gather
            torch.testing.assert_close(got["grads"][name], g, atol=1e-6, rtol=1e-4, msg=name)
