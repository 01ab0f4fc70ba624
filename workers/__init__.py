"""Data plane: job entry point, DDP, data loading, methods, evaluation, checkpoints."""
