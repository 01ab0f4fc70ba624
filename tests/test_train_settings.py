"""Training settings with no test of their own until now: LR warm-up and the step schedule, label
smoothing, ``precision = "auto"`` (bf16 on a GPU, fp32 on the CPU), initial weights from ``.safetensors``,
``DLTH_UMASK`` and ``data prepare`` from the command line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from specs.backbones import create_backbone
from specs.job import TrainConfig
from specs.settings import apply_umask
from tests.method_helpers import make, views_for
from tests.test_expand import _spec
from workers.init_weights import InitWeightsError, load_init
from workers.schedule import lr_at
from workers.train import autocast_for


def test_linear_warm_up_then_the_step_schedule() -> None:
    cfg = TrainConfig(lr=1.0, epochs=8, warmup_epochs=2, schedule="step")
    lrs = [lr_at(cfg, s, 10) for s in range(80)]  # 10 steps per epoch: 20 warm-up steps, 60 after
    assert lrs[:20] == pytest.approx([(s + 1) / 20 for s in range(20)])  # linear up to the full rate
    assert lrs[20:50] == pytest.approx([1.0] * 30)  # x1 for the first half after the warm-up
    assert lrs[50:65] == pytest.approx([0.1] * 15)  # x0.1 from 1/2
    assert lrs[65:] == pytest.approx([0.01] * 15)  # x0.01 from 3/4
    assert lr_at(TrainConfig(lr=0.4, epochs=4, schedule="step"), 0, 5) == pytest.approx(0.4)  # no warm-up


def test_label_smoothing_mixes_the_target_with_the_uniform_distribution() -> None:
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    losses = {}
    for eps in (0.0, 0.3):
        m = make("supervised", label_smoothing=eps)
        views = views_for(m)
        loss = m(views, labels).detach()
        with torch.no_grad():
            logp = torch.log_softmax(m.head(m.backbone(views[0])), dim=1)  # train-mode BN: the same statistics
        nll = -logp[torch.arange(8), labels].mean()
        uniform = -logp.mean()  # cross-entropy against 1/C on every class
        torch.testing.assert_close(loss, (1 - eps) * nll + eps * uniform)
        losses[eps] = float(loss)
    assert losses[0.3] != pytest.approx(losses[0.0])


def test_precision_auto_is_bf16_on_a_gpu_and_fp32_on_the_cpu() -> None:
    x = torch.randn(4, 4)
    with autocast_for(_spec(), torch.device("cpu")):
        assert (x @ x).dtype == torch.float32  # auto on the CPU: no autocast
    with autocast_for(_spec(train=TrainConfig(precision="bf16")), torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16  # an explicit bf16 is honoured, also on the CPU
    # no GPU here: the decision for a CUDA device is read off the context it returns, without entering it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available ... Disabling autocast"
        gpu = autocast_for(_spec(), torch.device("cuda"))
    assert isinstance(gpu, torch.autocast) and gpu.device == "cuda" and gpu.fast_dtype == torch.bfloat16
    assert not isinstance(autocast_for(_spec(train=TrainConfig(precision="fp32")), torch.device("cuda")),
                          torch.autocast)


def test_initial_weights_from_a_safetensors_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    trained = create_backbone("test_resnet", 32)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    torch.manual_seed(2)
    fresh = create_backbone("test_resnet", 32)
    assert not torch.equal(fresh.conv1[0].weight, trained.conv1[0].weight)
    report = load_init(_spec(init={"file": str(path)}), tmp_path, fresh)
    assert report is not None and report.loaded == len(trained.state_dict()) and not report.missing
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # a file that lacks a key fails under strict (the default) and names it
    partial = tmp_path / "partial.safetensors"
    sd = {k: v.contiguous() for k, v in trained.state_dict().items() if k != "conv1.0.weight"}
    save_file(sd, str(partial))
    with pytest.raises(InitWeightsError, match="conv1.0.weight"):
        load_init(_spec(init={"file": str(partial)}), tmp_path, create_backbone("test_resnet", 32))


@pytest.mark.slow  # writes the digits with FFCV in a subprocess
def test_data_prepare_from_the_command_line_honours_dlth_umask(tmp_path: Path) -> None:
    def prepare(out: Path, umask: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", "data", "prepare", "digits", str(out),
                               "--image-size", "8"], capture_output=True, text=True,
                              env={**os.environ, "DLTH_UMASK": umask}, timeout=300)

    shared = tmp_path / "shared"
    done = prepare(shared, "027")  # a group may read the workspace
    assert done.returncode == 0, done.stderr
    meta = json.loads((shared / "meta.json").read_text())
    assert len(meta["classes"]) == 10 and "10 classes," in done.stdout
    assert (shared / "train.beton").is_file() and (shared / "val.beton").is_file()
    assert {stat.S_IMODE(p.stat().st_mode) for p in shared.rglob("*") if p.is_file()} == {0o640}
    assert {stat.S_IMODE(p.stat().st_mode) for p in [shared, *shared.rglob("*")] if p.is_dir()} == {0o750}
    bad = prepare(tmp_path / "bad", "8x")
    assert bad.returncode == 2 and not (tmp_path / "bad").exists()
    assert bad.stderr.strip() == "error: environment DLTH_UMASK='8x': expected an octal mask like 077"


def test_the_default_umask_keeps_files_private(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DLTH_UMASK", raising=False)
    old = apply_umask()
    try:
        assert os.umask(old) == 0o077
        monkeypatch.setenv("DLTH_UMASK", "002")
        apply_umask()
        assert os.umask(old) == 0o002
    finally:
        os.umask(old)
