#!/usr/bin/env bash
# One command: set up, start the real services the tests use (single-node and two-node SLURM, PostgreSQL,
# WordNet corpus), then run the whole test suite. Extra arguments go to pytest.
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
exec .venv/bin/python -m pytest "$@"
