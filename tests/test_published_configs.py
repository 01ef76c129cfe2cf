"""The real-weights path: models built from the exact published configs (DINOv2 at image_size 518,
the SmolLM2 family) load from folders written by transformers and compute what transformers
computes; patch counts come from the input, never from the config's image_size; the store
builds the published models on first use and rebuilds a stale random build.

Parity runs at the published widths, heads and RoPE with fewer LLM layers and an 8192-token
vocabulary, so that it stays a few seconds on a CPU; DINOv2 keeps image_size 518 / patch 14,
so the position embeddings (37 x 37) are interpolated to 16 x 16 at 224 px, as for a real
checkpoint.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, Dinov2Model, LlamaForCausalLM

from fovea.model import build_model
from fovea.model.build import load_dino
from fovea.model.config import ModelConfig
from fovea.model.encoder import FoveatedEncoder
from fovea.model.published import (
    DINO_SMALL, PUBLISHED, PUBLISHED_PARAMS, SMOLLM2_1_7B, SMOLLM2_360M, published_config,
)
from fovea.model.store import (RANDOM_MARKER, TINY_DINO, TINY_LLM, is_random, model_config, resolve_model_ref,
                               store_path)
from fovea.pipelines.batch import dummy_batch, model_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frames(n: int, seed: int = 0, size: int = 224) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ref", list(PUBLISHED))
def test_published_architectures_have_the_published_parameter_counts(ref):
    cfg = published_config(ref)
    with torch.device("meta"):  # no memory, no init: the 1.7B model in milliseconds
        m = (AutoModelForCausalLM if cfg.model_type == "llama" else AutoModel).from_config(cfg)
    assert sum(p.numel() for p in m.parameters()) == PUBLISHED_PARAMS[ref]
    if cfg.model_type == "dinov2":
        assert (cfg.image_size, cfg.patch_size) == (518, 14)
        assert m.embeddings.position_embeddings.shape[1] == 1 + 37 * 37  # 1370, not 257


@pytest.fixture(scope="module")
def dino_folder(tmp_path_factory):
    """A Dinov2Model with the published DINOv2-small config, random (seeded), saved by transformers."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("dinov2-small")
    Dinov2Model(published_config(DINO_SMALL)).save_pretrained(d)
    return d


