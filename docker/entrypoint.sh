#!/usr/bin/env bash
# fovea container entrypoint (docker/README.md, "Roles").
#
#   head                 Ray head + MLflow server (SQLite backend, artifacts on /workspace)
#   worker               Ray worker joining RAY_HEAD_ADDRESS (host:port)
#   job SCRIPT [ARGS..]  python $FOVEA_HOME/jobs/SCRIPT.py ARGS.. (cwd /workspace)
#   smoke                the image's self-test: imports, model store, sample data -> stage-1 dry run
#   runpod               RunPod pod start (root): sshd, then `head` (docker/runpod/start.sh)
#   anything else        executed as a command (e.g. `bash`)
#
# Started as root (RunPod target), it prepares /workspace and re-executes itself as
# $FOVEA_USER (default fovea) with setpriv: no service runs as root.
#
# Secrets (HF_TOKEN, RAY_AUTH_TOKEN, ...) arrive in the environment: this script never
# prints the environment and never traces itself (no `set -x`).
set -euo pipefail

FOVEA_HOME=${FOVEA_HOME:-/opt/fovea}
WORKSPACE=${WORKSPACE:-/workspace}
FOVEA_USER=${FOVEA_USER:-fovea}
ROLE_FILE=${FOVEA_ROLE_FILE:-/tmp/fovea-role}
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
export RAY_TMPDIR=${RAY_TMPDIR:-$WORKSPACE/ray/tmp}
export FOVEA_MODEL_STORE=${FOVEA_MODEL_STORE:-$WORKSPACE/models}
export FOVEA_ROOT=${FOVEA_ROOT:-$WORKSPACE}   # data/ and runs/ (a shared volume, or s3://bucket/prefix)

log() { echo "[fovea] $*" >&2; }

role=${1:-head}
[ $# -gt 0 ] && shift

# Folders on the volume that the roles write to.
workspace_dirs() {
  printf '%s\n' "$WORKSPACE" "$WORKSPACE/mlflow" "$WORKSPACE/mlflow/artifacts" "$RAY_TMPDIR" \
    "$FOVEA_MODEL_STORE" "$WORKSPACE/runs" "$WORKSPACE/data" "$WORKSPACE/.cache" "$WORKSPACE/.ray"
  local v
  for v in HF_HOME TORCH_HOME TRITON_CACHE_DIR PIP_CACHE_DIR UV_CACHE_DIR; do
    [ -n "${!v:-}" ] && printf '%s\n' "${!v}"
  done
  return 0
}

prepare_workspace() {
  local d
  while read -r d; do mkdir -p "$d"; done < <(workspace_dirs)
  chmod 700 "$WORKSPACE/.ray"
}

# Root -> $FOVEA_USER: own the workspace folders (a fresh RunPod volume belongs to root),
# then run this script again as that user.
drop_privileges() {
  local uid gid home d
  uid=$(id -u "$FOVEA_USER") gid=$(id -g "$FOVEA_USER")
  home=$(getent passwd "$FOVEA_USER" | cut -d: -f6)
  prepare_workspace
  while read -r d; do
    if [ "$(stat -c %u "$d")" != "$uid" ]; then chown -R "$uid:$gid" "$d"; fi
  done < <(workspace_dirs)
  exec env HOME="$home" USER="$FOVEA_USER" LOGNAME="$FOVEA_USER" \
    setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$0" "$role" "$@"
}

if [ "$(id -u)" = 0 ] && [ "$role" != runpod ] && [ "$FOVEA_USER" != root ]; then
  drop_privileges "$@"
fi

# The head's cluster token (RAY_AUTH_MODE=token): RAY_AUTH_TOKEN from the environment, or
# ~/.ray/auth_token (in the image ~/.ray -> /workspace/.ray), generated once, mode 600.
ensure_ray_token() {
  [ "$RAY_AUTH_MODE" = token ] || return 0
  [ -n "${RAY_AUTH_TOKEN:-}" ] && return 0
  local f="$HOME/.ray/auth_token"
  if [ ! -s "$f" ]; then
    mkdir -p "$(dirname "$f")"
    (umask 077 && python -c 'import secrets; print(secrets.token_hex(32), end="")' > "$f")
    log "generated the Ray cluster token in $f (copy it to ~/.ray/auth_token on your laptop)"
  fi
}

# RAY_START_ARGS: extra `ray start` flags, split on spaces (e.g. "--object-store-memory=...").
add_ray_start_args() {
  local extra=()
  [ -n "${RAY_START_ARGS:-}" ] && read -r -a extra <<< "$RAY_START_ARGS"
  args+=("${extra[@]}")
}

run_head() {
  prepare_workspace
  ensure_ray_token
  echo head > "$ROLE_FILE"
  # Jobs this head runs inherit both (README, "Where paths point"): relative paths resolve on the
  # volume, not in Ray's copy of the job's --working-dir; tracking goes to the server below.
  export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-http://127.0.0.1:${MLFLOW_PORT:-5000}}
  local args=(--head --port="${RAY_PORT:-6379}"
    --dashboard-host="${RAY_DASHBOARD_HOST:-127.0.0.1}" --dashboard-port="${RAY_DASHBOARD_PORT:-8265}"
    --temp-dir="$RAY_TMPDIR" --disable-usage-stats)
  [ -n "${RAY_NODE_IP_ADDRESS:-}" ] && args+=(--node-ip-address="$RAY_NODE_IP_ADDRESS")
  [ -n "${RAY_NUM_CPUS:-}" ] && args+=(--num-cpus="$RAY_NUM_CPUS")
  [ -n "${RAY_NUM_GPUS:-}" ] && args+=(--num-gpus="$RAY_NUM_GPUS")
  add_ray_start_args
  log "ray start ${args[*]}"
  ray start "${args[@]}"
  local mlflow_args=(server
    --backend-store-uri "sqlite:///$WORKSPACE/mlflow/mlflow.db"
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-$WORKSPACE/mlflow/artifacts}"  # or s3://bucket/prefix
    --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}"
    --workers "${MLFLOW_WORKERS:-1}")
  log "mlflow ${mlflow_args[*]}"
  mlflow "${mlflow_args[@]}" &
  local mlflow_pid=$!
  # shellcheck disable=SC2064
  trap "log 'stopping'; kill $mlflow_pid 2>/dev/null; ray stop --force >/dev/null 2>&1; exit 0" TERM INT
  log "head up: Ray dashboard ${RAY_DASHBOARD_HOST:-127.0.0.1}:${RAY_DASHBOARD_PORT:-8265}," \
      "GCS port ${RAY_PORT:-6379}, MLflow ${MLFLOW_HOST:-127.0.0.1}:${MLFLOW_PORT:-5000}"
  local rc=0
  wait "$mlflow_pid" || rc=$?
  log "mlflow server exited ($rc); stopping Ray"
  ray stop --force >/dev/null 2>&1 || true
  exit "$rc"
}

