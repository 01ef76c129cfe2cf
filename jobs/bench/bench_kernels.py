"""The opt-in CUDA kernels on one GPU: DINOv2 patch attention flash against cuDNN
(``model.dino_attention``), the query pass's attention fused against written out
(``model.query_attention``) and Liger-Kernel's fused linear cross-entropy (``model.liger_fused_ce``).

Its parts (``--parts``), each printed and written to ``--out`` (JSON):

* ``kernel``: SDPA forward + backward, bf16 [N, 6, 257, 64] (DINOv2-small's patch attention),
  median milliseconds at a fixed N, and the first call at each of ``--new-shapes`` frame counts
  never seen before (cuDNN builds an execution plan per shape; flash has no per-shape setup).
* ``query``: the query pass's attention forward + backward, bf16, one query [N, 6, 1, 64] over
  [N, 6, 257, 64] keys/values, "sdpa" against "reduce" (blocks.query_attention), eager and
  compiled (torch.compile, as the QueryBlocks run in training), median milliseconds.
* ``numerics``: the stage-1 model (store weights) on one batch under bf16 autocast, eager, with
  the training CUDA settings: the loss and the gradients of each variant against the default and
  against PyTorch's math attention kernel, as max |diff| / max |grad| over all parameters.
* ``fa4`` (not in the default set; needs flash-attn-4): FlashAttention-4's CuTe kernels on the
  patch attention's shape at each ``--fa4-frames`` N, against PyTorch's flash and cuDNN, forward +
  backward median milliseconds and the first call's seconds (FA4 compiles its kernels on first use).
  Two FA4 routes: ``model.dino_attention=fa4`` (model/fa4.py's custom ops) and SDPA's flash backend after
  ``torch.nn.attention.activate_flash_attention_impl("FA4")`` (the model's layout, one switch for
  the whole process). Also the query pass's one-query shape, and each route's output and
  gradients against the math kernel in fp32 (max |diff| / max |ref|).
* ``graphs`` (not in the default set): ``model.llm_cudagraphs``, the LLM's training passes as
  CUDA graphs (one per compiled layer and shape), against the same compiled model without them, over
  batches of two shapes, each met three times (warmed up, recorded, replayed), a no-grad pass
  after each: loss and gradient differences (``--graphs-model``); it exits non-zero where they
  exceed bf16's spread, a pass failed or inductor skipped the graphs.
* ``llm-pass`` (not in the default set): the stage-1 LLM's training pass alone at a few
  [rows, length] shapes, one row per ``--llm-arms`` arm (``LLM_ARMS``): compile seconds and
  median milliseconds. The arms: the fused layers compiled per layer (the default path), the
  same as CUDA graphs (``model.llm_cudagraphs``), transformers' own Llama layers compiled, and
  those with Liger-Kernel's RMSNorm, SwiGLU and RoPE kernels, eager (as Liger is meant to run) and
  compiled.
* ``patch-block`` (not in the default set): one DINOv2-small PatchBlock of the stage-1 model at
  ``--frames`` frames, forward + backward under bf16 autocast (fp32 weights and residual, as in
  training; gradients into the input, the weights and the returned keys/values), one row per
  ``--block-arms`` arm (``BLOCK_ARMS``): compile seconds, median milliseconds, peak memory, and
  the output's and gradients' largest difference from the first arm's. The arms: the block
  compiled as training compiles it, the same with q, k and v as one GEMM over the three weights
  stacked (``stacked_qkv_block``; not in the model), and both in ``max-autotune-no-cudagraphs``
  mode (inductor's Triton GEMM templates with fused epilogues; ``training.compile_mode``), whose
  compilation takes minutes. Each arm's line is printed as it ends.
  ``--block-attention`` picks the patch attention (``model.dino_attention``).

    python jobs/bench/bench_kernels.py --out kernels.json      # a CUDA machine (liger-kernel for "liger")
    python jobs/bench/bench_kernels.py --parts query,numerics
    python jobs/bench/bench_kernels.py --parts fa4 --fa4-frames 768,1536,2304
    python jobs/bench/bench_kernels.py --parts graphs --graphs-model stage1
    python jobs/bench/bench_kernels.py --parts llm-pass --llm-arms per_layer,hf_liger,hf_liger_compiled
    python jobs/bench/bench_kernels.py --parts patch-block --frames 2304 --block-attention fa4
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import statistics
import time
import traceback

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from fovea.model import build_model
from fovea.model.blocks import PatchBlock, attn_linears, merge_heads, patch_attention, query_attention, split_heads
from fovea.model.config import ModelConfig
from fovea.pipelines.batch import dummy_batch, model_inputs
from fovea.platform.train.loop import configure_cuda_backends

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def timed_ms(call, reps: int) -> list[float]:
    """Milliseconds of each of ``reps`` runs of ``call()``, between CUDA events on a drained device."""
    out = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        call()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end))
    return out


def error_line(e: Exception) -> str:
    """An arm's failure in one line: its type, its message's first line and where it was raised
    (an AssertionError often has no message)."""
    where = traceback.extract_tb(e.__traceback__)[-1]
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (at {where.filename}:{where.lineno})"


def fwd_bwd_ms(n: int, backend: SDPBackend, reps: int) -> list[float]:
    """Milliseconds of each of ``reps`` SDPA forward + backward calls over [n, 6, 257, 64] bf16."""
    q, k, v = (torch.randn(n, 6, 257, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.randn(n, 6, 257, 64, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel([backend]):
        return timed_ms(lambda: F.scaled_dot_product_attention(q, k, v).backward(g), reps)


def kernel_table(n: int, new_shapes: list[int], reps: int) -> dict:
    """Steady median at ``n`` and first-call times at the new frame counts, per backend."""
    res = {}
    for name in ("flash", "cudnn"):
        be = BACKENDS[name]
        steady = fwd_bwd_ms(n, be, reps)[3:]
        first = [fwd_bwd_ms(m, be, 1)[0] for m in new_shapes]
        again = [statistics.median(fwd_bwd_ms(m, be, 3)[1:]) for m in new_shapes]
        res[name] = {"steady_ms_median": statistics.median(steady), "first_call_ms": first,
                     "same_shapes_again_ms": again}
        print(f"{name:6s} N={n}: {res[name]['steady_ms_median']:.3f} ms fwd+bwd (median of {len(steady)}); "
              f"first call at a new N {statistics.median(first):.2f} ms (median of {len(first)}), "
              f"the same N again {statistics.median(again):.3f} ms", flush=True)
    return res


def query_ms(n: int, how: str, compiled: bool, reps: int) -> float:
    """Median milliseconds of the query attention's forward + backward (``how`` as
    ``model.query_attention``), the gradient flowing to q, k and v as in training."""
    q = torch.randn(n, 6, 1, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(n, 6, 257, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    g = torch.randn(n, 6, 1, 64, device="cuda", dtype=torch.bfloat16)
    fn = torch.compile(query_attention, dynamic=False) if compiled else query_attention
    times = timed_ms(lambda: fn(q, k, v, how).backward(g), reps + 3)
    return statistics.median(times[3:])  # the first 3: compilation and warm-up


def query_table(n: int, reps: int) -> dict:
    res = {f"{how}{'_compiled' if c else ''}": query_ms(n, how, c, reps)
           for how in ("sdpa", "reduce") for c in (False, True)}
    print(f"query attention N={n}, fwd+bwd ms (median of {reps}): "
          + ", ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True)
    return res


def fa4_arms() -> dict:
    """The patch attention's routes, each ``arm(q, k, v) -> out`` on [n, H, Np, hd] views of
    [n, Np, H, hd] storage (as blocks.split_heads makes them)."""
    from fovea.model.fa4 import fa4_attention  # model.dino_attention=fa4

    def sdpa(backend):
        def arm(q, k, v):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v)
        return arm

    return {"flash": sdpa(SDPBackend.FLASH_ATTENTION), "cudnn": sdpa(SDPBackend.CUDNN_ATTENTION),
            "fa4": fa4_attention, "fa4_compiled": torch.compile(fa4_attention, dynamic=True),
            "math": sdpa(SDPBackend.MATH)}


def fa4_inputs(n: int, n_q: int, dtype=torch.bfloat16) -> tuple:
    """q [n, 6, n_q, 64], k/v [n, 6, 257, 64] as transposed views (the model's layout), and a gradient."""
    def view(length):
        return torch.randn(n, length, 6, 64, device="cuda", dtype=dtype).transpose(1, 2).requires_grad_()
    q, k, v = view(n_q), view(257), view(257)
    return q, k, v, torch.randn(n, 6, n_q, 64, device="cuda", dtype=dtype)


def fa4_errors(arm, n_q: int) -> dict:
    """Output and gradient error of ``arm`` (bf16) against the math kernel in fp32 on the same
    values: max |diff| / max |ref| of each."""
    q, k, v, g = fa4_inputs(64, n_q)
    ref_in = [t.detach().float().requires_grad_() for t in (q, k, v)]
    with sdpa_kernel([SDPBackend.MATH]):
        ref = F.scaled_dot_product_attention(*ref_in)
    ref.backward(g.float())
    out = arm(q, k, v)
    out.backward(g)
    pairs = {"out": (out, ref), "dq": (q.grad, ref_in[0].grad), "dk": (k.grad, ref_in[1].grad),
             "dv": (v.grad, ref_in[2].grad)}
    return {name: ((a.float() - b).abs().max() / b.abs().max()).item() for name, (a, b) in pairs.items()}


def fa4_table(ns: list[int], reps: int) -> dict:
    """Forward + backward median ms of each route at each N (patch: 257 queries; query pass: 1),
    the first call's seconds, and each route's error against fp32 math."""
    arms = fa4_arms()
    res: dict = {"errors": {}, "first_call_s": {}, "patch_ms": {}, "query_ms": {}}
    routes = ["flash", "cudnn", "fa4", "fa4_compiled", "fa4_sdpa"]
    for route in routes:
        if route == "fa4_sdpa":  # PyTorch's own FA4 registration: every SDPA flash call from here on
            try:
                from torch.nn.attention import activate_flash_attention_impl
                activate_flash_attention_impl("FA4")
            except (ImportError, ValueError, RuntimeError) as e:
                res["fa4_sdpa_error"] = f"{type(e).__name__}: {e}"
                print(f"fa4_sdpa: not available ({res['fa4_sdpa_error']})", flush=True)
                break
            arm = arms["flash"]
        else:
            arm = arms[route]
        try:
            t0 = time.perf_counter()
            q, k, v, g = fa4_inputs(ns[0], 257)
            arm(q, k, v).backward(g)
            torch.cuda.synchronize()
            res["first_call_s"][route] = time.perf_counter() - t0
            res["errors"][route] = {"patch": fa4_errors(arm, 257), "query": fa4_errors(arm, 1)}
            for key, n_q in (("patch_ms", 257), ("query_ms", 1)):
                res[key][route] = {}
                for n in ns:
                    q, k, v, g = fa4_inputs(n, n_q)
                    res[key][route][n] = statistics.median(
                        timed_ms(lambda: arm(q, k, v).backward(g), reps + 3)[3:])
        except Exception as e:  # one route failing (an unsupported shape, a missing library) leaves the others
            res.setdefault("route_errors", {})[route] = traceback.format_exc(limit=4)
            print(f"{route}: failed: {type(e).__name__}: {e}", flush=True)
            continue
        print(f"{route:8s} first call {res['first_call_s'][route]:.1f} s; patch fwd+bwd ms "
              + ", ".join(f"N={n} {res['patch_ms'][route][n]:.3f}" for n in ns)
              + "; query " + ", ".join(f"N={n} {res['query_ms'][route][n]:.3f}" for n in ns)
              + "; errors " + json.dumps(res["errors"][route]), flush=True)
    return res


def cuda_batch(frames: list[int]) -> dict:
    """A model-input batch on the GPU: one sample per entry of ``frames`` (its frame count), text
    of 40, 47, 54, ... tokens."""
    return {k: (v.cuda() if torch.is_tensor(v) else v)
            for k, v in model_inputs(dummy_batch(frames, [40 + 7 * i for i in range(len(frames))])).items()}


def loss_and_grads(model, batch: dict, variant: str) -> tuple[float, dict]:
    """One forward + backward of ``variant``: "flash" (the default), "cudnn" (patch attention),
    "liger" (fused linear cross-entropy), "query-reduce" (the query pass's attention written out,
    model.query_attention; eager here, as the other variants), "math" (PyTorch's math kernel for every SDPA
    call of the step, the LLM's too: a reference)."""
    for blk in model.encoder.patch_blocks:
        blk.attention = "cudnn" if variant == "cudnn" else "flash"
    for blk in model.encoder.query_blocks:
        blk.attention = variant.removeprefix("query-") if variant.startswith("query-") else "sdpa"
    model.cfg.liger_fused_ce = variant == "liger"
    model.zero_grad(set_to_none=True)
    pin = sdpa_kernel([SDPBackend.MATH]) if variant == "math" else contextlib.nullcontext()
    with pin, torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(**batch, mode="coarse_fine", compute_coarse=False, return_logits=False)["loss"]
        loss.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def grad_diff(a: dict, b: dict) -> float:
    """max |a - b| / max |a| over every parameter both hold."""
    top = max(float(g.abs().max()) for g in a.values())
    return max(float((a[n] - b[n]).abs().max()) for n in a) / top


def numerics(frames: list[int], model_cfg: ModelConfig, liger: bool = True) -> dict:
    """Loss and gradients of one batch for each variant of ``loss_and_grads`` ("liger" only
    where liger-kernel is installed)."""
    torch.manual_seed(0)
    model = build_model(model_cfg).cuda().train()
    batch = cuda_batch(frames)
    runs = {b: loss_and_grads(model, batch, b) for b in ("flash", "cudnn", "liger", "query-reduce", "math")
            if b != "liger" or liger}
    runs["flash_again"] = loss_and_grads(model, batch, "flash")  # the run-to-run noise of the default
    res = {"frames": frames, "loss": {b: r[0] for b, r in runs.items()},
           "grad_rel_diff_vs_flash": {b: grad_diff(runs["flash"][1], r[1]) for b, r in runs.items() if b != "flash"},
           "grad_rel_diff_vs_math": {b: grad_diff(runs["math"][1], r[1]) for b, r in runs.items() if b != "math"}}
    print("numerics (one batch, bf16 autocast, eager):", json.dumps(res, indent=1), flush=True)
    return res


def graphs_check(batches: list[list[int]], model_cfg: ModelConfig) -> dict:
    """``model.llm_cudagraphs`` on the GPU: the compiled model with its LLM as CUDA graphs
    against the same compiled model without them (both bucketed alike), under bf16 autocast, over
    the batches in turn, each shape met three times (warmed up, recorded, replayed): the loss and
    gradient differences of every training pass, the loss of a no-grad pass after it (as
    evaluation runs it: the model marks the graphs' step itself), and inductor's CUDA-graph
    counters (``cudagraph_skips``: regions it could not graph)."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    plain = build_model(model_cfg).cuda().train()
    graphed = build_model(model_cfg.model_copy(update={"llm_cudagraphs": True})).cuda().train()
    graphed.load_state_dict(plain.state_dict())
    plain.compile_blocks()
    graphed.compile_blocks()
    before = dict(counters["inductor"])
    passes, error = [], None
    try:
        for frames in batches * 3:  # CUDA graph trees warm a shape up, record it, then replay it
            batch = cuda_batch(frames)
            torch.compiler.cudagraph_mark_step_begin()
            ref, got = loss_and_grads(plain, batch, "flash"), loss_and_grads(graphed, batch, "flash")
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                no_grad = [float(m(**batch, mode="coarse_fine", return_logits=False)["loss"]) for m in (plain, graphed)]
            passes.append({"frames": frames, "loss": [ref[0], got[0]], "grad_rel_diff": grad_diff(ref[1], got[1]),
                           "no_grad_loss": no_grad})
    except RuntimeError as e:  # a failed replay: reported with the passes before it, the other parts still run
        error = str(e).splitlines()[0]
    graph_counters = {k: int(v) - int(before.get(k, 0)) for k, v in counters["inductor"].items() if "cudagraph" in k}
    # bf16 autocast: the default path and PyTorch's math attention differ by ~1.4 % in gradients
    # (numerics above); a broken replay differs by orders of magnitude
    off = lambda a, b: abs(b - a) > 1e-2 * abs(a)  # noqa: E731
    bad = [p for p in passes if off(*p["loss"]) or off(*p["no_grad_loss"]) or p["grad_rel_diff"] > 0.05]
    res = {"config": model_cfg.model_dump(include={"llm", "dino", "llm_row_bucket", "llm_length_bucket"}),
           "passes": passes,  # a region inductor could not graph logs "skipping cudagraphs due to ..."
           "inductor_cudagraph_counters": graph_counters, "error": error,
           "ok": not bad and not error and not graph_counters.get("cudagraph_skips", 0)}
    print("graphs (compiled, bf16 autocast; against the ungraphed compiled model):",
          json.dumps(res, indent=1), flush=True)
    del plain, graphed
    torch.cuda.empty_cache()
    return res


# llm-pass arms: name -> (ModelConfig switches, Liger's Llama kernels on transformers' layers, compiled)
LLM_ARMS = {
    "per_layer": ({}, False, True),  # the default training path: fused projections, compiled per layer
    "graphed": ({"llm_cudagraphs": True}, False, True),
    "hf_compiled": ({"fused_llm_projections": False}, False, True),  # transformers' layers as inductor fuses them
    "hf_liger": ({"fused_llm_projections": False}, True, False),
    "hf_liger_compiled": ({"fused_llm_projections": False}, True, True),
}


def llm_pass_table(shapes: list[tuple[int, int]], reps: int, arms: list[str]) -> dict:
    """The stage-1 LLM's training pass alone (``FoveatedVLM._causal_layers``: input [rows, length,
    576] -> hidden, forward + backward under bf16 autocast), buckets 16 x 16, for each arm of
    ``LLM_ARMS``: seconds to the first pass (compilation), then the median milliseconds at each
    shape (graphs replayed). Liger's kernels patch transformers' Llama module for the whole process
    (its RMSNorm class, its RoPE function), so its arms run after the others."""
    res = {}
    for name in sorted(arms, key=lambda a: LLM_ARMS[a][1]):  # Liger's arms last, in the order given
        switches, liger, compiled = LLM_ARMS[name]
        torch.manual_seed(0)
        torch.cuda.reset_peak_memory_stats()  # each arm's own peak, not the process's
        cfg = ModelConfig(llm_row_bucket=16, llm_length_bucket=16, **switches)
        model = build_model(cfg).cuda().train()
        if liger:
            from liger_kernel.transformers import apply_liger_kernel_to_llama

            apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, fused_linear_cross_entropy=False,
                                        model=model.llm)
        if compiled:
            model.compile_blocks()
        d = model.llm.config.hidden_size

        def one_pass(rows: int, length: int) -> None:
            # as a training step: a new step for the graph trees, gradients dropped (the graphed
            # backward writes them into its own pool, which its next replay overwrites)
            torch.compiler.cudagraph_mark_step_begin()
            model.zero_grad(set_to_none=True)
            h = torch.randn(rows, length, d, device="cuda", requires_grad=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model._causal_layers(h)
            out.float().square().mean().backward()

        row = {}
        try:  # a failed pass still leaves the compile time and the shapes timed before it, and the next arm runs
            t0 = time.perf_counter()
            one_pass(*shapes[0])
            torch.cuda.synchronize()
            row["first_pass_s"] = time.perf_counter() - t0
            print(f"LLM pass {name}: first pass (compilation) {row['first_pass_s']:.1f} s", flush=True)
            for rows, length in shapes:
                row[f"{rows}x{length}_ms"] = statistics.median(timed_ms(lambda: one_pass(rows, length), reps + 3)[3:])
        except Exception as e:  # noqa: BLE001 (Triton and inductor raise their own types)
            row["error"] = error_line(e)
        row["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        res[name] = row
        print(f"LLM pass {name}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in row.items()), flush=True)
        del model
        torch.cuda.empty_cache()
    return res


def stacked_qkv_block(block: PatchBlock):
    """``block``'s forward with q, k and v out of one multiply against the three weights stacked
    ([n, Np, D] @ [D, 3D]: the normed input read once instead of three times, and one GEMM with
    N = 3D = 1152 instead of three with N = 384). q, k, v become strided views of its output,
    which PyTorch's SDPA reads as they are (FA4's ops in model/fa4.py copy them contiguous)."""
    layer, H = block.layer, block.num_heads

    def forward(h: torch.Tensor):
        q_proj, k_proj, v_proj, o_proj = attn_linears(layer)
        x = layer.norm1(h)  # [n, Np, D]
        w = torch.cat([q_proj.weight, k_proj.weight, v_proj.weight])  # [3D, D]
        b = torch.cat([q_proj.bias, k_proj.bias, v_proj.bias])
        q, k, v = (split_heads(t, H) for t in F.linear(x, w, b).chunk(3, dim=-1))  # [n, H, Np, hd]
        a = patch_attention(q, k, v, block.attention)
        h = h + layer.drop_path(layer.layer_scale1(o_proj(merge_heads(a))))
        h = h + layer.drop_path(layer.layer_scale2(block.mlp(layer.norm2(h))))
        return h, k, v

    return forward


# arm -> (stacked q/k/v, torch.compile mode)
BLOCK_ARMS = {  # in the order they run by default: the slow-compiling autotune arms last
    "default": (False, None),
    "stacked_qkv": (True, None),
    "autotune": (False, "max-autotune-no-cudagraphs"),
    "stacked_qkv_autotune": (True, "max-autotune-no-cudagraphs"),
}


def patch_block_table(n: int, reps: int, arms: list[str], attention: str) -> dict:
    """The stage-1 model's first PatchBlock alone, [n, 257, 384] in and out, for each arm of
    ``BLOCK_ARMS``: seconds to the first forward + backward (compilation, autotuning included),
    median milliseconds of the rest, peak memory, and max |diff| / max |ref| of the output and
    of every gradient against the first arm's (bf16 autocast: differences of ~1e-2 are bf16's)."""
    model = build_model(ModelConfig()).cuda().train()
    dino = model.encoder.dino
    layer = dino.encoder.layer[0]
    torch.manual_seed(0)
    h = torch.randn(n, 257, dino.config.hidden_size, device="cuda", requires_grad=True)
    res, ref = {}, None
    for name in arms:
        stacked, mode = BLOCK_ARMS[name]
        block = PatchBlock(layer, dino.config.num_attention_heads, attention)
        fn = torch.compile(stacked_qkv_block(block) if stacked else block.forward, dynamic=True, mode=mode)
        torch._dynamo.reset()  # every arm compiles its own graphs
        torch.cuda.reset_peak_memory_stats()

        cotangents = []  # the gradients flowing in (to h', k, v), made once, in the outputs' dtypes

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = fn(h)
            cotangents[:] = cotangents or [torch.full_like(t, 1e-3) for t in out]
            return out, torch.autograd.grad(out, [h, *layer.parameters()], cotangents)

        row = {}
        try:
            t0 = time.perf_counter()
            out, grads = step()
            torch.cuda.synchronize()
            row["first_pass_s"] = time.perf_counter() - t0
            print(f"patch block {name}: first pass (compilation) {row['first_pass_s']:.1f} s", flush=True)
            row["ms"] = statistics.median(timed_ms(step, reps + 3)[3:])
            got = [t.float() for t in (*out, *grads)]
            if ref is None:
                ref = got
            row["max_rel_diff"] = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
                                      for a, b in zip(got, ref))
        except Exception as e:  # noqa: BLE001 (Triton and inductor raise their own types)
            row["error"] = error_line(e)
        row["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        res[name] = row
        print(f"patch block {name} (N={n}, {attention}): " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1536, help="N of the steady kernel timing")
    ap.add_argument("--new-shapes", default="1400,1411,1423,1437,1452,1466,1479,1493",
                    help="frame counts for first-call timings (never seen before in the process)")
    ap.add_argument("--reps", type=int, default=23)
    ap.add_argument("--batch-frames", default="8,4,1,16,0,3", help="frames a sample of the numerics batch")
    ap.add_argument("--parts", default="kernel,query,numerics", help="which parts, comma-separated "
                    "(also: fa4, FlashAttention-4's kernels; graphs, model.llm_cudagraphs' check on --graphs-model; "
                    "llm-pass, its timing; patch-block, one DINOv2 block's compile modes and stacked q/k/v)")
    ap.add_argument("--fa4-frames", default="768,1536,2304", help="fa4: the frame counts N it times")
    ap.add_argument("--graphs-model", default="tiny", choices=["tiny", "stage1"],
                    help="graphs: the tiny store model (compiles in seconds) or the stage-1 model")
    ap.add_argument("--llm-arms", default="per_layer,graphed", help="llm-pass: which arms, comma-separated "
                    f"({', '.join(LLM_ARMS)}; Liger's run last)")
    ap.add_argument("--block-arms", default=",".join(BLOCK_ARMS),
                    help=f"patch-block: which arms, comma-separated ({', '.join(BLOCK_ARMS)}; the first is the reference)")
    ap.add_argument("--block-attention", default="flash", choices=["flash", "cudnn", "fa4"],
                    help="patch-block: the patch attention, as model.dino_attention")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    known = ("kernel", "query", "numerics", "fa4", "graphs", "llm-pass", "patch-block")
    if parts - set(known):
        raise SystemExit(f"--parts takes {', '.join(known)}, got {args.parts}")
    arms = args.llm_arms.split(",")
    if set(arms) - set(LLM_ARMS):
        raise SystemExit(f"--llm-arms takes {', '.join(LLM_ARMS)}, got {args.llm_arms}")
    block_arms = args.block_arms.split(",")
    if set(block_arms) - set(BLOCK_ARMS):
        raise SystemExit(f"--block-arms takes {', '.join(BLOCK_ARMS)}, got {args.block_arms}")
    if not torch.cuda.is_available():
        raise SystemExit("bench_kernels.py times CUDA kernels: run it on a CUDA machine")
    configure_cuda_backends()  # as in training: TF32, cuDNN attention off unless pinned
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if "kernel" in parts:
        res["kernel"] = kernel_table(args.frames, [int(x) for x in args.new_shapes.split(",")], args.reps)
    if "query" in parts:
        res["query"] = query_table(args.frames, args.reps)
    if "numerics" in parts:
        liger = importlib.util.find_spec("liger_kernel") is not None
        res["numerics"] = numerics([int(x) for x in args.batch_frames.split(",")], ModelConfig(), liger)
    if "graphs" in parts:
        models = {"tiny": dict(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2"), "stage1": {}}
        cfg = ModelConfig(**models[args.graphs_model], llm_row_bucket=4, llm_length_bucket=16)
        res["graphs"] = graphs_check([[8, 4, 1, 16, 0, 3], [2, 2, 5]], cfg)
    if "llm-pass" in parts:  # the fine pass's shapes of bench12's batches, from short to long videos
        res["llm_pass"] = llm_pass_table([(448, 80), (256, 96), (96, 128), (512, 16)], args.reps, arms)
    if "patch-block" in parts:
        res["patch_block"] = patch_block_table(args.frames, args.reps, block_arms, args.block_attention)
    if "fa4" in parts:  # after the others: its SDPA route swaps PyTorch's flash kernels for FA4's
        res["fa4"] = fa4_table([int(x) for x in args.fa4_frames.split(",")], args.reps)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    if "graphs" in res and not res["graphs"]["ok"]:
        raise SystemExit("graphs: the graphed LLM differs from the ungraphed one (loss > 1 %, gradients > 5 %), "
                         "a pass failed or inductor skipped the graphs; see the passes above")


if __name__ == "__main__":
    main()