def test_dinov2_checkpoint_loads_and_gives_transformers_patch_features(dino_folder):
    hf = Dinov2Model.from_pretrained(dino_folder).eval()
    enc = FoveatedEncoder(load_dino(str(dino_folder))).eval()
    x = _frames(2)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state  # transformers' forward, interpolating 37x37 -> 16x16
        cache = enc.encode_patches(x)
    assert ref.shape == (2, 257, 384) and cache.num_tokens == 257 == enc.num_tokens(224)
    assert (cache.features - ref).abs().max() < 1e-4
    u8 = (torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():  # the packed uint8 frames of training, normalised on the device
        ref_u8 = hf(pixel_values=(u8.float() / 255 - mean) / std).last_hidden_state
        assert (enc.encode_patches(u8).features - ref_u8).abs().max() < 1e-4
    assert enc.num_tokens(280, 196) == 1 + 20 * 14  # from the input and the patch size


def _llama_folder(tmp_path, ref: str, layers: int, vocab: int):
    cfg = published_config(ref)
    cfg.num_hidden_layers, cfg.vocab_size = layers, vocab
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("ref,layers,vocab,fused", [(SMOLLM2_360M, 2, 8192, True), (SMOLLM2_360M, 2, 8192, False),
                                                    (SMOLLM2_1_7B, 1, 8192, True)])
def test_llm_logits_match_llama_for_causal_lm(tmp_path, model_store, ref, layers, vocab, fused):
    folder = _llama_folder(tmp_path, ref, layers, vocab)
    hf = LlamaForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    model = build_model(ModelConfig(llm=str(folder), dino=TINY_DINO, fused_llm_projections=fused)).eval()
    V = hf.config.vocab_size
    batch = dummy_batch([0, 0], [13, 9], vocab=V, seed=3)  # text only: the LLM alone
    with torch.no_grad():
        ours = model(**model_inputs(batch), mode="coarse_fine")["logits"]
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        am = batch["attention_mask"]
        assert (ours[am] - theirs[am]).abs().max() < 1e-4
        # the path of every training pass (packed visual tokens + text): any input embeddings
        emb = torch.randn(2, 21, hf.config.hidden_size, generator=torch.Generator().manual_seed(4)) * 0.05
        ours = model.lm_head(model.decoder(emb))
        theirs = hf(inputs_embeds=emb).logits
    assert (ours - theirs).abs().max() < 1e-4


def test_published_dinov2_small_runs_everywhere_with_257_tokens(model_store, tmp_path):
    """The encoder, the diagnostics, the heatmap attention and the saved metadata of a model with
    the published DINOv2-small config (the store's), at 224 px: 257 tokens, ceiling ln 257."""
    from fovea.model.io import save_pretrained

    assert model_store[DINO_SMALL]
    model = build_model(ModelConfig(llm=TINY_LLM, dino=DINO_SMALL)).eval()
    assert model.encoder.dino.config.image_size == 518
    batch = dummy_batch([2, 1], [7, 5], seed=5)
    with torch.no_grad():
        d = model(**model_inputs(batch), mode="coarse_fine", return_diagnostics=True)["diagnostics"]
    assert d["attn_entropy_max"] == pytest.approx(math.log(257))  # 5.549, not ln 1370 = 7.22
    assert 0 < d["attn_entropy_coarse"] <= math.log(257) + 1e-4
    w = model.query_attention(batch["frames"], batch["frame_mask"], which="fine")
    assert w.shape == (2, 2, 12, 6, 257)
    import json

    meta = json.loads((save_pretrained(model, tmp_path / "saved") / "config.json").read_text())
    assert meta["dims"]["Np"] == 257 and meta["dims"]["patch_size"] == 14


def test_frame_size_is_the_shards(tmp_path):
    from fovea.model.blocks import FRAME_SIZE
    from fovea.pipelines import loader, video

    assert FRAME_SIZE == video.FRAME_SIZE == loader.FRAME_SIZE == 224


def test_store_builds_on_first_use_and_rebuilds_a_stale_random_build(tmp_path, monkeypatch):
    monkeypatch.setenv("FOVEA_MODEL_STORE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty hub cache
    monkeypatch.setenv("FOVEA_BUILD_ON_FIRST_USE", "0")
    assert resolve_model_ref(DINO_SMALL) == DINO_SMALL  # switched off: the hub id
    monkeypatch.setenv("FOVEA_BUILD_ON_FIRST_USE", "1")
    path = resolve_model_ref(DINO_SMALL)  # first use: built now, random, published config
    folder = store_path(DINO_SMALL)
    assert path == str(folder) and (folder / RANDOM_MARKER).exists()
    cfg = Dinov2Model.config_class.from_pretrained(folder)
    assert (cfg.image_size, cfg.patch_size, cfg.hidden_size) == (518, 14, 384)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_ref(DINO_SMALL) == path
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # built once

    cfg.image_size = 224  # a build of the old 224-px config: stale, rebuilt at the next use
    cfg.save_pretrained(folder)
    assert model_config(DINO_SMALL).image_size == 518  # a dry run sizes what the next use builds
    assert resolve_model_ref(DINO_SMALL) == path
    assert Dinov2Model.config_class.from_pretrained(folder).image_size == 518
    (folder / RANDOM_MARKER).unlink()  # real weights (no marker) are never touched
    cfg.save_pretrained(folder)
    assert resolve_model_ref(DINO_SMALL) == path and not is_random(DINO_SMALL)
    assert Dinov2Model.config_class.from_pretrained(folder).image_size == 224
