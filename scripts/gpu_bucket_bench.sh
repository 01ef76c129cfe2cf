#!/usr/bin/env bash
# Issue 28: variants of the 1-GPU training step on the same batches, on one H100: bench12 runs
# of jobs/stage1.py (scripts/gpu_next.sh), in the order given, in one device call of at most
# 600 s (carry .devbundle and .gpuassets):
#   flash            the default path (baseline)
#   cudnn-b64        model.dino_attention=cudnn model.frame_bucket=64
#   cudnn-b64-liger  the same + model.liger_fused_ce=true
#   liger            the default path + model.liger_fused_ce=true
#   liger-f2304      the same at 2304 units, batch cap 768: the memory Liger frees (no
#                    [tokens, 49,152] logits) spent on a larger token budget
#   liger-r6         liger + model.dino_checkpoint_layers=6: the memory Liger frees spent on
#                    keeping the last 6 of DINOv2's 12 patch blocks' activations instead of
#                    recomputing them in backward (~2.6 MB a unit each; all 12 do not fit 80 GB)
#   liger-r8         the same with 8 blocks recomputed (4 kept)
#   liger-r6-f2304   liger-r6 at 2304 units, cap 768: where the GPU, not the host, bounds the step
#   cudnn-liger-r6-f2304  the same with cuDNN patch attention and frame bucket BUCKET (64)
#   fa4-liger-r6-f2304    liger-r6-f2304 with FlashAttention-4's patch attention
#                    (model.dino_attention=fa4; flash-attn-4 installed under PYTHONPATH)
#   fa4-reduce-f2304      fa4-liger-r6-f2304 + model.query_attention=reduce (the query pass's
#                    attention as multiply + sum, fused by the compiled QueryBlocks); since
#                    session 27 "auto", the default, takes it in these compiled runs
#   fa4-sdpa-f2304        fa4-liger-r6-f2304 + model.query_attention=sdpa: the query passes as
#                    every variant ran them before session 27 (PyTorch's fused SDPA); add
#                    EXTRA="model.query_attention=sdpa" to repeat an older variant as it was
#   fa4-reduce-gelu-rR-f2304  fa4-reduce-f2304 + model.dino_recompute_gelu=true with R of the 12
#                    patch blocks recomputed (R = 4, 2, 0): the memory GELU's output no longer
#                    takes, spent on keeping more blocks
#   fa4-autotune-f2304    fa4-reduce-f2304 + training.compile_mode=max-autotune-no-cudagraphs
#                    (inductor times Triton GEMM templates against cuBLAS and fuses their
#                    element-wise neighbours; on a cold machine its compilation outlasts a
#                    585-s call: docs/PERFORMANCE.md, session 29)
#   llm-b16          the default path + model.llm_row_bucket=16 model.llm_length_bucket=16 (the LLM
#                    passes' [rows, length] padded up to multiples of 16: what the padding costs)
#   llm-graphs       the same + model.llm_cudagraphs=true (the LLM passes as CUDA graphs, one
#                    per fused layer and bucketed shape)
# Settings: BATCH=512 FRAMES=1536 CKPT=1 COMPILE=on GPUS=1 READERS=16,
# data.llm_tokens_per_frame=64, SAMPLES=12000 (the reference mix, 7.0 frames a sample; ~78 steps
# an epoch) and STEPS=176, so that epoch 1 is whole (the 2304-unit variants: STEPS_2304=120, ~48
# steps an epoch). The figures to compare: the variants' log
# windows of the same steps (they read the same batches; `bench_train.py --summarize` of each
# metrics file) and samples/s over the whole epoch (the summary line's last column, with and
# without the epoch's recompilation). A window's samples/s alone swings with its batches' frames
# a sample (docs/PERFORMANCE.md "Whole epochs"); a 12,000-sample epoch fills 86 % of its steps'
# budget (each reader's last batch is short; jobs/bench/bench_rank_balance.py), a real one 99 %.
# Cost: the install and the shards ~55-80 s; a run's start ~95 s and its first 16 steps (the
# compilation) ~90 s from cold, then ~0.5 s a step and a few seconds at the epoch end; later runs
# of a call find inductor's cache warm. One whole-epoch run fits a call beside the setup; two do
# not (a 253-s limit ended one at step 144 of 176): for two or three variants a call sets
# STEPS=64 (RESERVE=175 for three) and compares the windows of the same steps.
#   VARIANTS=flash bash scripts/gpu_bucket_bench.sh  # one whole epoch
#   STEPS=80 VARIANTS="flash liger" bash scripts/gpu_bucket_bench.sh   # the same windows
#   KERNELS=query VARIANTS="flash cudnn-b64" BUCKET=32 bash scripts/gpu_bucket_bench.sh
#   RESERVE=175 EXTRA="model.coarse_loss_every=0" VARIANTS="flash liger-r6 liger-r8" STEPS=64 bash scripts/gpu_bucket_bench.sh
#   PROFILE="[50,51]" EXTRA="model.coarse_loss_every=0" VARIANTS=llm-graphs STEPS=64 bash scripts/gpu_bucket_bench.sh
#   KERNELS=graphs VARIANTS=llm-graphs ...: the graphs check (~150 s) first; with it, a second
#     run does not fit the call
# PROFILE="[170,171]": each run profiles those steps (training.profile_steps; their window is left
# out of the figures) and its per-phase table comes back as <variant>/<variant>_profiles.txt.
# KERNELS=query (or kernel,query,numerics,graphs,llm-pass): jobs/bench/bench_kernels.py's parts first, into
# $OUT/kernels.json (the log's last lines go to summary.txt), within KERNELS_TIMEOUT s (150);
# KERNEL_ARGS="--llm-arms per_layer,hf_liger --reps 8": more of bench_kernels.py's arguments.
# EXTRA="model.x=y ...": appended to every variant's overrides.
# TORCH_LOGS=recompiles: each run's recompilations, with the guards that failed, in its bench12.log
# (as a run cut by its limit brings back its last step lines there).
# At most 8 files come back from a device call: $OUT/<variant>/ holds each run's bench12.log and
# <variant>_bench-ref-1gpu_metrics.jsonl; $OUT/summary.txt one table line each (from the run's own
# summary, or, for a run cut by its time limit, `bench_train.py --summarize` of the windows it
# logged); $OUT/kernels.json and kernels.log. A variant's time limit (BENCH_TIMEOUT) is what is left of TOTAL s
# (585) less RESERVE s (215) for each variant after it, so a slow first run cannot starve the
# others and the whole call ends inside the device's limit. TOP_AT=0: no CPU snapshot file.
set -uo pipefail
t_start=$(date +%s)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source scripts/gpu_env.sh
bucket=${BUCKET:-64}
base="data.llm_tokens_per_frame=64${PROFILE:+ training.profile_steps=$PROFILE}${EXTRA:+ $EXTRA}"
declare -A args=(
  [flash]="$base"
  [cudnn-b64]="$base model.dino_attention=cudnn model.frame_bucket=$bucket"
  [cudnn-b64-liger]="$base model.dino_attention=cudnn model.frame_bucket=$bucket model.liger_fused_ce=true"
  [liger]="$base model.liger_fused_ce=true"
  [liger-f2304]="$base model.liger_fused_ce=true"
  [liger-r6]="$base model.liger_fused_ce=true model.dino_checkpoint_layers=6"
  [liger-r8]="$base model.liger_fused_ce=true model.dino_checkpoint_layers=8"
  [liger-r6-f2304]="$base model.liger_fused_ce=true model.dino_checkpoint_layers=6"
  [cudnn-liger-r6-f2304]="$base model.dino_attention=cudnn model.frame_bucket=$bucket model.liger_fused_ce=true model.dino_checkpoint_layers=6"
  [fa4-liger-r6-f2304]="$base model.dino_attention=fa4 model.liger_fused_ce=true model.dino_checkpoint_layers=6"
  [fa4-sdpa-f2304]="$base model.dino_attention=fa4 model.liger_fused_ce=true model.dino_checkpoint_layers=6 model.query_attention=sdpa"
  [fa4-reduce-f2304]="$base model.dino_attention=fa4 model.liger_fused_ce=true model.dino_checkpoint_layers=6 model.query_attention=reduce"
  [fa4-reduce-gelu-r4-f2304]="$base model.dino_attention=fa4 model.liger_fused_ce=true model.dino_checkpoint_layers=4 model.query_attention=reduce model.dino_recompute_gelu=true"
  [fa4-reduce-gelu-r2-f2304]="$base model.dino_attention=fa4 model.liger_fused_ce=true model.dino_checkpoint_layers=2 model.query_attention=reduce model.dino_recompute_gelu=true"
  [fa4-reduce-gelu-r0-f2304]="$base model.dino_attention=fa4 model.liger_fused_ce=true model.dino_checkpoint_layers=0 model.query_attention=reduce model.dino_recompute_gelu=true"
  [fa4-autotune-f2304]="$base model.dino_attention=fa4 model.liger_fused_ce=true model.dino_checkpoint_layers=6 training.compile_mode=max-autotune-no-cudagraphs"
  [llm-b16]="$base model.llm_row_bucket=16 model.llm_length_bucket=16"
  [llm-graphs]="$base model.llm_row_bucket=16 model.llm_length_bucket=16 model.llm_cudagraphs=true"
)
variants=(${VARIANTS:-flash})
# the benchmark shards once, before the clock is shared out: exactly SAMPLES (12000), a set of
# another count made anew (ref_shards, scripts/gpu_env.sh)
ref_shards ${SAMPLES:-12000}
echo "setup (env + shards): $(( $(date +%s) - t_start ))s" | tee "$OUT/summary.txt"
if [ -n "${KERNELS:-}" ]; then
  timeout ${KERNELS_TIMEOUT:-150} python3 jobs/bench/bench_kernels.py --parts "$KERNELS" ${KERNEL_ARGS:-} --out "$OUT/kernels.json" >/tmp/bench/kernels.log 2>&1
  echo "kernels ($KERNELS, rc $?): $(( $(date +%s) - t_start ))s" | tee -a "$OUT/summary.txt"
  tail -5 /tmp/bench/kernels.log >>"$OUT/summary.txt"; cp /tmp/bench/kernels.log "$OUT/"
