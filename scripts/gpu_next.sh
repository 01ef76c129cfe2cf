#!/usr/bin/env bash
# The GPU runs still owed (issues 5, 6, 9, 10), one section per device call on nvidia-h100-x2.
# Carry .devbundle and .gpuassets (see scripts/gpu_env.sh). Everything streams to $OUT/<section>.log
# as it runs, so a timeout still returns what was measured (a `| tail` would print nothing).
#   bash scripts/gpu_next.sh stage1      # issue 5: stage-1 135M, 300 steps on 1 and on 2 GPUs
#   bash scripts/gpu_next.sh sweep       # issue 6: baseline vs A6, 1 GPU each, side by side
#   bash scripts/gpu_next.sh foveation   # issue 10: the check, then with BUG-001+002 reintroduced
# Issue 9's benchmark: scripts/gpu_bench.sh.
set -uo pipefail
section=${1:?stage1|sweep|foveation}
source scripts/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
log="$OUT/$section.log"
quiet='Controller actor state|PlacementGroupCleaner|Reporting training result'
[ -d /tmp/bench/ref ] || python3 jobs/make_bench_shards.py --out /tmp/bench/ref --samples 3000 --workers 16 >>"$log" 2>&1
case "$section" in
  stage1)
    for g in 1 2; do
      timeout 270 python3 -u jobs/stage1.py --config stage1_135m name=gpu-stage1-${g}gpu runs_dir=/tmp/runs \
        "data.train_shards=['/tmp/bench/ref/train-*.tar']" "data.val_shards=[]" "data.text_shards=[]" \
        data.text_ratio=0 data.batch_size=16 data.num_workers=6 training.grad_accum=1 training.max_steps=300 \
        training.log_every=25 training.checkpoint_every=150 eval.every_steps=0 cluster.num_workers=$g \
        cluster.cpus_per_worker=4 2>&1 | grep --line-buffered -vE "$quiet" >>"$log"
    done
    grep -h "samples_per_s" /tmp/runs/ray/gpu-stage1-*/metrics.jsonl | tail -4 >>"$log" ;;
  sweep)
    timeout 560 python3 -u jobs/sweep.py --space ablations --only baseline,A6 --base-config stage1_135m \
      --gpus-per-trial 1 --name a6-vs-baseline --set runs_dir=/tmp/runs --set training.max_steps=200 \
      --set "data.train_shards=['/tmp/bench/ref/train-*.tar']" --set "data.val_shards=[]" \
      --set "data.text_shards=[]" --set data.text_ratio=0 2>&1 | grep --line-buffered -vE "$quiet" >>"$log" ;;
  foveation)
    timeout 560 python3 -u jobs/foveation_check.py --preset gpu --random-llm-from .gpuassets/smollm2 \
      --runs-dir /tmp/runs --out "$OUT/fov" --max-minutes 8.5 ${BUG:+--bug $BUG} 2>&1 \
      | grep --line-buffered -vE "$quiet" >>"$log" ;;
  *) echo "unknown section $section" >&2; exit 2 ;;
esac
tail -60 "$log"
