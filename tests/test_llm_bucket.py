"""``model.llm_row_bucket`` / ``model.llm_length_bucket``: the training passes' LLM input padded up
to [rows, length] multiples, and ``model.llm_cudagraphs``: that LLM's compiled layers in
"reduce-overhead" mode (DESIGN.md 1.5). What they buy (shapes that repeat, so CUDA graphs can be
replayed) is a GPU figure (docs/PERFORMANCE.md); here: that they change nothing the model
computes, which shapes the LLM runs at, and that bad settings are named.
"""

from __future__ import annotations

import pytest
import torch

from fovea.model import build_model
from fovea.model.config import ModelConfig
from fovea.pipelines.batch import dummy_batch, model_inputs
from fovea.platform.config import ConfigError, load_config
from fovea.platform.train.loop import cuda_only_settings_note

TINY = dict(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2")
FRAMES, TEXT = [3, 1, 0, 5], [20, 31, 12, 25]  # 4 rows; coarse pass [4, 5], fine pass [4, 5 + S]


def test_config_takes_buckets_and_names_what_cuda_graphs_need():
    m = load_config("stage1_135m").model
    assert (m.llm_row_bucket, m.llm_length_bucket, m.llm_cudagraphs) == (0, 0, False)  # off by default
    m = load_config("stage1_135m", ["model.llm_row_bucket=16", "model.llm_length_bucket=32"]).model
    assert (m.llm_row_bucket, m.llm_length_bucket) == (16, 32)
    with pytest.raises(ConfigError, match="model.llm_length_bucket"):
        load_config("stage1_135m", ["model.llm_length_bucket=-1"])
    with pytest.raises(ConfigError, match="model.llm_row_bucket and model.llm_length_bucket"):
        load_config("stage1_135m", ["model.llm_cudagraphs=true", "model.llm_row_bucket=16"])
    with pytest.raises(ConfigError, match="model.gradient_checkpointing=dino"):
        load_config("stage1_135m", ["model.llm_cudagraphs=true", "model.llm_row_bucket=16",
                                    "model.llm_length_bucket=16", "model.gradient_checkpointing=true"])
    with pytest.raises(ConfigError, match="model.llm_cudagraphs=true .* training.compile=true"):
        load_config("stage1_135m", ["model.llm_cudagraphs=true", "model.llm_row_bucket=16", "model.llm_length_bucket=16"])
    with pytest.raises(ConfigError, match="training.grad_accum=1"):
        load_config("stage1_135m", ["model.llm_cudagraphs=true", "model.llm_row_bucket=16", "model.llm_length_bucket=16",
                                    "training.compile=true", "training.grad_accum=2"])
    graphed = load_config("stage1_135m", ["model.llm_cudagraphs=true", "model.llm_row_bucket=16", "model.llm_length_bucket=16",
                                          "training.compile=true", "training.grad_accum=1"]).model
    assert "model.llm_cudagraphs=false silences" in cuda_only_settings_note(graphed, torch.device("cpu"))
    assert cuda_only_settings_note(graphed, torch.device("cuda")) is None
    with pytest.raises(ConfigError, match="model.fused_llm_projections=true"):
        load_config("stage1_135m", ["model.llm_cudagraphs=true", "model.llm_row_bucket=16",
                                    "model.llm_length_bucket=16", "model.fused_llm_projections=false"])
    with pytest.raises(ConfigError, match="model.llm_cudagraphs"):  # a switch, named with its file
        load_config("stage1_135m", ["model.llm_cudagraphs=layers"])


def _run(model, batch, mode: str, watch: bool = True) -> tuple[torch.Tensor, dict, list]:
    """Loss, gradients, and with ``watch`` the [rows, length] of every LLM pass (a forward hook on
    the final norm, PyTorch's own API; not on a compiled region, whose guards a hook would change)."""
    shapes = []
    norm = model.llm.get_decoder().norm
    hook = norm.register_forward_hook(lambda mod, args, out: shapes.append(tuple(out.shape[:2]))) if watch else None
    model.zero_grad(set_to_none=True)
    loss = model(**batch, mode=mode, compute_coarse=True, return_logits=False)["loss"]
    loss.backward()
    if hook:
        hook.remove()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, shapes


@pytest.mark.parametrize("mode", ["coarse_fine", "coarse_only"])
@pytest.mark.parametrize("buckets", [(8, 16), (3, 7), (1, 64)])
def test_bucketed_llm_gives_the_unbucketed_loss_and_gradients(model_store, mode, buckets):
    rb, lb = buckets
    torch.manual_seed(0)
    plain = build_model(ModelConfig(**TINY, lambda_coarse=0.5)).train()
    bucketed = build_model(ModelConfig(**TINY, lambda_coarse=0.5, llm_row_bucket=rb, llm_length_bucket=lb)).train()
    assert bucketed.state_dict().keys() == plain.state_dict().keys()
    bucketed.load_state_dict(plain.state_dict())
    torch.manual_seed(2)
    batch = model_inputs(dummy_batch(FRAMES, TEXT))
    loss_p, grads_p, shapes_p = _run(plain, batch, mode)
    loss_b, grads_b, shapes_b = _run(bucketed, batch, mode)
    # every pass ran at the next multiples of its own [rows, length]
    assert shapes_b == [(-(-b // rb) * rb, -(-n // lb) * lb) for b, n in shapes_p]
    assert shapes_b != shapes_p  # the padding was exercised
    # padded rows and slots change the GEMMs' shapes, hence possibly their summation order
    torch.testing.assert_close(loss_b, loss_p, rtol=1e-6, atol=1e-6)
    assert grads_b.keys() == grads_p.keys()
    for k in grads_p:
        torch.testing.assert_close(grads_b[k], grads_p[k], rtol=1e-4, atol=1e-6, msg=k)
    assert any(k.startswith("llm.") for k in grads_p) and "dino_to_llm.weight" in grads_p


@pytest.mark.extended
def test_graphed_llm_gives_the_eager_loss_and_gradients(model_store):
    """model.llm_cudagraphs compiles the fused layers in "reduce-overhead" mode; on the CPU
    inductor records no CUDA graph, so this pins the compiled code itself (symbolic shapes,
    bucketed, training and no-grad passes, two batch shapes, each twice) against the eager model.
    The CUDA graphs' own check runs on a GPU: jobs/bench/bench_kernels.py --parts graphs."""
    cfg = ModelConfig(**TINY, lambda_coarse=0.5, llm_row_bucket=4, llm_length_bucket=16)
    torch.manual_seed(0)
    plain = build_model(cfg).train()
    graphed = build_model(cfg.model_copy(update={"llm_cudagraphs": True})).train()
    graphed.load_state_dict(plain.state_dict())
    graphed.compile_blocks()
    torch.manual_seed(2)
    batches = [model_inputs(dummy_batch(FRAMES, TEXT)), model_inputs(dummy_batch([2, 6], [40, 9]))]
    for batch in batches + batches:
        torch.compiler.cudagraph_mark_step_begin()  # as the training loop does
        loss_p, grads_p, _ = _run(plain, batch, "coarse_fine")
        loss_g, grads_g, _ = _run(graphed, batch, "coarse_fine", watch=False)
        torch.testing.assert_close(loss_g, loss_p, rtol=1e-5, atol=1e-5)
        assert grads_g.keys() == grads_p.keys()
        for k in grads_p:
            torch.testing.assert_close(grads_g[k], grads_p[k], rtol=1e-3, atol=1e-5, msg=k)
        with torch.no_grad():  # as evaluation runs: no step mark from the caller
            torch.testing.assert_close(graphed(**batch, mode="coarse_fine")["loss"],
                                       plain(**batch, mode="coarse_fine")["loss"], rtol=1e-5, atol=1e-5)


def test_a_no_grad_pass_starts_a_graph_step(model_store, monkeypatch):
    """Evaluation calls the model under no_grad with no step mark of its own; with CUDA graphs
    the model marks one itself (no backward can be pending), so each batch replays graphs rather
    than extending the last training step's. A training pass leaves the mark to the loop."""
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    cfg = ModelConfig(**TINY, llm_row_bucket=4, llm_length_bucket=16, llm_cudagraphs=True)
    model = build_model(cfg).train()
    batch = model_inputs(dummy_batch(FRAMES, TEXT))
    model(**batch, mode="coarse_fine")["loss"].backward()
    assert marks == []
    with torch.no_grad():
        model(**batch, mode="coarse_fine")
    assert marks == [1]
    with torch.no_grad():  # without graphs, nothing to mark
        build_model(cfg.model_copy(update={"llm_cudagraphs": False}))(**batch, mode="coarse_fine")
    assert marks == [1]
