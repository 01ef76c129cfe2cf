"""Text cross-entropy from per-token loss masks (DESIGN.md 2.1, 2.3).

Every forward mode produces hidden states for the S text positions of each sample,
[B, S, d]; position i predicts token i+1 ("shift inside the text span"). Targets:

    labels[b, i] = input_ids[b, i]  if loss_mask[b, i] > 0 and attention_mask[b, i]
                   IGNORE_INDEX     otherwise

The stage rule lives in ``loss_mask`` (stage 1: every text token; stages 2-3: the
answer only); visual tokens are never targets because they are not text positions.
The first text token has no text predecessor (for ChatML it is always ``<|im_start|>``): coarse_fine
never scores it, while coarse_only and autoregressive score it from the sample's last visual
position, as the reference does (vlm.py: the "lead" position; DESIGN.md 1.4).

Decisions:
- ignore index -100, never the pad id: with pad == eos == ``<|im_end|>`` in SmolLM2
  the old pad-id ignore silently dropped every genuine ``<|im_end|>`` target.
- reduction: token-weighted mean over the micro-batch (DESIGN.md 2.1); a batch with no
  target at all returns 0 (with a graph) instead of NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def build_labels(input_ids: torch.Tensor, loss_mask: torch.Tensor | None,
                 attention_mask: torch.Tensor | None) -> torch.Tensor:
    """input_ids [B,S] long, loss_mask [B,S] float/bool, attention_mask [B,S] -> labels [B,S]."""
    keep = torch.ones_like(input_ids, dtype=torch.bool)
    if loss_mask is not None:
        keep &= loss_mask > 0
    if attention_mask is not None:
        keep &= attention_mask.bool()
    return input_ids.masked_fill(~keep, IGNORE_INDEX)


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """labels [B,S] -> targets [B,S]: targets[:, i] = labels[:, i+1], last column ignored."""
    pad = labels.new_full((labels.shape[0], 1), IGNORE_INDEX)
    return torch.cat([labels[:, 1:], pad], dim=1)


def text_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token-weighted mean CE. logits [..., V] (any dtype, computed in fp32), targets [...]."""
    flat_t = targets.reshape(-1)
    n = (flat_t != IGNORE_INDEX).sum()
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat_t,
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total / n.clamp(min=1)


def liger_fused_ce_loss() -> type:
    """Liger-Kernel's LigerFusedLinearCrossEntropyLoss; without the package, an ImportError with
    the install line."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError as err:
        raise ImportError("model.liger_fused_ce=true needs liger-kernel: pip install 'fovea[gpu]' "
                          "(or set model.liger_fused_ce=false)") from err
    return LigerFusedLinearCrossEntropyLoss


def fused_linear_text_ce(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``text_ce(h @ weight.T, targets)`` through Liger-Kernel's fused linear cross-entropy
    (CUDA, Triton): the logits are made and consumed chunk by chunk, never all at once.
    h [m, d], weight [V, d] (the LM head), targets [m]."""
    n = (targets != IGNORE_INDEX).sum()
    total = liger_fused_ce_loss()(ignore_index=IGNORE_INDEX, reduction="sum")(weight, h, targets)
    return total / n.clamp(min=1)


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of target log-probs (DPO, MCQ). logits [B,S,V], targets [B,S] -> [B]."""
    valid = targets != IGNORE_INDEX
    lp = torch.log_softmax(logits.float(), dim=-1)
    tok = lp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [B, S]
    return (tok * valid).sum(-1)
