"""SLURM settings of a launch: the cluster profile (validated), merged with each job's resources.

Precedence, lowest first: the profile (``cluster_profiles/slurm-*.toml`` + the grid's ``[cluster]``), the
job's ``[resources]`` fields that differ from their defaults (grid or method level), then the job's
``resources.slurm`` table (partition, account, qos, constraint, exclude, or any other sbatch flag).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from specs.base import SpecError, check_text, coerce
from specs.job import Resources, check_slurm_table

NAMED_FLAGS = ("partition", "account", "qos", "constraint", "exclude")  # submitit parameters of the same name


@dataclass(frozen=True)
class SlurmProfile:
    """A cluster profile for the SLURM backend (see ``cluster_profiles/slurm-example.toml``)."""

    name: str = "slurm"
    backend: str = "slurm"
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    exclude: str = ""
    gpus_per_node: int = field(default=0, metadata={"min": 0})
    cpus_per_task: int = field(default=1, metadata={"min": 1})
    mem_gb: float = field(default=4.0, metadata={"min": 0.1})
    max_mem_gb: float = field(default=0.0, metadata={"min": 0.0})  # cap of out-of-memory retries (0 = partition's)
    time_min: int = field(default=60, metadata={"min": 1})
    max_array_size: int = field(default=1000, metadata={"min": 1})  # only if scontrol cannot tell
    array_throttle: int = field(default=64, metadata={"min": 1})  # %N: array tasks running at once
    signal_delay_s: int = field(default=90, metadata={"min": 10})  # SIGUSR2 this long before the limit
    max_requeues: int = field(default=20, metadata={"min": 0})  # preemptions/timeouts of one SLURM job
    poll_min_s: float = field(default=2.0, metadata={"min": 0.1})
    poll_max_s: float = field(default=60.0, metadata={"min": 0.1})
    python: str = ""  # interpreter on the compute nodes (default: the orchestrator's)
    setup: list = field(default_factory=list)  # shell lines run before srun (module load ..., source ...)
    sbatch: dict = field(default_factory=dict)  # any other sbatch flag, e.g. {"mail-type" = "FAIL"}
    slurm_conf: str = ""  # SLURM_CONF of every SLURM command: a cluster other than the default ("" = default)
    report_partition: str = ""  # the grid's report job (CPU only): this partition ("" = ``partition``)
    report_time_min: int = field(default=15, metadata={"min": 1})  # the report job's time limit

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SlurmProfile:
        """Validate a loaded profile; unknown keys and wrong types raise a one-line :class:`SpecError`."""
        known = {f.name: f for f in fields(cls)}
        where = f"cluster profile {raw.get('name', '?')!r} (or the grid's [cluster])"
        values: dict[str, Any] = {}
        for key, value in raw.items():
            f = known.get(key)
            if f is None:
                raise SpecError(f"cluster.{key}", "a SLURM profile key (" + ", ".join(sorted(known)) + ")", where)
            tp = {"int": int, "float": float, "str": str, "list": list, "dict": dict}[str(f.type)]
            try:
                values[key] = coerce(value, tp, f"cluster.{key}", f.metadata)
            except SpecError as exc:
                raise exc.in_file(where) from None
        try:  # what reaches the batch script: one #SBATCH flag per line, one shell line per setup entry
            check_slurm_table(values.get("sbatch", {}), "cluster.sbatch")
            for i, line in enumerate(values.get("setup", [])):
                if not isinstance(line, str):
                    raise SpecError(f"cluster.setup[{i}]", "a shell line (a string)")
                check_text(line, f"cluster.setup[{i}]")
        except SpecError as exc:
            raise exc.in_file(where) from None
        if values.get("backend", "slurm") != "slurm":
            raise SpecError("cluster.backend", "'slurm' in a SLURM profile", where)
        if values.get("slurm_conf") and not Path(values["slurm_conf"]).is_file():
            raise SpecError("cluster.slurm_conf", f"an existing slurm.conf (not found: {values['slurm_conf']})", where)
        return cls(**values)

    @property
    def interpreter(self) -> str:
        return self.python or sys.executable


_DEFAULTS = Resources()


def _job_or_profile(res: Resources, name: str, profile: SlurmProfile) -> Any:
    value = getattr(res, name)
    return value if value != getattr(_DEFAULTS, name) else getattr(profile, name)


def executor_parameters(res: Resources, profile: SlurmProfile) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters for a job with resources ``res`` (no array settings)."""
    gpus = int(_job_or_profile(res, "gpus_per_node", profile))
    params: dict[str, Any] = {
        "nodes": res.nodes,
        "ntasks_per_node": res.nproc_per_node,
        "cpus_per_task": int(_job_or_profile(res, "cpus_per_task", profile)),
        "mem": f"{max(1, round(float(_job_or_profile(res, 'mem_gb', profile)) * 1024))}M",
        "time": int(_job_or_profile(res, "time_min", profile)),
        "signal_delay_s": profile.signal_delay_s,
        "stderr_to_stdout": True,
    }
    if gpus:
        params["gpus_per_node"] = gpus
    if res.nodes * res.nproc_per_node > 1:  # a rank that dies ends the step: no peer waits for it (or orphans)
        params["srun_args"] = ["--kill-on-bad-exit=1"]
    for key in NAMED_FLAGS:
        if getattr(profile, key):
            params[key] = getattr(profile, key)
    extra: dict[str, Any] = {str(k): v for k, v in profile.sbatch.items()}
    for key, value in res.slurm.items():
        key = str(key).replace("-", "_")
        if key in NAMED_FLAGS:
            if value in ("", None):
                params.pop(key, None)
            else:
                params[key] = value
        elif key == "time_min":
            params["time"] = int(value)
        elif key == "mem_gb":
            params["mem"] = f"{max(1, round(float(value) * 1024))}M"
        else:
            extra[key.replace("_", "-")] = value
    if extra:
        params["additional_parameters"] = extra
    return params


def group_key(params: dict[str, Any]) -> str:
    """Jobs with equal parameters share arrays."""
    return json.dumps(params, sort_keys=True, default=str)


def slurm_db_id(store: Any) -> str:
    """A random id of this database (kept in its meta table): grids of two databases never share names."""
    value = store.get_meta("slurm_db_id")
    if value is None:
        store.set_meta("slurm_db_id", uuid.uuid4().hex)
        value = store.get_meta("slurm_db_id")
    return str(value)


def job_name(store: Any, grid_name: str) -> str:
    """The SLURM job name of every job of a grid: ``dlth-<grid>-<hash of database id + grid name>``."""
    digest = hashlib.sha1(f"{slurm_db_id(store)}/{grid_name}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", grid_name)[:32]
    return f"dlth-{slug}-{digest}"
