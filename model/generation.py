"""Autoregressive mode and generation: the visual loop over frames with the LLM's KV cache.

Both use the packed layout of vlm.py, row b = [n_b visual][text or prompt][...], and
advance ONE POSITION p FOR THE WHOLE BATCH per LLM call. At position p a row feeds
    a visual token  if p < n_b        (query from the LLM state at p-1; q_init at p = 0)
    a text token    if n_b <= p       (teacher forcing: text/prompt slot p - n_b)
    a new token     if p >= start_b   (generation only: sampled from the logits at p-1)
so rows with different frame counts stay aligned without any attention mask or
position ids: each real token sees exactly its own prefix, padded frames are never
fed (the reference pushed them through the encoder over zero K/V), and the cached run
reproduces the parallel packed run of the same tokens. Where every row is in its
text/prompt span the positions are fed as one chunk (prefill).

``use_cache=False`` recomputes the whole prefix at every call (for the cache test and
the benchmark). Cost per frame step with the cache: one query pass (~40 MFLOP) + one
LLM token (2 * params FLOPs); without it the LLM part grows with the prefix.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from .config import MAX_NEW_TOKENS
from .encoder import PatchCache


class LLMStepper:
    """Feeds new positions to the base LLM; embeds [B,k,d] -> hidden [B,k,d] of those positions."""

    def __init__(self, model, use_cache: bool = True):
        self.model = model
        self.cache = DynamicCache(config=model.llm.config) if use_cache else None
        self.seq: torch.Tensor | None = None

    def __call__(self, emb: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            return self.model.decoder(emb, cache=self.cache, use_cache=True)
        self.seq = emb if self.seq is None else torch.cat([self.seq, emb.to(self.seq.dtype)], dim=1)
        return self.model.decoder(self.seq)[:, -emb.shape[1]:]


def _visual_step(model, cache: PatchCache, fi, p: int, h_prev, col: torch.Tensor):
    """Put the visual token of rank p into ``col`` [B,d] for rows with a p-th real frame.

    Returns (col, rows [m], z [m,D], q [m,Dq]).
    """
    rows = (fi.n_vis > p).nonzero().squeeze(1)  # [m]
    if rows.numel() == 0:
        return col, rows, None, None
    if p == 0:
        q = model.q_init.expand(rows.numel(), -1)  # [m, Dq]
    else:
        q = model.queries_from_llm(h_prev[rows])  # [m, Dq]
    z = model.encoder.query_pass(cache.select(fi.first[rows] + p), q)  # [m, D]
    col = col.index_put((rows,), model.visual_tokens(z).to(col.dtype))
    return col, rows, z, q


def autoregressive_hidden(model, cache: PatchCache | None, fi, text_emb: torch.Tensor,
                          use_kv_cache: bool = True, lead: bool = False):
    """Sequential visual loop then the text in one call.

    cache: PatchCache of the n real frames (None without frames); text_emb [B,S,d].
    Returns h_text [B,S,d] (LLM states at the text positions; with ``lead`` [B,1+S,d], the
    state at the last visual position first: it predicts the first text token), z_f [n,D]
    and q_f [n,Dq] (the fine tokens/queries actually used; None without frames).
    """
    B, S, d = text_emb.shape
    Tv = fi.Tv
    base, text_pos = model.pack(text_emb.new_zeros(B, Tv, d), fi.n_vis, text_emb)  # [B,Tv+S,d]
    step = LLMStepper(model, use_kv_cache)
    hs, zs, qs, ids = [], [], [], []
    h_prev = None
    for p in range(Tv):  # one position per call: frames depend on the previous state
        col, rows, z, q = _visual_step(model, cache, fi, p, h_prev, base[:, p])
        h = step(col.unsqueeze(1))  # [B, 1, d]
        hs.append(h)
        h_prev = h[:, 0]
        if z is not None:
            zs.append(z), qs.append(q), ids.append(fi.first[rows] + p)
    if S:
        hs.append(step(base[:, Tv:]))  # every row is past its frames: text in one call
    h = torch.cat(hs, dim=1)  # [B, Tv+S, d]
    if lead:
        from .vlm import lead_positions

        text_pos = lead_positions(text_pos)
    h_text = model.gather_text(h, text_pos)
    if not zs:
        return h_text, None, None
    order = torch.cat(ids)
    z_f = torch.cat(zs).new_zeros(fi.n, zs[0].shape[-1]).index_put((order,), torch.cat(zs))
    q_f = torch.cat(qs).new_zeros(fi.n, qs[0].shape[-1]).index_put((order,), torch.cat(qs))
    return h_text, z_f, q_f


def _pick(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, generator):
    """logits [m,V] -> token ids [m]: greedy, or temperature + nucleus sampling."""
    if not do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / max(temperature, 1e-5), dim=-1)
    if top_p < 1.0:
        sp, si = probs.sort(-1, descending=True)
        sp = sp.masked_fill(sp.cumsum(-1) - sp > top_p, 0.0)  # keep the smallest set >= top_p
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def generate(model, frames: torch.Tensor, frame_mask: torch.Tensor, prompt_ids: list[list[int]],
             max_new_tokens: int = MAX_NEW_TOKENS, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, eos_token_id=None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> list[list[int]]:
    """Generate for a batch of videos (or text-only rows: frame_mask all False).

    frames [B,T,3,H,W], frame_mask [B,T], prompt_ids: B token lists (system + user +
    ``<|im_start|>assistant\\n``). Stops a row at eos (``eos_token_id``: int, list, or
    None = the LLM's generation config) or after ``max_new_tokens``. Returns the new
    token ids of each row, eos excluded.
    """
    from .vlm import FrameIndex, real_frames

    B = len(prompt_ids)
    if frame_mask.shape[0] != B:
        raise ValueError(f"{B} prompts for {frame_mask.shape[0]} videos")
    dev = model.device
    if eos_token_id is None:
        eos_token_id = model.llm.generation_config.eos_token_id
    eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
    frame_mask = frame_mask.to(dev).bool()
    fi = FrameIndex.from_mask(frame_mask)
    cache = model.encoder.encode_patches(real_frames(frames.to(dev), frame_mask)) if fi.n else None

    P = torch.tensor([len(x) for x in prompt_ids], device=dev)
    ids = torch.zeros(B, max(int(P.max()), 1), dtype=torch.long, device=dev)
    for b, x in enumerate(prompt_ids):
        ids[b, : len(x)] = torch.tensor(x, dtype=torch.long, device=dev)
    prompt_emb = model.embed_tokens(ids)  # [B, Pmax, d]
    d = prompt_emb.shape[-1]
    base, _ = model.pack(prompt_emb.new_zeros(B, fi.Tv, d), fi.n_vis, prompt_emb)
    start = fi.n_vis + P  # [B] position of each row's first generated token
    if int(start.min()) == 0:
        raise ValueError("a row has neither frames nor prompt tokens")
    out: list[list[int]] = [[] for _ in range(B)]
    if max_new_tokens <= 0:
        return out
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    next_tok = torch.zeros(B, dtype=torch.long, device=dev)
    step = LLMStepper(model, use_cache)
    first_gen, p, h_prev = int(start.min()), 0, None
    while not bool(done.all()):
        if p >= fi.Tv and first_gen - p > 1:  # every row inside its prompt: prefill chunk
            h = step(base[:, p:first_gen])
            p = first_gen
        else:
            col = base[:, p] if p < base.shape[1] else prompt_emb.new_zeros(B, d)
            if cache is not None and p < fi.Tv:
                col, *_ = _visual_step(model, cache, fi, p, h_prev, col)
            gen_rows = (start <= p).unsqueeze(1)
            if bool(gen_rows.any()):
                col = torch.where(gen_rows, model.embed_tokens(next_tok).to(col.dtype), col)
            h = step(col.unsqueeze(1))
            p += 1
        h_prev = h[:, -1]  # state at position p-1
        need = ((start <= p) & ~done).nonzero().squeeze(1)  # rows whose token p is generated
        if need.numel():
            tok = _pick(model.lm_head(h_prev[need]).float(), do_sample, temperature, top_p, generator)
            next_tok[need] = tok
            for r, t in zip(need.tolist(), tok.tolist()):
                if t in eos:
                    done[r] = True
                else:
                    out[r].append(t)
                    done[r] = len(out[r]) >= max_new_tokens
    return out
