"""FoveatedVLM forward modes, padding, losses, gradients, diagnostics (tiny models, CPU, fp32)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from fovea.model.build import build_model
from fovea.model.diagnostics import attention_entropy
from fovea.pipelines.batch import dummy_batch, model_inputs, select
from fovea.model.losses import IGNORE_INDEX, build_labels, shifted_targets
from fovea.model.vlm import MODES
from fovea.model.config import ModelConfig
from fovea.model.store import TINY_DINO, TINY_LLM

TOL = 2e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(model_store):
    torch.manual_seed(0)
    m = build_model(ModelConfig(llm=TINY_LLM, dino=TINY_DINO))
    with torch.no_grad():  # livelier than the 0.02 init, so a leak would show in the logits
        for p in m.llm.parameters():
            if p.dim() == 2:
                p.mul_(5.0)
    return m.eval()


def _run(model, batch, mode, **kw):
    return model(**model_inputs(batch), mode=mode, **kw)


def test_output_contract_all_modes(model):
    batch = dummy_batch([3, 2], [10, 7], T=4, S=12)
    V = model.llm.config.vocab_size
    for mode in MODES:
        out = _run(model, batch, mode)
        assert out["logits"].shape == (2, 12, V)
        assert set(out) >= {"loss", "loss_fine", "loss_coarse", "logits", "num_targets"}
        # positions 1..len-1 of each sample; coarse_only and autoregressive also score position 0
        # from the last visual position, as the reference does (DESIGN.md 1.4)
        assert int(out["num_targets"]) == (9 + 6 if mode == "coarse_fine" else 10 + 7), mode
        assert math.isfinite(float(out["loss"])) and math.isfinite(float(out["loss_coarse"]))
        if mode == "coarse_only":
            assert math.isnan(float(out["loss_fine"]))
            assert float(out["loss"]) == float(out["loss_coarse"])
        else:  # lambda_coarse = 0: the loss is the fine loss
            assert float(out["loss"]) == float(out["loss_fine"])


def test_mode_is_chosen_per_batch(model):
    batch = dummy_batch([2, 1], [5, 5])
    for bad in (["coarse_fine", "coarse_only"], ("autoregressive",), "fine", None):
        with pytest.raises(ValueError):
            _run(model, batch, bad)


@pytest.mark.parametrize("mode", MODES)
def test_padding_and_text_only_change_no_real_sample(model, mode):
    """Padded frames (filled with noise here), longer neighbours and text-only samples
    leave every real sample's logits and loss as if it ran alone."""
    frames, lens = [3, 6, 0, 1], [12, 16, 9, 5]
    batch = dummy_batch(frames, lens, T=8, S=16, pad_frame_value=7.0, seed=1)
    batch["frames"] += torch.randn_like(batch["frames"]) * (~batch["frame_mask"])[..., None, None, None]
    out = _run(model, batch, mode)
    ce_sum, count = 0.0, 0
    for b, (n, s) in enumerate(zip(frames, lens)):
        alone = _run(model, select(batch, b, T=max(n, 1), S=s), mode)
        diff = (out["logits"][b, :s] - alone["logits"][0]).abs().max()
        assert diff < TOL, (b, float(diff))
        ce_sum += float(alone["loss"]) * int(alone["num_targets"])
        count += int(alone["num_targets"])
    assert abs(float(out["loss"]) - ce_sum / count) < TOL
    # negative control: changing sample 0's own frames does change its logits
    batch2 = {k: v.clone() for k, v in batch.items()}
    batch2["frames"][0, 1] += 1.0
    assert (_run(model, batch2, mode)["logits"][0, :12] - out["logits"][0, :12]).abs().max() > 100 * TOL


def test_text_only_samples_are_plain_llm(model):
    batch = dummy_batch([0, 0], [9, 6], S=9, seed=2)
    ref = model.llm(input_ids=batch["input_ids"]).logits
    for mode in MODES:
        out = _run(model, batch, mode)
        for b, s in enumerate([9, 6]):
            assert (out["logits"][b, :s] - ref[b, :s]).abs().max() < TOL


