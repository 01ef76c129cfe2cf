"""Benchmark the Foveated VLM: training step time / peak memory and generation speed.

    .venv/bin/python jobs/bench/bench_model.py --device cuda --batch 8 --frames 1,8,64
    .venv/bin/python jobs/bench/bench_model.py --device cpu --batch 1 --frames 1,8 --iters 2

Model: the ``--config`` run config's model section (default ``stage1_135m``: SmolLM2-135M
+ DINOv2-small), every frame real (the worst case of a batch), ``--text`` tokens per
sample, all text as loss (stage 1). Precision as training's ``precision: auto``: bf16
autocast on CUDA (weights in ``llm_dtype``), fp32 on CPU.

Rows:
  train   one coarse_fine forward + backward (the training path: return_logits=False,
          no-grad coarse CE included when coarse_loss_every = 1), median over --iters
          after --warmup; peak = torch.cuda.max_memory_allocated on CUDA, process peak
          RSS on CPU (cumulative over the run, so read it as an upper bound)
  gen     generate() with --gen-frames frames and a --gen-prompt token prompt per row,
          --gen-tokens new tokens (eos disabled), with and without the LLM KV cache;
          tokens/s = batch * new tokens / wall time (visual loop and prefill included)

``--random-weights`` builds the same architectures from configs with random weights
(no model store needed, e.g. on a bare GPU machine); timings do not depend on values.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import time

import torch

from fovea.model.build import DTYPES, apply_training_flags, build_model
from fovea.pipelines.batch import dummy_batch, model_inputs
from fovea.model.vlm import FoveatedVLM
from fovea.platform.config import load_config
from fovea.model.store import DINO_CONFIGS, model_config

# SmolLM2-135M-Instruct's published architecture (for --random-weights).
SMOLLM2_135M_ARCH = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
    rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1,
    eos_token_id=2, pad_token_id=2,
)


def random_model(model_cfg) -> FoveatedVLM:
    from transformers import AutoModelForCausalLM, Dinov2Model, LlamaConfig

    if "135M" not in model_cfg.llm or model_cfg.dino not in DINO_CONFIGS:
        raise SystemExit("--random-weights knows SmolLM2-135M and the store's DINOv2 configs only")
    llm = AutoModelForCausalLM.from_config(LlamaConfig(**SMOLLM2_135M_ARCH), dtype=DTYPES[model_cfg.llm_dtype],
                                           attn_implementation=model_cfg.attn_implementation)
    dino = Dinov2Model(model_config(model_cfg.dino))  # the published config (image_size 518)
    return apply_training_flags(FoveatedVLM(llm, dino, model_cfg))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mem_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def bench_train(model, device, amp, B, T, S, iters, warmup) -> tuple[float, float, float]:
    """-> (median ms, min ms, peak GiB) of forward+backward in coarse_fine."""
    batch = model_inputs(dummy_batch([T] * B, [S] * B, T=T, S=S, seed=T, device=device))
    model.train()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + iters):
        model.zero_grad(set_to_none=True)
        sync(device)
        t0 = time.perf_counter()
        with amp():
            out = model(**batch, mode="coarse_fine", return_logits=False)
        out["loss"].backward()
        sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    model.zero_grad(set_to_none=True)
    return statistics.median(times), min(times), peak_mem_gb(device)


@torch.no_grad()
def bench_generate(model, device, amp, B, T, prompt_len, new_tokens, use_cache) -> float:
    """-> generated tokens per second."""
    model.eval()
    b = dummy_batch([T] * B, [prompt_len] * B, T=T, S=prompt_len, seed=7, device=device)
    prompts = b["input_ids"].tolist()
    with amp():  # warm-up (kernels, allocator)
        model.generate(b["frames"], b["frame_mask"], prompts, max_new_tokens=2, eos_token_id=[],
                       use_cache=use_cache)
    sync(device)
    t0 = time.perf_counter()
    with amp():
        out = model.generate(b["frames"], b["frame_mask"], prompts, max_new_tokens=new_tokens,
                             eos_token_id=[], use_cache=use_cache)
    sync(device)
    n = sum(len(x) for x in out)
    return n / (time.perf_counter() - t0)


@torch.no_grad()
def sanity_check(model, device, amp) -> None:
    """All modes finite; autoregressive KV cache == recompute; padding invisible (this precision)."""
    model.eval()
    b = model_inputs(dummy_batch([3, 1, 0], [20, 24, 12], T=4, seed=3, device=device))
    with amp():
        outs = {m: model(**b, mode=m) for m in ("coarse_fine", "coarse_only", "autoregressive")}
        nc = model(**b, mode="autoregressive", use_kv_cache=False)
        alone = model(**{k: v[:1, :3, ..., ] if k.startswith("frame") else v[:1, :20] for k, v in b.items()},
                      mode="coarse_fine")
    losses = {m: round(float(o["loss"]), 4) for m, o in outs.items()}
    cache_diff = float((outs["autoregressive"]["logits"].float() - nc["logits"].float()).abs().max())
    pad_diff = float((outs["coarse_fine"]["logits"][0, :20].float() - alone["logits"][0].float()).abs().max())
    scale = float(outs["coarse_fine"]["logits"].float().abs().max())
    print(f"# check: losses {losses}; max |logit| {scale:.1f}; AR cache vs recompute max diff {cache_diff:.2e}; "
          f"padded batch vs alone max diff {pad_diff:.2e}")
    assert all(map(lambda x: x == x and abs(x) < 1e4, losses.values())), losses


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--config", default="stage1_135m")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. model.llm_dtype=bfloat16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", default="1,8,64")
    ap.add_argument("--text", type=int, default=128, help="text tokens per sample")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gen-batch", type=int, default=None, help="default: --batch")
    ap.add_argument("--gen-frames", type=int, default=8)
    ap.add_argument("--gen-prompt", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--no-gen", action="store_true")
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--check", action="store_true", help="numerical sanity check before timing")
    return ap.parse_args(argv)


def print_train_rows(model, device, amp, args: argparse.Namespace) -> None:
    print(f"# train: coarse_fine fwd+bwd, B={args.batch}, S={args.text}, all frames real, "
          f"{args.iters} iters after {args.warmup} warm-up")
    print(f"{'T':>4} {'frames/batch':>12} {'median ms':>10} {'min ms':>9} {'samples/s':>10} {'peak GiB':>9}")
    for T in [int(x) for x in args.frames.split(",") if x]:
        try:
            med, mn, peak = bench_train(model, device, amp, args.batch, T, args.text, args.iters, args.warmup)
        except torch.OutOfMemoryError:
            print(f"{T:>4} {args.batch * T:>12} {'OOM':>10}")
            torch.cuda.empty_cache()
            continue
        print(f"{T:>4} {args.batch * T:>12} {med:>10.1f} {mn:>9.1f} {args.batch / med * 1e3:>10.2f} {peak:>9.2f}",
              flush=True)


def print_generate_rows(model, device, amp, args: argparse.Namespace) -> None:
    gb = args.gen_batch or args.batch
    print(f"# generate: B={gb}, {args.gen_frames} frames, {args.gen_prompt}-token prompt, "
          f"{args.gen_tokens} new tokens (greedy, eos off)")
    print(f"{'kv cache':>8} {'tokens/s':>10}")
    for use_cache in (True, False):
        tps = bench_generate(model, device, amp, gb, args.gen_frames, args.gen_prompt, args.gen_tokens, use_cache)
        print(f"{'on' if use_cache else 'off':>8} {tps:>10.1f}", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        from fovea.platform.train.loop import configure_cuda_backends

        configure_cuda_backends()  # TF32, SDPA without cuDNN (as in training)
    cfg = load_config(args.config, [f"model.{s}" if not s.startswith("model.") else s for s in args.set]).model
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = (random_model(cfg) if args.random_weights else build_model(cfg)).to(device)
    load_s = time.perf_counter() - t0
    amp = ((lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda"
           else contextlib.nullcontext)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"# fovea bench: {cfg.llm} + {cfg.dino}, {n_params:.1f}M params, llm_dtype={cfg.llm_dtype}, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}, {dev_name}, torch {torch.__version__}, "
          f"built in {load_s:.1f}s{' (random weights)' if args.random_weights else ''}")
    if args.check:
        sanity_check(model, device, amp)
    print_train_rows(model, device, amp, args)
    if not args.no_gen:
        print_generate_rows(model, device, amp, args)


if __name__ == "__main__":
    sys.exit(main())
