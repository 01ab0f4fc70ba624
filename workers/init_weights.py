"""A job's initial weights (``JobSpec.init``): a parent job's ``final_weights.pt`` or a checkpoint file,
loaded into the method's backbone before the first epoch (never when resuming from a checkpoint); the
trainer then copies the loaded backbone into the method's EMA targets (:func:`workers.train.load_fresh_start`).

Accepted files: a dlth-orch ``final_weights.pt`` (``{"backbone": ...}``) or epoch ``checkpoint.pt``
(``{"model": method state dict}``: its ``backbone.*`` keys), a timm/torchvision state dict (optionally
under ``state_dict``/``model``, optionally ``module.``-prefixed), or a ``.safetensors`` file.
``exclude``: fnmatch patterns of keys not to load; ``strict``: every other backbone key must be loaded.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from specs.contract import JobPaths, sibling_job_dir
from specs.job import JobSpec
from workers.checkpoint import save_torch_atomic
from workers.safe_load import UnreadableFileError, UnsafeFileError, load_torch

log = logging.getLogger(__name__)


class InitWeightsError(RuntimeError):
    """The initial weights cannot be loaded (missing file, keys that do not fit under ``strict``)."""


@dataclass(frozen=True)
class InitReport:
    source: str
    loaded: int
    missing: list[str]
    unexpected: list[str]
    excluded: list[str]


def source_path(spec: JobSpec, job_dir: Path) -> Path:
    """The file ``spec.init`` points at: the parent's final weights, or the named file."""
    init = spec.init or {}
    if "job" in init:
        return JobPaths.of(sibling_job_dir(job_dir, init["job"])).final_weights
    return Path(init["file"])


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The backbone state dict stored in ``path`` (any of the accepted layouts)."""
    if not path.is_file():
        raise InitWeightsError(f"init: {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    try:
        raw: Any = load_torch(path)
    except (UnsafeFileError, UnreadableFileError) as exc:
        raise InitWeightsError(f"init: {exc}") from None
    if isinstance(raw, dict) and isinstance(raw.get("backbone"), dict):
        return dict(raw["backbone"])
    for key in ("model", "state_dict"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    if not isinstance(raw, dict):
        raise InitWeightsError(f"init: {path}: expected a state dict, got {type(raw).__name__}")
    sd = {k.removeprefix("module."): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("backbone.") for k in sd):  # a dlth-orch method state dict
        sd = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


def verify_init_file(spec: JobSpec, path: Path) -> None:
    """An init file must still be the one launch hashed (``spec.init["sha256"]``, part of the identity): a
    file replaced after launch is an :class:`InitWeightsError` naming it, not a silently different start."""
    expected = (spec.init or {}).get("sha256")
    if not expected or not path.is_file():
        return  # a parent job's weights (no digest), or a missing file read_state_dict reports
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise InitWeightsError(f"init: {path} changed after launch (sha256 {digest.hexdigest()[:16]}..., "
                               f"launched with {expected[:16]}...): restore it, or relaunch to make new jobs")


def load_init(spec: JobSpec, job_dir: Path, backbone: nn.Module) -> InitReport | None:
    """Load ``spec.init`` into ``backbone``; ``None`` when the job starts from scratch."""
    if spec.init is None:
        return None
    path = source_path(spec, job_dir)
    verify_init_file(spec, path)
    sd = read_state_dict(path)
    patterns = list(spec.init.get("exclude") or [])
    strict = bool(spec.init.get("strict", True))
    excluded = sorted(k for k in sd if any(fnmatch.fnmatchcase(k, p) for p in patterns))
    sd = {k: v for k, v in sd.items() if k not in set(excluded)}
    own = backbone.state_dict()
    missing = sorted(k for k in own if k not in sd and not any(fnmatch.fnmatchcase(k, p) for p in patterns))
    unexpected = sorted(k for k in sd if k not in own)
    mismatched = sorted(k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape))
    if strict and (missing or unexpected or mismatched):
        what = [f"{len(x)} {name} (e.g. {x[0]})" for name, x in
                (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched)) if x]
        raise InitWeightsError(f"init: {path}: keys do not fit the backbone {spec.train.backbone}: "
                               f"{', '.join(what)}; add them to exclude or set strict = false")
    usable = {k: v for k, v in sd.items() if k in own and k not in mismatched}
    backbone.load_state_dict(usable, strict=False)
    report = InitReport(str(path), len(usable), missing, unexpected + mismatched, excluded)
    log.info("init: loaded %d backbone tensors from %s (%d missing, %d unexpected, %d excluded)",
             report.loaded, path, len(missing), len(report.unexpected), len(excluded))
    if missing or report.unexpected:
        log.warning("init: missing %s; not loaded %s", missing[:5], report.unexpected[:5])
    return report


def save_final_weights(job_dir: Path, job_hash: str, backbone: nn.Module, model: nn.Module) -> Path:
    """Write ``final_weights.pt`` (what a child job starts from) atomically: tmp file, then rename."""
    return save_torch_atomic({"job_hash": job_hash, "backbone": backbone.state_dict(), "model": model.state_dict()},
                             JobPaths.of(job_dir).final_weights)
