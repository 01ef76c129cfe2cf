#!/usr/bin/env bash
# RunPod pod start (image target `runpod`, entrypoint role `runpod`; runs as root).
#
#   1. sshd for the SSH tunnel: RunPod puts the account's SSH public key(s) in PUBLIC_KEY.
#      Key-only login (no passwords); host keys are generated per container, not baked.
#   2. ~/.ray of root -> /workspace/.ray, so `ray` CLI calls over SSH find the cluster token.
#   3. GPUs are listed, then docker/entrypoint.sh runs $FOVEA_ROLE (default head) and drops to
#      the non-root user `fovea`: Ray head + MLflow, both on 127.0.0.1 (reach them via the tunnel).
#
# Secrets: HF_TOKEN comes from a RunPod secret ({{ RUNPOD_SECRET_hf_token }} in the pod's env);
# it is never written to disk or printed here. Storage (docker/README.md, Storage): FOVEA_ROOT and
# the AWS_* settings of the pod's env reach the head and its jobs; only whether keys are set is shown.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "start.sh: must run as root (build with --target runpod)" >&2; exit 2; }
log() { echo "[runpod] $*" >&2; }

if [ -n "${PUBLIC_KEY:-}" ]; then
  install -d -m 700 /root/.ssh
  touch /root/.ssh/authorized_keys
  while IFS= read -r key; do
    [ -n "$key" ] && ! grep -qxF "$key" /root/.ssh/authorized_keys && printf '%s\n' "$key" >> /root/.ssh/authorized_keys
  done <<< "$PUBLIC_KEY"
  chmod 600 /root/.ssh/authorized_keys
  ssh-keygen -A >/dev/null
  install -d -m 755 /run/sshd
  /usr/sbin/sshd -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
    -o PermitRootLogin=prohibit-password -o AllowTcpForwarding=local -o X11Forwarding=no
  log "sshd listening on 22 (key login only)"
else
  log "PUBLIC_KEY is empty: no sshd (add an SSH key to your RunPod account settings)"
fi

mkdir -p "${WORKSPACE:-/workspace}/.ray"
[ -e /root/.ray ] || ln -s "${WORKSPACE:-/workspace}/.ray" /root/.ray

if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L || true; fi
if [ -n "${HF_TOKEN:-}" ]; then log "HF_TOKEN is set (value not shown)"; else log "HF_TOKEN is not set: gated models will not download"; fi
log "storage: FOVEA_ROOT=${FOVEA_ROOT:-/workspace} AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-(unset)} AWS keys $([ -n "${AWS_ACCESS_KEY_ID:-}" ] && echo set || echo unset)"

exec /opt/fovea/docker/entrypoint.sh "${FOVEA_ROLE:-head}" "$@"
