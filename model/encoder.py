"""FoveatedEncoder: a DINOv2 backbone read by one query token per frame (DESIGN.md 1.2).

Two phases, run separately so one patch pass serves any number of queries:

1. ``encode_patches(frames)``: DINOv2 runs once over the real frames (the caller drops
   padded frames; with ``frame_bucket`` blank frames fill the stack up to the next multiple,
   and are dropped again from the cache): the HF embeddings, then every HF layer's weights through a
   ``PatchBlock`` (blocks.py), which is the layer written out so that it also returns
   the keys/values its attention used (``W_k LN1(h) + b_k``, full width); the cache
   costs no extra FLOPs. The query is never part of this pass, so the patches can
   never attend to it ("asymmetric mask" by construction). uint8 frames (the packed
   training batch) are ImageNet-normalised here, on the device.

2. ``query_pass(cache, queries)``: a query token with its own residual stream walks
   through every DINOv2 block, reusing that block's weights, but its attention
   keys/values are only the cached CLS+patch K/V of that layer (it does not attend
   to itself): a ``QueryBlock`` (blocks.py). Fused SDPA on the training path; ``return_attn=True`` computes the
   softmax explicitly and also returns each layer's weights [n, H, 1, Np].

   deep (default):  h = W_in q                                        [n, 1, D]
                    for each block l:
                        a = MHA(W_q LN1(h), K_l, V_l)                  [n, 1, D]
                        h = h + ls1 * W_o a
                        h = h + ls2 * MLP(LN2(h))
                    z = output_proj(LN_final(h))                      [n, D]
   shallow (A1/A7): a = MHA(Q = W_in q (no LN, no W_q), K/V = last block's k/v
                    projections of LN1(final features)); z = output_proj(LN_final(a))

FLOPs for DINOv2-small at 224 px (Np = 257, D = 384, 12 layers), per frame (1 MAC = 2 FLOP):
    patch pass   12 * Np * (24 D^2 + 4 Np D)        ~ 12.1 GFLOP (6.07 GMAC: the repo's
                 "6.07 GFLOP" counts MACs)
    query pass   12 * (20 D^2 + 4 Np D)  (1 token)  ~ 40 MFLOP: q/o projections and the
                 MLP for one token plus attention over Np cached keys; ~300x cheaper.

Attribute names follow transformers 5.24 ``modeling_dinov2.py``: ``dino.embeddings``,
``dino.encoder.layer[i].{norm1, attention.{q,k,v,o}_proj, layer_scale1, drop_path,
norm2, mlp, layer_scale2}``, ``dino.layernorm`` (``attn_linears`` also accepts the older
``attention.attention.{query,key,value}`` / ``attention.output.dense`` naming).

Decisions: ``query_input_proj`` has no bias (BUG-002; ``query_bias=True`` brings it
back for ablation A3); ``query_dim`` is free (A2 uses 192). The patch pass does not
chunk frames: K/V are activations autograd keeps anyway, so chunking would not lower
the training peak; call it in chunks under ``torch.no_grad`` if needed for inference.
``compile_blocks()`` compiles the two block types once each (regional torch.compile);
``checkpoint_patches = True`` recomputes each PatchBlock in backward (gradient checkpointing);
``checkpoint_layers = k`` limits that to the first k blocks (None = all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (  # noqa: F401 (attn_linears re-exported)
    PatchBlock, QueryBlock, attn_linears, check_gelu_mlp, merge_heads, normalize_frames, query_weights,
    split_heads,
)


def bucketed_frames(n: int, bucket: int) -> int:
    """The frame count the patch pass runs at: ``n`` rounded up to a multiple of ``bucket``
    (``model.frame_bucket``; 0 = ``n`` itself), e.g. 65 -> 128 and 128 -> 128 at 64."""
    return -(-n // bucket) * bucket if bucket > 0 else n


@dataclass
class PatchCache:
    """Per-layer keys/values of the patch pass, for ``n`` real frames.

    keys[l], values[l]: [n, H, Np, hd] (views of the k/v projections, biases included)
    features:           [n, Np, D]  final LayerNorm output (== Dinov2Model.last_hidden_state)
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    features: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.features.shape[0]

    @property
    def num_tokens(self) -> int:
        """Np: the keys each query attends over (CLS + patches of the frames' own size)."""
        return self.keys[0].shape[-2]

    def select(self, idx: torch.Tensor) -> "PatchCache":
        """Rows ``idx`` [m] of every tensor -> a cache of m frames (used frame by frame)."""
        return PatchCache(
            keys=[k[idx] for k in self.keys],
            values=[v[idx] for v in self.values],
            features=self.features[idx],
        )