@pytest.mark.parametrize("T", [1, 8, 64])
def test_frame_counts_forward_backward(model, T):
    m = copy.deepcopy(model).train()
    batch = dummy_batch([T, max(T // 2, 1), 0], [8, 6, 5], T=T, seed=T)
    out = _run(m, batch, "coarse_fine")
    out["loss"].backward()
    assert math.isfinite(float(out["loss"])) and out["logits"].shape[:2] == (3, 8)
    assert m.q_init.grad.abs().sum() > 0
    if T > 1:
        assert m.llm_to_query.weight.grad.abs().sum() > 0
    with torch.no_grad():
        m.eval()
        ar = _run(m, batch, "autoregressive")
        cf = _run(m, batch, "coarse_fine")
    assert math.isfinite(float(ar["loss"]))
    if T == 1:  # one frame: both modes read it with q_init -> identical logits
        assert (ar["logits"] - cf["logits"]).abs().max() < TOL


def test_gradients_reach_every_part_in_coarse_fine(model):
    m = copy.deepcopy(model).train()
    out = _run(m, dummy_batch([3, 2], [10, 7], seed=3), "coarse_fine")
    assert not out["loss_coarse"].requires_grad  # lambda 0: coarse CE without gradient
    out["loss"].backward()
    named = dict(m.named_parameters())
    must = ["q_static", "q_init", "llm_to_query.weight", "dino_to_llm.weight",
            "encoder.query_input_proj.weight", "encoder.output_proj.weight",
            "encoder.dino.embeddings.patch_embeddings.projection.weight",
            "encoder.dino.encoder.layer.0.attention.q_proj.weight",  # patches' and query's q
            "encoder.dino.encoder.layer.0.attention.k_proj.weight",  # through the K/V cache
            "encoder.dino.encoder.layer.1.mlp.fc1.weight",
            "llm.model.embed_tokens.weight", "llm.model.layers.0.self_attn.q_proj.weight"]
    for name in must:
        g = named[name].grad
        assert g is not None and g.abs().sum() > 0, name


def test_coarse_loss_policy(model):
    m = copy.deepcopy(model).train()
    batch = model_inputs(dummy_batch([2, 1], [8, 6], seed=4))
    m.cfg.coarse_loss_every = 2
    seen = [math.isfinite(float(m(**batch)["loss_coarse"])) for _ in range(4)]
    assert seen == [True, False, True, False]
    assert math.isnan(float(m(**batch, compute_coarse=False)["loss_coarse"]))
    m.eval()
    assert math.isfinite(float(m(**batch)["loss_coarse"]))  # eval: always reported
    m.train()
    m.cfg.lambda_coarse = 0.5
    out = m(**batch)
    assert out["loss_coarse"].requires_grad
    assert abs(float(out["loss"]) - float(out["loss_fine"] + 0.5 * out["loss_coarse"])) < 1e-6
    forced_off = m(**batch, compute_coarse=False)  # e.g. evaluation: the fine loss alone
    assert math.isnan(float(forced_off["loss_coarse"])) and float(forced_off["loss"]) == float(forced_off["loss_fine"])
    # coarse CE = coarse_only loss of the same batch over the same tokens (coarse_only also
    # scores the first text token unless model.score_first_text_token is off)
    m.cfg.score_first_text_token = False
    co = m(**batch, mode="coarse_only")
    assert abs(float(co["loss"]) - float(out["loss_coarse"])) < 1e-6
    assert int(co["num_targets"]) == int(out["num_targets"])


def test_autoregressive_kv_cache_equals_recompute(model):
    batch = dummy_batch([4, 1, 0, 3], [11, 14, 6, 9], T=5, seed=5)
    with torch.no_grad():
        a = _run(model, batch, "autoregressive", use_kv_cache=True)
        b = _run(model, batch, "autoregressive", use_kv_cache=False)
    assert (a["logits"] - b["logits"]).abs().max() < TOL
    assert abs(float(a["loss"]) - float(b["loss"])) < TOL


def test_loss_from_masks_and_ignore_index(model):
    batch = dummy_batch([2, 3], [10, 8], seed=6)
    ids = batch["input_ids"]
    ids[0, 4] = ids[1, 5] = 2  # genuine <|im_end|> (= pad id) tokens must stay targets
    lm = batch["loss_mask"].clone()
    lm[:, :4] = 0  # "answer-only"
    labels = build_labels(ids, lm, batch["attention_mask"])
    assert labels[0, 4] == 2 and labels[1, 5] == 2 and labels[0, 2] == IGNORE_INDEX
    assert (labels[1, 8:] == IGNORE_INDEX).all()  # padding
    batch["loss_mask"] = lm
    out = _run(model, batch, "coarse_fine")
    tgt = shifted_targets(labels)
    keep = tgt != IGNORE_INDEX
    ref = F.cross_entropy(out["logits"][keep], tgt[keep])
    assert abs(float(out["loss"]) - float(ref)) < 1e-5
    assert int(out["num_targets"]) == int(keep.sum()) == 6 + 4
    fast = _run(model, batch, "coarse_fine", return_logits=False)
    assert fast["logits"] is None and abs(float(fast["loss"]) - float(ref)) < 1e-5
    batch["loss_mask"] = torch.zeros_like(lm)  # no target at all: 0, not NaN
    assert float(_run(model, batch, "coarse_fine")["loss"]) == 0.0


def test_diagnostics(model):
    w_uniform = [torch.full((2, 3, 1, 257), 1 / 257)]
    one_hot = torch.zeros(2, 3, 1, 257)
    one_hot[..., 5] = 1
    assert abs(float(attention_entropy(w_uniform)[0]) - math.log(257)) < 1e-4
    assert float(attention_entropy([one_hot])[0]) == 0.0
    out = _run(model, dummy_batch([3, 2], [9, 9], seed=7), "coarse_fine", return_diagnostics=True)
    d = out["diagnostics"]
    assert abs(d["q_static_std"] - float(model.q_static.std())) < 1e-6
    assert 0.5 < d["q_static_std"] < 1.5  # std-1 init (BUG-001)
    assert abs(d["attn_entropy_max"] - math.log(257)) < 1e-9
    for name in ("coarse", "fine"):
        layers = [d[f"attn_entropy_{name}_l{i}"] for i in range(2)]
        assert abs(d[f"attn_entropy_{name}"] - sum(layers) / 2) < 1e-5
        assert all(0 < x <= math.log(257) + 1e-4 for x in layers)
    assert abs(d["loss_ratio"] - float(out["loss_fine"]) / float(out["loss_coarse"])) < 1e-6
    assert d["fine_coarse_token_diff"] > 0.05  # std-1 queries give different tokens


def test_query_attention(model):
    batch = dummy_batch([2, 3, 0], [5, 5, 5], T=3, seed=8)
    fm = batch["frame_mask"]
    for which in ("coarse", "fine"):
        w = model.query_attention(batch["frames"], fm, which=which)
        assert w.shape == (3, 3, 2, model.encoder.num_heads, 257)
        assert (w[~fm] == 0).all()
        assert torch.allclose(w[fm].sum(-1), torch.ones(5, 2, model.encoder.num_heads), atol=1e-5)
    with torch.no_grad():
        cache = model.encoder.encode_patches(batch["frames"][fm])
        _, ref = model.encoder.query_pass(cache, model.q_static, return_attn=True)
    assert (w_c := model.query_attention(batch["frames"], fm, "coarse"))[fm][:, 1].sub(ref[1][:, :, 0]).abs().max() < 1e-6
    assert (w_c[fm] - model.query_attention(batch["frames"], fm, "fine")[fm]).abs().max() > 0


def test_gradient_checkpointing_same_gradients(model):
    batch = model_inputs(dummy_batch([3, 1], [8, 6], seed=9))
    grads = []
    for ckpt in (False, True):
        m = copy.deepcopy(model).train()
        calls = []
        m.encoder.dino.encoder.layer[0].attention.k_proj.register_forward_hook(lambda *a: calls.append(1))
        if ckpt:
            m.enable_gradient_checkpointing()
            assert m.llm.is_gradient_checkpointing and m.encoder.checkpoint_patches
        out = m(**batch)
        n_fwd = len(calls)
        out["loss"].backward()
        assert (len(calls) > n_fwd) == ckpt  # DINO layers really recompute in backward
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-4), n


def test_dino_checkpoint_layers_recompute_only_the_first_blocks(model, model_store):
    """model.dino_checkpoint_layers=k: the first k patch blocks run again in backward, the others
    keep their activations (more saved bytes for fewer recomputed blocks); gradients unchanged."""
    from fovea.platform.profiling.saved_tensors import count_checkpoint_inputs, measure

    batch = model_inputs(dummy_batch([3, 1], [8, 6], seed=9))
    layers = model.encoder.dino.encoder.layer
    assert len(layers) >= 2
    grads, saved = {}, {}
    count_checkpoint_inputs()
    for k in (None, 1, 0):  # all recomputed, the first only, none
        m = copy.deepcopy(model).train()
        m.encoder.checkpoint_patches, m.encoder.checkpoint_layers = True, k
        calls = [0] * len(layers)
        for i, layer in enumerate(m.encoder.dino.encoder.layer):
            layer.attention.k_proj.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
        out = m(**batch)
        out["loss"].backward()
        recomputed = len(layers) if k is None else k
        assert calls == [2] * recomputed + [1] * (len(layers) - recomputed), k
        grads[k] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        m.zero_grad(set_to_none=True)
        saved[k] = measure(m, dummy_batch([3, 1], [8, 6], seed=9), lambda: torch.autocast("cpu", enabled=False)
                           ).bytes["DINOv2 patch pass"]
    assert saved[None] < saved[1] < saved[0]
    for k in (1, 0):
        assert grads[k].keys() == grads[None].keys()
        for n in grads[None]:
            assert torch.allclose(grads[k][n], grads[None][n], atol=1e-6, rtol=1e-4), (k, n)


def test_dino_checkpoint_layers_needs_checkpointing_and_a_layer_count(model_store):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="model.gradient_checkpointing=dino"):
        ModelConfig(llm=TINY_LLM, dino=TINY_DINO, dino_checkpoint_layers=2)
    with pytest.raises(ValueError, match=r"model.dino_checkpoint_layers=99, but model.dino='fovea/tiny-dinov2' has 2 patch blocks: set 0\.\.2"):
        build_model(ModelConfig(llm=TINY_LLM, dino=TINY_DINO, gradient_checkpointing="dino", dino_checkpoint_layers=99))
    m = build_model(ModelConfig(llm=TINY_LLM, dino=TINY_DINO, gradient_checkpointing="dino", dino_checkpoint_layers=1))
    assert m.encoder.checkpoint_patches and m.encoder.checkpoint_layers == 1


def test_gradient_checkpointing_dino_only_from_config(model_store):
    """model.gradient_checkpointing: true = LLM + DINOv2 patch blocks, "dino" = patch blocks only."""
    for value, llm_ckpt in ((True, True), ("dino", False)):
        m = build_model(ModelConfig(llm=TINY_LLM, dino=TINY_DINO, gradient_checkpointing=value))
        assert m.encoder.checkpoint_patches
        flag = "is_activation_checkpointing" if hasattr(m.llm, "is_activation_checkpointing") else "is_gradient_checkpointing"
        assert bool(getattr(m.llm, flag)) is llm_ckpt, value
    assert not build_model(ModelConfig(llm=TINY_LLM, dino=TINY_DINO)).encoder.checkpoint_patches


def test_forward_accepts_collate_keys_and_rejects_bad_input(model):
    batch = dummy_batch([2, 0], [6, 4], seed=10)
    batch.update(keys=["a", "b"], sources=["x", "y"], users=["u", "v"], assistants=["p", "q"])
    out = model(**batch, mode="coarse_only")  # model(**batch) works
    assert out["logits"].shape[:2] == (2, 6)
    with pytest.raises(TypeError, match="compute_coars"):
        model(**model_inputs(batch), compute_coars=True)
    left = {**model_inputs(batch)}
    left["attention_mask"] = left["attention_mask"].flip(1)  # left padding is refused
    with pytest.raises(ValueError, match="right-padded"):
        model(**left)


def _reference_logits(model, frames, ids, mode, first: bool = False):
    """DESIGN.md 1.3/1.4 data flow for ONE sample, written with the plain HF modules:
    frames [n,3,H,W] (all real), ids [S] -> text logits [S,V] (``first``: [1+S,V], the last
    visual position's first)."""
    enc, llm = model.encoder, model.llm
    cache = enc.encode_patches(frames)
    vis = lambda z: model.visual_scale * model.dino_to_llm(z)  # noqa: E731
    e_c = vis(enc.query_pass(cache, model.q_static))  # [n, d]
    n = frames.shape[0]
    if mode == "coarse_only":
        e = e_c
    elif mode == "coarse_fine":  # queries for frame t from the coarse state at t-1
        h_c = llm.model(inputs_embeds=e_c[None]).last_hidden_state[0]
        q = torch.cat([model.q_init, model.llm_to_query(h_c[:-1])])
        e = vis(enc.query_pass(cache, q))
    else:  # autoregressive, recomputing the whole prefix at every frame
        q, e = model.q_init, torch.zeros(0, e_c.shape[1])
        for t in range(n):
            e = torch.cat([e, vis(enc.query_pass(cache.select(torch.tensor([t])), q))])
            q = model.llm_to_query(llm.model(inputs_embeds=e[None]).last_hidden_state[0, -1:])
    x = torch.cat([e, llm.get_input_embeddings()(ids)])[None]
    return llm(inputs_embeds=x).logits[0, n - 1 if first else n:]


@pytest.mark.parametrize("mode", MODES)
def test_modes_match_reference_data_flow(model, mode):
    batch = dummy_batch([4, 2], [10, 7], T=5, seed=12)
    with torch.no_grad():
        out = _run(model, batch, mode)
        for b, (n, s) in enumerate([(4, 10), (2, 7)]):
            ref = _reference_logits(model, batch["frames"][b, :n], batch["input_ids"][b, :s], mode)
            assert (out["logits"][b, :s] - ref).abs().max() < TOL, b


@pytest.mark.parametrize("mode", MODES)
def test_first_text_token_scored_from_last_visual_position(model, mode):
    """DESIGN.md 1.4: coarse_only and autoregressive predict the first text token from the
    sample's last visual position (the reference's [last visual; text] logits), coarse_fine
    never scores it; a text-only sample has no visual position, so its first token is not
    scored; ``model.score_first_text_token=false`` scores it in no mode."""
    frames, lens = [4, 2, 0], [10, 7, 6]
    batch = dummy_batch(frames, lens, T=5, seed=13)
    lead = mode != "coarse_fine"
    with torch.no_grad():
        out = _run(model, batch, mode)
        ce_sum, count = 0.0, 0
        for b, (n, s) in enumerate(zip(frames, lens)):
            ids = batch["input_ids"][b, :s]
            if n:  # logits of [last visual position; text] by the plain HF modules
                x = _reference_logits(model, batch["frames"][b, :n], ids, mode, first=True)
            else:
                x = torch.cat([torch.zeros(1, model.llm.config.vocab_size), model.llm(input_ids=ids[None]).logits[0]])
            scored = slice(0 if (lead and n) else 1, s)  # logit row i predicts token i
            ce_sum += float(F.cross_entropy(x[scored], ids[scored], reduction="sum"))
            count += len(range(s)[scored])
        assert int(out["num_targets"]) == count
        assert abs(float(out["loss"]) - ce_sum / count) < TOL
        fast = _run(model, batch, mode, return_logits=False)  # the training path: same loss
        assert abs(float(fast["loss"]) - ce_sum / count) < TOL
        m = copy.deepcopy(model)
        m.cfg.score_first_text_token = False
        assert int(_run(m, batch, mode)["num_targets"]) == sum(s - 1 for s in lens)
