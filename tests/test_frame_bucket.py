"""``model.frame_bucket``: the patch pass runs at the frame count rounded up to a multiple of the
bucket, with blank frames that are dropped again before anything reads the cache (DESIGN.md 1.2).
What it buys (cuDNN's attention plans built once a bucket) is a GPU figure (docs/PERFORMANCE.md);
here: that it changes nothing the model computes, and how many frames it adds.
"""

from __future__ import annotations

import pytest
import torch

from fovea.model import build_model
from fovea.model.config import ModelConfig
from fovea.model.encoder import bucketed_frames
from fovea.pipelines.batch import dummy_batch, model_inputs
from fovea.platform.config import ConfigError, load_config

TINY = dict(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2")


def test_config_takes_a_bucket_and_names_the_key_of_a_negative_one():
    assert load_config("stage1_135m").model.frame_bucket == 0  # off by default
    assert load_config("stage1_135m", ["model.frame_bucket=64"]).model.frame_bucket == 64
    with pytest.raises(ConfigError) as err:
        load_config("stage1_135m", ["model.frame_bucket=-1"])
    assert "model.frame_bucket" in str(err.value)


def test_padded_count_is_the_next_multiple():
    assert [bucketed_frames(n, 64) for n in (1, 63, 64, 65, 128, 1300)] == [64, 64, 64, 128, 128, 1344]
    assert bucketed_frames(0, 64) == 0 and bucketed_frames(37, 0) == 37  # no frames; bucketing off


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch, mode="coarse_fine", compute_coarse=True, return_logits=False)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("frames_per_sample", [[3, 1, 0, 5], [2, 2, 4], [1]])  # 9 -> 16, 8 (a multiple), 1 -> 8
def test_bucketed_pass_gives_the_unbucketed_loss_and_gradients(model_store, frames_per_sample):
    torch.manual_seed(0)
    plain = build_model(ModelConfig(**TINY, lambda_coarse=0.5)).train()
    bucketed = build_model(ModelConfig(**TINY, lambda_coarse=0.5, frame_bucket=8)).train()
    bucketed.load_state_dict(plain.state_dict())
    seen = []  # the frame counts DINOv2's embeddings ran at (a forward hook, PyTorch's own API)
    bucketed.encoder.dino.embeddings.register_forward_hook(lambda mod, args, out: seen.append(out.shape[0]))
    batch = model_inputs(dummy_batch(frames_per_sample, [20, 31, 12, 25][: len(frames_per_sample)]))
    n = sum(frames_per_sample)
    loss_p, grads_p = _loss_and_grads(plain, batch)
    loss_b, grads_b = _loss_and_grads(bucketed, batch)
    assert seen == [bucketed_frames(n, 8)] and seen[0] % 8 == 0 and seen[0] >= n
    # padded rows change the GEMMs' shapes, hence possibly their summation order: fp32 rounding
    torch.testing.assert_close(loss_b, loss_p, rtol=1e-6, atol=1e-6)
    assert grads_b.keys() == grads_p.keys()
    if n % 8 == 0:  # nothing to pad: the same computation, bit for bit
        assert torch.equal(loss_b, loss_p) and all(torch.equal(grads_b[k], grads_p[k]) for k in grads_p)
    assert any(k.startswith("encoder.dino.encoder.layer.0.") for k in grads_p)  # DINOv2's weights
    assert {"q_static", "q_init"} <= grads_p.keys()  # the queries
    for name in grads_p:
        torch.testing.assert_close(grads_b[name], grads_p[name], rtol=1e-5, atol=1e-7, msg=name)


def test_padded_frames_leave_the_cache_and_the_frames_get_the_unpadded_gradient(model_store):
    torch.manual_seed(0)
    enc = build_model(ModelConfig(**TINY, frame_bucket=4)).encoder
    frames = torch.randn(5, 3, 224, 224)
    out = {}
    for bucket in (4, 0):  # 5 frames run as 8, then as 5
        enc.frame_bucket = bucket
        x = frames.clone().requires_grad_(True)
        cache = enc.encode_patches(x)
        (cache.features.square().sum() + sum(k.sum() + v.sum() for k, v in zip(cache.keys, cache.values))).backward()
        out[bucket] = cache, x.grad
    (cache_b, grad_b), (cache_p, grad_p) = out[4], out[0]
    assert cache_b.num_frames == 5 and all(k.shape == kp.shape for k, kp in zip(cache_b.keys, cache_p.keys))
    torch.testing.assert_close(cache_b.features, cache_p.features, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_b, grad_p, rtol=1e-5, atol=1e-7)  # nothing flows to or from the blank frames
