#!/usr/bin/env bash
# make docker-test: a real build of docker/Dockerfile, then the image's smoke command run
# inside the built image's root filesystem. No registry and no `podman run` needed:
#
#   0. resolve  the CUDA flavour's dependency set (default TORCH_SPEC + the lock, Python 3.12,
#               manylinux wheels) resolves on PyPI: the GPU image cannot be built here
#   1. base     debootstrap a Debian 12 rootfs (python3, venv, pip, Java, tini, sshd) and
#               `podman import` it as $BASE_TAG (cached: reused while `podman image exists`)
#   2. build    podman build --isolation chroot --format docker (HEALTHCHECK needs the docker
#               format) with BASE_IMAGE=$BASE_TAG, a CPU TORCH_SPEC, TORCH_INDEX_URL empty and
#               the local torch wheel folder ($PIP_FIND_LINKS) as the `wheels` build context;
#               then the `runpod` target (same layers + USER 0)
#   3. smoke    podman create + podman mount (a writable container root), /proc /dev /sys bind
#               mounts, a fresh host folder as /workspace, and then the image's own ENTRYPOINT
#               with the role `smoke`, run with chroot as the image's USER (uid from .Config.User)
#               and exactly the image's ENV (env -i) and WORKDIR.
#
# Needs root (debootstrap, mount, chroot) and podman + debootstrap (installed with apt if absent).
# Environment: FOVEA_TEST_BASE (image tag), FOVEA_TEST_IMAGE, FOVEA_TEST_TORCH_SPEC,
# FOVEA_TEST_WHEELS (folder with the CPU torch wheel; default $PIP_FIND_LINKS),
# FOVEA_TEST_CA_BUNDLE (build secret ca_bundle; default $PIP_CERT or the system bundle),
# DEBIAN_MIRROR (default: the first Debian URI in /etc/apt/sources.list*), KEEP_SMOKE_WORKSPACE=1.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_TAG=${FOVEA_TEST_BASE:-localhost/fovea-base:bookworm}
IMAGE=${FOVEA_TEST_IMAGE:-localhost/fovea:cpu-test}
TORCH_SPEC=${FOVEA_TEST_TORCH_SPEC:-torch==2.13.0}
WHEELS=${FOVEA_TEST_WHEELS:-${PIP_FIND_LINKS:-}}
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,python3-pip,ca-certificates,default-jre-headless,tini,openssh-server

log() { echo "[docker-test] $*"; }
now() { date +%s.%N; }
declare -A T
phase() { T[$1]=$(awk -v a="$2" -v b="$(now)" 'BEGIN{printf "%.1f s", b-a}'); log "phase $1: ${T[$1]}"; }
t_all=$(now)

[ "$(id -u)" = 0 ] || { log "needs root (debootstrap, mount, chroot)"; exit 1; }
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- 0. CUDA flavour resolves
# The GPU image itself cannot be built here (no registry for nvidia/cuda), so check that its
# dependency set resolves: the Dockerfile's default TORCH_SPEC + docker/requirements.lock on the
# CUDA base's Python (Ubuntu 24.04: 3.12), manylinux x86_64, binary wheels only, from PyPI
# (whose linux torch wheels are the CUDA builds).
T[cuda-resolve]="skipped"
cuda_torch=$(sed -nE 's/^ARG TORCH_SPEC="?([^"]+)"?$/\1/p' docker/Dockerfile)
if [ -x .venv/bin/uv ] && [ "${FOVEA_TEST_CUDA_RESOLVE:-1}" = 1 ]; then
  t=$(now)
  req=$(mktemp); echo "$cuda_torch" > "$req"
  if out=$(.venv/bin/uv pip compile "$req" docker/requirements.lock --python-version "${FOVEA_TEST_CUDA_PYTHON:-3.12}" \
      --python-platform x86_64-manylinux_2_28 --only-binary :all: --no-header --no-annotate -q 2>&1); then
    log "CUDA flavour resolves: $cuda_torch + requirements.lock on Python ${FOVEA_TEST_CUDA_PYTHON:-3.12}" \
        "($(grep -cE '^[a-z0-9]' <<< "$out") packages; $(grep -E '^(triton|nvidia-nccl[a-z0-9-]*)==' <<< "$out" | tr '\n' ' '))"
  else
    echo "$out" | tail -20; log "CUDA flavour does NOT resolve"; rm -f "$req"; exit 1
  fi
  rm -f "$req"
  phase cuda-resolve "$t"
fi

# ---------------------------------------------------------------- 1. base image
T[debootstrap]="cached"; T[import]="cached"
if podman image exists "$BASE_TAG"; then
  log "base $BASE_TAG exists: reused (podman rmi $BASE_TAG to rebuild it)"
