"""The version of the training protocol: what a job's numbers mean.

A change of training semantics (how targets are synchronised, how augmentations are drawn, how a
method is evaluated...) changes results without changing a job's identity: relaunching the same grid
with newer code would find the old results "done". The worker therefore records the version it
trained under as the final metric :data:`PROTOCOL_METRIC`; results without it are version 1. The
report warns when it compares results of different versions (``orchestrator/report/protocol.py``).

Bump :data:`TRAINING_PROTOCOL` (and list what changed below) whenever the same job would now train or
evaluate differently. Job identities and pinned hashes stay as they are.

Versions:
- 1: everything before the metric existed.
- 2: EMA targets synchronised after every load into the online network (init file, parent, rewind,
  re-init) and pruned with the same mask; rewinding continues the learning-rate schedule from the
  rewind point; DINO evaluated on its teacher; the linear probe normalises features with an affine-free
  BatchNorm and sweeps its learning rate; ViT details per the references (fixed sin-cos position
  embeddings for MAE, no weight decay on norms, biases, position embeddings and tokens); the report's
  paired bootstrap; repeatable augmentation (every draw keyed by job seed, epoch, view and sample index:
  bit-identical repeats on the CPU whatever the loader thread count).
"""

from __future__ import annotations

from collections.abc import Mapping

TRAINING_PROTOCOL = 2
PROTOCOL_METRIC = "protocol_version"
UNVERSIONED = 1  # the version of results recorded without PROTOCOL_METRIC


def protocol_of(metrics: Mapping[str, float]) -> int:
    """The training-protocol version a job's final ``metrics`` were produced under."""
    value = metrics.get(PROTOCOL_METRIC)
    return int(value) if value is not None else UNVERSIONED
