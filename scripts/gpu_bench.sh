#!/usr/bin/env bash
# One device call: throughput benchmark (issue 9) = stage-1 135M on 1 and 2 GPUs (issue 5).
set -eo pipefail
t0=$(date +%s)
source scripts/gpu_env.sh
nvidia-smi -L; python3 -c "import torch, transformers, ray; print(torch.__version__, transformers.__version__, ray.__version__)"
echo "setup $(( $(date +%s) - t0 ))s"
python3 jobs/make_bench_shards.py --out /tmp/bench/ref --samples ${SAMPLES:-3000} --workers 16 2>&1 | tail -1
python3 jobs/make_bench_shards.py --out /tmp/bench/64 --samples ${SAMPLES64:-160} --per-shard 40 --dist 64 --workers 8 2>&1 | tail -1
echo "shards $(( $(date +%s) - t0 ))s"
python3 jobs/bench_train.py --shards '/tmp/bench/ref/train-*.tar' --shards64 '/tmp/bench/64/train-*.tar' \
  --gpus 1,2 --steps ${STEPS:-100} --batch ${BATCH:-16} --loader-workers ${LW:-6} ${NAIVE:---naive} \
  --runs /tmp/runs --out "$OUT/bench_train.json" "$@" 2>&1 | grep -v "Failed to query Ray Train Controller\|PlacementGroupCleaner\|^\s*$" | tail -${TAILN:-60}
echo "total $(( $(date +%s) - t0 ))s"
