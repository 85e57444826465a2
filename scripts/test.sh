#!/usr/bin/env bash
# README's test command: all the set-up on a fresh Debian/Ubuntu machine, then the whole suite.
#   bash scripts/test.sh [pytest args]
# Creates .venv, installs requirements (the same pip line as the dashboard command and the
# Dockerfile), installs Debian's chromium for the browser test when it is missing and this user may
# (root, or password-less sudo), and runs pytest. Without a browser the browser test is skipped with
# one line saying how to get it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -r requirements.txt -e .
.venv/bin/pip install -r requirements-test.txt
if [ ! -x "${VITLENS_CHROMIUM:-/usr/bin/chromium}" ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true
  fi
fi
[ -x "${VITLENS_CHROMIUM:-/usr/bin/chromium}" ] || echo "scripts/test.sh: no chromium, the browser test will be skipped (sudo apt-get install chromium)"
exec .venv/bin/python -m pytest -q "$@"
