"""``model.query_attention``: the query pass's one-token attention through PyTorch's fused SDPA
("sdpa") or written out as multiply + sum ("reduce"), and "auto", which takes "reduce" under
torch.compile and "sdpa" eagerly (blocks.query_attention). Which is faster is a GPU figure
(docs/PERFORMANCE.md); here: that both compute the same attention, the same loss and the same
gradients, which one "auto" takes, and that the config names the key of a bad value.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from fovea.model import build_model
from fovea.model.blocks import query_attention
from fovea.model.config import ModelConfig
from fovea.pipelines.batch import dummy_batch, model_inputs
from fovea.platform.config import ConfigError, load_config

TINY = dict(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2")


def test_config_takes_the_three_and_names_the_key_of_anything_else():
    assert load_config("stage1_135m").model.query_attention == "auto"
    for how in ("sdpa", "reduce"):
        assert load_config("stage1_135m", [f"model.query_attention={how}"]).model.query_attention == how
    for bad in ("flash", "matmul"):  # matmul: not offered (slower than reduce compiled; docs/DESIGN.md 1.2)
        with pytest.raises(ConfigError) as err:
            load_config("stage1_135m", [f"model.query_attention={bad}"])
        assert "model.query_attention" in str(err.value)


class _Calls(TorchFunctionMode):
    """The torch functions called inside it, eagerly."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.add(func)
        return func(*args, **(kwargs or {}))


def test_auto_is_sdpa_eagerly_and_reduce_under_torch_compile():
    q, k, v = torch.randn(2, 6, 1, 8), torch.randn(2, 6, 17, 8), torch.randn(2, 6, 17, 8)
    with _Calls() as calls:
        eager = query_attention(q, k, v, "auto")
    assert F.scaled_dot_product_attention in calls.seen and torch.Tensor.sum not in calls.seen
    graphs = []

    def capture(gm, example_inputs):  # a dynamo backend that keeps the traced graph
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    traced = torch.compile(lambda a, b, c: query_attention(a, b, c, "auto"), backend=capture, fullgraph=True)(q, k, v)
    called = {str(n.target) for g in graphs for n in g.graph.nodes if n.op in ("call_function", "call_method")}
    assert "sum" in called and not any("scaled_dot_product" in c for c in called), called
    torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-6)


def test_written_form_is_the_fused_attention_with_its_gradients():
    how = "reduce"
    torch.manual_seed(0)
    n, H, Np, hd = 5, 6, 257, 64  # DINOv2-small's heads and tokens
    q, k, v = (torch.randn(n, H, m, hd, dtype=torch.float64, requires_grad=True) for m in (1, Np, Np))
    g = torch.randn(n, H, 1, hd, dtype=torch.float64)
    out, grads = {}, {}
    for form in ("sdpa", how):
        o = query_attention(q, k, v, form)
        (dq, dk, dv) = torch.autograd.grad(o, (q, k, v), g)
        out[form], grads[form] = o, (dq, dk, dv)
    assert out[how].shape == (n, H, 1, hd) and out[how].dtype == torch.float64
    torch.testing.assert_close(out[how], out["sdpa"], rtol=1e-10, atol=1e-12)
    for a, b in zip(grads[how], grads["sdpa"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and it is attention: a query equal to one key's direction, scaled up, reads that key's value
    k1 = torch.zeros(1, 1, 3, 2, dtype=torch.float64)
    k1[0, 0, 1] = torch.tensor([1.0, 0.0])
    v1 = torch.arange(6, dtype=torch.float64).view(1, 1, 3, 2)
    q1 = torch.tensor([[[[100.0, 0.0]]]], dtype=torch.float64)
    torch.testing.assert_close(query_attention(q1, k1, v1, how), v1[:, :, 1:2])


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch, mode="coarse_fine", compute_coarse=True, return_logits=False)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_model_with_written_query_attention_gives_the_same_loss_and_gradients(model_store):
    how = "reduce"
    torch.manual_seed(0)
    fused = build_model(ModelConfig(**TINY, lambda_coarse=0.5, query_attention="sdpa")).train()
    written = build_model(ModelConfig(**TINY, lambda_coarse=0.5, query_attention=how)).train()
    written.load_state_dict(fused.state_dict())
    assert {b.attention for b in written.encoder.query_blocks} == {how}
    batch = model_inputs(dummy_batch([3, 1, 0, 5], [20, 31, 12, 25]))
    loss_f, grads_f = _loss_and_grads(fused, batch)
    loss_w, grads_w = _loss_and_grads(written, batch)
    torch.testing.assert_close(loss_w, loss_f, rtol=1e-6, atol=1e-6)  # fp32: summation order only
    assert grads_w.keys() == grads_f.keys() and {"q_static", "q_init"} <= grads_f.keys()
    for name in grads_f:
        torch.testing.assert_close(grads_w[name], grads_f[name], rtol=1e-5, atol=1e-6, msg=name)
