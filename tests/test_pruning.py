"""The pruning library: how many and which weights go, masks that stay enforced, and masks equal on all ranks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from specs.lottery import Step
from workers.pruning.mask import (
    apply_mask,
    broadcast_mask,
    count,
    full_mask,
    load_mask,
    mask_gradients,
    prunable_names,
    save_mask,
    sparsity_report,
)
from workers.pruning.registry import get_strategy


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """One intra-op thread: on a loaded 2-core machine two spinning OpenMP threads are ~40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Net(nn.Module):
    """Conv + BN + a linear hidden layer + a classifier head (the head and BN are never prunable)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def test_prunable_by_default_are_backbone_conv_and_linear_weights_only() -> None:
    net = Net()
    assert prunable_names(net, ["backbone.*"]) == ["backbone.0.weight", "backbone.5.weight"]
    assert prunable_names(net, ["*"], ["backbone.0.*"]) == ["backbone.5.weight", "head.weight"]


@pytest.mark.parametrize("strategy", ["global", "layerwise"])
def test_density_after_level_l_is_0_8_to_the_l_and_non_prunable_untouched(strategy: str) -> None:
    torch.manual_seed(0)
    net = Net()
    names = prunable_names(net, ["backbone.*"])
    untouched = {n: p.detach().clone() for n, p in net.named_parameters() if n not in names}
    mask = full_mask(net, names)
    total = count(mask)[1]
    for level in range(1, 9):
        with torch.no_grad():  # "training" between levels changes the magnitudes
            for n, p in net.named_parameters():
                if n in names:
                    p.add_(torch.randn_like(p) * 0.1)
        new = get_strategy(strategy).prune(dict(net.named_parameters()), mask, 0.2, level, torch.Generator())
        assert abs(count(new)[0] - 0.8 ** level * total) <= 1  # to one weight
        assert all(not (new[n] & ~mask[n]).any() for n in names)  # nothing pruned comes back
        mask = new
        apply_mask(net, mask)
    for n, p in net.named_parameters():
        if n in untouched:
            assert torch.equal(p, untouched[n]) and n not in mask
    assert sparsity_report(mask)["unpruned"] == count(mask)[0]
    if strategy == "layerwise":
        for n in names:
            assert abs(int(mask[n].sum()) - round(mask[n].numel() * 0.8 ** 8)) <= 1


def test_non_prunable_parameters_are_never_changed_by_the_mask() -> None:
    net = Net()
    names = prunable_names(net, ["backbone.*"])
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    mask = get_strategy("global").prune(dict(net.named_parameters()), full_mask(net, names), 0.5, 1,
                                        torch.Generator())
    apply_mask(net, mask)
    for n, p in net.named_parameters():
        if n not in names:
            assert torch.equal(p, before[n])
        else:
            assert torch.equal(p[mask[n]], before[n][mask[n]]) and (p[~mask[n]] == 0).all()


def test_global_and_layerwise_pick_the_right_weights_on_a_hand_made_model() -> None:
    model = nn.Sequential(nn.Linear(4, 1, bias=False), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -4.0, 3.0, 2.0]]))
        model[1].weight.copy_(torch.tensor([[-10.0, 40.0, 30.0, -20.0]]))
    names = prunable_names(model, ["*"])
    mask = full_mask(model, names)
    weights = dict(model.named_parameters())
    glob = get_strategy("global").prune(weights, mask, 0.5, 1, torch.Generator())
    assert glob["0.weight"].tolist() == [[False, False, False, False]]  # the 4 smallest magnitudes overall
    assert glob["1.weight"].tolist() == [[True, True, True, True]]
    layer = get_strategy("layerwise").prune(weights, mask, 0.5, 1, torch.Generator())
    assert layer["0.weight"].tolist() == [[False, True, True, False]]  # |-4|, |3| stay
    assert layer["1.weight"].tolist() == [[False, True, True, False]]  # |40|, |30| stay
    # level 2 prunes half of what remains: global takes the smallest survivors |-10|, |-20|
    glob2 = get_strategy("global").prune(weights, glob, 0.5, 2, torch.Generator())
    assert glob2["1.weight"].tolist() == [[False, True, True, False]]


def test_random_prune_keeps_each_layers_density_with_another_mask() -> None:
    torch.manual_seed(1)
    net = Net()
    names = prunable_names(net, ["backbone.*"])
    ticket = get_strategy("global").prune(dict(net.named_parameters()), full_mask(net, names), 0.6, 1,
                                          torch.Generator())
    rand = get_strategy("random").prune({}, ticket, 0.0, 1, torch.Generator().manual_seed(3))
    for n in names:
        assert int(rand[n].sum()) == int(ticket[n].sum())
    assert any(not torch.equal(rand[n], ticket[n]) for n in names)
    again = get_strategy("random").prune({}, ticket, 0.0, 1, torch.Generator().manual_seed(3))
    assert all(torch.equal(again[n], rand[n]) for n in names)  # seeded: the same on every attempt


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_pruned_weights_stay_exactly_zero_through_momentum_weight_decay_and_amp(optimizer: str) -> None:
    torch.manual_seed(2)
    net = Net()
    names = prunable_names(net, ["backbone.*"])
    mask = get_strategy("global").prune(dict(net.named_parameters()), full_mask(net, names), 0.7, 1,
                                        torch.Generator())
    apply_mask(net, mask)
    mask_gradients(net, mask)
    opt = (torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3) if optimizer == "sgd"
           else torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.05))
    params = dict(net.named_parameters())
    for _ in range(15):
        x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 4, (8,))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for n in names:  # the gradient hook masked the gradient before the step
            assert (params[n].grad[~mask[n]] == 0).all()
        opt.step()
        apply_mask(net, mask)
        for n in names:
            assert (params[n][~mask[n]] == 0).all()
            state = opt.state[params[n]]
            buf = state["momentum_buffer"] if optimizer == "sgd" else state["exp_avg"]
            assert (buf[~mask[n]] == 0).all()
    assert any((params[n][mask[n]] != 0).all() for n in names)  # the survivors trained


def test_mask_file_round_trips(tmp_path: Path) -> None:
    net = Net()
    mask = get_strategy("layerwise").prune(dict(net.named_parameters()),
                                           full_mask(net, prunable_names(net, ["backbone.*"])), 0.3, 1,
                                           torch.Generator())
    save_mask(mask, tmp_path / "mask.pt")
    back = load_mask(tmp_path / "mask.pt")
    assert back.keys() == mask.keys() and all(torch.equal(back[n], mask[n]) for n in mask)


def test_rewind_steps_parse_like_open_lth() -> None:
    assert Step.parse("0it").iteration(50) == 0
    assert Step.parse("500it").iteration(50) == 500
    assert Step.parse("3ep").iteration(50) == 150
    with pytest.raises(ValueError, match="rewind"):
        Step.parse("3 epochs")


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(100 + rank)  # every rank's weights differ: only rank 0's may decide
        net = Net()
        names = prunable_names(net, ["backbone.*"])
        mask = (get_strategy("global").prune(dict(net.named_parameters()), full_mask(net, names), 0.5, 1,
                                             torch.Generator()) if rank == 0 else {})
        shapes = {n: p.shape for n, p in net.named_parameters()}
        mask = broadcast_mask(mask, names, shapes, torch.device("cpu"))
        torch.save({"mask": mask, "weights": {n: p.detach() for n, p in net.named_parameters()}},
                   f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_masks_are_equal_across_two_gloo_ranks(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank, args=(port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["mask"].keys() == r1["mask"].keys()
    assert all(torch.equal(r0["mask"][n], r1["mask"][n]) for n in r0["mask"])
    own1 = get_strategy("global").prune(r1["weights"], {n: torch.ones_like(m) for n, m in r1["mask"].items()},
                                        0.5, 1, torch.Generator())
    assert any(not torch.equal(own1[n], r1["mask"][n]) for n in own1)  # rank 1 alone would have chosen others
