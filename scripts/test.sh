#!/usr/bin/env bash
# One command: set up, start the real services the tests use (single-node and two-node SLURM, PostgreSQL,
# WordNet corpus), then run the whole test suite. Extra arguments go to pytest.
# The suite runs in DLTH_TEST_WORKERS parallel processes (pytest-xdist, default 3; 0: one process): most slow
# tests wait on SLURM, subprocesses or polling, so waiting overlaps with training. `--dist loadgroup` keeps the
# tests of one SLURM cluster in one worker, one after another (tests/conftest.py puts them in its group).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
if [ "$(id -u)" = 0 ]; then
  scripts/install_wordnet.sh
  scripts/postgres.sh up
  scripts/slurm-cluster.sh up
  scripts/slurm-cluster.sh up --nodes 2   # the separate two-node cluster of the multi-node tests
else
  echo "[test] not root: SLURM and PostgreSQL tests will be skipped (they never skip under CI=true)" >&2
fi
workers=${DLTH_TEST_WORKERS:-3}
parallel=()
if [ "$workers" != 0 ]; then
  parallel=(-n "$workers" --dist loadgroup)
fi
exec .venv/bin/python -m pytest "${parallel[@]}" "$@"
