# Source on the offline GPU machine (from the repo root) before any fovea command:
#   carried: .devbundle (../shared/gpu/bundle.sh .devbundle mlflow-skinny sqlalchemy alembic)
#            .gpuassets/smollm2 (SmolLM2 config + tokenizer; weights are too large to carry,
#            so the store builds the LLM with RANDOM weights there -- throughput is the same)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export RAY_AUTH_MODE=token TOKENIZERS_PARALLELISM=false PYTHONDONTWRITEBYTECODE=1
[ -d /tmp/site/ray ] || bash .devbundle/install.sh >/dev/null
# fovea.* without pip: a shim package dir whose subfolders link to the repo's folders
# (the repo root itself stays off sys.path, so `platform` is never shadowed).
mkdir -p /tmp/shim/fovea
for d in model pipelines platform search_spaces; do ln -sfn "$PWD/$d" "/tmp/shim/fovea/$d"; done
# EXTRA_SITE: a folder of packages installed beside the bundle (e.g. flash-attn-4 with pip
# --target), searched after it so the bundle's own versions win
export PYTHONPATH=/tmp/site:/tmp/shim${EXTRA_SITE:+:$EXTRA_SITE}
export FOVEA_MODEL_STORE=${FOVEA_MODEL_STORE:-/tmp/fovea-models}
[ -f "$FOVEA_MODEL_STORE/index.json" ] || python3 -m fovea.model.store --random-llm-from .gpuassets/smollm2 >/dev/null 2>&1
# ref_shards N [DEFAULT]: the benchmark's reference set at /tmp/bench/ref with N samples. A set
# already there with another count is made anew (the runs read every shard in the folder, and
# bench_train.py takes the epoch's size from its manifest), not silently reused. N empty: keep
# whatever set is there, or make DEFAULT samples if there is none.
ref_shards() {
  local n=${1:-} have
  have=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["samples"])' \
    /tmp/bench/ref/bench_manifest.json 2>/dev/null)
  if [ -z "$n" ]; then [ -n "$have" ] && return 0; n=$2; fi
  [ "$have" = "$n" ] && return 0
  [ -d /tmp/bench/ref ] && echo "ref_shards: /tmp/bench/ref holds ${have:-an unknown number of} samples, not $n: made anew" >&2
  rm -rf /tmp/bench/ref; mkdir -p /tmp/bench
  python3 jobs/bench/make_bench_shards.py --out /tmp/bench/ref --samples "$n" --per-shard 100 --workers 24 \
    >/tmp/bench/shards.log 2>&1 || { echo "ref_shards: making $n samples failed, see /tmp/bench/shards.log" >&2; return 1; }
}