else
  mirror=${DEBIAN_MIRROR:-$( { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -1 | tr -d ' ')}
  mirror=${mirror:-http://deb.debian.org/debian}
  mirror=${mirror%/}
  rootfs=$(mktemp -d /var/tmp/fovea-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap $SUITE from $mirror (+ $BASE_PACKAGES)"
  t=$(now)
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$mirror" > /var/tmp/fovea-debootstrap.log 2>&1 \
    || { tail -20 /var/tmp/fovea-debootstrap.log; exit 1; }
  rm -f /var/tmp/fovea-debootstrap.log
  cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb ${mirror}-security $SUITE-security main
EOF
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/tmp/* "$rootfs"/etc/ssh/ssh_host_*
  : > "$rootfs/etc/resolv.conf"
  phase debootstrap "$t"
  t=$(now)
  tar -C "$rootfs" --numeric-owner -c . \
    | podman import --change 'CMD ["/bin/bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE_TAG" >/dev/null
  rm -rf "$rootfs"; trap - EXIT
  phase import "$t"
fi

# ---------------------------------------------------------------- 2. image build
build_args=(--isolation chroot --format docker --layers -f docker/Dockerfile
  --build-arg BASE_IMAGE="$BASE_TAG" --build-arg TORCH_SPEC="$TORCH_SPEC" --build-arg TORCH_INDEX_URL=)
if [ -n "$WHEELS" ] && [ -d "$WHEELS" ]; then
  build_args+=(--build-context wheels="$WHEELS")
  log "local wheels: $WHEELS ($(find "$WHEELS" -maxdepth 1 -name 'torch-*.whl' -printf '%f ' 2>/dev/null))"
else
  log "no local wheel folder (PIP_FIND_LINKS unset): $TORCH_SPEC comes from PyPI"
fi
# The host's CA bundle as a build secret (TLS-intercepting proxies; not stored in the image).
CA_BUNDLE=${FOVEA_TEST_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
if [ -s "$CA_BUNDLE" ]; then build_args+=(--secret "id=ca_bundle,src=$CA_BUNDLE"); fi
t=$(now)
log "podman build --target app -> $IMAGE"
podman build "${build_args[@]}" --target app -t "$IMAGE" . 2>&1 | sed -u 's/^/  | /'
log "podman build --target runpod -> $IMAGE-runpod"
podman build "${build_args[@]}" --target runpod -t "$IMAGE-runpod" . 2>&1 | tail -3 | sed -u 's/^/  | /'
phase build "$t"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "image $IMAGE: $(( size / 1024 / 1024 )) MiB"

# ---------------------------------------------------------------- 3. smoke in the rootfs
t=$(now)
ctr=$(podman create --no-healthcheck --name "fovea-smoke-$$" "$IMAGE" smoke)
root=$(podman mount "$ctr")
ws=$(mktemp -d /var/tmp/fovea-smoke-ws.XXXXXX)
logs=$(mktemp -d /var/tmp/fovea-smoke-logs.XXXXXX)
cleanup() {
  set +e
  # processes left in the chroot (e.g. Ray started by a job): only those rooted in $root
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  sleep 1
  for m in workspace sys dev proc; do
    mountpoint -q "$root/$m" && umount -R -l "$root/$m"
  done
  podman umount "$ctr" >/dev/null; podman rm -f "$ctr" >/dev/null
  rm -rf "$logs"
  if [ "${KEEP_SMOKE_WORKSPACE:-0}" = 1 ]; then log "smoke workspace kept: $ws"; else rm -rf "$ws"; fi
}
trap cleanup EXIT

user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
workdir=$(podman image inspect --format '{{.Config.WorkingDir}}' "$IMAGE")
mapfile -t entry < <(podman image inspect --format '{{range .Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
mapfile -t envs < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
uid=${user%%:*}; uid=${uid:-0}
if ! [[ $uid =~ ^[0-9]+$ ]]; then uid=$(chroot "$root" id -u "$uid"); fi
gid=$(chroot "$root" getent passwd "$uid" | cut -d: -f4)
home=$(chroot "$root" getent passwd "$uid" | cut -d: -f6)
chown "$uid:$gid" "$ws"
mount --bind "$ws" "$root/workspace"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
log "smoke: chroot $root as uid $uid, cwd $workdir, /workspace = $ws (offline: HF_HUB_OFFLINE=1)"
log "smoke: ${entry[*]} smoke"
# A command in the image as its user, with its ENV, WORKDIR and extra VAR=value pairs from $xenv.
xenv=(HF_HUB_OFFLINE=1 TINI_SUBREAPER=1)
in_image() {
  chroot --userspec="$uid:$gid" "$root" /usr/bin/env -i "${envs[@]}" HOME="$home" "${xenv[@]}" \
    /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$workdir" "$@"
}
smoke_log=$logs/smoke.log
set +e
in_image "${entry[@]}" smoke 2>&1 | sed -u 's/^/  | /' | tee "$smoke_log"
rc=${PIPESTATUS[0]}
set -e
phase smoke "$t"
result=$(grep -o 'SMOKE RESULT: .*' "$smoke_log" | tail -1 | sed 's/ in [0-9]* s$//')

# Started as root (the runpod target), the entrypoint must hand over to the non-root user.
who=$(chroot "$root" /usr/bin/env -i "${envs[@]}" HOME=/root "${entry[@]}" id -un 2>/dev/null | tail -1)
log "root start -> entrypoint runs commands as: ${who:-?}"
[ "$who" = fovea ] || { log "FAILED: the entrypoint did not drop root privileges"; rc=1; }
# No secret-named variable in the image's configuration (the Dockerfile is linted for it too).
if printf '%s\n' "${envs[@]}" | grep -qiE '^[A-Z_]*(TOKEN|SECRET|PASSW|API_?KEY)[A-Z_]*='; then
  log "FAILED: secret-named ENV in the image"; rc=1
fi

# ---------------------------------------------------------------- 4. head role + HEALTHCHECK
# The `head` role in the same root filesystem (Ray head + MLflow, ports moved off the defaults
# so a cluster on this host is not disturbed), the image's own HEALTHCHECK command until healthy,
# a `ray job submit` from the host with the token the head generated, then SIGTERM.
T[head]="skipped"; head_result="skipped (FOVEA_TEST_HEAD=0)"
if [ "$rc" = 0 ] && [ "${FOVEA_TEST_HEAD:-1}" = 1 ]; then
  t=$(now)
  mapfile -t hc < <(podman image inspect --format '{{range .Config.Healthcheck.Test}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
  [ "${hc[0]:-}" = CMD ] || { log "image has no HEALTHCHECK CMD (built without --format docker?)"; exit 1; }
  hc=("${hc[@]:1}")
  xenv=(TINI_SUBREAPER=1 RAY_PORT=46379 RAY_DASHBOARD_PORT=48265 MLFLOW_PORT=45000 RAY_NUM_CPUS=1
    "RAY_START_ARGS=--ray-client-server-port=40001 --dashboard-agent-listen-port=42365 --dashboard-agent-grpc-port=42366 --metrics-export-port=42367 --runtime-env-agent-port=42368 --node-manager-port=42369 --object-manager-port=42370")
  head_log=$logs/head.log
  in_image "${entry[@]}" head > "$head_log" 2>&1 &
  head_pid=$!
  healthy=0
  for _ in $(seq 1 60); do
    if in_image "${hc[@]}" 2>/dev/null; then healthy=1; break; fi
    kill -0 "$head_pid" 2>/dev/null || break
    sleep 2
  done
  head_result="HEALTHCHECK never passed"
  if [ "$healthy" = 1 ]; then
    head_result="healthy ($(awk -v a="$t" -v b="$(now)" 'BEGIN{printf "%.0f", b-a}') s)"
    if [ -x .venv/bin/ray ]; then
      job_out=$(RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$(cat "$ws/.ray/auth_token")" timeout 180 \
        .venv/bin/ray job submit --address http://127.0.0.1:48265 -- \
        python -c "import fovea.platform.config, torch, ray; ray.init(); print('JOB-IN-IMAGE ok torch', torch.__version__)" 2>&1) || true
      if grep -q "JOB-IN-IMAGE ok" <<< "$job_out"; then head_result+=", ray job submit ok"
      else head_result+=", ray job submit FAILED"; echo "$job_out" | tail -15 | sed 's/^/  | /'; fi
    fi
  fi
  kill -TERM "$head_pid" 2>/dev/null
  for _ in $(seq 1 30); do kill -0 "$head_pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$head_pid" 2>/dev/null; then head_result+=", did not stop on SIGTERM"; else head_result+=", stopped on SIGTERM"; fi
  grep -E '^\[fovea\]|ERROR|Error' "$head_log" | head -20 | sed 's/^/  | /'
  phase head "$t"
  if [[ "$head_result" != healthy*"stopped on SIGTERM" || "$head_result" == *FAILED* ]]; then rc=1; fi
fi

log "---------------------------------------------------------------------"
log "wall time: cuda-resolve ${T[cuda-resolve]} | debootstrap ${T[debootstrap]} | import ${T[import]} | build ${T[build]} | smoke ${T[smoke]} | head ${T[head]}"
log "total $(awk -v a="$t_all" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') s; image $IMAGE ($(( size / 1024 / 1024 )) MiB)"
log "smoke (uid $uid): ${result:-no result line}"
log "head role: $head_result"
[ "$rc" = 0 ] && [ -n "$result" ] || { log "FAILED"; exit 1; }
log "OK"
