"""``model.dino_recompute_gelu``: DINOv2's patch blocks run their MLP under selective activation
checkpointing that keeps fc1's output and runs GELU again in backward (blocks.PatchBlock). Here:
the same numbers as the plain block (a PatchBlock; the tiny model's loss and gradients, with
some blocks also under full checkpointing), GELU's output no longer kept, and a clear error for a
DINOv2 without a GELU MLP. What the memory buys on a GPU (more blocks kept) is a benchmark's
figure (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from fovea.model import build_model
from fovea.model.blocks import PatchBlock
from fovea.model.config import ModelConfig
from fovea.model.encoder import FoveatedEncoder
from fovea.pipelines.batch import dummy_batch, model_inputs
from fovea.platform.config import ConfigError, load_config
from fovea.platform.profiling.saved_tensors import SavedTensorLedger

TINY = dict(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2")


def _dino(**kw) -> Dinov2Model:
    torch.manual_seed(0)
    return Dinov2Model(Dinov2Config(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, image_size=28,
                                    patch_size=14, **kw)).train()


def _saved_bytes(block: PatchBlock, h: torch.Tensor) -> int:
    """Bytes autograd keeps for backward of ``block(h)``, parameters excluded (bench_memory.py's ledger)."""
    ledger = SavedTensorLedger(block.layer)
    with torch.autograd.graph.saved_tensors_hooks(ledger.pack, lambda t: t):
        block(h)
    return sum(ledger.bytes.values())


def _outputs_and_grads(block: PatchBlock, h: torch.Tensor):
    o, k, v = block(h)
    loss = o.square().sum() + k.sum() + v.sum()
    return (o, k, v), torch.autograd.grad(loss, [h, *block.layer.parameters()])


def test_patch_block_gives_the_same_output_and_gradients():
    layer = _dino().encoder.layer[0]
    h = torch.randn(4, 5, 32, requires_grad=True)
    (outs, grads), (outs_r, grads_r) = (_outputs_and_grads(PatchBlock(layer, 2, recompute_gelu=r), h)
                                        for r in (False, True))
    for a, b in zip(outs + grads, outs_r + grads_r):
        assert torch.equal(a, b)  # the same ops: the recomputed GELU is the GELU it replaces


@pytest.mark.extended
def test_compiled_patch_block_keeps_no_gelu_output():
    """Compiled (as training runs the blocks), what a block keeps for backward is what AOTAutograd's
    partitioner saves, all of it seen by saved-tensor hooks (eagerly, the selective checkpoint's
    cache is not). Plain, it keeps fc1's and GELU's [n, Np, 4D] outputs; with the switch, GELU's
    is gone: at least one such tensor less."""
    layer = _dino().encoder.layer[0]
    n, Np, D = 4, 5, 32
    h = torch.randn(n, Np, D, requires_grad=True)
    saved, results = {}, {}
    for r in (False, True):
        block = PatchBlock(layer, 2, recompute_gelu=r)
        block.compile(dynamic=False)
        saved[r] = _saved_bytes(block, h)
        results[r] = _outputs_and_grads(block, h)
    assert saved[False] - saved[True] >= n * Np * 4 * D * 4, saved
    for a, b in zip(results[False][0] + results[False][1], results[True][0] + results[True][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_model_gives_the_same_loss_and_gradients(model_store):
    torch.manual_seed(0)
    ckpt = dict(gradient_checkpointing="dino", dino_checkpoint_layers=1)  # block 0 recomputed too: nested
    plain = build_model(ModelConfig(**TINY, **ckpt)).train()
    recompute = build_model(ModelConfig(**TINY, **ckpt, dino_recompute_gelu=True)).train()
    recompute.load_state_dict(plain.state_dict())
    assert all(b.recompute_gelu for b in recompute.encoder.patch_blocks)
    batch = model_inputs(dummy_batch([3, 1, 0, 5], [20, 31, 12, 25]))
    res = []
    for m in (plain, recompute):
        loss = m(**batch, mode="coarse_fine", compute_coarse=True, return_logits=False)["loss"]
        loss.backward()
        res.append((loss.detach(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(res[1][0], res[0][0], rtol=1e-6, atol=1e-6)
    assert res[0][1].keys() == res[1][1].keys()
    for name in res[0][1]:
        torch.testing.assert_close(res[1][1][name], res[0][1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_config_and_a_dinov2_without_a_gelu_mlp_name_the_key():
    assert load_config("stage1_135m").model.dino_recompute_gelu is False
    assert load_config("stage1_135m", ["model.dino_recompute_gelu=true"]).model.dino_recompute_gelu is True
    with pytest.raises(ConfigError, match="model.dino_recompute_gelu"):
        load_config("stage1_135m", ["model.dino_recompute_gelu=sometimes"])
    with pytest.raises(ValueError, match=r"Dinov2SwiGLUFFN.*set model.dino_recompute_gelu=false"):
        FoveatedEncoder(_dino(use_swiglu_ffn=True), recompute_gelu=True)
    FoveatedEncoder(_dino(), recompute_gelu=True)  # DINOv2-small/base/large's MLP
