"""The opt-in CUDA kernels: ``model.dino_attention`` (DINOv2 patch attention through cuDNN or
FlashAttention-4) and ``model.liger_fused_ce`` (Liger-Kernel's fused linear cross-entropy).

On CPU neither can run: the config still validates, the model computes exactly what the default
computes, and the training loop says in its log that the settings are ignored.
The GPU side (speed, and loss/gradients against the default) is
``jobs/bench/bench_kernels.py``; figures in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from fovea.model import build_model
from fovea.model.config import ModelConfig
from fovea.model.losses import fused_linear_text_ce
from fovea.pipelines.batch import dummy_batch, model_inputs
from fovea.platform.config import ConfigError, load_config
from fovea.platform.train.loop import cuda_only_settings_note, import_cuda_kernels


def test_config_takes_the_backends_and_names_the_key_of_a_wrong_one():
    assert load_config("stage1_135m").model.dino_attention == "flash"  # the default stays
    assert load_config("stage1_135m", ["model.dino_attention=cudnn"]).model.dino_attention == "cudnn"
    with pytest.raises(ConfigError) as err:
        load_config("stage1_135m", ["model.dino_attention=fa3"])
    assert "model.dino_attention" in str(err.value)


@pytest.mark.parametrize("kernel", ["cudnn", "fa4"])
def test_cpu_path_ignores_cuda_kernels_same_loss_and_gradients_and_says_so(model_store, kernel):
    base = dict(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2")
    torch.manual_seed(0)
    flash = build_model(ModelConfig(**base)).train()
    cuda_only = build_model(ModelConfig(**base, dino_attention=kernel, liger_fused_ce=True)).train()
    cuda_only.load_state_dict(flash.state_dict())
    assert {b.attention for b in cuda_only.encoder.patch_blocks} == {kernel}
    batch = model_inputs(dummy_batch([3, 1, 0, 5], [20, 31, 12, 25]))
    losses, grads = [], []
    for m in (flash, cuda_only):  # the training call: LM head at the target positions only
        loss = m(**batch, mode="coarse_fine", compute_coarse=False, return_logits=False)["loss"]
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
    assert losses[0] == losses[1]  # the same CPU kernels: bit for bit
    assert grads[0].keys() == grads[1].keys() and all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])
    note = cuda_only_settings_note(cuda_only.cfg, torch.device("cpu"))
    assert f"model.dino_attention={kernel}" in note and "model.liger_fused_ce=true" in note and "on cpu" in note
    assert "model.dino_attention=flash silences" in note and "model.liger_fused_ce=false silences" in note
    assert cuda_only_settings_note(cuda_only.cfg, torch.device("cuda")) is None
    assert cuda_only_settings_note(flash.cfg, torch.device("cpu")) is None


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is not None, reason="liger-kernel installed here")
def test_fused_ce_without_liger_names_the_extra():
    with pytest.raises(ImportError, match=r"fovea\[gpu\].*model.liger_fused_ce=false"):
        fused_linear_text_ce(torch.zeros(2, 4), torch.zeros(8, 4), torch.tensor([1, 2]))


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is not None or importlib.util.find_spec("flash_attn")
                    is not None, reason="a kernel package is installed here")
def test_worker_set_up_names_the_missing_kernel_package_of_each_switch():
    """The training worker on CUDA imports the opt-in kernels' packages before it compiles or
    reads a batch (loop.set_up); each switch's missing package is named with its install line and
    the setting that turns it off, and the default settings import nothing."""
    cfg = load_config("stage1_135m").model
    import_cuda_kernels(cfg)  # the defaults need neither package
    with pytest.raises(ImportError, match=r"pip install flash-attn-4.*model.dino_attention=flash"):
        import_cuda_kernels(cfg.model_copy(update={"dino_attention": "fa4"}))
    with pytest.raises(ImportError, match=r"liger-kernel.*fovea\[gpu\].*model.liger_fused_ce=false"):
        import_cuda_kernels(cfg.model_copy(update={"liger_fused_ce": True}))


def test_fa4_ops_shapes_gradients_and_missing_package_under_fake_tensors():
    """model.dino_attention=fa4: the config takes it, and model/fa4.py's custom ops (FA4 runs on
    SM90/SM100 GPUs only) give SDPA's shapes and a gradient for each of q, k, v under fake tensors,
    which is how a compiled PatchBlock traces them. Without flash-attn-4 a real call names the
    package and the setting that turns it off."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from fovea.model.fa4 import fa4_attention, fa4_forward

    assert load_config("stage1_135m", ["model.dino_attention=fa4"]).model.dino_attention == "fa4"
    with FakeTensorMode():
        q, k, v = (torch.empty(5, 257, 6, 64, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
                   for _ in range(3))  # [n, H, Np, hd] views, as blocks.split_heads makes them
        out = fa4_attention(q, k, v)
        assert out.shape == (5, 6, 257, 64) and out.dtype == torch.bfloat16
        _, lse = fa4_forward(*(t.transpose(1, 2) for t in (q, k, v)))
        assert lse.shape == (5, 6, 257) and lse.dtype == torch.float32
        dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v))
        assert dq.shape == dk.shape == dv.shape == (5, 6, 257, 64)
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(ImportError, match=r"pip install flash-attn-4.*model.dino_attention=flash"):
            fa4_attention(*(torch.zeros(1, 6, 257, 64, dtype=torch.bfloat16) for _ in range(3)))
