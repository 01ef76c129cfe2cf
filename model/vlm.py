"""FoveatedVLM: DINOv2 foveated tokens + a Llama-family causal LM (DESIGN.md 1.3-1.5).

One token per frame. Frame t's query comes from the LLM state at frame t-1
("shifted"): frame 1 uses the learned ``q_init``; the coarse pass uses the learned
``q_static`` for every frame. Visual tokens come first, then the chat text.

Shapes: B videos, T frame slots (frame_mask [B,T]), n real frames in the batch,
n_b real frames of sample b, Tv = max_b n_b, S text tokens, D DINO width, Dq query
width, d LLM width, V vocab.

Forward modes (one per batch, never per sample: BUG-003):

    coarse_fine   patch pass (n frames, once) -> q_static query pass -> z_c [n,D]
                  -> coarse LLM pass over the visual tokens only [B,Tv,d] (causality
                  makes the text irrelevant for these states) -> llm_to_query, shift
                  -> fine query pass on the same K/V -> z_f -> LLM over [vis_f; text]
    coarse_only   z_c -> LLM over [vis_c; text]                       (A6, A7, fast eval)
    autoregressive  frame by frame with the LLM's KV cache, then the whole text in one
                  call (generation.py); no coarse pass unless the coarse loss is wanted.

Sequence layout: PACKED, the one decision that makes padding invisible.
Sample b's row is [its n_b real visual tokens][its S text slots][Tv-n_b tail slots]:
real frames are compacted to the front (by rank among the sample's real frames),
the text follows them directly, and every slot a real token could see is real (text
padding is on the right, tail slots are zeros at the end). With the LLM's causal mask
and default position ids 0..Tv+S-1 each real token sees exactly what it would see if
its sample ran alone, so padded frames and other samples' lengths never change a real
sample's logits or loss; no attention mask or position ids are passed (the fast
``is_causal`` SDPA path stays on). Deviation from the reference, which put padded
frames (constant 0.14*b_dino_to_llm tokens) between video and text and let text attend
to them (DESIGN.md 1.5, open question 6). Text-only samples (num_frames 0) have n_b = 0:
no visual token at all (no "null" token), their text starts at position 0, so they
equal a plain LLM run on the text; a batch with no real frame skips DINOv2 entirely.
Autoregressive mode uses the same layout (see generation.py), so its padded frames
are invisible too (the reference ran them through the encoder over zero K/V).

Losses (losses.py): CE on text positions only, token-weighted mean, ignore index -100,
targets from ``loss_mask`` (the stage rule). The lm_head is applied to the S text
positions only ([B,S,V], never [B,Tv+S,V]); ``return_logits=False`` applies it to the
target positions only (training fast path, logits=None). As in the reference, coarse_only
and autoregressive also score the first text token, from the sample's last visual position
(a "lead" position before the text; its logits are not returned), while coarse_fine scores
the text positions only (DESIGN.md 1.4); ``model.score_first_text_token=false`` makes no mode
score it, so the three modes score the same tokens.

Forward FLOPs per sample, 135M + DINOv2-small, T = 8 frames, S = 128 text tokens
(LLM body 2 * 106M FLOP per token, tied lm_head 2 * 28.3M per scored token):
    patch pass    8 * 12.1 GFLOP                = 97 GFLOP   (~70 %: DINO dominates)
    query passes  2 * 8 * 40 MFLOP              = 0.6 GFLOP
    coarse LLM    8 visual tokens * 212 MFLOP    = 1.7 GFLOP  (visual tokens only)
    fine LLM      136 tokens * 212 MFLOP         = 29 GFLOP   + lm_head 128 * 57 MFLOP = 7 GFLOP
    coarse CE     another 29 + 7 GFLOP, no grad (only when computed and lambda = 0)
Training ~ 3x forward for the parts with gradient.

``loss_coarse`` is always reported: with ``lambda_coarse > 0`` it is trained
(loss = fine + lambda * coarse); with 0 it is computed under no_grad, in training every
``coarse_loss_every``-th forward call (0 = never), always in eval mode; when not
computed it is NaN. ``compute_coarse=True/False`` overrides the cadence (forced off
with lambda > 0, e.g. in evaluation, the loss is the fine loss alone).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import MAX_NEW_TOKENS, ModelConfig
from .encoder import FoveatedEncoder, PatchCache, bucketed_frames
from .fused_llm import FusedDecoderLayer, fused_causal_pass
from .losses import IGNORE_INDEX, build_labels, fused_linear_text_ce, shifted_targets, text_ce

MODES = ("coarse_fine", "coarse_only", "autoregressive")


def phase(name: str):
    """A named span of the forward pass in torch.profiler traces (``fovea/<name>``; the
    step timeline of ``training.profile_steps`` groups GPU idle time by these names).
    Costs ~1 us when no profiler runs."""
    return torch.profiler.record_function("fovea/" + name)


@dataclass
class FrameIndex:
    """Where the n real frames of a batch live. Flat order = frames[frame_mask] (b-major, t)."""

    b: torch.Tensor  # [n] sample of each real frame
    t: torch.Tensor  # [n] original slot in frame_mask
    rank: torch.Tensor  # [n] position among its sample's real frames (0..n_b-1)
    n_vis: torch.Tensor  # [B] real frames per sample
    first: torch.Tensor  # [B] flat index of each sample's first real frame
    Tv: int  # max_b n_b (visual slots in the packed sequence)

    @property
    def n(self) -> int:
        return self.b.numel()

    def to(self, device: torch.device) -> "FrameIndex":
        """The index tensors on ``device`` (asynchronous copies from the host)."""
        return FrameIndex(*(to_device(x, device) for x in (self.b, self.t, self.rank, self.n_vis, self.first)),
                          Tv=self.Tv)

    @classmethod
    def from_mask(cls, frame_mask: torch.Tensor) -> "FrameIndex":
        fm = frame_mask.bool()
        b, t = fm.nonzero(as_tuple=True)
        rank = (fm.long().cumsum(1) - 1)[b, t]
        n_vis = fm.sum(1)
        first = n_vis.cumsum(0) - n_vis
        Tv = int(n_vis.max()) if n_vis.numel() else 0
        return cls(b=b, t=t, rank=rank, n_vis=n_vis, first=first, Tv=Tv)


@dataclass
class TextBatch:
    """A batch's index and text side on the model's device, as every pass of ``forward`` reads it."""

    fi: FrameIndex
    text_emb: torch.Tensor  # [B,S,d] input embeddings of the text
    targets: torch.Tensor  # [B,S] next-token targets, IGNORE_INDEX where none
    target_idx: torch.Tensor  # [m] flat indices (into B*S) of the positions with a target
    # lead modes (coarse_only, autoregressive): targets [B,1+S] of [last visual position; text
    # positions], the first text token at column 0 (IGNORE_INDEX for a sample without frames)
    lead_targets: torch.Tensor | None = None
    lead_idx: torch.Tensor | None = None  # [m'] flat indices (into B*(1+S)) with a target

    @property
    def B(self) -> int:
        return self.text_emb.shape[0]

    @property
    def lead(self) -> bool:
        return self.lead_targets is not None

    def scored(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, target_idx) of the positions this batch's mode scores."""
        return (self.lead_targets, self.lead_idx) if self.lead else (self.targets, self.target_idx)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; host -> GPU through page-locked memory, so the copy is queued on the
    stream without waiting for the GPU (a copy from pageable memory would wait for it)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def target_positions(targets: torch.Tensor) -> torch.Tensor:
    """targets [B,S] -> flat indices [m] of the positions that have a target."""
    return (targets.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)


