"""Chat format and loss masks (DESIGN.md 2.2 and 2.3).

Every sample, visual or text-only, is one system + user + assistant exchange rendered with
the tokenizer's own chat template (SmolLM2 ChatML) and an explicit system prompt, which
suppresses SmolLM2's default "...named SmolLM, trained by Hugging Face" system message:

    <|im_start|>system\\nYou are a helpful AI assistant.<|im_end|>\\n
    <|im_start|>user\\n{user}<|im_end|>\\n<|im_start|>assistant\\n{assistant}<|im_end|>\\n

tokenized with ``add_special_tokens=False``.  Loss mask by stage:

    stage 1     every token is a target (system, user, role markers, answer, <|im_end|>),
                for visual samples and for SmolTalk alike
    stage 2, 3  answer only: 0 on the first ``boundary`` tokens, 1 after, where boundary =
                len(tokens of system + user rendered with add_generation_prompt=True), i.e.
                the answer and its closing ``<|im_end|>\\n`` are targets

Choice recorded (DESIGN.md 2.3 "precedence quirk"): every dataset is re-tokenized from its
``user``/``assistant`` text with the stage rule; nothing pre-tokenized upstream is reused.
Sequences longer than ``max_tokens`` are cut at the end (512 tokens for stage 1 and 1024 for
stages 2-3 by default); a stage 2-3 sample whose prompt alone fills the budget is rejected.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from fovea.pipelines.errors import EMPTY_CAPTION, EMPTY_PROMPT, TOO_LONG, Reject

SYSTEM_PROMPT = "You are a helpful AI assistant."
DEFAULT_TOKENIZER = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Prompts for sources whose samples carry no user text (DESIGN.md 2.2).
SOURCE_PROMPTS = {
    "openvid": "Write a brief caption for this video.",
    "webvid": "What would be the WebVid caption for this video?",
    "vript": "Provide a detailed narration of what happens in this video.",
    "sharegpt4video": "Describe what happens in this video in detail.",
}
FALLBACK_PROMPT = "Describe this."


def default_max_tokens(stage: int) -> int:
    return 512 if stage == 1 else 1024


def prompt_for(source: str, user: str | None) -> str:
    """The user's own text, else the per-source default prompt."""
    if user and user.strip():
        return user.strip()
    return SOURCE_PROMPTS.get(source.split("/")[0], FALLBACK_PROMPT)


@functools.lru_cache(maxsize=4)
def load_tokenizer(ref: str = DEFAULT_TOKENIZER):
    """Tokenizer from the local model store (or a path / hub id); cached per process."""
    from transformers import AutoTokenizer

    from fovea.model.store import resolve_model_ref

    tok = AutoTokenizer.from_pretrained(resolve_model_ref(ref))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@dataclass
class Tokenized:
    token_ids: list[int]
    loss_mask: list[int]  # same length; 1 = target
    boundary: int  # index of the first answer token (before truncation)
    truncated: bool


def messages(user: str, assistant: str) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ]


def tokenize_chat(tok, user: str, assistant: str, stage: int, max_tokens: int) -> Tokenized:
    """Render and tokenize one exchange; raise ``Reject`` for empty text or no room for the answer."""
    if not user or not user.strip():
        raise Reject(EMPTY_PROMPT, "empty user turn")
    if not assistant or not assistant.strip():
        raise Reject(EMPTY_CAPTION, "empty caption/answer")
    msgs = messages(user, assistant)
    full = tok.apply_chat_template(msgs, tokenize=False)
    prompt = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    ids = tok(full, add_special_tokens=False)["input_ids"]
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    boundary = len(prompt_ids)
    if ids[:boundary] != prompt_ids:  # the template must render the prompt as a prefix
        raise ValueError("chat template: prompt tokens are not a prefix of the full exchange")
    if stage == 1:
        mask = [1] * len(ids)
    elif stage in (2, 3):
        mask = [0] * boundary + [1] * (len(ids) - boundary)
        if boundary >= max_tokens:
            raise Reject(TOO_LONG, f"prompt is {boundary} tokens, budget {max_tokens}")
    else:
        raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
    truncated = len(ids) > max_tokens
    return Tokenized(ids[:max_tokens], mask[:max_tokens], boundary, truncated)
