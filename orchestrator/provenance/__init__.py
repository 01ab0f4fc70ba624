"""What a launch freezes and records: the code snapshot its workers run, git state, package versions.

- :mod:`~orchestrator.provenance.snapshot`: the worker packages copied into the workspace, content-addressed.
- :mod:`~orchestrator.provenance.gitinfo`: commit, changed files and diff of that code.
- :mod:`~orchestrator.provenance.environment`: interpreter, package versions, CUDA/cuDNN, host, command line.
- :mod:`~orchestrator.provenance.freeze`: the launch step tying them together and pointing the grid's jobs.
- :mod:`~orchestrator.provenance.runtime`: a backend starting a worker from its job's snapshot.
- :mod:`~orchestrator.provenance.stale`: results of older code, and resetting them to retrain.
"""
