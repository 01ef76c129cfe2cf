"""The LLM's decoder layer with fused input projections (``model.fused_llm_projections``).

``FusedDecoderLayer(layer)(h, cos, sin)`` computes what the Hugging Face Llama layer computes
for a causal pass with no cache and no mask (every training pass: ``FoveatedVLM._causal_layers``),
with fewer matrix multiplies: q, k and v come out of one multiply against the three weights
stacked, gate and up out of one against theirs.  The weights stay the HF layer's parameters
(stacked on the fly, so the state dict, checkpoints and ``from_pretrained`` do not change).

Why: on several GPUs the training step is bound by how fast each rank's host launches kernels
inside backward and the LLM passes.  Per layer and pass:

    HF layer     7 matmuls forward (and 7 weight casts under bf16 autocast); 14 backward
    this layer   4 matmuls forward (4 casts of the stacked weights); 8 backward

SmolLM2-135M: 30 layers, 2 passes with gradient (4 forward runs with LLM checkpointing), so
30 x (3 x 4 + 6 x 2) = 720 fewer matmul launches in a step, and fewer weight casts.  It pays
where the host's launches bound the step (several GPUs) and costs a little where the GPU's work
does (one GPU).  Attention goes through transformers' own ``sdpa_attention_forward`` (``enable_gqa``,
no repeated K/V), exactly as the HF layer computes it.

Shapes: h [B,L,d], cos/sin [1,L,hd] (the LLM's rotary embedding), H query heads, KV key/value
heads (GQA: each K/V head serves H / KV query heads), hd = d / H.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb


def stacked_linear(x: torch.Tensor, linears: tuple[nn.Linear, ...]) -> torch.Tensor:
    """x [..., d_in] through several Linear layers at once -> [..., sum of their d_out].
    (A Llama layer's projections all have a bias or none do: ``attention_bias``, ``mlp_bias``.)"""
    w = torch.cat([m.weight for m in linears])  # [sum d_out, d_in]
    b = None if linears[0].bias is None else torch.cat([m.bias for m in linears])
    return F.linear(x, w, b)


class FusedDecoderLayer(nn.Module):
    """One HF Llama decoder layer, causal, no cache: h [B,L,d] -> h' [B,L,d].

    Holds no weights of its own (the HF layer is not registered as a submodule)."""

    NEEDS = ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
             "self_attn.v_proj", "self_attn.o_proj", "self_attn.head_dim", "self_attn.scaling",
             "self_attn.num_key_value_groups",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "mlp.act_fn")

    def __init__(self, layer: nn.Module):
        super().__init__()
        for path in self.NEEDS:  # a Llama-family layer (SmolLM2); anything else is named, not guessed
            obj = layer
            for name in path.split("."):
                if not hasattr(obj, name):
                    raise ValueError(f"model.fused_llm_projections needs a Llama-family decoder layer: "
                                     f"{type(layer).__name__} has no {path}")
                obj = getattr(obj, name)
        object.__setattr__(self, "layer", layer)  # not a submodule: no second copy in state dicts

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        at, mlp = layer.self_attn, layer.mlp
        B, L, _ = h.shape
        hd = at.head_dim
        H, KV = at.q_proj.out_features // hd, at.k_proj.out_features // hd
        qkv = stacked_linear(layer.input_layernorm(h), (at.q_proj, at.k_proj, at.v_proj))
        q, k, v = qkv.split((H * hd, KV * hd, KV * hd), dim=-1)
        q = q.view(B, L, H, hd).transpose(1, 2)  # [B, H, L, hd]
        k = k.view(B, L, KV, hd).transpose(1, 2)  # [B, KV, L, hd]
        v = v.view(B, L, KV, hd).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)  # HF's own rotary, cos/sin [1, L, hd]
        # HF's own SDPA call, as the layer makes it with no mask: causal, and GQA inside the
        # kernel (enable_gqa: K/V stay [B, KV, L, hd], not repeated to H heads)
        p = at.attention_dropout if self.training else 0.0
        a, _ = sdpa_attention_forward(at, q, k, v, None, dropout=p, scaling=at.scaling, is_causal=True)
        h = h + at.o_proj(a.reshape(B, L, H * hd))  # a [B, L, H, hd]
        gate, up = stacked_linear(layer.post_attention_layernorm(h), (mlp.gate_proj, mlp.up_proj)).chunk(2, dim=-1)
        return h + mlp.down_proj(mlp.act_fn(gate) * up)


def fused_causal_pass(layers: nn.ModuleList, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """h [B,L,d] through every FusedDecoderLayer. With the HF layers' gradient checkpointing on
    (``model.gradient_checkpointing=true``) each layer is recomputed in backward, checkpointed
    around its (compiled) call as HF checkpoints its own layers."""
    for layer in layers:
        if layer.training and torch.is_grad_enabled() and getattr(layer.layer, "gradient_checkpointing", False):
            h = checkpoint(layer, h, cos, sin, use_reentrant=False)
        else:
            h = layer(h, cos, sin)
    return h
