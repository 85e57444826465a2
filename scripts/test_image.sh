#!/usr/bin/env bash
# Builds the image and checks it as a team would use it (a separate step from the test suite: a
# build downloads PyTorch, several minutes).
#   bash ../shared/tools/oci-env.sh        # here: podman and a local Debian base (no registry)
#   bash scripts/test_image.sh             # BASE=..., ENGINE=podman|docker, PORT=...
# Checks: the image builds; health answers; a small analysis runs inside as uid 1000 and its Result
# is in the cache volume; it survives removing and re-creating the container; the checkpoint root is
# laid out as in docker-compose.yml (a writable volume, the team's folder mounted read-only inside it
# at team/): team/ stays read-only, an upload (uploads/<user>/) is written as uid 1000 and a worker
# container on the same volumes lists both; `stop` with a job running ends within docker's 10 s grace.
# Prints a table (build time, size, time to health, stop time) for README.
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE="${ENGINE:-$(command -v podman || command -v docker)}"
BASE="${BASE:-localhost/debian:bookworm}"
TAG="${TAG:-vitlens:test}"
PORT="${PORT:-18501}"
NAME=vitlens-image-test
VOLUME=vitlens-image-test-cache
CKPT=vitlens-image-test-checkpoints
work="$(mktemp -d)"
mkdir -p "$work/checkpoints" "$work/datasets"
echo "not really weights" >"$work/checkpoints/team_epoch_001.safetensors"
cleanup() { "$ENGINE" rm -f "$NAME" "$NAME-worker" >/dev/null 2>&1 || true; "$ENGINE" volume rm -f "$VOLUME" "$CKPT" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
now() { date +%s.%N; }
fail() { echo "test_image: FAIL: $*" >&2; exit 1; }

format=(); [[ "$ENGINE" == *podman ]] && format=(--format docker)  # podman keeps HEALTHCHECK only so
t0=$(now)
"$ENGINE" build "${format[@]}" --build-arg BASE="$BASE" -t "$TAG" . >"$work/build.log" 2>&1 || { tail -20 "$work/build.log"; fail "build"; }
build_s=$(echo "$(now) - $t0" | bc)
size=$("$ENGINE" image inspect "$TAG" --format '{{.Size}}')
"$ENGINE" image inspect "$TAG" --format '{{json .Config.Healthcheck}}' | grep -q _stcore/health || fail "no HEALTHCHECK in the image"

start() {
  "$ENGINE" run -d --name "$NAME" -p "127.0.0.1:$PORT:8501" -e VITLENS_DEVICE=cpu -e VITLENS_EMBEDDED_WORKERS=0 \
    -v "$VOLUME:/data/cache" -v "$CKPT:/data/checkpoints" -v "$work/checkpoints:/data/checkpoints/team:ro" \
    -v "$work/datasets:/data/datasets:ro" "$TAG" >/dev/null 2>&1
  local t=$(now)
  for _ in $(seq 1 240); do
    curl -fsS "http://127.0.0.1:$PORT/_stcore/health" >/dev/null 2>&1 && { echo "$(now) - $t" | bc; return; }
    sleep 0.5
  done
  "$ENGINE" logs "$NAME" | tail -20; fail "no health after 120 s"
}
vl() { "$ENGINE" exec "$NAME" /app/.venv/bin/vitlens "$@"; }

health_s=$(start)
[ "$("$ENGINE" exec "$NAME" id -u)" = 1000 ] || fail "the app does not run as uid 1000"
vl run variance --model demo_resnet --samples 32 --device cpu 2>&1 | grep -q "computed" || fail "variance did not compute"
vl cache ls | grep -q variance || fail "the Result is not in the cache volume"
"$ENGINE" exec "$NAME" sh -c 'touch /data/checkpoints/team/x' 2>/dev/null && fail "the team's checkpoint mount is writable"
"$ENGINE" exec "$NAME" sh -c 'mkdir -p /data/checkpoints/uploads/u1 && echo x >/data/checkpoints/uploads/u1/mine.safetensors' \
  || fail "uploads cannot be written into the checkpoint volume"
"$ENGINE" rm -f "$NAME" >/dev/null
start >/dev/null
vl run variance --model demo_resnet --samples 32 --device cpu 2>&1 | grep -q "from cache" || fail "the Result did not survive re-creating the container"
# a worker container (as the compose `worker` service) running a job, then stop both
"$ENGINE" run -d --name "$NAME-worker" -e VITLENS_DEVICE=cpu -v "$VOLUME:/data/cache" -v "$CKPT:/data/checkpoints" \
  -v "$work/checkpoints:/data/checkpoints/team:ro" "$TAG" /app/.venv/bin/vitlens worker >/dev/null
listed=$("$ENGINE" exec "$NAME-worker" /app/.venv/bin/python -c "from vitlens.store.paths import list_checkpoints; print(list_checkpoints())")
[[ "$listed" == *"team/team_epoch_001.safetensors"* && "$listed" == *"uploads/u1/mine.safetensors"* ]] \
  || fail "the worker does not see the team's checkpoints and the uploads: $listed"
"$ENGINE" exec "$NAME" /app/.venv/bin/python -c "
import sys, time
from vitlens.engine import JobSpec
from vitlens.jobs import JobManager
jobs = JobManager(embedded_workers=0)
job = jobs.submit(JobSpec(analysis='landscape', model='demo_vit', samples=256, device='cpu', params={'grid': 41}))
end = time.time() + 120
while time.time() < end and jobs.get(job.id).state != 'running':
    time.sleep(0.5)
sys.exit(0 if jobs.get(job.id).state == 'running' else 1)" || fail "the worker did not start the job"
t=$(now)
"$ENGINE" stop -t 10 "$NAME-worker" >/dev/null
worker_stop_s=$(echo "$(now) - $t" | bc)
"$ENGINE" exec "$NAME" /app/.venv/bin/python -c "
import sys
from vitlens.jobs import JobManager
sys.exit(0 if [j.state for j in JobManager(embedded_workers=0).jobs()][0] == 'queued' else 1)" \
  || fail "the stopped worker's job did not go back to the queue"
t=$(now)
"$ENGINE" stop -t 10 "$NAME" >/dev/null
stop_s=$(echo "$(now) - $t" | bc)
"$ENGINE" rm -f "$NAME-worker" >/dev/null
(( $(echo "$worker_stop_s < 10" | bc) )) || fail "the worker took ${worker_stop_s}s to stop (docker's grace is 10 s)"
(( $(echo "$stop_s < 10" | bc) )) || fail "the dashboard took ${stop_s}s to stop"

printf '| build | image size | time to health | worker stop, job running | dashboard stop |\n|---|---|---|---|---|\n'
printf '| %.0f s | %.2f GB | %.1f s | %.1f s | %.1f s |\n' "$build_s" "$(echo "$size / 1000000000" | bc -l)" \
  "$health_s" "$worker_stop_s" "$stop_s"
