"""What a launch freezes and records: the code snapshot its workers run, git state, package versions.

:mod:`~orchestrator.provenance.snapshot` copies the worker packages into the workspace, content-addressed;
:mod:`~orchestrator.provenance.gitinfo` reads commit, dirty files and diff; :mod:`~orchestrator.provenance.
environment` the interpreter, package versions, host and command line; :mod:`~orchestrator.provenance.
freeze` is the launch step that ties them together and points the grid's jobs at the snapshot.
"""
