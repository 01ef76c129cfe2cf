"""Multiple-choice scoring by likelihood (DESIGN.md 6.3): no generation, lowest mean loss wins.

For a question with options A..K the harness builds, per option, the ChatML sequence

    <|im_start|>system\\nYou are a helpful AI assistant.<|im_end|>\\n
    <|im_start|>user\\n{question with the option list}<|im_end|>\\n
    <|im_start|>assistant\\n{X}. {option text}<|im_end|>\\n

(``tokenizer.apply_chat_template``, ``add_special_tokens=False``), scores every option in one
batch with the same frames, takes the mean per-token cross-entropy over the assistant span
(option letter, text and the closing ``<|im_end|>`` and newline: everything after the
``<|im_start|>assistant\\n`` generation prefix), and predicts the argmin.

Pad-id quirk: the reference code set masked labels to the pad id and used it as ignore index,
and for SmolLM2 pad = eos = ``<|im_end|>``, so the closing ``<|im_end|>`` added 0 to the sum
but still counted in the denominator.  Here masked labels use ignore index -100 semantics,
so ``<|im_end|>`` is scored like any other answer token (the current reference code, commit
72fbf3a).  ``pad_quirk=True`` reproduces the old behaviour (the pad token's CE is zeroed, the
denominator unchanged) to compare against the published numbers.

Pluggable models: a ``TokenMCQScorer`` calls ``option_losses(frames, frame_mask, input_ids,
attention_mask, loss_mask) -> [K]`` (frames [K,T,3,224,224], frame_mask [K,T] bool, the rest
[K,S]); ``foveated_option_losses(model, mode)`` and ``causal_lm_option_losses(lm)`` build one.
Models with their own processor (SmolVLM2) implement ``score(item) -> list[float]`` directly.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Protocol

import torch
import torch.nn.functional as F

from fovea.platform.eval.benchmark_frames import load_item_frames, load_item_images
from fovea.platform.eval.benchmark_items import LETTERS, MCQItem

log = logging.getLogger("fovea.mcq")

SYSTEM_PROMPT = "You are a helpful AI assistant."
REFERENCE_MODEL = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
# "letter, period, text up to the next newline-letter-period" (DESIGN.md 6.3)
_OPTION_RE = re.compile(r"(?:^|\n)[ \t]*([A-Z])\.[ \t]*(.*?)(?=\n[ \t]*[A-Z]\.|\Z)", re.S)

OptionLosses = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# -- options ----------------------------------------------------------------------------

def parse_options(question: str) -> list[tuple[str, str]]:
    """``[(letter, text), ...]`` from a question that lists options as ``A. text`` lines.

    The last run of consecutive letters starting at A is used (a stray "I. ..." line earlier
    in the question is not an option).  Deviation from the reference pattern: the last
    option ends at its line end, so an instruction after the list does not leak into it.
    """
    found = [(m.group(1), m.group(2)) for m in _OPTION_RE.finditer(question)]
    start = max((i for i, (ltr, _) in enumerate(found) if ltr == "A"), default=None)
    if start is None:
        return []
    out: list[tuple[str, str]] = []
    for ltr, text in found[start:]:
        if ltr != LETTERS[len(out)]:
            break
        out.append((ltr, text.strip()))
    if out:
        out[-1] = (out[-1][0], out[-1][1].split("\n")[0].strip())
    return out


def answer_letter(assistant: str) -> str:
    """Ground-truth letter = the leading letter of the assistant field ("B. blue" -> "B")."""
    s = assistant.strip().lstrip("(")
    if not s or s[0] not in LETTERS:
        raise ValueError(f"assistant text {assistant!r} does not start with an option letter")
    return s[0]


# -- token sequences ---------------------------------------------------------------------

def chat_messages(question: str, answer: str | None = None, system: str | None = SYSTEM_PROMPT) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": question})
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs


def build_option_batch(tokenizer, question: str, options: list[tuple[str, str]],
                       system: str | None = SYSTEM_PROMPT, max_tokens: int = 1024) -> dict[str, torch.Tensor]:
    """Tokenised [system; user; assistant="X. text"] per option, right-padded.

    Returns ``input_ids`` long [K,S], ``attention_mask`` bool [K,S], ``loss_mask`` float [K,S]
    (1 on the assistant span: every token after the generation prefix).
    """
    prefix_text = tokenizer.apply_chat_template(chat_messages(question, None, system), tokenize=False,
                                                add_generation_prompt=True)
    prefix = tokenizer(prefix_text, add_special_tokens=False)["input_ids"]
    seqs, masks = [], []
    for ltr, text in options:
        full_text = tokenizer.apply_chat_template(chat_messages(question, f"{ltr}. {text}", system),
                                                  tokenize=False)
        ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
        if ids[: len(prefix)] != prefix:  # BPE merged across the boundary: tokenise the parts
            ids = prefix + tokenizer(full_text[len(prefix_text):], add_special_tokens=False)["input_ids"]
        if len(ids) > max_tokens:  # keep the answer; cut the oldest prompt tokens
            log.warning("MCQ sequence of %d tokens truncated to %d", len(ids), max_tokens)
            cut = len(ids) - max_tokens
            ids, n_prefix = ids[cut:], max(0, len(prefix) - cut)
        else:
            n_prefix = len(prefix)
        seqs.append(ids)
        masks.append([0.0] * n_prefix + [1.0] * (len(ids) - n_prefix))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    S = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), S), pad, dtype=torch.long)
    attention = torch.zeros((len(seqs), S), dtype=torch.bool)
    loss_mask = torch.zeros((len(seqs), S), dtype=torch.float32)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        input_ids[i, : len(s)] = torch.tensor(s)
        attention[i, : len(s)] = True
        loss_mask[i, : len(m)] = torch.tensor(m)
    return {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask}


def per_sample_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor,
                    pad_quirk_id: int | None = None, reduction: str = "mean") -> torch.Tensor:
    """Mean (or summed) shifted CE per sample over ``loss_mask`` (DESIGN.md 2.1).

    ``logits`` may cover more positions than the text (coarse_only: [visual; text],
    autoregressive: [last visual; text]); its last S positions are the text positions, and
    logits at text position i predict token i+1, gated by ``loss_mask[i+1]``.  So the first
    text token is never a target here, in every mode (identical tokens across modes).
    """
    S = input_ids.shape[1]
    text_logits = logits[:, -S:-1, :].float()
    labels = input_ids[:, 1:]
    mask = loss_mask[:, 1:].to(text_logits.dtype)
    ce = F.cross_entropy(text_logits.reshape(-1, text_logits.shape[-1]), labels.reshape(-1),
                         reduction="none").view_as(labels)
    ce_sum_mask = mask
    if pad_quirk_id is not None:  # old reference: pad-id targets add 0 but stay in the count
        ce_sum_mask = mask * (labels != pad_quirk_id).to(mask.dtype)
    total = (ce * ce_sum_mask).sum(1)
    if reduction == "sum":
        return total
    return total / mask.sum(1).clamp_min(1.0)


# -- option-loss functions ---------------------------------------------------------------

def foveated_option_losses(model, mode: str = "coarse_fine", pad_quirk_id: int | None = None) -> OptionLosses:
    """Per-option mean loss from a FoveatedVLM forward in ``mode`` (one mode per batch)."""

    @torch.no_grad()
    def fn(frames, frame_mask, input_ids, attention_mask, loss_mask):
        out = model(frames=frames, frame_mask=frame_mask, input_ids=input_ids,
                    attention_mask=attention_mask, loss_mask=loss_mask, mode=mode)
        if out.get("logits") is None:
            raise RuntimeError("the model returned no logits (fused CE kernel on?): per-option "
                               "losses need them")
        return per_sample_loss(out["logits"], input_ids, loss_mask, pad_quirk_id)

    return fn


def causal_lm_option_losses(lm, pad_quirk_id: int | None = None) -> OptionLosses:
    """A text-only HF causal LM (frames ignored): a blind baseline and a test oracle."""

    @torch.no_grad()
    def fn(frames, frame_mask, input_ids, attention_mask, loss_mask):
        dev = next(lm.parameters()).device
        logits = lm(input_ids=input_ids.to(dev), attention_mask=attention_mask.long().to(dev)).logits
        return per_sample_loss(logits, input_ids.to(dev), loss_mask.to(dev), pad_quirk_id).cpu()

    return fn


# -- scorers -----------------------------------------------------------------------------

class Scorer(Protocol):
    name: str

    def score(self, item: MCQItem) -> list[float]: ...


class TokenMCQScorer:
    """Scores an item with ``option_losses`` on ChatML sequences and the item's frames."""

    def __init__(self, tokenizer, option_losses: OptionLosses, name: str = "fovea",
                 max_frames: int = 64, image_frames: int = 8, device: str | torch.device = "cpu",
                 system: str | None = SYSTEM_PROMPT, max_tokens: int = 1024):
        self.tokenizer, self.option_losses, self.name = tokenizer, option_losses, name
        self.max_frames, self.image_frames, self.device = max_frames, image_frames, torch.device(device)
        self.system, self.max_tokens = system, max_tokens

    def frames_for(self, item: MCQItem) -> torch.Tensor:
        return load_item_frames(item, self.max_frames, self.image_frames)

    def score(self, item: MCQItem, frames: torch.Tensor | None = None) -> list[float]:
        options = parse_options(item.question) or [(LETTERS[i], o) for i, o in enumerate(item.options)]
        batch = build_option_batch(self.tokenizer, item.question, options, self.system, self.max_tokens)
        x = self.frames_for(item) if frames is None else frames
        K = len(options)
        fr = x.unsqueeze(0).expand(K, *x.shape).to(self.device)
        fm = torch.ones(K, x.shape[0], dtype=torch.bool, device=self.device)
        losses = self.option_losses(fr, fm, *(batch[k].to(self.device) for k in
                                              ("input_ids", "attention_mask", "loss_mask")))
        return [float(v) for v in losses.detach().float().cpu()]


