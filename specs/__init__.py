"""Typed specs shared by the control plane (orchestrator) and the data plane (workers)."""
