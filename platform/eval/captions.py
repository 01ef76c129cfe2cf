"""Generated text: greedy captions / short answers from the autoregressive visual loop, scored
with the COCO caption metrics on caption-like sources and VQA accuracy on VQA-like ones.

    records = generate_captions(model, loader, tokenizer, n=8)  # [{key, source, prompt, reference, generated}]
    score_generations(records)                                   # {captions: {Bleu_4, CIDEr, ...}, vqa_accuracy, ...}
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Iterable

import torch

from fovea.model.config import MAX_NEW_TOKENS
from fovea.platform.eval.batches import autocast, first_rows, progress_bar, visual_only

log = logging.getLogger("fovea.evaluation")

VQA_SOURCE = re.compile(r"vqa|gqa|vizwiz|ocr|docvqa|chartqa|textqa", re.I)


def prompt_text(source: str, user: str) -> str:
    """The user prompt a sample is asked with (the training prompt of its source)."""
    try:
        from fovea.pipelines.tokenize import prompt_for

        return prompt_for(source or "", user)
    except ImportError:
        return (user or "").strip() or "Describe this."


def _eos_id(tokenizer) -> int:
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return eos if isinstance(eos, int) and eos >= 0 else tokenizer.eos_token_id


@torch.no_grad()
def generate_captions(model, loader: Iterable[dict], tokenizer, n: int, max_new_tokens: int = MAX_NEW_TOKENS,
                      device: torch.device | str | None = None, precision: str = "auto",
                      progress: bool = True) -> list[dict]:
    """Greedy generations (autoregressive visual loop, DESIGN.md 1.4) for the first ``n`` visual
    samples: system + user prompt + ``<|im_start|>assistant\\n``, stop at ``<|im_end|>``; a record's
    ``truncated`` says the generation ran to ``max_new_tokens`` without ending."""
    from fovea.platform.eval.mcq import chat_messages

    device = torch.device(device) if device is not None else next(model.parameters()).device
    eos = _eos_id(tokenizer)
    records: list[dict] = []
    was_training = model.training
    model.eval()
    bar = progress_bar(n, "generate", progress)
    for batch in loader:
        batch = visual_only(batch)
        if batch is None:
            continue
        B = batch["input_ids"].shape[0]
        if len(records) + B > n:
            batch = first_rows(batch, n - len(records))
            B = batch["input_ids"].shape[0]
        sources = batch.get("sources") or [""] * B
        users = batch.get("users") or [""] * B
        refs = batch.get("assistants") or [""] * B
        keys = batch.get("keys") or [str(len(records) + i) for i in range(B)]
        prompts = [prompt_text(s, u) for s, u in zip(sources, users)]
        ids = [tokenizer(tokenizer.apply_chat_template(chat_messages(p), tokenize=False,
                                                       add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"] for p in prompts]
        with autocast(device, precision):
            new = model.generate(batch["frames"].to(device), batch["frame_mask"].to(device), ids,
                                 max_new_tokens=max_new_tokens, eos_token_id=eos)
        for i in range(B):
            # no end-of-turn within the budget: the text was cut at max_new_tokens
            records.append({"key": keys[i], "source": sources[i], "prompt": prompts[i], "reference": refs[i],
                            "generated": tokenizer.decode(new[i], skip_special_tokens=True).strip(),
                            "truncated": len(new[i]) >= max_new_tokens})
        bar.update(B)
        if len(records) >= n:
            break
    bar.close()
    model.train(was_training)
    return records


def score_generations(records: list[dict], spice: bool = False) -> dict[str, Any]:
    """Caption metrics on caption-like sources, VQA accuracy on VQA-like ones (``VQA_SOURCE``)."""
    from fovea.platform.eval.caption_metrics import CaptionMetricsError, score_captions
    from fovea.platform.eval.vqa_metrics import vqa_evaluate

    out: dict[str, Any] = {}
    caps = [r for r in records if not VQA_SOURCE.search(r["source"] or "") and r["reference"]]
    vqas = [r for r in records if VQA_SOURCE.search(r["source"] or "") and r["reference"]]
    if caps:
        refs = {i: [r["reference"]] for i, r in enumerate(caps)}
        hyps = {i: r["generated"] for i, r in enumerate(caps)}
        try:
            scores = score_captions(refs, hyps, spice=spice)
            out["captions"] = {k: v for k, v in scores.items() if k != "n"}
            out["captions_n"] = scores["n"]
        except CaptionMetricsError as e:
            log.warning("caption metrics skipped: %s", e)
            out["captions_error"] = str(e)
    if vqas:
        answers = {i: r.get("answers") or [r["reference"]] for i, r in enumerate(vqas)}
        res = vqa_evaluate({i: r["generated"] for i, r in enumerate(vqas)}, answers)
        out["vqa_accuracy"], out["vqa_n"] = res["overall"], res["n"]
    return out


def records_jsonl(records: list[dict]) -> str:
    """One JSON record per line (``captions.jsonl``)."""
    return "".join(json.dumps(r) + "\n" for r in records)


def records_markdown(records: list[dict]) -> str:
    """The generations as a markdown table: key | generated | reference (a generation cut at
    max_new_tokens ends in ``[cut at max_new_tokens]``)."""
    return "| key | generated | reference |\n|---|---|---|\n" + "".join(
        f"| {r['key']} | {_shown(r).replace('|', '/')} | {r['reference'].replace('|', '/')} |\n"
        for r in records)


def _shown(r: dict) -> str:
    return r["generated"] + (" ... [cut at max_new_tokens]" if r.get("truncated") else "")


def records_text(records: list[dict], width: int = 100) -> str:
    """The generations for a terminal: per sample its key, what was generated (flagged when cut
    at max_new_tokens) and the reference, each on one line shortened to ``width``."""
    def one(s: str) -> str:
        s = " ".join(s.split())
        return s if len(s) <= width else s[: width - 3] + "..."

    cut = sum(bool(r.get("truncated")) for r in records)
    lines = [f"generated captions ({len(records)}, {cut} cut at max_new_tokens):"]
    for r in records:
        flag = "  [cut at max_new_tokens]" if r.get("truncated") else ""
        lines += [f"  {r['key']}{flag}", f"    generated: {one(r['generated'])}",
                  f"    reference: {one(r['reference'])}"]
    return "\n".join(lines)


def generation_results(model, loader: Iterable[dict], tokenizer, n: int, max_new_tokens: int,
                       device: torch.device, precision: str, progress: bool, spice: bool,
                       out_dir: Path) -> dict[str, Any]:
    """``n`` generations scored (+ the generations as ``samples``, and how many were cut at
    ``max_new_tokens``), written to ``out_dir/captions.jsonl``."""
    recs = generate_captions(model, loader, tokenizer, n, max_new_tokens, device, precision, progress)
    out = score_generations(recs, spice=spice)
    out["samples"], out["truncated"] = recs, sum(bool(r.get("truncated")) for r in recs)
    (out_dir / "captions.jsonl").write_text(records_jsonl(recs))
    return out