def find_reference_model(ref: str = REFERENCE_MODEL) -> Path | None:
    """The local folder of the reference VLM (model store or FOVEA_REFERENCE_MODEL), or None."""
    from fovea.model.store import store_path

    for cand in (os.environ.get("FOVEA_REFERENCE_MODEL"), ref, str(store_path(ref))):
        if cand and (Path(cand) / "config.json").exists():
            return Path(cand)
    return None


def reference_model_hint(ref: str = REFERENCE_MODEL) -> str:
    from fovea.model.store import store_path

    return (f"reference model {ref} not found locally: put the hub folder (config.json, "
            f"*.safetensors, processor files) at {store_path(ref)} (or set FOVEA_REFERENCE_MODEL) "
            "to score it; skipped")


class HFVLMScorer:
    """A transformers image-text-to-text model (SmolVLM2) scored with the same protocol.

    Its own processor and chat template are used (no system message; SmolVLM's template
    ends a turn with ``<end_of_utterance>``).  Videos are given as a sequence of frames at
    1 FPS (at most ``max_frames``) in the multi-image form, images as one image, each option
    in its own forward pass; the score is the mean CE over the tokens after the generation
    prefix ``Assistant:``.  Deviation: SmolVLM2's own video prompt (frame timestamps) is not
    used.  Needs ``num2words`` (the SmolVLM processor imports it).
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", max_frames: int = 64,
                 dtype: torch.dtype | None = None, name: str | None = None):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.path = Path(path)
        self.name = name or self.path.name.split("--")[-1]
        self.device, self.max_frames = torch.device(device), max_frames
        dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        try:
            self.processor = AutoProcessor.from_pretrained(self.path)
        except ImportError as e:
            raise ImportError(f"{e} (pip install num2words for the SmolVLM processor)") from e
        self.model = AutoModelForImageTextToText.from_pretrained(self.path, dtype=dtype).to(self.device).eval()

    @torch.no_grad()
    def score(self, item: MCQItem) -> list[float]:
        images = load_item_images(item, self.max_frames)
        options = parse_options(item.question) or [(LETTERS[i], o) for i, o in enumerate(item.options)]
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": item.question}]
        user = [{"role": "user", "content": content}]
        proc = self.processor
        prefix = proc.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        n_prefix = proc(text=[prefix], images=[images], return_tensors="pt")["input_ids"].shape[1]
        losses = []
        for ltr, text in options:
            msgs = user + [{"role": "assistant", "content": [{"type": "text", "text": f"{ltr}. {text}"}]}]
            full = proc.apply_chat_template(msgs, tokenize=False)
            inp = proc(text=[full], images=[images], return_tensors="pt").to(self.device)
            logits = self.model(**inp).logits
            ids = inp["input_ids"]
            mask = torch.zeros_like(ids, dtype=torch.float32)
            mask[:, n_prefix:] = 1.0
            losses.append(float(per_sample_loss(logits, ids, mask)[0]))
        return losses


# -- running a benchmark -----------------------------------------------------------------

def accuracy_table(records: Iterable[dict]) -> dict:
    """records: dicts with ``correct``, ``category``, ``groups`` -> accuracy in percent (None
    without records: nothing was scored, which is not 0 %)."""
    records = list(records)
    per_cat: dict[str, list[bool]] = {}
    per_group: dict[str, dict[str, list[bool]]] = {}
    for r in records:
        per_cat.setdefault(r["category"], []).append(r["correct"])
        for g, v in (r.get("groups") or {}).items():
            per_group.setdefault(g, {}).setdefault(v, []).append(r["correct"])

    def pct(xs: list[bool]) -> float:
        return 100.0 * sum(xs) / len(xs) if xs else 0.0

    return {
        "accuracy": pct([r["correct"] for r in records]) if records else None,
        "n": len(records),
        "per_category": {k: pct(v) for k, v in sorted(per_cat.items())},
        "per_group": {g: {k: pct(v) for k, v in sorted(d.items())} for g, d in per_group.items()},
    }


def run_mcq(items: list[MCQItem], scorer, progress: bool = True, desc: str | None = None,
            on_error: str = "skip") -> dict:
    """Score every item; accuracy overall, per category and per extra group.

    Items whose media cannot be read are skipped (counted in ``skipped``, the first few reasons
    in ``skipped_examples``) unless ``on_error="raise"``.
    """
    from tqdm.auto import tqdm

    records, why = [], []
    for item in tqdm(items, desc=desc or f"{scorer.name}", disable=not progress, leave=False):
        try:
            losses = scorer.score(item)
        except (FileNotFoundError, ValueError, OSError) as e:
            if on_error == "raise":
                raise
            why.append(f"{item.id}: {e}")
            continue
        records.append(_record(item, losses))
    _warn_skipped(why)
    return _table(records, why)


def _warn_skipped(why: list[str]) -> None:
    if why:
        log.warning("%d item(s) skipped (first: %s)", len(why), why[0])


def _record(item: MCQItem, losses: list[float]) -> dict:
    pred = LETTERS[min(range(len(losses)), key=losses.__getitem__)]
    return {"id": item.id, "category": item.category, "groups": item.groups, "pred": pred,
            "answer": item.answer_letter, "losses": losses, "correct": pred == item.answer_letter}


def _table(records: list[dict], why: list[str]) -> dict:
    """``accuracy_table`` + the skipped items: their count and the first reasons."""
    out = accuracy_table(records)
    out.update(skipped=len(why), skipped_examples=why[:3], records=records)
    return out


def run_mcq_many(items: list[MCQItem], scorers: dict[str, TokenMCQScorer], progress: bool = True,
                 desc: str = "mcq") -> dict[str, dict]:
    """Like ``run_mcq`` for several token scorers (e.g. one per inference mode) that share
    each item's decoded frames (decoded once, not once per scorer)."""
    from tqdm.auto import tqdm

    recs: dict[str, list[dict]] = {k: [] for k in scorers}
    why: list[str] = []
    any_scorer = next(iter(scorers.values()))
    for item in tqdm(items, desc=desc, disable=not progress, leave=False):
        try:
            frames = any_scorer.frames_for(item)
            per = {k: s.score(item, frames) for k, s in scorers.items()}
        except (FileNotFoundError, ValueError, OSError) as e:
            why.append(f"{item.id}: {e}")
            continue
        for k, losses in per.items():
            recs[k].append(_record(item, losses))
    _warn_skipped(why)
    return {k: _table(r, why) for k, r in recs.items()}
