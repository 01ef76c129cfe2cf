"""Foveation health checks (DESIGN.md 7), cheap enough to log every N steps.

``forward(..., return_diagnostics=True)`` adds ``out["diagnostics"]``, a flat dict of
Python floats (MLflow-ready):

    q_static_std                   ~1.0 at init (BUG-001: 0.02 made fine == coarse)
    attn_entropy_max               log Np (uniform attention; 5.55 for the 257 keys of a 224-px
                                   frame), Np counted in the K/V cache (absent without frames)
    attn_entropy_coarse            entropy of the q_static query over CLS+patches, mean
                                   over frames, heads and layers (nats)
    attn_entropy_coarse_l{i}       the same for layer i
    attn_entropy_fine[_l{i}]       for the fine (dynamic) queries, when the mode has them
    fine_coarse_token_diff         mean |z_fine - z_coarse| over real frames and channels
                                   (encoder outputs; ~0 means the queries do nothing)
    loss_ratio                     loss_fine / loss_coarse (< 1: foveation helps; NaN when
                                   either is not computed)

Cost: two extra query passes with explicit softmax over the cached K/V (~40 MFLOP per
frame each for DINOv2-small, vs ~12 GFLOP for the patch pass) and a few reductions.
Healthy runs: entropy well below log Np (Phase-1 runs logged 2.9-4.4), token diff > 0.5.
"""

from __future__ import annotations

import math

import torch


def attention_entropy(weights: list[torch.Tensor]) -> torch.Tensor:
    """Shannon entropy per layer, mean over frames and heads.

    weights: list of L tensors [n, H, 1, Np] (rows sum to 1) -> [L] (nats).
    """
    out = []
    for w in weights:
        w = w.float()
        ent = -(w * torch.log(w.clamp_min(1e-12))).sum(-1)  # [n, H, 1]
        out.append(ent.mean())
    return torch.stack(out)


@torch.no_grad()
def forward_diagnostics(model, cache, z_c, z_f, q_f, loss_fine, loss_coarse) -> dict[str, float]:
    """cache: PatchCache or None, z_c/z_f [n,D] or None, q_f [n,Dq] or None -> dict of floats."""
    d: dict[str, float] = {
        "q_static_std": float(model.q_static.float().std()),
        "q_init_std": float(model.q_init.float().std()),
    }
    lf, lc = float(loss_fine), float(loss_coarse)
    d["loss_ratio"] = lf / lc if (math.isfinite(lf) and math.isfinite(lc) and lc != 0) else float("nan")
    if cache is None:
        return d
    d["attn_entropy_max"] = math.log(cache.num_tokens)  # the keys the queries saw, not config.image_size
    runs = [("coarse", model.q_static)] + ([("fine", q_f.detach())] if q_f is not None else [])
    for name, q in runs:
        _, w = model.encoder.query_pass(cache, q, return_attn=True)
        ent = attention_entropy(w)
        d[f"attn_entropy_{name}"] = float(ent.mean())
        for i, e in enumerate(ent.tolist()):
            d[f"attn_entropy_{name}_l{i}"] = e
    if z_c is not None and z_f is not None:
        d["fine_coarse_token_diff"] = float((z_f.float() - z_c.float()).abs().mean())
    return d
