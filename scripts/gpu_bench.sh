#!/usr/bin/env bash
# One device call (nvidia-h100-x2): the stage-1 throughput benchmark (jobs/bench/bench_train.py):
# the 1-GPU matrix, then jobs/stage1.py (135M config) on 1 and on 2 GPUs. Carry .devbundle and
# .gpuassets (scripts/gpu_env.sh). Streams to $OUT/bench.log; results in $OUT/bench_train.json.
set -uo pipefail
t0=$(date +%s)
source scripts/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/bench.log") 2>&1
nvidia-smi -L; nproc
python3 -c "import torch, transformers, ray; print(torch.__version__, transformers.__version__, ray.__version__)"
echo "setup $(( $(date +%s) - t0 ))s"
ref_shards "${SAMPLES:-}" 4000 && tail -1 /tmp/bench/shards.log  # scripts/gpu_env.sh: SAMPLES unset keeps a set there
[ -d /tmp/bench/64 ] || python3 jobs/bench/make_bench_shards.py --out /tmp/bench/64 --samples ${SAMPLES64:-200} --per-shard 25 --dist 64 --workers 8 2>&1 | tail -1
echo "shards $(( $(date +%s) - t0 ))s"
timeout ${BENCH_TIMEOUT:-480} python3 -u jobs/bench/bench_train.py --shards '/tmp/bench/ref/train-*.tar' \
  --shards64 '/tmp/bench/64/train-*.tar' ${MATRIX:---matrix} --matrix-steps ${MSTEPS:-15} --gpus ${GPUS:-1,2} \
  --steps ${STEPS:-200} --steps64 ${STEPS64:-40} --batch ${BATCH:-64} --frames-per-batch ${FPB:-768} \
  --loader-workers ${LW:-8} --compile ${COMPILE:-auto} --runs /tmp/runs --out "$OUT/bench_train.json" \
  --log "$OUT/stage1_jobs.log" "$@" 2>&1 | grep --line-buffered -v "Failed to query Ray Train Controller\|PlacementGroupCleaner\|^\s*$"
grep -h "step [0-9]*/" "$OUT/stage1_jobs.log" | tail -12
echo "total $(( $(date +%s) - t0 ))s"
