#!/usr/bin/env bash
# Set up dlth-orch in ./.venv: the system libraries FFCV compiles against and Debian's Fashion-MNIST
# (the Fashion-MNIST study's data), then the Python packages at the versions CI tested (constraints.txt).
# Idempotent. Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(libopencv-dev libturbojpeg0-dev pkg-config dataset-fashion-mnist)
[ "${1:-}" = "--test" ] && APT_PKGS+=(chromium)  # tests/test_report_browser.py renders report.html headless
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[setup] FFCV and the Fashion-MNIST builtin need: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || { echo "[setup] creating .venv"; "$PY" -m venv .venv; }
.venv/bin/python -m pip install -q --upgrade pip
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
echo "[setup] pip install -e .${extras} -c constraints.txt (first time: a few minutes; FFCV compiles)"
.venv/bin/python -m pip install -q -e ".${extras}" -c constraints.txt
echo "[setup] done: $(.venv/bin/dlth-orch --help >/dev/null && echo 'dlth-orch ready')"
