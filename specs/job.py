"""The job spec: everything a worker needs to run one job, and the job's identity.

A job's identity (:attr:`JobSpec.job_hash`) is the hash of its canonical spec: sorted keys, fields
equal to their defaults dropped, and keys that cannot change results excluded (grid name, dataset
path, subset name, resources such as worker counts). Relaunching a grid is therefore idempotent and
editing one value creates only the jobs whose canonical spec changed. ``tests/test_expand.py`` pins
a few hashes so that identities never change by accident.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from specs.base import (
    INT_MAX,
    Plain,
    SpecError,
    check_text,
    finite,
    from_table,
    json_template,
    non_defaults,
    sorted_json,
    text_hash,
    value_json,
)
from specs.methods import hparams_class

OPTIMIZERS = ("sgd", "adamw", "lars", "lamb")  # lars/lamb: timm's (create_optimizer_v2)
LR_SCALINGS = ("none", "linear")  # linear: lr x global batch / 256
PROTOCOLS = ("knn", "linear")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# upper bounds of counts (docs/grid.md, "Limits"): far above any real study, low enough that a typo (or a hostile
# grid) cannot ask for a billion epochs or OMP_NUM_THREADS=100000
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 24
MAX_IMAGE = 8192
SEED_MAX = INT_MAX  # seeds are 0 .. 2^31-1 (the database's INTEGER column, numpy's seed range)
SLURM_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_NOT_IDENTITY = frozenset({"deterministic"})  # TrainConfig keys that change how, not what, a job trains


@dataclass(frozen=True)
class TrainConfig(Plain):
    """Training defaults shared by all methods; a method table may override any of them."""

    backbone: str = "resnet18"
    epochs: int = field(default=10, metadata={"min": 1, "max": MAX_EPOCHS})
    batch_size: int = field(default=256, metadata={"min": 1, "max": MAX_BATCH})  # global, over all ranks
    optimizer: str = field(default="sgd", metadata={"choices": OPTIMIZERS})
    lr: float = field(default=0.1, metadata={"min": 0.0})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    adam_beta2: float = field(default=0.999, metadata={"min": 0.0, "max": 1.0})  # adamw / lamb (MAE: 0.95)
    grad_clip: float = field(default=0.0, metadata={"min": 0.0})  # max global gradient norm; 0: no clipping
    weight_decay: float = field(default=5e-4, metadata={"min": 0.0})
    schedule: str = field(default="cosine", metadata={"choices": SCHEDULES})
    warmup_epochs: int = field(default=0, metadata={"min": 0, "max": MAX_EPOCHS})
    image_size: int = field(default=224, metadata={"min": 8, "max": MAX_IMAGE})
    # ViT patch size in pixels; 0: the model's own
    patch_size: int = field(default=0, metadata={"min": 0, "max": MAX_IMAGE})
    precision: str = field(default="auto", metadata={"choices": PRECISIONS})
    lr_scaling: str = field(default="none", metadata={"choices": LR_SCALINGS})
    # GPUs: PyTorch's deterministic kernels (use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG, cuDNN
    # benchmark off), slower; the CPU repeats exactly without it. How to compute, not what: not in the identity
    deterministic: bool = False

    @cached_property
    def canonical(self) -> dict[str, Any]:
        """The non-default fields that define what is trained (``deterministic`` left out)."""
        return {k: v for k, v in non_defaults(self).items() if k not in _NOT_IDENTITY}


@dataclass(frozen=True)
class EvalConfig(Plain):
    """Evaluation protocols: kNN on frozen features (always), a linear probe when ``protocols`` lists
    ``linear`` (see ``workers/linear_probe.py``), plus method metrics (top-1 for supervised)."""

    knn_k: int = field(default=20, metadata={"min": 1, "max": 100_000})
    knn_temperature: float = field(default=0.07, metadata={"min": 0.0})
    every_epochs: int = field(default=0, metadata={"min": 0, "max": MAX_EPOCHS})  # 0: only after the last epoch
    protocols: list = field(default_factory=lambda: ["knn"])
    linear_epochs: int = field(default=100, metadata={"min": 1, "max": MAX_EPOCHS})
    linear_lr: float = field(default=0.1, metadata={"min": 0.0})  # x batch / 256, cosine
    linear_batch_size: int = field(default=256, metadata={"min": 1, "max": MAX_BATCH})  # global
    linear_weight_decay: float = field(default=0.0, metadata={"min": 0.0})

    def __post_init__(self) -> None:
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols or len(set(self.protocols)) != len(self.protocols):
            raise SpecError("protocols", "a non-empty list of distinct protocols from " + ", ".join(PROTOCOLS))


@dataclass(frozen=True)
class Resources(Plain):
    """What one job asks of the cluster. Excluded from the job identity."""

    nodes: int = field(default=1, metadata={"min": 1, "max": 4096})
    nproc_per_node: int = field(default=1, metadata={"min": 1, "max": 256})
    gpus_per_node: int = field(default=0, metadata={"min": 0, "max": 64})
    cpus_per_task: int = field(default=1, metadata={"min": 1, "max": 1024})  # = OMP_NUM_THREADS of each rank
    mem_gb: float = field(default=4.0, metadata={"min": 0.1, "max": 65536.0})
    time_min: int = field(default=60, metadata={"min": 1, "max": 366 * 24 * 60})
    loader_workers: int = field(default=1, metadata={"min": 0, "max": 256})
    # FFCV's numba JIT: "auto" compiles only for subsets of >= 20,000 training images (compiling costs
    # ~10-20 s per pipeline, more than reading a tiny dataset without it)
    ffcv_jit: str = field(default="auto", metadata={"choices": ("auto", "on", "off")})
    # seconds without a training step (heartbeat alive) before the job is stopped and retried as "stalled";
    # 0 = from its own step times, at least 600 (orchestrator.stall)
    stall_s: float = field(default=0.0, metadata={"min": 0.0, "max": 30 * 86400.0})
    # free-form overrides of the cluster profile (partition, account, qos, constraint, exclude)
    slurm: dict = field(default_factory=dict)
    # up to N ready jobs of the same resource group run one after the other in one worker process (a local
    # slot or one SLURM array task): the process start, imports and FFCV's set-up are paid once (workers.batch)
    jobs_per_worker: int = field(default=1, metadata={"min": 1, "max": 1024})

    def __post_init__(self) -> None:
        check_slurm_table(self.slurm, "slurm")

    def slots(self) -> int:
        """CPU cores (or GPUs, when it asks for GPUs) the job occupies on one node."""
        return self.gpus_per_node if self.gpus_per_node else self.nproc_per_node * self.cpus_per_task


def check_slurm_table(table: dict[str, Any], where: str) -> None:
    """sbatch flags: names of letters, digits, '-' and '_'; values scalars without control characters
    (a newline in a value would end its ``#SBATCH`` line and run the rest in the batch script)."""
    for key, value in table.items():
        if not isinstance(key, str) or not SLURM_KEY_RE.fullmatch(key) or len(key) > 64:
            raise SpecError(f"{where}.{str(key)[:40]!r}", "an sbatch flag name (letters, digits, '-', '_')")
        if isinstance(value, (dict, list)) or value is None:
            raise SpecError(f"{where}.{key}", "a string, number or true/false")
        if isinstance(value, float):
            finite(value, f"{where}.{key}")
        elif isinstance(value, str):
            check_text(value, f"{where}.{key}")
            if len(value) > 4096:
                raise SpecError(f"{where}.{key}", "at most 4096 characters")


def job_label(subset_name: str, config_name: str, seed: int) -> str:
    """The one human-readable label of a job: ``subset/config/s<seed>`` (status, logs, ``slurm jobs``)."""
    return f"{subset_name}/{config_name}/s{seed}"


@dataclass(frozen=True)
class JobSpec:
    """One training job of a grid, fully resolved. Serialized to ``job.json`` for the worker."""

    grid: str
    dataset_root: str
    dataset_fingerprint: str
    subset_name: str
    subset: dict[str, Any]  # canonical subset table (strategy + params)
    manifest_hash: str
    config_name: str  # the grid's method table name
    method: str
    hparams: dict[str, Any]  # method hyperparameters, non-default only
    train: TrainConfig
    eval: EvalConfig
    seed: int
    resources: Resources = field(default_factory=Resources)
    # --- the job graph (see specs/contract.py for what a child reads from its parents' directories) ---
    # hashes of the jobs that must be COMPLETED before this one starts (part of the identity)
    depends_on: tuple[str, ...] = ()
    # where the initial weights come from, e.g. {"job": HASH, "checkpoint": "final", "exclude": [...],
    # "strict": false} or {"file": PATH, "sha256": DIGEST, ...}; None: from scratch (part of the identity)
    init: dict[str, Any] | None = None
    # lottery-ticket role of the job (level, rewind, mask source...); None for ordinary jobs. Must not hold
    # anything that would change an earlier level's identity when a chain is extended (e.g. ``levels``)
    lottery: dict[str, Any] | None = None

    # --- identity -------------------------------------------------------------------------
    def config_identity(self) -> dict[str, Any]:
        """What defines a *configuration* to rank: method, hyperparameters, training, eval (and where its
        initial weights come from, when set: the parent's configuration, not its per-subset/seed job)."""
        ident = {
            "method": self.method,
            "hparams": self.hparams,
            "train": self.train.canonical,
            "eval": self.eval.canonical,
        }
        if self.init is not None:
            ident["init"] = {k: v for k, v in self.init.items() if k != "job"}
        return ident

    def _identity_text(self, ident: dict[str, Any]) -> str:
        """:meth:`config_identity` + ``ident`` as :func:`~specs.base.stable_hash` encodes it, the training and
        eval parts encoded once per configuration object (a grid's jobs share them), not once per job."""
        return sorted_json({"method": self.method, "hparams": self.hparams, **ident},
                           {"train": self.train.canonical_json, "eval": self.eval.canonical_json}, compact=True)

    @cached_property
    def config_key(self) -> str:
        """Hash of the configuration alone (same across subsets and seeds): ``stable_hash(config_identity())``."""
        ident = {} if self.init is None else {"init": {k: v for k, v in self.init.items() if k != "job"}}
        return text_hash(self._identity_text(ident), 12)

    @cached_property
    def job_hash(self) -> str:
        """Identity of the job: configuration + data (fingerprint + manifest) + seed (+ parent)."""
        ident: dict[str, Any] = {"dataset": self.dataset_fingerprint, "manifest": self.manifest_hash, "seed": self.seed}
        if self.depends_on:  # only when set: jobs without parents keep their pinned hashes
            ident["parents"] = sorted(self.depends_on)
        if self.init is not None:  # the whole of it (the parent job too), not the configuration's part
            ident["init"] = self.init
        if self.lottery is not None:
            ident["lottery"] = self.lottery
        return text_hash(self._identity_text(ident), 16)

    def label(self) -> str:
        """Short human-readable label: ``subset/config/seed`` (:func:`job_label`)."""
        return job_label(self.subset_name, self.config_name, self.seed)

    # --- serialization --------------------------------------------------------------------
    # A spec is frozen: its hashes and its JSON are computed once (launching a large grid reads them
    # several times per job). Do not mutate its dict fields (hparams, subset, init, lottery).
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """``job.json``'s text: sorted keys, one line (the C encoder; ``indent`` would be ~10x slower)."""
        return self._json

    @cached_property
    def _json(self) -> str:
        """``json.dumps`` of the fields with sorted keys; the config objects' parts encoded once each."""
        return _JSON_TEMPLATE % tuple(
            getattr(self, k).plain_json if k in _PLAIN_FIELDS else value_json(getattr(self, k)) for k in _JSON_KEYS)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "JobSpec":
        raw = dict(raw)
        raw["train"] = from_table(TrainConfig, raw["train"], "train")
        raw["eval"] = from_table(EvalConfig, raw["eval"], "eval")
        raw["resources"] = from_table(Resources, raw.get("resources", {}), "resources")
        raw["depends_on"] = tuple(raw.get("depends_on") or ())
        raw.pop("parent_hash", None)  # written by dlth-orch <= 0.1.0, always None there
        hparams_class(raw["method"])  # validates the method name
        return cls(**raw)

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        return cls.from_dict(json.loads(text))

    def typed_hparams(self) -> Any:
        """The method's hyperparameter dataclass, with this job's values."""
        return from_table(hparams_class(self.method), self.hparams, "hparams")



_PLAIN_FIELDS = frozenset({"train", "eval", "resources"})  # Plain config objects, shared by a grid's jobs
_JSON_KEYS = tuple(sorted(f.name for f in dataclasses.fields(JobSpec)))
_JSON_TEMPLATE = json_template(_JSON_KEYS)  # job.json: one %-format per job

def metric_protocol(metric: str) -> str:
    """The evaluation protocol that produces ``metric`` (for the report's header), e.g. ``linear probe``."""
    if metric.startswith("knn_"):
        return "kNN on frozen features"
    if metric.startswith("linear_"):
        return "linear probe on the frozen backbone"
    if metric.startswith("online_probe_"):
        return "online linear probe during training"
    if metric.startswith("val_"):
        return "the method's own classifier"
    return "as recorded by the job"
