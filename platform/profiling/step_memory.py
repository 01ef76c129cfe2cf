"""Estimated memory of one training step, before any GPU is rented: the model on the meta device
(``build_model_on_meta``: shapes and dtypes, no weights, no memory), one forward pass of a
micro-batch through the saved-tensor ledger of saved_tensors.py, plus the training state.

    est = estimate_step_memory(cfg)              # a RunConfig
    est.state_gb, est.worst_gb, est.typical_gb   # GB; est.total / est.trainable parameters

* **Training state**: each trainable parameter, its gradient and AdamW's two moments (4 x its
  bytes: 16 B in fp32); each frozen parameter once.
* **Activations**: the bytes autograd saves for backward in the forward pass of training
  (coarse pass, fine pass, the LM head on the target positions; ``model.gradient_checkpointing``
  as configured, the inputs a checkpointed region keeps counted too), for two micro-batches of
  ``data.batch_size`` samples: the worst case (``data.max_frames`` frames, capped by
  ``data.max_total_frames``, and ``data.max_text_tokens`` tokens each) and a typical one
  (``TYPICAL_FRAMES`` frames, ``TYPICAL_TEXT`` tokens: the FLOP model's sample).
* **Precision**: on a GPU the step runs under bf16 autocast (``training.precision=auto``), which
  does not run on the meta device: ``MetaKernels`` applies its casting rules at the level of
  torch functions (matmuls, convolutions and attention in bf16; norms, softmax and losses in
  fp32; casts of trainable leaf parameters cached, as autocast does), and runs attention as the
  device's fused kernel would (the meta device would take the math path, which saves the
  attention weights), so the same tensors are saved. tests/test_step_memory.py checks it against
  a real CPU step (CPU autocast's rules, the CPU's flash kernel) on the tiny model.

On an H100 the saved bytes equalled those of a real CUDA bf16 step to the byte, and the peak of
a plain eager AdamW step was 0.88-1.10x state + saved (docs/PERFORMANCE.md: backward frees
activations while it allocates gradients, and adds transient buffers). Not in it: DDP's gradient
buckets, torch.compile's buffers, the allocator's fragmentation, the CUDA context (the training
loop's measured peaks were 1.5x ``jobs/bench/bench_memory.py``'s projection).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from fovea.model.blocks import FRAME_SIZE
from fovea.platform.profiling.saved_tensors import count_checkpoint_inputs, measure

TYPICAL_FRAMES, TYPICAL_TEXT = 8, 128  # the FLOP model's sample (search_spaces/scaling_flops.yaml)

_MATMULS = (F.linear, F.conv1d, F.conv2d, F.conv3d, F.scaled_dot_product_attention, torch.matmul,
            torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm, torch.bmm,
            torch.Tensor.bmm, torch.addmm, torch.baddbmm, torch.addbmm, torch.einsum)
_LOSSES = (F.cross_entropy, F.nll_loss, F.mse_loss, F.l1_loss, F.kl_div,
           F.binary_cross_entropy_with_logits)
# torch.autocast's lists (torch/csrc/autograd/autocast_mode.cpp), for the functions this model calls
POLICIES = {
    "cuda": {"lower": _MATMULS,
             "fp32": _LOSSES + (F.layer_norm, F.group_norm, F.softmax, F.log_softmax, torch.softmax,
                                torch.log_softmax, torch.Tensor.softmax, torch.Tensor.log_softmax,
                                torch.exp, torch.Tensor.exp, torch.log, torch.Tensor.log, torch.pow,
                                torch.Tensor.pow, torch.rsqrt, torch.Tensor.rsqrt, torch.sum,
                                torch.Tensor.sum, torch.cumsum, torch.Tensor.cumsum, torch.logsumexp)},
    "cpu": {"lower": _MATMULS, "fp32": _LOSSES},
}


class MetaKernels(TorchFunctionMode):
    """What a ``device`` step's kernels save for backward, on the meta device.

    * ``dtype`` (bf16): torch.autocast's casting rules, which autocast does not apply on the meta
      device: the ``lower`` functions get their fp32 inputs in ``dtype``, the ``fp32`` ones their
      low-precision inputs in fp32; the cast of a trainable leaf parameter is made once and
      reused. None: no autocast.
    * Attention: ``scaled_dot_product_attention`` on the meta device would take the math path
      and save the [L, L] attention weights; the fused kernel the device takes instead saves the
      inputs, the output and the log-sum-exp only (flash attention on a GPU in bf16, the
      memory-efficient kernel in fp32, the CPU's flash kernel on a CPU)."""

    def __init__(self, dtype: torch.dtype | None = torch.bfloat16, device: str = "cuda"):
        super().__init__()
        self.dtype, self.device = dtype, device
        self.lower = set(POLICIES[device]["lower"]) if dtype else set()
        self.fp32 = set(POLICIES[device]["fp32"]) if dtype else set()
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def cast(self, x, to: torch.dtype, src: tuple[torch.dtype, ...]):
        if not (isinstance(x, torch.Tensor) and x.dtype in src):
            return x
        if to == self.dtype and x.is_leaf and x.requires_grad and not x._is_view():
            hit = self.cache.get(id(x))
            if hit is None or hit[0] is not x:  # keep x alive with its cast, as autocast's cache does
                hit = self.cache[id(x)] = (x, x.to(to))
            return hit[1]
        return x.to(to)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.lower:
            to, src = self.dtype, (torch.float32,)
        elif func in self.fp32:
            to, src = torch.float32, (torch.bfloat16, torch.float16)
        else:
            to = None
        if to is not None:
            args = [self.cast(a, to, src) for a in args]
            kwargs = {k: self.cast(v, to, src) for k, v in kwargs.items()}
        if func is F.scaled_dot_product_attention:
            return self.attention(*args, **kwargs)
        return func(*args, **kwargs)

    def attention(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if attn_mask is not None or dropout_p or q.device.type != "meta":
            return F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale=scale,
                                                  enable_gqa=enable_gqa)
        ops = torch.ops.aten
        if self.device == "cpu":
            return ops._scaled_dot_product_flash_attention_for_cpu(q, k, v, is_causal=is_causal, scale=scale)[0]
        if q.dtype == torch.float32 and q.shape[1] == k.shape[1]:
            return ops._scaled_dot_product_efficient_attention(q, k, v, None, True, is_causal=is_causal,
                                                               scale=scale)[0]
        return ops._scaled_dot_product_flash_attention(q, k, v, is_causal=is_causal, scale=scale)[0]


@dataclass
class StepMemory:
    total: int  # parameters
    trainable: int
    state_bytes: int
    worst_bytes: int  # saved activations of the worst-case micro-batch
    typical_bytes: int
    worst_batch: str  # e.g. "8 x 64 frames, 512 tokens"

    @property
    def state_gb(self) -> float:
        return self.state_bytes / 2**30

    @property
    def worst_gb(self) -> float:
        return (self.state_bytes + self.worst_bytes) / 2**30

    @property
    def typical_gb(self) -> float:
        return (self.state_bytes + self.typical_bytes) / 2**30


def training_state_bytes(model) -> int:
    """Trainable: parameter + gradient + AdamW's exp_avg and exp_avg_sq; frozen: the parameter."""
    return sum(p.numel() * p.element_size() * (4 if p.requires_grad else 1) for p in model.parameters())


def meta_batch(samples: int, frames: int, text: int, frame_size: int = FRAME_SIZE) -> dict:
    """A packed training micro-batch on the meta device (the masks on the host, as the loader's):
    ``samples`` x ``frames`` uint8 frames, ``text`` tokens each."""
    fm = torch.ones(samples, frames, dtype=torch.bool)
    am = torch.ones(samples, text, dtype=torch.bool)
    return {"frames": torch.empty(samples * frames, 3, frame_size, frame_size, dtype=torch.uint8, device="meta"),
            "frame_mask": fm, "input_ids": torch.full((samples, text), 5), "attention_mask": am,
            "loss_mask": am.float()}


def saved_bytes(model, batch: dict, autocast) -> int:
    """Bytes saved for backward by one training forward pass of ``batch``."""
    return sum(measure(model, batch, autocast).bytes.values())


def worst_frames(data) -> tuple[int, int]:
    """(samples, frames each) of the largest micro-batch the loader can make (in a mixture, of
    its source with the most frames a sample; a single image counts its replicated frames)."""
    sections = [data.source_config(name) for name in data.mixture] if data.mixture else [data]
    f = max(max(c.max_frames, c.replicate_image_frames) for c in sections)
    if data.max_total_frames:
        f = max(1, min(f, data.max_total_frames // data.batch_size))
    return data.batch_size, f


def estimate_step_memory(cfg, gpu: bool = True) -> StepMemory:
    """``cfg`` (a RunConfig) -> StepMemory of one micro-batch's training step on one worker, in
    bf16 autocast unless ``training.precision=fp32`` (or ``gpu=False`` with ``auto``)."""
    from fovea.model.build import build_model_on_meta

    count_checkpoint_inputs()  # before the model: transformers binds the checkpoint function then
    model = build_model_on_meta(cfg.model).train()
    bf16 = cfg.training.precision == "bf16" or (cfg.training.precision == "auto" and gpu)

    def autocast():
        return MetaKernels(torch.bfloat16 if bf16 else None, "cuda" if gpu else "cpu")

    B, f = worst_frames(cfg.data)
    worst = saved_bytes(model, meta_batch(B, f, cfg.data.max_text_tokens), autocast)
    typical = saved_bytes(model, meta_batch(B, min(TYPICAL_FRAMES, f), TYPICAL_TEXT), autocast)
    params = list(model.parameters())
    return StepMemory(total=sum(p.numel() for p in params),
                      trainable=sum(p.numel() for p in params if p.requires_grad),
                      state_bytes=training_state_bytes(model), worst_bytes=worst, typical_bytes=typical,
                      worst_batch=f"{B} x {f} frames, {cfg.data.max_text_tokens} tokens")


def real_step_check(model_cfg, samples: int, frames: int, text: int) -> dict:
    """The estimate against a real CUDA step of ``model_cfg`` (random weights from the configs):
    saved bytes under ``torch.autocast`` and the peak of the second AdamW step (the first makes
    AdamW's state) -> figures in GB (jobs/bench/bench_step_memory.py)."""
    import gc

    from transformers import AutoModel, AutoModelForCausalLM

    from fovea.model.build import apply_training_flags, build_model_on_meta
    from fovea.model.store import model_config
    from fovea.model.vlm import FoveatedVLM

    count_checkpoint_inputs()
    meta, mb = build_model_on_meta(model_cfg).train(), meta_batch(samples, frames, text)
    est = saved_bytes(meta, mb, lambda: MetaKernels(torch.bfloat16, "cuda"))
    state = training_state_bytes(meta)
    with torch.device("cuda"):
        llm = AutoModelForCausalLM.from_config(model_config(model_cfg.llm), dtype=torch.float32,
                                               attn_implementation=model_cfg.attn_implementation)
        model = apply_training_flags(FoveatedVLM(llm, AutoModel.from_config(model_config(model_cfg.dino)),
                                                 model_cfg)).train()
    batch = {**mb, "frames": torch.randint(0, 255, mb["frames"].shape, dtype=torch.uint8, device="cuda")}
    real = saved_bytes(model, batch, lambda: torch.autocast("cuda", dtype=torch.bfloat16))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    for i in range(2):
        if i:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(**batch, mode="coarse_fine", compute_coarse=False, return_logits=False)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del out
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, opt, batch
    gc.collect()
    torch.cuda.empty_cache()
    gb = 2**30
    return {"state_est_GB": state / gb, "saved_est_GB": est / gb, "saved_real_GB": real / gb,
            "step_est_GB": (state + est) / gb, "peak_real_GB": peak / gb, "peak_over_est": peak / (state + est)}
