"""FlashAttention-4's kernels for DINOv2's patch attention (``model.dino_attention=fa4``).

``flash-attn-4`` (PyPI; CuTe-DSL kernels with forward and backward for SM90 and SM100, compiled
on first use) comes with the ``gpu`` extra, pinned to the measured release because the ops
below call its ``_flash_attn_fwd`` / ``_flash_attn_bwd``, as PyTorch's own registration does;
asking for fa4 without the package raises with the install line. The two kernels are wrapped
as ``torch.library`` custom ops, so a compiled PatchBlock calls them as one opaque op each
(dynamo cannot trace the CuTe DSL) and ``torch.utils.checkpoint`` recomputes the forward like
any other op.

Why not PyTorch's own switch, ``torch.nn.attention.activate_flash_attention_impl("FA4")``: it
replaces SDPA's flash kernels for the whole process, the LLM's causal passes included, which
were not measured with it; and with torch 2.11 and this release it fails (it unpacks two of the
five values ``_flash_attn_fwd`` returns; docs/PERFORMANCE.md). The ops below touch the patch
attention only.

Layout: FA4 reads [n, Np, H, hd], which is how the q/k/v projections lay the heads out before
``blocks.split_heads`` views them as [n, H, Np, hd]; the transposes below are views, no copies.
    forward   out [n, Np, H, hd], lse [n, H, Np] (fp32, kept for backward)
    backward  dq, dk, dv [n, Np, H, hd]
"""

from __future__ import annotations

import torch

FA4_MISSING = ("model.dino_attention=fa4 needs flash-attn-4 (FlashAttention-4's CuTe kernels, SM90/SM100 "
               "GPUs): pip install 'fovea[gpu]' or pip install flash-attn-4 (or set model.dino_attention=flash)")


def fa4_interface():
    """flash_attn.cute.interface; without the package, an ImportError with the install line."""
    try:
        from flash_attn.cute import interface
    except ImportError as err:
        raise ImportError(FA4_MISSING) from err
    return interface


@torch.library.custom_op("fovea::fa4_forward", mutates_args=())
def fa4_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # _flash_attn_fwd returns (out, lse, ...): 4.0.0b40 adds three more, so take the first two
    out, lse = fa4_interface()._flash_attn_fwd(q.contiguous(), k.contiguous(), v.contiguous(), return_lse=True)[:2]
    return out, lse


@fa4_forward.register_fake
def _(q, k, v):
    n, length, heads, _ = q.shape
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(n, heads, length,
                                                                                    dtype=torch.float32)


@torch.library.custom_op("fovea::fa4_backward", mutates_args=())
def fa4_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, dout: torch.Tensor,
                 lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = fa4_interface()._flash_attn_bwd(q.contiguous(), k.contiguous(), v.contiguous(), out,
                                              dout.contiguous(), lse)[:3]
    return dq, dk, dv


@fa4_backward.register_fake
def _(q, k, v, out, dout, lse):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse = ctx.saved_tensors
    return fa4_backward(q, k, v, out, dout, lse)


fa4_forward.register_autograd(_backward, setup_context=_setup_context)


def fa4_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``scaled_dot_product_attention(q, k, v)`` (scale 1/sqrt(hd), no mask) through FA4's kernels.
    q, k, v [n, H, Np, hd] bf16/fp16 on an SM90/SM100 GPU -> [n, H, Np, hd]."""
    out, _ = fa4_forward(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)