class FoveatedEncoder(nn.Module):
    """DINOv2 + query-token read-out. ``dino`` is any HF ``Dinov2Model`` (small/base, real or random).

    Args:
        dino: a ``transformers.Dinov2Model``.
        query_dim: width Dq of the query vectors fed to ``query_pass`` (None -> D).
        deep_query: True = query walks all blocks; False = one shallow cross-attention.
        query_bias: bias on ``query_input_proj`` (False, BUG-002).
        patch_attention: ``model.dino_attention`` ("flash", "cudnn" or "fa4"; blocks.patch_attention).
        frame_bucket: ``model.frame_bucket`` (0 = off): the patch pass's frame count is rounded
            up to a multiple of it (``bucketed_frames``).
        query_attention: ``model.query_attention`` ("auto", "sdpa" or "reduce"; blocks.query_attention).
        recompute_gelu: ``model.dino_recompute_gelu``: the PatchBlocks' MLP keeps fc1's output
            only and runs GELU again in backward (blocks.PatchBlock).
    """

    def __init__(self, dino: nn.Module, query_dim: int | None = None, deep_query: bool = True,
                 query_bias: bool = False, patch_attention: str = "flash", frame_bucket: int = 0,
                 query_attention: str = "auto", recompute_gelu: bool = False):
        super().__init__()
        self.dino = dino
        cfg = dino.config
        self.dim = cfg.hidden_size  # D
        self.num_heads = cfg.num_attention_heads  # H
        self.head_dim = self.dim // self.num_heads  # hd
        self.num_layers = cfg.num_hidden_layers  # L
        self.query_dim = query_dim or self.dim  # Dq
        self.output_dim = self.dim
        self.deep_query = deep_query
        self.query_input_proj = nn.Linear(self.query_dim, self.dim, bias=query_bias)  # Dq -> D
        self.output_proj = nn.Linear(self.dim, self.output_dim)  # D -> D
        # Views of the HF layers (no weights of their own, not in the state dict).
        if recompute_gelu:
            check_gelu_mlp(self.layers[0], cfg.hidden_act)
        self.patch_blocks = [PatchBlock(layer, self.num_heads, patch_attention, recompute_gelu)
                             for layer in self.layers]
        self.query_blocks = [QueryBlock(layer, self.num_heads, query_attention) for layer in self.layers]
        self.checkpoint_patches = False
        self.checkpoint_layers: int | None = None
        self.frame_bucket = frame_bucket

    def compile_blocks(self, **compile_kw) -> None:
        """Regional torch.compile: one graph for the 12 PatchBlocks, one for the QueryBlocks.

        The frame dimension stays dynamic (``dynamic=True`` from FoveatedVLM.compile_blocks),
        with ``frame_bucket`` too: inductor's dynamic-shape kernels serve every count from one
        graph, whereas a static frame dim would compile forward + backward again for each bucket
        (up to 24 at 1536 units / 64). What bucketing removes is the per-count cost below
        inductor: cuDNN's execution plans, built at run time for each new shape."""
        for block in self.patch_blocks + self.query_blocks:
            block.compile(**compile_kw)

    # -- helpers ----------------------------------------------------------------------
    @property
    def layers(self) -> nn.ModuleList:
        return self.dino.encoder.layer

    @property
    def patch_size(self) -> int:
        p = self.dino.config.patch_size
        return p[0] if isinstance(p, (tuple, list)) else p

    def num_tokens(self, height: int, width: int | None = None) -> int:
        """Np for frames of ``height`` x ``width`` px: 1 (CLS) + (H // patch) * (W // patch),
        e.g. 257 at 224 px / patch 14 (+ register tokens, for models that have them).

        Counted from the input, never from ``config.image_size``: the published DINOv2 configs
        say 518 (37 x 37 position embeddings, 1370 tokens), which the embeddings interpolate
        to the input's grid; a PatchCache knows its own count (``PatchCache.num_tokens``)."""
        p = self.patch_size
        registers = getattr(self.dino.config, "num_register_tokens", 0) or 0
        return 1 + registers + (height // p) * ((width or height) // p)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[n, N, D] -> [n, H, N, hd]."""
        return split_heads(x, self.num_heads)

    # -- phase 1: patch pass -------------------------------------------------------------
    def encode_patches(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> PatchCache:
        """Run DINOv2 over real frames only and cache every layer's K/V.

        frames: [n, 3, H, W] real frames, or [B, T, 3, H, W] with frame_mask [B, T] (padded
        frames are dropped before DINOv2; flat order = frames[frame_mask], b-major).
        returns PatchCache with keys/values [n, H, Np, hd] per layer, features [n, Np, D].

        With ``frame_bucket``, blank (all-zero) frames fill the stack up to
        ``bucketed_frames(n)`` and every block runs over that many; the cache keeps the first n
        rows. Frames never mix in DINOv2 (per-frame attention, per-token norms), so the real
        frames' outputs are the unpadded pass's and the blank ones get no gradient.
        """
        if frame_mask is not None:
            frames = frames[frame_mask.bool()]
        if frames.dim() != 4:
            raise ValueError(f"encode_patches expects [n,3,H,W], got {tuple(frames.shape)}")
        n = frames.shape[0]
        padded = bucketed_frames(n, self.frame_bucket)
        if padded > n:  # before normalising: uint8 is the smallest copy
            frames = torch.cat([frames, frames.new_zeros(padded - n, *frames.shape[1:])])
        frames = normalize_frames(frames).contiguous(memory_format=torch.channels_last)
        keys, values = [], []  # per layer [n, H, Np, hd]
        h = self.dino.embeddings(frames)  # [padded, Np, D]: CLS + patches + pos-emb
        recomputed = 0  # the first blocks, recomputed in backward (gradient checkpointing)
        if self.checkpoint_patches and torch.is_grad_enabled():
            recomputed = len(self.patch_blocks) if self.checkpoint_layers is None else self.checkpoint_layers
        for i, block in enumerate(self.patch_blocks):
            if i < recomputed:
                h, k, v = torch.utils.checkpoint.checkpoint(block, h, use_reentrant=False)
            else:
                h, k, v = block(h)
            keys.append(k[:n])
            values.append(v[:n])
        feats = self.dino.layernorm(h[:n])  # [n, Np, D]
        return PatchCache(keys=keys, values=values, features=feats)

    # -- phase 2: query pass -------------------------------------------------------------
    def query_pass(self, cache: PatchCache, queries: torch.Tensor, return_attn: bool = False):
        """One foveated token per frame.

        cache:   PatchCache of n frames.
        queries: [n, Dq] (one query per frame) or [1, Dq] (broadcast).
        returns  z [n, D]; with return_attn also a list of L (deep) or 1 (shallow)
                 attention-weight tensors [n, H, 1, Np].
        """
        n = cache.num_frames
        if queries.dim() != 2 or queries.shape[-1] != self.query_dim:
            raise ValueError(f"queries must be [n,{self.query_dim}], got {tuple(queries.shape)}")
        h = self.query_input_proj(queries).unsqueeze(1).expand(n, 1, self.dim)  # [n, 1, D]
        if self.deep_query:
            h, attn = self._deep(cache, h, return_attn)
        else:
            h, attn = self._shallow(cache, h, return_attn)
        z = self.output_proj(self.dino.layernorm(h))[:, 0]  # [n, D]
        return (z, attn) if return_attn else z

    def _attend(self, q, k, v, return_attn: bool):
        """q [n,H,1,hd], k/v [n,H,Np,hd] -> out [n,1,D] (+ weights [n,H,1,Np])."""
        if return_attn:  # explicit softmax (diagnostics, heatmaps)
            w = query_weights(q, k)  # [n, H, 1, Np]
            out = w.to(v.dtype) @ v
        else:  # fused kernel: ~4*Np*D FLOPs per layer for the 1-token query
            w = None
            out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(hd), as DINOv2
        return merge_heads(out), w

    def _deep(self, cache: PatchCache, h: torch.Tensor, return_attn: bool):
        if not return_attn:  # the training path: one QueryBlock per layer
            for block, k, v in zip(self.query_blocks, cache.keys, cache.values):
                h = block(h, k, v)
            return h, []
        attn = []  # explicit softmax, same arithmetic as QueryBlock
        for layer, k, v in zip(self.layers, cache.keys, cache.values):
            q_proj, _, _, o_proj = attn_linears(layer)
            q = self._heads(q_proj(layer.norm1(h)))  # [n, H, 1, hd]
            a, w = self._attend(q, k.to(q.dtype), v.to(q.dtype), return_attn)  # [n, 1, D]
            h = h + layer.drop_path(layer.layer_scale1(o_proj(a)))
            h = h + layer.drop_path(layer.layer_scale2(layer.mlp(layer.norm2(h))))
            if return_attn:
                attn.append(w)
        return h, attn

    def _shallow(self, cache: PatchCache, h: torch.Tensor, return_attn: bool):
        last = self.layers[-1]
        _, k_proj, v_proj, _ = attn_linears(last)
        x = last.norm1(cache.features)  # LN1 of the final (post-LayerNorm) features
        k, v = self._heads(k_proj(x)), self._heads(v_proj(x))  # [n, H, Np, hd]
        a, w = self._attend(self._heads(h), k.to(h.dtype), v.to(h.dtype), return_attn)  # no W_q/W_o/FFN
        return a, ([w] if return_attn else [])

    def forward(self, frames: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Convenience: frames [n,3,H,W], queries [n,Dq] -> z [n,D]."""
        return self.query_pass(self.encode_patches(frames), queries)
