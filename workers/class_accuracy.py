"""Per-class accuracy of a finished job's model on its subset's validation images.

Feeds the ``per_class_accuracy`` subset strategy: evaluate a strong supervised model (e.g. the
``supervised`` job on ``full`` of a grid) and write ``{wnid: accuracy}``. Supervised jobs are scored by
their classifier head; other methods by the kNN protocol on frozen features.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from specs.contract import CHECKPOINT_FILE, JobPaths
from specs.job import JobSpec
from workers.data.loader import build_loader
from workers.knn import extract_features, knn_votes
from workers.manifest import load_manifest
from workers.safe_load import load_torch
from workers.train import build_method

log = logging.getLogger(__name__)


class NoCheckpoint(ValueError):
    """The job directory holds no trained model to evaluate."""


@torch.no_grad()
def per_class_accuracy(job_dir: str | Path, *, batch_size: int = 256, num_workers: int = 1) -> dict[str, float]:
    """``{wnid: top-1 accuracy}`` over the job's validation classes, from its last checkpoint."""
    job_dir = Path(job_dir)
    paths = JobPaths(job_dir)
    ckpt_path = paths.checkpoint
    if not ckpt_path.is_file():
        raise NoCheckpoint(f"{job_dir}: {CHECKPOINT_FILE}: expected the checkpoint of a trained job")
    spec = JobSpec.from_json(paths.job_file.read_text())
    meta, manifest = load_manifest(spec, job_dir)
    method = build_method(spec, manifest.num_classes)
    method.load_state_dict(load_torch(ckpt_path)["model"])
    method.eval()

    def loader(split: str):  # type: ignore[no-untyped-def]
        return build_loader(meta, manifest, split, recipe="eval", batch_size=batch_size,
                            image_size=spec.train.image_size, seed=spec.seed, train=False, num_workers=num_workers)

    if hasattr(method, "head"):
        preds, labels = [], []
        for views, y in loader("val"):
            preds.append(method.head(method.backbone(views[0])).argmax(1))
            labels.append(y)
        pred, y = torch.cat(preds), torch.cat(labels)
    else:
        bank, bank_y = extract_features(method.backbone, loader("train"))
        feats, y = extract_features(method.backbone, loader("val"))
        pred = knn_votes(bank, bank_y, feats, k=spec.eval.knn_k, temperature=spec.eval.knn_temperature,
                         num_classes=manifest.num_classes).argmax(1)
    out = {}
    for new_index, c in enumerate(manifest.classes):
        mask = y == new_index
        out[c.wnid] = float((pred[mask] == new_index).float().mean()) if mask.any() else 0.0
    log.info("per-class accuracy of %s: mean %.4f over %d classes", spec.job_hash,
             sum(out.values()) / max(1, len(out)), len(out))
    return out
