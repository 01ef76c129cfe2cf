"""generate(): KV cache vs recompute, agreement with the autoregressive forward, stopping."""

from __future__ import annotations

import pytest
import torch

from fovea.model.build import build_model
from fovea.pipelines.batch import dummy_batch
from fovea.model.config import ModelConfig
from fovea.model.store import TINY_DINO, TINY_LLM


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(model_store):
    torch.manual_seed(1)
    m = build_model(ModelConfig(llm=TINY_LLM, dino=TINY_DINO))
    with torch.no_grad():  # sharper next-token distributions than the 0.02 init
        for p in m.llm.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return m.eval()


@pytest.fixture(scope="module")
def videos():
    """Rows with 3, 1 and 0 real frames (T = 4) and prompts of different lengths."""
    b = dummy_batch([3, 1, 0], [1, 1, 1], T=4, seed=11)
    g = torch.Generator().manual_seed(12)
    prompts = [torch.randint(3, 49152, (n,), generator=g).tolist() for n in (6, 2, 9)]
    return b["frames"], b["frame_mask"], prompts


def test_greedy_cache_equals_recompute(model, videos):
    frames, fm, prompts = videos
    a = model.generate(frames, fm, prompts, max_new_tokens=7, eos_token_id=[])
    b = model.generate(frames, fm, prompts, max_new_tokens=7, eos_token_id=[], use_cache=False)
    assert a == b
    assert [len(x) for x in a] == [7, 7, 7]


def test_generation_matches_autoregressive_forward(model, videos):
    """Teacher-forcing prompt + generated tokens through forward(mode="autoregressive")
    must give the generated tokens as argmax at every step, in every row."""
    frames, fm, prompts = videos
    gen = model.generate(frames, fm, prompts, max_new_tokens=5, eos_token_id=[])
    seqs = [p + g for p, g in zip(prompts, gen)]
    S = max(map(len, seqs))
    ids = torch.full((3, S), 2, dtype=torch.long)
    am = torch.zeros(3, S, dtype=torch.bool)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
        am[b, : len(s)] = True
    with torch.no_grad():
        out = model(frames, fm, ids, am, am.float(), mode="autoregressive")
    for b, (p, g) in enumerate(zip(prompts, gen)):
        pred = out["logits"][b, len(p) - 1: len(p) - 1 + len(g)].argmax(-1).tolist()
        assert pred == g, b


def test_eos_and_max_new_tokens(model, videos):
    frames, fm, prompts = videos
    greedy = model.generate(frames, fm, prompts, max_new_tokens=4, eos_token_id=[])
    stop = greedy[0][2]  # becomes eos: row 0 stops there (eos itself not returned)
    out = model.generate(frames, fm, prompts, max_new_tokens=4, eos_token_id=stop)
    k = greedy[0].index(stop)
    assert out[0] == greedy[0][:k]
    for b in (1, 2):
        g = greedy[b]
        assert out[b] == (g[: g.index(stop)] if stop in g else g)
    assert model.generate(frames, fm, prompts, max_new_tokens=0) == [[], [], []]


def test_sampling(model, videos):
    frames, fm, prompts = videos
    kw = dict(max_new_tokens=6, eos_token_id=[], do_sample=True, temperature=1.5)
    s1 = model.generate(frames, fm, prompts, generator=torch.Generator().manual_seed(0), **kw)
    s2 = model.generate(frames, fm, prompts, generator=torch.Generator().manual_seed(0), **kw)
    s3 = model.generate(frames, fm, prompts, generator=torch.Generator().manual_seed(1), **kw)
    assert s1 == s2 and s1 != s3
    assert all(0 <= t < 49152 for row in s1 for t in row)
    # nucleus with a tiny top_p keeps only the most likely token: greedy
    nucleus = model.generate(frames, fm, prompts, max_new_tokens=6, eos_token_id=[], do_sample=True,
                             top_p=1e-6, generator=torch.Generator().manual_seed(0))
    assert nucleus == model.generate(frames, fm, prompts, max_new_tokens=6, eos_token_id=[])


def test_padded_frames_do_not_change_generation(model, videos):
    frames, fm, prompts = videos
    full = model.generate(frames, fm, prompts, max_new_tokens=5, eos_token_id=[])
    noisy = frames + 5 * torch.randn_like(frames) * (~fm)[..., None, None, None]
    assert model.generate(noisy, fm, prompts, max_new_tokens=5, eos_token_id=[]) == full
    alone = model.generate(frames[1:2, :1], fm[1:2, :1], prompts[1:2], max_new_tokens=5, eos_token_id=[])
    assert alone[0] == full[1]


def test_default_stop_is_eos_or_200_new_tokens(model, videos):
    """The reference stops at end-of-sequence or after 200 new tokens (DESIGN.md 1.4); so do
    FoveatedVLM.generate and the evaluation (eval.max_new_tokens) by default."""
    from fovea.model.config import MAX_NEW_TOKENS
    from fovea.platform.config import RunConfig

    assert MAX_NEW_TOKENS == 200 and RunConfig().eval.max_new_tokens == 200
    frames, fm, prompts = videos
    one = (frames[:1], fm[:1], prompts[:1])  # one row: 200 steps take a few seconds on the CPU
    out = model.generate(*one, eos_token_id=[])[0]  # no eos: the cap stops the row
    assert len(out) == 200
    stop = out[20]
    assert model.generate(*one, eos_token_id=stop)[0] == out[: out.index(stop)]  # eos stops it first
