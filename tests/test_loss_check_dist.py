"""The NaN-loss check under a real 2-process gloo group (CPU): the verdict is all-reduced each step, so when
only one rank's loss goes NaN both ranks stop together with the one-line "NaN loss" error, instead of the
finite rank waiting for the stopped one in its next collective until the group's timeout."""

from __future__ import annotations

import datetime
import json
import math
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow  # trains models / runs processes

TIMEOUT_S = 30  # the group's collective timeout here (1800 s in production): a hang fails the test in time


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    from workers.distributed import DistContext
    from workers.errors import NonFiniteLoss, check_loss, describe

    ctx = DistContext(rank=rank, local_rank=rank, world_size=world, device=torch.device("cpu"))
    out: dict[str, object] = {"error": None}
    t0 = time.time()
    try:
        for step in range(6):
            grad = torch.ones(4)
            dist.all_reduce(grad)  # the step's gradient all-reduce (DDP's), then the loss check
            loss = math.nan if (rank == 1 and step == 2) else 1.0 / (step + 1)
            check_loss(loss, 0, step, ctx)
            out["steps"] = step + 1
    except NonFiniteLoss as exc:
        out["error"] = describe(exc)
    except Exception as exc:  # e.g. gloo's "connection closed by peer" when the other rank left
        out["error"] = f"other: {type(exc).__name__}: {exc}"
    out["seconds"] = time.time() - t0
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


def test_nan_on_one_rank_stops_every_rank_with_the_nan_error_within_seconds(tmp_path: Path) -> None:
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    for r in (r0, r1):
        assert r["error"] == "NaN loss: loss is nan on rank 1 at epoch 1, step 3 (lower the learning rate, or " \
                             "use fp32/bf16 precision)", r
        assert r["steps"] == 2 and r["seconds"] < 10, r


def test_a_single_process_check_names_no_rank() -> None:
    import pytest

    from workers.distributed import DistContext
    from workers.errors import NonFiniteLoss, check_loss

    one = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    check_loss(0.5, 0, 0, one)
    with pytest.raises(NonFiniteLoss, match=r"^loss is inf at epoch 2, step 1 "):
        check_loss(math.inf, 1, 0, one)