fi
left=${#variants[@]}
for v in "${variants[@]}"; do
  left=$(( left - 1 ))
  budget=$(( t_start + ${TOTAL:-585} - $(date +%s) - left * ${RESERVE:-215} ))
  [ "$budget" -lt 60 ] && { echo "$v: skipped, ${budget}s left" | tee -a "$OUT/summary.txt"; continue; }
  mkdir -p "$OUT/$v"
  # token budget (units), batch cap and steps: the -f2304 variants 2304 / 768 / STEPS_2304 (an
  # epoch is ~48 steps there, so 120 holds epoch 1 whole), the others 1536 / 512 / STEPS
  if [[ $v == *-f2304 ]]; then units=2304 cap=768 n=${STEPS_2304:-120}; else units=1536 cap=512 n=${STEPS:-176}; fi
  OUT="$OUT/$v" TAG="${v}_" RUNS="/tmp/runs-$v" BENCH_TIMEOUT=$budget SAMPLES=${SAMPLES:-12000} \
    BATCH=$cap FRAMES=$units \
    CKPT=1 COMPILE=on GPUS=1 READERS=16 STEPS=$n BENCH_ARGS="${args[$v]}" \
    TOP_AT=${TOP_AT:-0} \
    bash scripts/gpu_next.sh bench12 >/dev/null 2>&1
  rm -f "$OUT/$v/bench_12gpu.json"  # its row is in bench12.log; 8 files at most come back
  row=$(grep -E "^ref +1 " "$OUT/$v/bench12.log" | tail -1)
  metrics="$OUT/$v/${v}_bench-ref-1gpu_metrics.jsonl"
  [ -z "$row" ] && [ -s "$metrics" ] && row="cut by its limit; its windows: $(python3 jobs/bench/bench_train.py \
    --summarize "1:$metrics" --epoch-samples ${SAMPLES:-12000} 2>/dev/null | tail -1)"
  echo "$v (limit ${budget}s, $units units, cap $cap, $n steps, ${args[$v]}): ${row:-no result, see $v/bench12.log}" | tee -a "$OUT/summary.txt"
done
echo "total: $(( $(date +%s) - t_start ))s" | tee -a "$OUT/summary.txt"
