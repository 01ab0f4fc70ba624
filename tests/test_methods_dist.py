"""Cross-rank parts of the methods under a real 2-process gloo group (CPU): MoCo's queue is filled with the
keys gathered from every rank, DINO's center with the all-reduced teacher mean."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from tests.method_helpers import make, views_for

        torch.set_num_threads(1)
        m = make("mocov1", queue_size=32, bn_splits=1)  # same seed: same weights and queue on both ranks
        captured = {}
        original = m.contrastive_logits

        def spy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            captured["k"] = k.detach().clone()
            return original(q, k)

        m.contrastive_logits = spy  # type: ignore[method-assign]
        views = [v + rank for v in views_for(m, n=4)]  # different images on each rank
        m(views, torch.zeros(4, dtype=torch.long))
        d = make("dino", local_crops=0)
        teacher = torch.full((3, d.center.shape[1]), float(rank + 1))  # rank 0: ones, rank 1: twos
        d.update_center(teacher)
        out = {"k": captured["k"].tolist(), "queue": m.queue.tolist(), "ptr": int(m.queue_ptr),
               "center": d.center[0, :3].tolist()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def test_moco_queue_gathers_every_rank_and_dino_center_all_reduces(tmp_path: Path) -> None:
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    keys = torch.tensor(r0["k"] + r1["k"])  # rank order
    assert not torch.allclose(torch.tensor(r0["k"]), torch.tensor(r1["k"]))
    for r in (r0, r1):
        queue = torch.tensor(r["queue"])
        torch.testing.assert_close(queue[:, :8], keys.t())  # the global batch's keys, on every rank
        assert r["ptr"] == 8
        # center: 0.9 * 0 + 0.1 * mean over both ranks' teacher outputs (1.5)
        torch.testing.assert_close(torch.tensor(r["center"]), torch.full((3,), 0.15))
    torch.testing.assert_close(torch.tensor(r0["queue"]), torch.tensor(r1["queue"]))
