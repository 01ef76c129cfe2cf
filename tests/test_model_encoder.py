"""FoveatedEncoder against the unmodified Hugging Face DINOv2 (fp32, CPU)."""

from __future__ import annotations

import pytest
import torch
from transformers import Dinov2Model

from fovea.model.encoder import FoveatedEncoder
from fovea.model.store import build_tiny_dino, resolve_model_ref


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dino():
    return build_tiny_dino(seed=0).eval()


@pytest.fixture(scope="module")
def small_dino(model_store):
    """DINOv2-small architecture (12 layers, 6 heads, D=384), random store weights."""
    return Dinov2Model.from_pretrained(resolve_model_ref("facebook/dinov2-small")).eval()


def _frames(n, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def _hf_reference(dino, enc, frames, queries, capture_attn=False):
    """Run the HF layers over [patches; query] with a mask hiding the query column from
    every row (patches never see it; the query does not attend to itself)."""
    h = dino.embeddings(frames)
    n, Np, _ = h.shape
    h = torch.cat([h, enc.query_input_proj(queries).unsqueeze(1)], dim=1)  # [n, Np+1, D]
    mask = torch.zeros(n, 1, Np + 1, Np + 1)
    mask[..., Np] = float("-inf")
    weights, hooks = [], []
    if capture_attn:
        for layer in dino.encoder.layer:
            hooks.append(layer.attention.register_forward_hook(
                lambda m, i, o: weights.append(o[1][:, :, Np:, :Np].detach())))
    try:
        for layer in dino.encoder.layer:
            h = layer(h, attention_mask=mask)
    finally:
        for hk in hooks:
            hk.remove()
    feats = dino.layernorm(h)
    return enc.output_proj(feats[:, Np]), feats[:, :Np], weights


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_patch_pass_equals_dinov2_and_caches_kv(which, tiny_dino, request):
    dino = tiny_dino if which == "tiny" else request.getfixturevalue("small_dino")
    enc = FoveatedEncoder(dino).eval()
    x = _frames(2 if which == "small" else 3)
    with torch.no_grad():
        cache = enc.encode_patches(x)
        ref = dino(pixel_values=x).last_hidden_state
        assert cache.features.shape == ref.shape == (x.shape[0], 257, dino.config.hidden_size)
        assert (cache.features - ref).abs().max() < 1e-5
        # cached K/V = k/v projections of LN1 of each layer's input, in layer order
        h = dino.embeddings(x)
        for layer, k, v in zip(dino.encoder.layer, cache.keys, cache.values):
            ln = layer.norm1(h)
            assert k.shape == (x.shape[0], enc.num_heads, 257, enc.head_dim)
            assert (enc._heads(layer.attention.k_proj(ln)) - k).abs().max() < 1e-5
            assert (enc._heads(layer.attention.v_proj(ln)) - v).abs().max() < 1e-5
            h = layer(h)


@pytest.mark.parametrize("which,query_dim", [("tiny", None), ("tiny", 16), ("small", None), ("small", 192)])
def test_deep_query_equals_masked_hf_reference(which, query_dim, tiny_dino, request):
    dino = tiny_dino if which == "tiny" else request.getfixturevalue("small_dino")
    torch.manual_seed(1)
    enc = FoveatedEncoder(dino, query_dim=query_dim).eval()
    n = 2
    x, q = _frames(n, seed=3), torch.randn(n, enc.query_dim)
    with torch.no_grad():
        z = enc.query_pass(enc.encode_patches(x), q)
        z_ref, patches_ref, _ = _hf_reference(dino, enc, x, q)
        assert z.shape == (n, dino.config.hidden_size)
        assert (z - z_ref).abs().max() < 1e-5
        # the query is invisible to the patches: masked run == plain DINOv2
        assert (patches_ref - dino(pixel_values=x).last_hidden_state).abs().max() < 1e-5


def test_attention_returning_variant_matches_sdpa_and_hf_weights(tiny_dino):
    torch.manual_seed(2)
    enc = FoveatedEncoder(tiny_dino).eval()
    x, q = _frames(3, seed=4), torch.randn(3, enc.query_dim)
    with torch.no_grad():
        cache = enc.encode_patches(x)
        z = enc.query_pass(cache, q)
        z2, w = enc.query_pass(cache, q, return_attn=True)
        tiny_dino.set_attn_implementation("eager")
        try:
            _, _, w_ref = _hf_reference(tiny_dino, enc, x, q, capture_attn=True)
        finally:
            tiny_dino.set_attn_implementation("sdpa")
    assert (z - z2).abs().max() < 1e-5
    assert len(w) == len(w_ref) == tiny_dino.config.num_hidden_layers
    for a, r in zip(w, w_ref):
        assert a.shape == (3, enc.num_heads, 1, 257)
        assert torch.allclose(a.sum(-1), torch.ones(3, enc.num_heads, 1), atol=1e-5)
        assert (a - r).abs().max() < 1e-6


def test_queries_matter_and_no_bias(tiny_dino):
    """BUG-002: no bias on query_input_proj; two random queries give different tokens."""
    torch.manual_seed(3)
    enc = FoveatedEncoder(tiny_dino)
    assert enc.query_input_proj.bias is None
    assert FoveatedEncoder(tiny_dino, query_bias=True).query_input_proj.bias is not None
    with torch.no_grad():
        cache = enc.encode_patches(_frames(2, seed=5))
        z1 = enc.query_pass(cache, torch.randn(2, enc.query_dim))
        z2 = enc.query_pass(cache, torch.randn(2, enc.query_dim))
        zb = enc.query_pass(cache, torch.randn(1, enc.query_dim))  # broadcast query
    assert (z1 - z2).abs().mean() > 1e-3
    assert zb.shape == (2, enc.dim)
    with pytest.raises(ValueError):
        enc.query_pass(cache, torch.randn(2, enc.query_dim + 1))


def test_shallow_mode_formula(tiny_dino):
    """Shallow (A1/A7): one cross-attention of W_in q over LN1_last(final features)."""
    torch.manual_seed(4)
    enc = FoveatedEncoder(tiny_dino, deep_query=False).eval()
    deep = FoveatedEncoder(tiny_dino).eval()
    deep.load_state_dict(enc.state_dict())
    x, q = _frames(2, seed=6), torch.randn(2, enc.query_dim)
    with torch.no_grad():
        cache = enc.encode_patches(x)
        z, w = enc.query_pass(cache, q, return_attn=True)
        last = tiny_dino.encoder.layer[-1]
        ln = last.norm1(cache.features)
        k, v = last.attention.k_proj(ln), last.attention.v_proj(ln)  # [n, Np, D]
        H, hd = enc.num_heads, enc.head_dim
        qh = enc.query_input_proj(q).view(2, H, 1, hd)
        kh, vh = (t.view(2, 257, H, hd).transpose(1, 2) for t in (k, v))
        att = torch.softmax(qh @ kh.transpose(-1, -2) / hd ** 0.5, -1)
        a = (att @ vh).transpose(1, 2).reshape(2, 1, enc.dim)
        z_ref = enc.output_proj(tiny_dino.layernorm(a))[:, 0]
        z_deep = deep.query_pass(cache, q)
    assert (z - z_ref).abs().max() < 1e-5
    assert len(w) == 1 and (w[0] - att).abs().max() < 1e-6
    assert (z - z_deep).abs().max() > 1e-3


def test_patch_block_is_the_hf_layer_and_returns_its_kv(tiny_dino):
    """PatchBlock writes the HF layer out: same output, and K/V equal to W_k/W_v of LN1(h)."""
    from fovea.model.blocks import PatchBlock, attn_linears, split_heads

    layer = tiny_dino.encoder.layer[0]
    H = tiny_dino.config.num_attention_heads
    h = torch.randn(3, 17, tiny_dino.config.hidden_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out, k, v = PatchBlock(layer, H)(h)
        ref = layer(h)
        ref = ref[0] if isinstance(ref, tuple) else ref
        _, k_proj, v_proj, _ = attn_linears(layer)
        x = layer.norm1(h)
    assert (out - ref).abs().max() < 1e-5
    assert torch.equal(k, split_heads(k_proj(x), H)) and torch.equal(v, split_heads(v_proj(x), H))


def test_uint8_frames_are_normalised_on_the_device(tiny_dino):
    """Packed uint8 frames give the same cache as the loader's float normalisation."""
    from fovea.model.blocks import IMAGENET_MEAN, IMAGENET_STD

    enc = FoveatedEncoder(tiny_dino).eval()
    raw = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        a = enc.encode_patches(raw)
        b = enc.encode_patches((raw.float() / 255 - mean) / std)
    assert (a.features - b.features).abs().max() < 1e-5
