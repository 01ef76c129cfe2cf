"""The real SmolLM2-135M-Instruct (30 layers, d=576) with the tiny DINOv2: a few seconds on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from fovea.model.build import build_model, load_tokenizer
from fovea.pipelines.batch import dummy_batch
from fovea.model.config import ModelConfig
from fovea.model.store import SMOLLM2_135M, TINY_DINO

PROMPT = [{"role": "system", "content": "You are a helpful AI assistant."},
          {"role": "user", "content": "Write a brief caption for this video."}]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real(model_store):
    torch.manual_seed(0)
    model = build_model(ModelConfig(llm=SMOLLM2_135M, dino=TINY_DINO)).eval()
    return model, load_tokenizer(SMOLLM2_135M)


def _ids(tok, messages, gen=False):
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.fixture(scope="module")
def chat_batch(real):
    _, tok = real
    a = _ids(tok, PROMPT + [{"role": "assistant", "content": "A dog runs on the beach."}])
    b = _ids(tok, [PROMPT[0], {"role": "user", "content": "What is 2+2?"},
                   {"role": "assistant", "content": "4"}])
    S = max(len(a), len(b))
    batch = dummy_batch([2, 0], [len(a), len(b)], T=2, S=S, seed=31)
    for i, ids in enumerate((a, b)):
        batch["input_ids"][i, : len(ids)] = torch.tensor(ids)
    return batch, (len(a), len(b))


def _inputs(batch):
    return {k: batch[k] for k in ("frames", "frame_mask", "input_ids", "attention_mask", "loss_mask")}


def test_real_llm_text_only_and_visual_rows(real, chat_batch):
    model, tok = real
    assert model.llm.config.num_hidden_layers == 30 and model.llm_dtype == torch.float32
    batch, (la, lb) = chat_batch
    with torch.no_grad():
        out = model(**_inputs(batch), mode="coarse_fine")
        ref = model.llm(input_ids=batch["input_ids"][1:, :lb]).logits[0]
    assert (out["logits"][1, :lb] - ref).abs().max() < 1e-4  # text-only row == plain SmolLM2
    # a real instruct model knows chat text: far below log V = 10.8
    assert 0.5 < float(out["loss"]) < 6.0


def test_real_llm_autoregressive_cache_and_gradients(real, chat_batch):
    model, _ = real
    batch, _ = chat_batch
    with torch.no_grad():
        a = model(**_inputs(batch), mode="autoregressive")
        b = model(**_inputs(batch), mode="autoregressive", use_kv_cache=False)
    assert (a["logits"] - b["logits"]).abs().max() < 1e-4
    model.train()
    try:
        out = model(**_inputs(batch), mode="coarse_fine", return_logits=False)
        out["loss"].backward()
        for p in (model.q_init, model.llm_to_query.weight, model.llm.model.layers[0].mlp.up_proj.weight):
            assert p.grad is not None and p.grad.abs().sum() > 0
        assert math.isfinite(float(out["loss"]))
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_real_llm_generate(real):
    model, tok = real
    prompt = _ids(tok, [PROMPT[0], {"role": "user", "content": "What is the capital of France?"}], gen=True)
    b = dummy_batch([0, 1], [1, 1], T=1, seed=32)
    out = model.generate(b["frames"], b["frame_mask"], [prompt, prompt], max_new_tokens=8)
    nocache = model.generate(b["frames"], b["frame_mask"], [prompt, prompt], max_new_tokens=8, use_cache=False)
    assert out == nocache and 0 < len(out[0]) <= 8
    assert "Paris" in tok.decode(out[0])  # text-only row: plain SmolLM2 answer
