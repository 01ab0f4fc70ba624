"""Execution backends: where jobs run (local torchrun workers, SLURM through submitit)."""
