#!/usr/bin/env bash
# One prepared GPU check, in one go (< 8 minutes on an H100/H200): set-up, then benchmarks/gpu_check.py,
# which writes "$OUT/report.md" (default ./artifacts/gpu_check). Run from anywhere; it works in the
# repository root. Extra arguments go to gpu_check.py (e.g. --quick --device cpu for a CPU smoke run).
#
# Set-up (timed, reported separately), fastest first:
#   1. .venv/bin/python exists and imports torch and timm: use it.
#   2. the machine's python3 has torch and timm (the GPU image: torch, timm, pandas, pytest, ... and no
#      network): that python3 itself (no venv: the image's python3 is itself a venv, and a venv made
#      over it would not see its packages), the repository on PYTHONPATH, and the packages the image
#      lacks (diskcache, pyhessian, plotly) from wheels in $WHEELS (default artifacts/wheels, made on a
#      machine with a network by `pip wheel --no-deps -w artifacts/wheels diskcache==5.6.3
#      pyhessian==0.1 plotly==7.1.0 huey==3.5.4 redis==8.1.0`; carry that folder) installed into artifacts/gpu_check_deps.
#   3. otherwise: a venv with pip install -r requirements.txt -e . (needs the network; torch 2.14.1 has
#      CUDA 13 wheels), capped at $SETUP_TIMEOUT seconds (default 300).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-./artifacts/gpu_check}"
WHEELS="${WHEELS:-artifacts/wheels}"
DEPS="$PWD/artifacts/gpu_check_deps"
mkdir -p "$OUT"
export OUT
log="$OUT/setup.log"
: >"$log"
now() { date +%s.%N; }
t0=$(now)
VENV=.venv  # path 3 only; an existing .venv is never touched
[ -e "$VENV/bin/python" ] && VENV=artifacts/gpu_check_venv
PY=.venv/bin/python
note=""
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, timm" >>"$log" 2>&1; then
    note="existing .venv"
elif command -v python3 >/dev/null && python3 -c "import torch, timm" >>"$log" 2>&1; then
    PY=$(command -v python3)
    probe='import importlib.util as u; print(" ".join(m for m in ("diskcache", "pyhessian", "plotly", "huey", "redis") if u.find_spec(m) is None))'
    missing=$("$PY" -c "$probe")
    if [ -n "$missing" ] && [ -d "$WHEELS" ]; then
        pkgs=$(echo "$missing" | sed 's/pyhessian/PyHessian/')
        # shellcheck disable=SC2086
        "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$DEPS" $pkgs >>"$log" 2>&1 \
            || echo "some carried wheels did not install: $pkgs" >>"$log"
        export PYTHONPATH="$DEPS${PYTHONPATH:+:$PYTHONPATH}"
        missing=$("$PY" -c "$probe")
    fi
    note="the image's python3 ($PY; requirements.txt pins torch 2.14.1, the report gives the one used)"
    [ -n "$missing" ] && note="$note; missing: $missing (carry wheels in $WHEELS)"
else
    python3 -m venv "$VENV" >>"$log" 2>&1
    PY="$VENV/bin/python"
    if timeout "${SETUP_TIMEOUT:-300}" "$PY" -m pip install -q -r requirements.txt -e . >>"$log" 2>&1; then
        note="fresh $VENV from requirements.txt"
    else
        note="pip install -r requirements.txt failed or timed out (see setup.log)"
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
setup=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
echo "set-up: $setup s ($note)" | tee -a "$log"
export GPU_CHECK_SETUP_SECONDS="$setup" GPU_CHECK_SETUP_NOTE="$note"
# gpu_check.py guards every section with its own time cap; the outer timeout only catches a hang.
timeout "${CHECK_TIMEOUT:-450}" "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
rc=$?
[ $rc -eq 124 ] && echo "gpu_check.py hit the outer timeout; the report holds the sections done" | tee -a "$log"
echo "report: $OUT/report.md"
exit $rc
