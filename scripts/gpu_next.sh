#!/usr/bin/env bash
# The GPU runs beyond the throughput benchmark (scripts/gpu_bench.sh), for
# nvidia-h100-x2 (or h200-x2). Carry .devbundle and .gpuassets (scripts/gpu_env.sh). Every
# section streams to $OUT/<section>.log as it runs, so a timeout still returns what was measured.
#   bash scripts/gpu_next.sh profile stage1x2 sweep     # sections run in the order given
#   bash scripts/gpu_next.sh foveation foveation-bug
#     matrix         the 1-GPU side-by-side entries named in $PATHS (default: compiled b64..b256)
#     profile        where a compiled batch-64 step spends its time (1 GPU)
#     bench12        jobs/stage1.py on 2 and on 1 GPU (GPUS=2,1; COMPILE=on|off, BATCH, FRAMES, CKPT=1,
#                    READERS: loader workers of all GPUs together (16: 1 GPU x 16, 2 x 8), BENCH_ARGS="data.llm_tokens_per_frame=64" and other config overrides;
#                    RUNS: a runs folder of its own for each variant, or a same-named run resumes;
#                    "training.profile_steps=[60,64]" in BENCH_ARGS: each rank's op profile comes back too;
#                    top.txt: a CPU snapshot TOP_AT s in (0: none); NCCL_DEBUG=INFO: NCCL's transport lines in the log;
#                    TAG: a prefix for the files it brings back; TRACES=1: rank 0's Chrome traces too)
#     allreduce      all-reduce bus bandwidth (fp32, bf16; NCCL defaults, P2P_LEVEL=SYS, PROTO=Simple)
#     gc             Python's collection pauses in a training process, before/after gc.freeze (jobs/bench/bench_gc.py)
#     host           host launch speed of one process alone, two together, two pinned (jobs/bench/bench_host.py)
#     pair           the compiled 3072-unit training step in one process on GPU 0 alone, then one process
#                    on each GPU at once (no DDP): does a second training process slow a rank by itself?
#     stage1x2       jobs/stage1.py on 2 GPUs (benchmark settings, compiled)
#     sweep          baseline vs A6, 1 GPU each, side by side
#     foveation      the foveation check, jobs/foveation_check.py (arms in parallel on the 2 GPUs)
#     foveation-bug  the same with BUG-001 + BUG-002 reintroduced (shorter)
#     foveation-matrix  the check over its task variants and controls (--matrix), clean and with
#                    BUG-001 + BUG-002 (MATRIX_BUGS), FOV_PRESET default gpu-tiny-standin: the
#                    DINOv2-small stand-in is built first (its build log and STANDIN.json come back).
#                    A 600 s call holds the install (~30 s), the stand-in (~92 s, once a machine)
#                    and one wave of 5-6 rows (a row 170-260 s with 6 sharing the card). The
#                    whole matrix in three calls sent one right after the other (a machine idle
#                    30 s is given back; while warm, the stand-in and the MLflow store stay in /tmp):
#                      MATRIX_BUGS=none FOV_ARGS="--variants fixed-colours-0d-plain,random-colours,fixed-colours-3d-seq,control-random-backbone,control-time-shuffled --controls-on circle-colours-noise --matrix-parallel 5 cluster.cpus_per_worker=1"
#                      MATRIX_BUGS=none FOV_ARGS="--variants fixed-colours,fixed-colours-2d,fixed-shapes,fixed-digits,line-colours,circle-colours-noise --no-controls --matrix-parallel 6 cluster.cpus_per_worker=1"
#                      FOV_TIMEOUT=420 MATRIX_BUGS=both FOV_ARGS="--variants random-colours,circle-colours-noise,fixed-colours-0d-plain,fixed-colours,line-colours,fixed-shapes --no-controls --matrix-parallel 6 cluster.cpus_per_worker=1"
#                    then here: python jobs/foveation_check.py --merge-matrices A/matrix/matrix.json,B/...,C/...
#                    Each row lands in MLflow as it ends.
set -uo pipefail
script_t0=$(date +%s)
source scripts/gpu_env.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
quiet='Controller actor state|PlacementGroupCleaner|Reporting training result|Failed to query Ray Train|Loading weights'
# Bench shards (sections that train stage 1) once per machine; 100 a shard, so that every loader
# worker of 2 ranks x 8 workers reads its own shards (fewer shards than readers: each reader
# reads them all and keeps every k-th sample). SAMPLES=N: exactly N (made anew if the set there
# holds another count); unset: the set there, or 2000 samples (ref_shards, scripts/gpu_env.sh).
bench_shards() { ref_shards "${SAMPLES:-}" 2000; }
data="data.train_shards=['/tmp/bench/ref/train-*.tar']"
for section in "$@"; do
  log="$OUT/$section.log"; t0=$(date +%s)
  case "$section" in matrix|profile|bench12|stage1x2|sweep|gc|pair) bench_shards ;; esac
  case "$section" in
    matrix)
      timeout ${MATRIX_TIMEOUT:-200} python3 -u jobs/bench/bench_train.py --shards '/tmp/bench/ref/train-*.tar' --matrix \
        --paths ${PATHS:-compiled-b64,compiled-b128,compiled-b128-ckpt,compiled-b256-ckpt} --matrix-steps ${MATRIX_STEPS:-20} --gpus '' --batch 64 --frames-per-batch 768 \
        --out "$OUT/matrix.json" 2>&1 | grep --line-buffered -vE "$quiet" >>"$log" ;;
    profile)
      timeout ${PROFILE_TIMEOUT:-150} python3 jobs/bench/profile_train_step.py --shards '/tmp/bench/ref/train-*.tar' \
        --batch ${BATCH:-64} --frames-per-batch ${FRAMES:-768} --compile --out "$OUT/profile.txt" \
        $( [ "${CKPT:-0}" = 1 ] && echo model.gradient_checkpointing=dino ) 2>&1 | grep --line-buffered -vE "$quiet" >>"$log" ;;
    bench12)
      { nproc; lscpu | grep -E "^(Model name|Thread|Core|Socket)"; } >>"$log" 2>&1
      # what the CPUs do during the first run (after its compilation): per-process CPU shares
      [ "${TOP_AT:-150}" = 0 ] || (sleep ${TOP_AT:-150}; top -b -n 1 -w 200 | head -40 >"$OUT/top.txt") &
      # BENCH_TIMEOUT counts from the section's start, shard generation included, so that the
      # copying below still runs inside a caller's limit of BENCH_TIMEOUT + ~30 s
      timeout $(( ${BENCH_TIMEOUT:-190} - ($(date +%s) - t0) )) python3 -u jobs/bench/bench_train.py --shards '/tmp/bench/ref/train-*.tar' --gpus ${GPUS:-2,1} \
        --steps ${STEPS:-100} --batch ${BATCH:-64} --frames-per-batch ${FRAMES:-768} --readers ${READERS:-16} \
        --compile ${COMPILE:-off} $( [ "${CKPT:-0}" = 1 ] && echo --ckpt-dino ) \
        --runs ${RUNS:-/tmp/runs} --out "$OUT/bench_12gpu.json" --log "$OUT/bench12_job.log" ${BENCH_ARGS:-} 2>&1 \
        | grep --line-buffered -vE "$quiet" >>"$log"
      grep -m 12 -E "NCCL INFO (Channel 00|.*via (P2P|SHM|NET))|NCCL INFO comm .* nRanks" "$OUT/bench12_job.log" \
        >>"$log" 2>/dev/null  # with NCCL_DEBUG=INFO: the transport between the GPUs
      # per-window figures of each run of this section (the newest timestamped folder: a runs
      # folder reused on a warm machine also holds the earlier calls' runs)
      newest=$(ls -d ${RUNS:-/tmp/runs}/*/ 2>/dev/null | sort | tail -1)  # names are %Y%m%d-%H%M%S
      for m in ${newest:-/nonexistent/}ray/bench-ref-*gpu/metrics.jsonl; do
        run=${TAG:-}$(basename "$(dirname "$m")")  # TAG: a prefix, so that variants keep their own files
        [ -f "$m" ] && cp "$m" "$OUT/${run}_metrics.jsonl"
        # BENCH_ARGS="training.profile_steps=[60,61]": every rank's table + timeline go into one
        # file; rank 0's Chrome trace (TRACES=1) too
        for p in "$(dirname "$m")"/profile/rank*.txt; do
          [ -f "$p" ] && { echo "=== $run $(basename "$p")"; cat "$p"; } >>"$OUT/${TAG:-}profiles.txt"; done
        t="$(dirname "$m")/profile/rank0_trace.json.gz"
        [ "${TRACES:-0}" = 1 ] && [ -f "$t" ] && cp "$t" "$OUT/${run}_rank0_trace.json.gz"; done
      # the job log does not come back. A failed run's message names it, and a run cut by its
      # limit writes no summary: the last lines of either come back in the section's log, the
      # training's step lines first (how far it got)
      if grep -q "FAILED" "$log" || [ ! -f "$OUT/bench_12gpu.json" ]; then
        { echo "== $OUT/bench12_job.log: no summary; its step lines, then its last 40 lines"
          grep -E "step [0-9]+/[0-9]+ " "$OUT/bench12_job.log" | tail -n 20; tail -n 40 "$OUT/bench12_job.log"; } >>"$log" 2>&1
      fi
      # TORCH_LOGS=recompiles: each recompilation and the guards that failed (what shape or
      # dtype changed), from every rank, in the section's log
      grep -E "__recompiles\]" "$OUT/bench12_job.log" 2>/dev/null | sed -E 's/.*(\[rank[0-9]+\]):.*\[__recompiles\]/\1/' \
        | grep -vE "^\[rank[0-9]+\] +triggered by" | sed -E 's/ +# .*//' >>"$log"
      rm -f "$OUT/bench12_job.log" ;;
    allreduce)  # what DDP's gradient all-reduce costs between these GPUs, over which link, and one
      # round of cluster.oom_agreement's gloo exchange on this host
      nvidia-smi topo -m >>"$log" 2>&1
      NCCL_DEBUG=INFO timeout ${AR_TIMEOUT:-150} python3 jobs/bench/bench_allreduce.py --env NCCL_P2P_LEVEL=SYS \
        --env NCCL_PROTO=Simple --out "$OUT/allreduce.json" >/tmp/allreduce.log 2>&1
      grep -E "busbw|peer_access|oom_agreement|Traceback|Error" /tmp/allreduce.log >>"$log"
      grep -m 8 -E "NCCL INFO (Channel 0[01]|.* via |comm .* nRanks)" /tmp/allreduce.log >>"$log" ;;
    gc)  # one full collection's pause, and the pauses of a few steps, before and after gc.freeze
      timeout ${GC_TIMEOUT:-150} python3 jobs/bench/bench_gc.py --shards '/tmp/bench/ref/train-*.tar' --compile --batch 64 \
        --steps ${GC_STEPS:-20} --frames-per-batch ${FRAMES:-768} 2>&1 | grep --line-buffered -vE "$quiet" >>"$log" ;;
    pair)  # alone, then two at once; samples/s of each process (the same batches: rank 0 of 1 each)
      for gpus in 0 "0 1"; do
        for d in $gpus; do
          CUDA_VISIBLE_DEVICES=$d timeout ${PAIR_TIMEOUT:-200} python3 jobs/bench/bench_train.py --shards '/tmp/bench/ref/train-*.tar' \
            --matrix --paths compiled-b256-ckpt --matrix-steps ${PAIR_STEPS:-30} --gpus '' --frames-per-batch 768 \
            --out "$OUT/pair_${gpus// /}_gpu$d.json" data.llm_tokens_per_frame=64 model.gradient_checkpointing=true \
            >"/tmp/pair_$d.log" 2>&1 &
        done; wait
        for d in $gpus; do echo "processes on GPUs [$gpus], GPU $d:"; grep -E "^ref|FAILED|Error" "/tmp/pair_$d.log"; done >>"$log"
      done ;;
    host)  # do two busy processes slow each other's host (kernel launches, Python)?
      { lscpu | grep -E "^(Model name|Thread|Core|Socket|NUMA)"; } >>"$log" 2>&1
      n=$(nproc); timeout ${HOST_TIMEOUT:-90} python3 jobs/bench/bench_host.py --pin 0,1 --pin 0,$((n / 2)) --pin 2,$((n - 1)) --scaling ${HOST_SCALING:-1,2,4,8,16} \
        --out "$OUT/host.json" >>"$log" 2>&1 ;;
    stage1x2)
      timeout ${STAGE1_TIMEOUT:-200} python3 -u jobs/bench/bench_train.py --shards '/tmp/bench/ref/train-*.tar' --gpus 2 \
        --steps ${STEPS:-120} --batch 64 --frames-per-batch 768 --compile on --runs /tmp/runs \
        --out "$OUT/bench_2gpu.json" --log "$OUT/stage1x2_job.log" 2>&1 | grep --line-buffered -vE "$quiet" >>"$log" ;;
    sweep)
      timeout ${SWEEP_TIMEOUT:-200} python3 -u jobs/sweep.py --space ablations --only baseline,A6 --base-config stage1_135m \
        --gpus-per-trial 1 --name a6-vs-baseline --set runs_dir=/tmp/runs --set training.max_steps=${SWEEP_STEPS:-60} \
        --set "$data" --set "data.val_shards=[]" --set "data.text_shards=[]" --set data.text_ratio=0 \
        --set data.batch_size=32 --set training.grad_accum=1 --set data.num_workers=6 --set training.log_every=10 \
        2>&1 | grep --line-buffered -vE "$quiet" >>"$log" ;;
    foveation|foveation-bug)
      bug=none; steps=${FOV_STEPS:-400}
      [ "$section" = foveation-bug ] && { bug=both; steps=${FOV_BUG_STEPS:-150}; }
      timeout ${FOV_TIMEOUT:-300} python3 -u jobs/foveation_check.py --preset ${FOV_PRESET:-gpu} --random-llm-from .gpuassets/smollm2 \
        --runs-dir /tmp/runs --out "$OUT/fov-$bug" --bug $bug --steps $steps --max-minutes ${FOV_MINUTES:-4.7} ${FOV_ARGS:-} \
        2>&1 | grep --line-buffered -vE "$quiet" >>"$log" ;;
    foveation-matrix)
      # the stand-in first (a no-op when this machine built it already), so its marker comes back
      python3 -u jobs/build_standin.py --ref fovea/standin-dinov2-small-glyphs --device cuda 2>&1 \
        | grep --line-buffered -vE "$quiet" >>"$log"
      cp "$FOVEA_MODEL_STORE"/fovea--standin-dinov2-small-glyphs/STANDIN.* "$OUT/" 2>/dev/null
      # FOV_TIMEOUT counts from the script's start (the environment's install included), so the
      # table written so far (matrix/matrix.partial.txt) still comes back inside a 600 s call
      # (-k: Ray's shutdown after the TERM may take longer than the call has left)
      timeout -k 10 $(( ${FOV_TIMEOUT:-560} - ($(date +%s) - script_t0) )) python3 -u jobs/foveation_check.py \
        --preset ${FOV_PRESET:-gpu-tiny-standin} --random-llm-from .gpuassets/smollm2 --runs-dir /tmp/runs \
        --out "$OUT/matrix" --matrix --matrix-bugs ${MATRIX_BUGS:-none,both} ${FOV_ARGS:-} 2>&1 \
        | grep --line-buffered -vE "$quiet" >>"$log"
      # the rows' folders are too deep to come back one by one: one archive; and what MLflow holds
      tar czf "$OUT/matrix_rows.tgz" -C "$OUT" matrix && rm -rf "$OUT"/matrix/none "$OUT"/matrix/both
      python3 - >"$OUT/mlflow_matrix_runs.txt" 2>&1 <<'PY' ;;
from mlflow.tracking import MlflowClient
c = MlflowClient("sqlite:////tmp/runs/mlflow.db")
def walk(run_id, path=None):
    for f in c.list_artifacts(run_id, path):
        yield from walk(run_id, f.path) if f.is_dir else [f"  {f.path} ({f.file_size} B)"]
for e in c.search_experiments():
    for r in c.search_runs([e.experiment_id], "tags.foveation_check = 'matrix'"):
        print(r.info.run_name, r.info.run_id, r.info.status, "metrics:", len(r.data.metrics))
        print("\n".join(walk(r.info.run_id)))
PY
    *) echo "unknown section $section" >&2; exit 2 ;;
  esac
  echo "== $section: $(( $(date +%s) - t0 ))s" | tee -a "$log"
  tail -40 "$log"
done
