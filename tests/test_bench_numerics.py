"""The optimised training path and the plain (naive) path compute the same loss.

Optimised: frames batched through DINOv2 once, the patch K/V cache reused by the coarse
and fine query passes, bf16 autocast.  Plain: one DINOv2 call per frame, the patch pass
re-run for every query pass, fp32 (fovea.model.naive).
"""

from __future__ import annotations

import pytest
import torch

from fovea.model import build_model
from fovea.pipelines.batch import dummy_batch, model_inputs
from fovea.model.naive import naive_encoder
from fovea.model.config import ModelConfig


@pytest.fixture(scope="module")
def models(model_store):
    cfg = ModelConfig(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2")
    torch.manual_seed(0)
    fast = build_model(cfg).eval()
    plain = build_model(cfg).eval()
    plain.load_state_dict(fast.state_dict())
    naive_encoder(plain)
    return fast, plain


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    return model_inputs(dummy_batch([3, 1, 0, 5], [20, 31, 12, 25]))


def test_naive_encoder_really_changes_the_work(models, batch):
    fast, plain = models
    calls = {"fast": 0, "plain": 0}
    for name, m in (("fast", fast), ("plain", plain)):
        h = m.encoder.dino.embeddings.register_forward_hook(lambda *a, n=name: calls.__setitem__(n, calls[n] + 1))
        with torch.no_grad():
            m(**batch, mode="coarse_fine", compute_coarse=False)
        h.remove()
    assert calls["fast"] == 1  # one batched patch pass, reused
    assert calls["plain"] == 2 * 9  # 9 real frames, one call each, for the coarse and the fine pass


def test_plain_and_optimised_paths_give_the_same_loss(models, batch):
    fast, plain = models
    with torch.no_grad():
        ref = plain(**batch, mode="coarse_fine", compute_coarse=True)
        same = fast(**batch, mode="coarse_fine", compute_coarse=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fast(**batch, mode="coarse_fine", compute_coarse=True)
    for k in ("loss", "loss_fine", "loss_coarse"):
        assert float(same[k]) == pytest.approx(float(ref[k]), abs=1e-5), k
        # bf16 keeps ~8 bits of mantissa: the loss agrees to well under 1 %
        assert float(low[k]) == pytest.approx(float(ref[k]), rel=1e-2), k


@pytest.mark.extended
@pytest.mark.parametrize("switch", ["query_attention=sdpa", "query_attention=auto",
                                    "dino_recompute_gelu=true,gradient_checkpointing=dino,dino_checkpoint_layers=1"])
def test_compiled_packed_path_gives_the_same_loss_and_gradients(model_store, switch):
    """The throughput path (regional torch.compile, packed uint8 frames normalised on the
    device; the query pass's attention fused, or written out as multiply + sum as "auto" takes it
    compiled, model.query_attention; GELU recomputed or kept, model.dino_recompute_gelu) against
    the plain eager path with padded float frames, on one fixed batch: same loss (fp32: 1e-4;
    bf16 autocast: 1 %) and same gradients (fp32)."""
    from fovea.model.blocks import IMAGENET_MEAN, IMAGENET_STD

    cfg = ModelConfig(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2")
    torch.manual_seed(0)
    plain = build_model(cfg).train()
    update = {k: True if v == "true" else int(v) if v.isdigit() else v
              for k, v in (kv.split("=") for kv in switch.split(","))}
    fast = build_model(cfg.model_copy(update=update)).train()
    fast.load_state_dict(plain.state_dict())
    fast.compile_blocks()
    torch.manual_seed(2)
    b = model_inputs(dummy_batch([3, 1, 0, 5], [20, 31, 12, 25]))
    fm = b["frame_mask"]
    raw = torch.randint(0, 256, (int(fm.sum()), 3, 224, 224), dtype=torch.uint8)  # packed, as the loader ships
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    padded = torch.zeros(*fm.shape, 3, 224, 224)
    padded[fm] = (raw.float() / 255 - mean) / std
    ref = plain(**{**b, "frames": padded}, mode="coarse_fine", compute_coarse=True)
    out = fast(**{**b, "frames": raw}, mode="coarse_fine", compute_coarse=True)
    for k in ("loss", "loss_fine", "loss_coarse"):
        assert float(out[k]) == pytest.approx(float(ref[k]), abs=1e-4), k
    ref["loss"].backward()
    out["loss"].backward()
    gp, gf = dict(plain.named_parameters()), dict(fast.named_parameters())
    for n, p in gp.items():
        if p.grad is not None:
            assert torch.allclose(gf[n].grad, p.grad, atol=1e-5, rtol=1e-3), n
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = fast(**{**b, "frames": raw}, mode="coarse_fine", compute_coarse=True)
    assert float(low["loss"]) == pytest.approx(float(ref["loss"]), rel=1e-2)


@pytest.mark.extended
def test_fused_llm_projections_same_loss_gradients_and_fewer_matmuls(model_store):
    """model.fused_llm_projections (model/fused_llm.py): the training passes' LLM layers with
    q/k/v and gate/up each one matmul. Compiled and checkpointed, against the plain eager HF
    layers: the same loss and gradients (fp32), the same state dict; and per layer and LLM pass
    3 matmuls fewer forward (7 -> 4) and 6 fewer backward (14 -> 8), counted by the profiler;
    attention called with the very shapes the HF layer uses (GQA in the kernel: K/V not repeated)."""
    from torch.profiler import ProfilerActivity, profile

    from fovea.model.fused_llm import FusedDecoderLayer

    with pytest.raises(ValueError, match="Linear has no input_layernorm"):  # not a Llama-family layer
        FusedDecoderLayer(torch.nn.Linear(2, 2))
    base = dict(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2")
    torch.manual_seed(0)
    plain = build_model(ModelConfig(**base, fused_llm_projections=False)).train()
    fused = build_model(ModelConfig(**base)).train()  # the default
    assert fused.fused_layers is not None and plain.fused_layers is None
    assert fused.state_dict().keys() == plain.state_dict().keys()
    fused.load_state_dict(plain.state_dict())
    cfg = plain.llm.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # the GQA path is exercised
    torch.manual_seed(2)
    b = model_inputs(dummy_batch([3, 1, 0, 5], [20, 31, 12, 25]))

    def ops(m, train: bool) -> list:
        m.train(train)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof, torch.set_grad_enabled(train):
            out = m(**b, mode="coarse_fine", compute_coarse=False)  # 2 LLM passes
            if train:
                out["loss"].backward()
        m.zero_grad(set_to_none=True)
        return prof.events()

    def matmuls(m, train: bool) -> int:
        return sum(e.name == "aten::mm" for e in ops(m, train))

    def attention_shapes(m) -> list:
        return [e.input_shapes[:3] for e in ops(m, False) if e.name == "aten::scaled_dot_product_attention"]

    layers = cfg.num_hidden_layers
    shapes = attention_shapes(fused)
    assert shapes == attention_shapes(plain)
    gqa = [q[1] == cfg.num_attention_heads and k[1] == cfg.num_key_value_heads for q, k, _ in shapes]
    assert sum(gqa) == layers * 2  # every LLM layer of both passes: K/V keep their KV heads
    assert matmuls(plain, False) - matmuls(fused, False) == 3 * layers * 2
    trained = matmuls(fused, True)
    assert matmuls(plain, True) - trained == (3 + 6) * layers * 2
    fused.enable_gradient_checkpointing()  # as model.gradient_checkpointing=true
    assert matmuls(fused, True) - trained == 4 * layers * 2  # each layer's forward again in backward

    fused.compile_blocks()
    plain.train(), fused.train()
    ref = plain(**b, mode="coarse_fine", compute_coarse=True)
    out = fused(**b, mode="coarse_fine", compute_coarse=True)
    for k in ("loss", "loss_fine", "loss_coarse"):
        assert float(out[k]) == pytest.approx(float(ref[k]), abs=1e-4), k
    ref["loss"].backward()
    out["loss"].backward()
    gf = dict(fused.named_parameters())
    for n, p in plain.named_parameters():
        if p.grad is not None:
            assert torch.allclose(gf[n].grad, p.grad, atol=1e-5, rtol=1e-3), n


def test_kernel_bench_names_a_bad_part_and_asks_for_cuda(repo_root):
    """jobs/bench/bench_kernels.py times CUDA kernels only: an unknown --parts entry is named, and
    a machine without CUDA gets told where to run it (no partial JSON written)."""
    import subprocess
    import sys

    tool = [sys.executable, str(repo_root / "jobs" / "bench" / "bench_kernels.py")]
    bad = subprocess.run(tool + ["--parts", "query,bogus"], capture_output=True, text=True)
    assert bad.returncode != 0 and ("--parts takes kernel, query, numerics, fa4, graphs, llm-pass, patch-block, "
                                    "got query,bogus") in bad.stderr
    bad = subprocess.run(tool + ["--parts", "patch-block", "--block-arms", "default,fused"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--block-arms takes default, stacked_qkv, autotune, stacked_qkv_autotune, got" in bad.stderr
    bad = subprocess.run(tool + ["--parts", "llm-pass", "--llm-arms", "per_layer,liger"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--llm-arms takes per_layer, graphed, hf_compiled, hf_liger, hf_liger_compiled, got" in bad.stderr
    if not torch.cuda.is_available():
        cpu = subprocess.run(tool + ["--parts", "query"], capture_output=True, text=True)
        assert cpu.returncode != 0 and "run it on a CUDA machine" in cpu.stderr, cpu.stderr


def test_kernel_bench_stacked_qkv_arm_is_the_patch_block_with_one_projection_gemm(repo_root):
    """bench_kernels.py's ``stacked_qkv`` arm times q, k and v as one GEMM over the stacked weights:
    the same output, keys, values and gradients as the PatchBlock it stands for (fp32, CPU), and
    4 matrix multiplies forward where the block makes 6 (so the arm does differ)."""
    import runpy

    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import Dinov2Config, Dinov2Model

    from fovea.model.blocks import PatchBlock

    class MatmulCount(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm)
            return func(*args, **(kwargs or {}))

    stacked_qkv_block = runpy.run_path(str(repo_root / "jobs" / "bench" / "bench_kernels.py"),
                                       run_name="bench_kernels")["stacked_qkv_block"]
    torch.manual_seed(0)
    layer = Dinov2Model(Dinov2Config(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, image_size=28,
                                     patch_size=14)).train().encoder.layer[0]
    block = PatchBlock(layer, 2)
    h = torch.randn(4, 5, 32, requires_grad=True)
    results, matmuls = [], []
    for fn in (block.forward, stacked_qkv_block(block)):
        with MatmulCount() as count:
            out = fn(h)
        matmuls.append(count.n)
        loss = out[0].square().sum() + out[1].sum() + out[2].sum()
        results.append((*out, *torch.autograd.grad(loss, [h, *layer.parameters()])))
    assert matmuls == [6, 4]
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
