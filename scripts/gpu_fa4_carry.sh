#!/usr/bin/env bash
# FlashAttention-4 (model.dino_attention=fa4) for the offline GPU machine. A device call carries
# at most 64 MiB, and FA4's CuTe-DSL libraries are one 92-MB wheel, so the wheels travel split
# over three calls to one warm machine and are joined and installed there (docs/PERFORMANCE.md,
# session 25). That machine already has torch, cuda-bindings and protobuf.
#
#   here:   bash scripts/gpu_fa4_carry.sh pack       -> .whl1 (~4 MB: carry it beside .devbundle and
#                                                      .gpuassets), .whl2 (~58 MB), .whl3 (~40 MB)
#   there:  bash scripts/gpu_fa4_carry.sh stash      in each of the three calls, carrying .whl1,
#                                                      then .whl2, then .whl3: copies them to /tmp/fa4w
#           bash scripts/gpu_fa4_carry.sh install    after the third: joins the split wheel and
#                                                      installs all into /tmp/fa4site; then
#           export EXTRA_SITE=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages
#           (scripts/gpu_env.sh appends it to PYTHONPATH; the second folder is what the DSL's .pth
#           file would add, which pip --target does not process)
set -euo pipefail
wheels="flash-attn-4==4.0.0b40 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1
nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu12==4.8.1 quack-kernels==0.6.5
apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5 einops==0.8.2 cuda-pathfinder==1.9.1"
case "${1:-}" in
  pack)
    dl=$(mktemp -d)
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$dl" $wheels
    for d in .whl1 .whl2 .whl3; do
      grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
      rm -rf "$d"; mkdir "$d"
    done
    big=$(ls "$dl"/nvidia_cutlass_dsl_libs_cu12-*.whl)
    (cd .whl2 && split -b 55000000 "$big" part_)
    mv .whl2/part_ab .whl3/
    printf '%s  %s\n' "$(md5sum < "$big" | cut -d' ' -f1)" "$(basename "$big")" > .whl3/joined.md5
    mv "$dl"/nvidia_cutlass_dsl_libs_base-*.whl .whl2/
    mv "$dl"/apache_tvm_ffi-*.whl .whl3/
    rm "$big"; mv "$dl"/*.whl .whl1/; rmdir "$dl"
    du -sh .whl1 .whl2 .whl3 ;;
  stash)
    mkdir -p /tmp/fa4w
    for d in .whl1 .whl2 .whl3; do [ -d "$d" ] && cp "$d"/* /tmp/fa4w/; done
    ls /tmp/fa4w ;;
  install)
    cd /tmp/fa4w
    cat part_aa part_ab > "$(cut -d' ' -f3 joined.md5)"
    md5sum -c joined.md5
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fa4site ./*.whl
    echo "export EXTRA_SITE=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages" ;;
  *)
    echo "usage: bash scripts/gpu_fa4_carry.sh pack|stash|install (see its header)" >&2; exit 2 ;;
esac
