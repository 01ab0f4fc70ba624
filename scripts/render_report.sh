#!/usr/bin/env bash
# Screenshot a report.html in a real headless browser (Debian's chromium), to check how it looks.
#   scripts/render_report.sh REPORT_HTML [OUT_PNG] [WIDTHxHEIGHT]
# Installs chromium (apt) when it is missing and we are root. Writes OUT_PNG (default /tmp/report.png).
set -euo pipefail
html=${1:?usage: scripts/render_report.sh REPORT_HTML [OUT_PNG] [WIDTHxHEIGHT]}
out=${2:-/tmp/report.png}
size=${3:-1200x1600}
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y --no-install-recommends chromium >/dev/null
  else
    echo "render_report: chromium is not installed (apt-get install -y --no-install-recommends chromium)" >&2
    exit 2
  fi
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --virtual-time-budget=5000 --user-data-dir="$profile" --screenshot="$out" --window-size="${size/x/,}" \
  "file://$(realpath "$html")" >/dev/null 2>&1
test -s "$out"
echo "$out"
