#!/usr/bin/env bash
# One command: set up, then train the quickstart grid on the CPU and print its rank-consistency report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DLTH_HOME="${DLTH_HOME:-$PWD/.dlth}"
start=$(date +%s)
.venv/bin/dlth-orch launch examples/quickstart.toml --cluster local
.venv/bin/dlth-orch report quickstart
echo "[quickstart] launch + report took $(( $(date +%s) - start )) s; CPU time (user system) of this script, then of"
echo "[quickstart] its commands (set-up, launch with every job's workers, report):"
times  # not in a pipeline: a subshell would report its own (empty) times
