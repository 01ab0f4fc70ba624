"""Adaptive studies (issue 23): add seeds only where they can change the answer, drop subsets that cannot
meet the report's criterion, stop when the recommendation is decided.

- :mod:`orchestrator.adaptive.settings`: the grid's ``[adaptive]`` table,
- :mod:`orchestrator.adaptive.policy`: one look at the results so far -> what to do next (pure),
- :mod:`orchestrator.adaptive.controller`: the look run against the database and a backend,
- :mod:`orchestrator.adaptive.replay`: the policy played on a finished grid's recorded results.
"""