def lead_positions(text_pos: torch.Tensor) -> torch.Tensor:
    """text_pos [B,S] -> [B,1+S]: the position before each sample's text (its last visual token;
    0 for a sample without frames, whose first token is then not a target), then the text's."""
    return torch.cat([(text_pos[:, :1] - 1).clamp(min=0), text_pos], dim=1)


def real_frames(frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """The n real frames in flat order (b-major, t): [n,3,H,W].

    ``frames`` is either padded [B,T,3,H,W] (the padded slots are dropped here) or already
    packed [n,3,H,W] (the training loader's uint8 layout, n = frame_mask.sum()).
    """
    if frames.dim() == 5:
        return frames[frame_mask.bool().to(frames.device)]
    if frames.dim() == 4:
        if frames.shape[0] != int(frame_mask.sum()):
            raise ValueError(f"packed frames hold {frames.shape[0]} frames, frame_mask has {int(frame_mask.sum())}")
        return frames
    raise ValueError(f"frames must be [B,T,3,H,W] or packed [n,3,H,W], got {tuple(frames.shape)}")


def check_batch_extras(batch_extras: dict) -> None:
    """``model(**batch)`` passes the batch's other entries (tensors, lists) and they are ignored;
    a misspelt option (a bool, a string) is refused."""
    unknown = [k for k, v in batch_extras.items() if not isinstance(v, (torch.Tensor, list))]
    if unknown:
        raise TypeError(f"unexpected forward arguments {sorted(unknown)}")


def check_mode(mode) -> str:
    """One mode for the whole batch: a per-sample list or an unknown name is refused."""
    if not isinstance(mode, str):
        raise ValueError(f"mode must be one string for the whole batch (BUG-003), got {mode!r}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    return mode


class FoveatedVLM(nn.Module):
    """Foveated video-language model.

    Args:
        llm: a Hugging Face causal LM of the Llama family (``LlamaForCausalLM``: SmolLM2).
        dino: a Hugging Face ``Dinov2Model``.
        cfg: ``ModelConfig`` (query width, deep/shallow, init std, visual scale, lambda...).

    Parameters named for the optimizer groups: ``q_static`` [1,Dq], ``q_init`` [1,Dq]
    (N(0, query_init_std^2), std 1.0: BUG-001), ``dino_to_llm`` D->d, ``llm_to_query``
    d->Dq, ``encoder.{dino, query_input_proj, output_proj}``, ``llm``.
    """

    def __init__(self, llm: nn.Module, dino: nn.Module, cfg: ModelConfig | None = None):
        super().__init__()
        self.cfg = (cfg or ModelConfig()).model_copy()
        c = self.cfg
        self.encoder = FoveatedEncoder(dino, c.query_dim, c.deep_query, c.query_bias, c.dino_attention,
                                       c.frame_bucket, c.query_attention, c.dino_recompute_gelu)
        self.llm = llm
        D, Dq, d = self.encoder.output_dim, self.encoder.query_dim, llm.config.hidden_size
        self.q_static = nn.Parameter(torch.randn(1, Dq) * c.query_init_std)
        self.q_init = nn.Parameter(torch.randn(1, Dq) * c.query_init_std)
        self.dino_to_llm = nn.Linear(D, d)
        self.llm_to_query = nn.Linear(d, Dq)
        self.visual_scale = float(c.visual_scale)  # ~ std of the LLM's input embeddings
        self._train_calls = 0  # forward calls in training mode (coarse-loss cadence)
        dec = self.llm.get_decoder()
        self._cache_kw = "cache" if "cache" in inspect.signature(dec.forward).parameters else "past_key_values"
        # model.fused_llm_projections: the training passes' layers with q/k/v and gate/up fused
        # (fused_llm.py; no weights of their own, so the state dict does not change)
        self.fused_layers = (nn.ModuleList(FusedDecoderLayer(layer) for layer in dec.layers[: dec.config.num_hidden_layers])
                             if c.fused_llm_projections else None)

    # -- small helpers ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.q_static.device

    @property
    def llm_dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def decoder(self, embeds: torch.Tensor, **kw) -> torch.Tensor:
        """Base LLM (after its final norm): embeds [B,L,d] -> hidden [B,L,d] in the LLM dtype.

        Without a cache or a mask (every training pass: the packed rows need only causal
        attention) the decoder layers run here, in the order the HF model runs them, because
        the HF model's mask builder reads a value back from the GPU to look for packed
        sequences (a host-device sync in each of the step's three LLM passes)."""
        if not kw or kw == {"use_cache": False}:
            return self._causal_layers(embeds.to(self.llm_dtype))
        if "cache" in kw:
            kw[self._cache_kw] = kw.pop("cache")
        kw.setdefault("use_cache", False)
        out = self.llm.get_decoder()(inputs_embeds=embeds.to(self.llm_dtype), **kw)
        return out.last_hidden_state

    def _causal_layers(self, h: torch.Tensor) -> torch.Tensor:
        """h [B,L,d] -> the base LLM's last hidden state [B,L,d], causal attention, no cache:
        what ``LlamaModel.forward`` computes with no mask (SDPA's is_causal; flash attention).

        With ``model.llm_row_bucket`` / ``llm_length_bucket`` the input is padded to [B',L'], the
        next multiples: blank rows below, zero slots at the end of every row. Causal attention
        keeps the slots after a token out of its view and rows never mix, so the first [B,L] of
        the output are the unpadded pass's."""
        B, L, _ = h.shape
        # the patch pass's rounding (model.frame_bucket), here of rows and length
        Bp, Lp = bucketed_frames(B, self.cfg.llm_row_bucket), bucketed_frames(L, self.cfg.llm_length_bucket)
        if (Bp, Lp) != (B, L):
            h = F.pad(h, (0, 0, 0, Lp - L, 0, Bp - B))  # [B', L', d]
        return self._llm_stack(h)[:B, :L]

    def _llm_stack(self, h: torch.Tensor) -> torch.Tensor:
        """The LLM's rotary embedding, every decoder layer and the final norm: [B,L,d] -> [B,L,d]."""
        m = self.llm.get_decoder()
        pos = torch.arange(h.shape[1], device=h.device).unsqueeze(0)  # [1, L]
        rope = m.rotary_emb(h, position_ids=pos)  # (cos, sin), each [1, L, head_dim]
        if self.fused_layers is not None:  # model.fused_llm_projections
            return m.norm(fused_causal_pass(self.fused_layers, h, *rope))
        for layer in m.layers[: m.config.num_hidden_layers]:
            out = layer(h, attention_mask=None, position_ids=pos, position_embeddings=rope, use_cache=False)
            h = out[0] if isinstance(out, tuple) else out  # older transformers return a tuple
        return m.norm(h)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B,S] -> [B,S,d]."""
        return self.llm.get_input_embeddings()(ids)

    def lm_head(self, h: torch.Tensor) -> torch.Tensor:
        """h [...,d] -> logits [...,V]. (Llama family: no logit scaling/soft-capping.)"""
        return self.llm.get_output_embeddings()(h)

    def visual_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """z [n,D] -> visual_scale * dino_to_llm(z) [n,d]."""
        return self.visual_scale * self.dino_to_llm(z)

    def queries_from_llm(self, h: torch.Tensor) -> torch.Tensor:
        """LLM state h [m,d] -> next-frame query [m,Dq]."""
        return self.llm_to_query(h.to(self.llm_to_query.weight.dtype))

    def scatter_visual(self, e: torch.Tensor, fi: FrameIndex, B: int) -> torch.Tensor:
        """e [n,d] -> packed [B,Tv,d] (sample b's frames at ranks 0..n_b-1, zeros after)."""
        out = e.new_zeros(B, fi.Tv, e.shape[-1])
        return out.index_put((fi.b, fi.rank), e) if fi.n else out

    @staticmethod
    def pack(vis: torch.Tensor, n_vis: torch.Tensor, text: torch.Tensor):
        """Packed LLM input: row b = [vis[b,:n_b]; text[b]; zeros(Tv-n_b)].

        vis [B,Tv,d], n_vis [B], text [B,S,d] -> seq [B,Tv+S,d], text_pos [B,S].
        """
        B, Tv, d = vis.shape
        S = text.shape[1]
        p = torch.arange(Tv + S, device=text.device).unsqueeze(0)  # [1, L]
        n = n_vis.unsqueeze(1)  # [B, 1]
        j = p - n  # index into the text, valid in [0, S)
        idx = torch.where(p < n, p, torch.where(j < S, Tv + j, Tv + S))  # into src [B, L]
        src = torch.cat([vis.to(text.dtype), text, text.new_zeros(B, 1, d)], dim=1)
        seq = src.gather(1, idx.unsqueeze(-1).expand(B, Tv + S, d))
        text_pos = n + torch.arange(S, device=text.device).unsqueeze(0)
        return seq, text_pos

    @staticmethod
    def gather_text(h: torch.Tensor, text_pos: torch.Tensor) -> torch.Tensor:
        """h [B,L,d], text_pos [B,S] -> [B,S,d]."""
        return h.gather(1, text_pos.unsqueeze(-1).expand(-1, -1, h.shape[-1]))

    def text_head(self, h_text: torch.Tensor, targets: torch.Tensor, return_logits: bool = True,
                  target_idx: torch.Tensor | None = None):
        """h_text [B,S,d], targets [B,S] -> (loss, logits [B,S,V] or None).

        Without logits the LM head runs only at the m positions that have a target:
        ``target_idx`` [m] (flat indices into B*S; found here when not given, a device sync)."""
        if return_logits:
            logits = self.lm_head(h_text)
            return text_ce(logits, targets), logits
        if target_idx is None:
            target_idx = target_positions(targets)
        h = h_text.reshape(-1, h_text.shape[-1]).index_select(0, target_idx)  # [m, d]
        t = targets.reshape(-1).index_select(0, target_idx)
        if self.cfg.liger_fused_ce and h.is_cuda:  # model.liger_fused_ce: no [m, V] logits kept
            return fused_linear_text_ce(h, self.llm.get_output_embeddings().weight, t), None
        return text_ce(self.lm_head(h), t), None

    def text_pass(self, vis, fi: FrameIndex, text_emb, targets, return_logits=True, target_idx=None,
                  lead: bool = False):
        """One LLM pass over [visual; text] -> (loss, logits [B,S,V] or None). ``lead``: the
        targets are [B,1+S] and the last visual position scores column 0 (``lead_head``)."""
        seq, text_pos = self.pack(vis, fi.n_vis, text_emb)
        h = self.decoder(seq)  # [B, Tv+S, d]
        if lead:
            return self.lead_head(self.gather_text(h, lead_positions(text_pos)), targets, return_logits, target_idx)
        return self.text_head(self.gather_text(h, text_pos), targets, return_logits, target_idx)

    def lead_head(self, h_lead: torch.Tensor, targets: torch.Tensor, return_logits: bool = True,
                  target_idx: torch.Tensor | None = None):
        """h_lead [B,1+S,d] (last visual position, then the text positions), targets [B,1+S] ->
        (loss over all of them, logits [B,S,V] of the text positions or None)."""
        loss, logits = self.text_head(h_lead, targets, return_logits, target_idx)
        return loss, (logits[:, 1:] if logits is not None else None)

    def shifted_queries(self, h_c: torch.Tensor, fi: FrameIndex) -> torch.Tensor:
        """Coarse states h_c [B,Tv,d] -> fine queries [n,Dq]: q_init for rank 0, else
        llm_to_query of the state at the sample's previous frame."""
        prev = h_c[fi.b, (fi.rank - 1).clamp(min=0)]  # [n, d]
        q = self.queries_from_llm(prev)
        return torch.where((fi.rank == 0).unsqueeze(1), self.q_init.to(q.dtype), q)

    def coarse_tokens(self, cache: PatchCache | None, fi: FrameIndex) -> torch.Tensor | None:
        """q_static read-out of every real frame: z_c [n,D] (None without frames)."""
        if cache is None:
            return None
        return self.encoder.query_pass(cache, self.q_static)

    def _want_coarse(self, compute_coarse: bool | None) -> bool:
        step = self._train_calls
        if self.training:
            self._train_calls += 1
        if compute_coarse is not None:
            return bool(compute_coarse)
        if self.cfg.lambda_coarse > 0 or not self.training:
            return True
        every = self.cfg.coarse_loss_every
        return every > 0 and step % every == 0

    # -- forward ----------------------------------------------------------------------
    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, loss_mask: torch.Tensor | None = None,
                mode: str = "coarse_fine", compute_coarse: bool | None = None,
                return_diagnostics: bool = False, return_logits: bool = True,
                use_kv_cache: bool = True, **batch_extras) -> dict:
        """Loss and logits for one batch, all samples in one ``mode``.

        frames [B,T,3,224,224] float (ImageNet-normalised) or packed real frames [n,3,224,224]
        (uint8 0..255, normalised on the device, or float), frame_mask [B,T] bool, input_ids [B,S] long
        (right-padded), attention_mask [B,S] bool, loss_mask [B,S] float.
        Returns dict: ``loss`` (what to backprop), ``loss_fine``, ``loss_coarse`` (NaN when
        not computed), ``logits`` [B,S,V] over text positions (position i predicts token
        i+1; None with return_logits=False), ``num_targets`` (tokens in the mean), and
        ``diagnostics`` (dict of floats) on request. ``use_kv_cache`` only affects the
        autoregressive mode (False recomputes the prefix at every frame; for tests).
        The batch's other entries (tensors and lists such as num_frames, is_text_only,
        keys) are accepted and ignored, so ``model(**batch, mode=...)`` works.
        """
        mode = check_mode(mode)
        check_batch_extras(batch_extras)
        if self.cfg.llm_cudagraphs and not torch.is_grad_enabled():
            # no backward can be pending after a no-grad pass: a new step for CUDA graph trees, so
            # evaluation's batches replay their graphs instead of each extending the last step's
            torch.compiler.cudagraph_mark_step_begin()
        want_coarse = self._want_coarse(compute_coarse) or mode == "coarse_only"
        with phase("frame_index"):  # lead: coarse_only and autoregressive score the first text token
            tb = self.text_batch(frame_mask, input_ids, attention_mask, loss_mask,
                                 lead=mode != "coarse_fine" and self.cfg.score_first_text_token)
        with phase("encode_patches"):
            cache = (self.encoder.encode_patches(to_device(real_frames(frames, frame_mask), self.device))
                     if tb.fi.n else None)  # 12 x 2 x [n,H,Np,hd]
        nan = torch.full((), float("nan"), device=self.device)
        with phase("coarse_query"):
            z_c = self.coarse_tokens(cache, tb.fi) if (mode != "autoregressive" or want_coarse
                                                       or return_diagnostics) else None  # [n, D]
        vis_c = self.visual_sequence(z_c, tb)  # [B, Tv, d]

        loss_fine, logits, z_f, q_f = nan, None, None, None
        if mode == "coarse_fine":
            loss_fine, logits, z_f, q_f = self.fine_pass(cache, vis_c, tb, return_logits)
        elif mode == "autoregressive":
            from .generation import autoregressive_hidden

            h_text, z_f, q_f = autoregressive_hidden(self, cache, tb.fi, tb.text_emb, use_kv_cache, tb.lead)
            targets, target_idx = tb.scored()
            head = self.lead_head if tb.lead else self.text_head
            loss_fine, logits = head(h_text, targets, return_logits, target_idx)

        if mode == "coarse_only":
            targets, target_idx = tb.scored()
            loss_coarse, logits = self.text_pass(vis_c, tb.fi, tb.text_emb, targets, return_logits, target_idx,
                                                 lead=tb.lead)
            loss = loss_coarse
        else:
            loss_coarse = self.coarse_loss(vis_c, tb) if want_coarse else nan
            lam = float(self.cfg.lambda_coarse)
            # compute_coarse=False with lambda > 0 (e.g. evaluation): loss = fine loss alone
            loss = loss_fine + lam * loss_coarse if (lam > 0 and want_coarse) else loss_fine

        out = {"loss": loss, "loss_fine": loss_fine, "loss_coarse": loss_coarse, "logits": logits,
               "num_targets": (tb.scored()[0] != IGNORE_INDEX).sum()}
        if return_diagnostics:
            from .diagnostics import forward_diagnostics

            out["diagnostics"] = forward_diagnostics(self, cache, z_c, z_f, q_f, loss_fine, loss_coarse)
        return out

    def text_batch(self, frame_mask: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None, loss_mask: torch.Tensor | None,
                   lead: bool = False) -> TextBatch:
        """Frame index, text targets and text embeddings of a batch, on the model's device
        (with ``lead``, also the targets of [last visual position; text], see ``TextBatch``).

        The bookkeeping runs on the device the masks come on: from the host (the training loop)
        no value is read back from the GPU, and only the results travel."""
        am = attention_mask.bool().long() if attention_mask is not None else None
        if am is not None and bool((am[:, 1:] > am[:, :-1]).any()):
            raise ValueError("text must be right-padded (attention_mask True then False per row)")
        fi = FrameIndex.from_mask(frame_mask)
        labels = build_labels(input_ids, loss_mask, attention_mask)
        targets = shifted_targets(labels)
        target_idx = target_positions(targets)  # [m]
        dev = self.device
        lead_targets = lead_idx = None
        if lead:  # a sample without frames has no visual position to predict its first token from
            first = labels[:, :1].masked_fill((fi.n_vis == 0).unsqueeze(1).to(labels.device), IGNORE_INDEX)
            lead_targets = torch.cat([first, targets], dim=1)  # [B, 1+S]
            lead_idx = to_device(target_positions(lead_targets), dev)
            lead_targets = to_device(lead_targets, dev)
        fi, targets, target_idx = fi.to(dev), to_device(targets, dev), to_device(target_idx, dev)
        text_emb = self.embed_tokens(to_device(input_ids, dev))  # [B, S, d]
        return TextBatch(fi, text_emb, targets, target_idx, lead_targets, lead_idx)

    def visual_sequence(self, z: torch.Tensor | None, tb: TextBatch) -> torch.Tensor:
        """Read-outs z [n,D] -> packed visual tokens [B,Tv,d]; without read-outs (no frames, or
        none computed) an empty [B,0,d], so the text runs alone."""
        if z is None:
            return tb.text_emb.new_zeros(tb.B, 0, tb.text_emb.shape[-1])
        return self.scatter_visual(self.visual_tokens(z), tb.fi, tb.B)

    def fine_pass(self, cache: PatchCache | None, vis_c: torch.Tensor, tb: TextBatch, return_logits: bool):
        """coarse_fine: coarse LLM pass over the q_static tokens vis_c [B,Tv,d] -> shifted
        queries q_f [n,Dq] -> fine query pass on the same K/V -> z_f [n,D] -> LLM over
        [vis_f; text]. Returns (loss_fine, logits or None, z_f, q_f); z_f and q_f are None
        for a batch without frames."""
        z_f = q_f = None
        if cache is not None:
            with phase("coarse_llm"):
                h_c = self.decoder(vis_c)  # coarse LLM pass, visual tokens only [B,Tv,d]
            with phase("fine_query"):
                q_f = self.shifted_queries(h_c, tb.fi)  # [n, Dq]
                z_f = self.encoder.query_pass(cache, q_f)  # [n, D]
        vis_f = self.visual_sequence(z_f, tb)
        with phase("fine_text"):
            loss, logits = self.text_pass(vis_f, tb.fi, tb.text_emb, tb.targets, return_logits, tb.target_idx)
        return loss, logits, z_f, q_f

    def coarse_loss(self, vis_c: torch.Tensor, tb: TextBatch) -> torch.Tensor:
        """CE of the LLM over [vis_c; text]: with gradient when it is trained (lambda_coarse
        > 0), else under no_grad, a diagnostic."""
        ctx = contextlib.nullcontext() if self.cfg.lambda_coarse > 0 else torch.no_grad()
        with ctx, phase("coarse_text"):
            loss, _ = self.text_pass(vis_c, tb.fi, tb.text_emb, tb.targets, False, tb.target_idx)
        return loss

    # -- inference helpers --------------------------------------------------------------
    @torch.no_grad()
    def query_attention(self, frames: torch.Tensor, frame_mask: torch.Tensor,
                        which: str = "fine") -> torch.Tensor:
        """Attention of the query over CLS+patches, per layer and head, for heatmaps.

        frames [B,T,3,H,W], frame_mask [B,T] -> [B,T,L,H,Np] (zeros at padded frames; L = 1
        in shallow mode; Np from the frames: 257 at 224 px). ``which="coarse"``: q_static; ``"fine"``:
        the coarse_fine queries (shifted from the coarse LLM pass). Drop index 0 (CLS) and reshape
        16x16 to plot.
        """
        if which not in ("fine", "coarse"):
            raise ValueError(f"which must be 'fine' or 'coarse', got {which!r}")
        fi = FrameIndex.from_mask(frame_mask)
        B, T = frame_mask.shape
        L = self.encoder.num_layers if self.encoder.deep_query else 1
        H = self.encoder.num_heads
        if fi.n == 0:
            return torch.zeros(B, T, L, H, self.encoder.num_tokens(*frames.shape[-2:]), device=frames.device)
        cache = self.encoder.encode_patches(real_frames(frames, frame_mask))
        out = torch.zeros(B, T, L, H, cache.num_tokens, device=frames.device)  # Np of these frames
        q = self.fine_queries(cache, fi, B)[1] if which == "fine" else self.q_static
        _, w = self.encoder.query_pass(cache, q, return_attn=True)  # L x [n,H,1,Np]
        out[fi.b, fi.t] = torch.stack(w, dim=1)[:, :, :, 0].float()  # [n, L, H, Np]
        return out

    @torch.no_grad()
    def readouts(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The query-pass outputs of the real frames, flat order (b-major, t), for diagnostics:
        coarse z_c [n,D] (q_static) and fine z_f [n,D] (the coarse_fine mode's shifted queries)."""
        fi = FrameIndex.from_mask(frame_mask)
        cache = self.encoder.encode_patches(real_frames(frames, frame_mask))
        z_c, q_f = self.fine_queries(cache, fi, frame_mask.shape[0])
        return z_c, self.encoder.query_pass(cache, q_f)

    def fine_queries(self, cache: PatchCache, fi: FrameIndex, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Coarse tokens z_c [n,D] and the fine queries made from them, q_f [n,Dq]: the coarse
        LLM pass over the q_static read-outs, shifted by one frame (inference helpers only;
        ``forward`` keeps the coarse sequence for its coarse loss)."""
        z_c = self.coarse_tokens(cache, fi)
        vis_c = self.scatter_visual(self.visual_tokens(z_c), fi, B)
        return z_c, self.shifted_queries(self.decoder(vis_c), fi)

    def generate(self, frames, frame_mask, prompt_ids, max_new_tokens: int = MAX_NEW_TOKENS,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 eos_token_id=None, use_cache: bool = True, generator=None) -> list[list[int]]:
        """Autoregressive visual loop + text decoding; see ``generation.generate``.

        frames [B,T,3,H,W], frame_mask [B,T], prompt_ids: B lists of token ids (chat
        prompt ending with the generation prefix) -> B lists of new token ids (eos excluded).
        """
        from .generation import generate

        return generate(self, frames, frame_mask, prompt_ids, max_new_tokens, do_sample,
                        temperature, top_p, eos_token_id, use_cache, generator)

    def enable_gradient_checkpointing(self) -> None:
        """Non-reentrant checkpointing: HF's for the LLM, per PatchBlock for DINOv2 (train mode)."""
        m = self.llm
        if hasattr(m, "activation_checkpointing_enable"):  # transformers >= 5.x name
            m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.encoder.checkpoint_patches = True

    def compile_blocks(self, dynamic: bool = True, **compile_kw) -> None:
        """Regional torch.compile of the repeated blocks: DINOv2 PatchBlocks, QueryBlocks and the
        LLM's decoder layers, each type compiled once (forward + backward) and shared by its
        layers. Shapes change every batch (frames n, sequence length), hence ``dynamic=True``.
        Parameter names and the state dict do not change.

        ``model.llm_cudagraphs`` compiles the training passes' fused layers in "reduce-overhead"
        mode, and CUDA graph trees record one graph per layer and shape they meet (few, with the
        LLM buckets). The whole LLM as one region would be one graph per shape, but its unrolled
        layers compile for minutes (docs/PERFORMANCE.md). The training loop marks each step's
        start (``torch.compiler.cudagraph_mark_step_begin``); a no-grad ``forward`` marks its own.
        ``compile_kw`` go to every region's ``torch.compile`` (``training.compile_mode`` as ``mode``)."""
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        self.encoder.compile_blocks(dynamic=dynamic, **compile_kw)
        for layer in self.llm.get_decoder().layers:  # the cached passes (evaluation) use these
            layer.compile(dynamic=dynamic, **compile_kw)
        llm_kw = {**compile_kw, "mode": "reduce-overhead"} if self.cfg.llm_cudagraphs else compile_kw
        for fused in self.fused_layers or ():
            fused.compile(dynamic=dynamic, **llm_kw)

    # -- persistence (io.py) --------------------------------------------------------------
    def save_pretrained(self, directory, tokenizer=None) -> None:
        """safetensors weights + JSON config (ModelConfig, LLM and DINOv2 configs) in ``directory``."""
        from .io import save_pretrained

        save_pretrained(self, directory, tokenizer)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "FoveatedVLM":
        """Rebuild from a ``save_pretrained`` folder (no store or hub access)."""
        from .io import from_pretrained

        return from_pretrained(directory, device)