run_worker() {
  : "${RAY_HEAD_ADDRESS:?set RAY_HEAD_ADDRESS=<head host>:6379}"
  prepare_workspace
  if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "$HOME/.ray/auth_token" ]; then
    log "no Ray token: set RAY_AUTH_TOKEN (the head's ~/.ray/auth_token) or share /workspace/.ray"
    exit 2
  fi
  echo worker > "$ROLE_FILE"
  local args=(--address="$RAY_HEAD_ADDRESS" --block --disable-usage-stats)
  [ -n "${RAY_NODE_IP_ADDRESS:-}" ] && args+=(--node-ip-address="$RAY_NODE_IP_ADDRESS")
  [ -n "${RAY_NUM_CPUS:-}" ] && args+=(--num-cpus="$RAY_NUM_CPUS")
  [ -n "${RAY_NUM_GPUS:-}" ] && args+=(--num-gpus="$RAY_NUM_GPUS")
  add_ray_start_args
  log "ray start ${args[*]}"
  exec ray start "${args[@]}"
}

run_job() {
  local script=${1:-}
  if [[ ! "$script" =~ ^(bench/)?[A-Za-z0-9_]+(\.py)?$ ]]; then
    log "usage: job SCRIPT [ARGS...]  (SCRIPT: a name in $FOVEA_HOME/jobs, e.g. stage1, or bench/NAME for jobs/bench)"
    exit 2
  fi
  shift
  local path="$FOVEA_HOME/jobs/${script%.py}.py"
  [ -f "$path" ] || { log "no such job script: $path"; exit 2; }
  exec python "$path" "$@"
}

# The image's smoke command (docker/build_test.sh runs it in the built root filesystem): the
# same chain as `make demo` up to a stage-1 dry run, on the embedded sample data.
run_smoke() {
  prepare_workspace
  local jobs="$FOVEA_HOME/jobs" t0 t
  t0=$(date +%s); t=$t0
  step() { log "smoke $1 (+$(( $(date +%s) - t ))s)"; t=$(date +%s); }
  step "1: imports"
  python -c "import platform, fovea.platform, fovea.model; print('imports ok:', platform.system())"
  step "2: offline model store -> $FOVEA_MODEL_STORE"
  python -m fovea.model.store
  local missing=()
  for f in make_sample_data.py preprocess.py stage1.py; do
    [ -f "$jobs/$f" ] || missing+=("jobs/$f")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    step "done"
    log "SMOKE RESULT: PARTIAL (imports + model store); not in the image: ${missing[*]}"
    return 0
  fi
  step "3: sample data -> data/demo/raw"
  python "$jobs/make_sample_data.py" --out data/demo/raw
  step "4: preprocess webvid -> data/demo/shards/webvid"
  python "$jobs/preprocess.py" webvid --input data/demo/raw/webvid --output data/demo/shards/webvid --stage 1
  step "5: preprocess smoltalk -> data/demo/shards/smoltalk_s1 (the demo config's text shards)"
  python "$jobs/preprocess.py" smoltalk --input data/demo/raw/smoltalk --output data/demo/shards/smoltalk_s1 --stage 1
  step "6: stage 1 dry run (--config demo)"
  python "$jobs/stage1.py" --config demo --dry-run
  step "done"
  log "SMOKE RESULT: FULL CHAIN (imports, model store, sample data, preprocess webvid + smoltalk," \
      "stage1 --dry-run) in $(( $(date +%s) - t0 )) s"
}

case "$role" in
  head) run_head ;;
  worker) run_worker ;;
  job) run_job "$@" ;;
  smoke) run_smoke ;;
  runpod)
    [ "$(id -u)" = 0 ] || { log "role runpod needs root (build with --target runpod)"; exit 2; }
    exec "$FOVEA_HOME/docker/runpod/start.sh" "$@" ;;
  *) exec "$role" "$@" ;;
esac
