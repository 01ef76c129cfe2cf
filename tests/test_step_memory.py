"""Step memory before renting a GPU: the model on the meta device saves, byte for byte, what the
real model saves for backward in a CPU step (fp32 and bf16 autocast, with and without gradient
checkpointing); the sweep's dry run builds every point and names a point that does not build."""

from __future__ import annotations

import pytest
import torch

from fovea.model import build_model
from fovea.model.build import build_model_on_meta
from fovea.model.config import ModelConfig
from fovea.model.store import TINY_DINO, TINY_LLM
from fovea.platform.profiling.saved_tensors import count_checkpoint_inputs, measure
from fovea.platform.profiling.step_memory import MetaKernels, meta_batch, training_state_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_meta_step_saves_what_a_real_cpu_step_saves(model_store, checkpointing):
    count_checkpoint_inputs()
    cfg = ModelConfig(llm=TINY_LLM, dino=TINY_DINO, gradient_checkpointing=checkpointing)
    real, meta = build_model(cfg).train(), build_model_on_meta(cfg).train()
    assert training_state_bytes(real) == training_state_bytes(meta)
    mb = meta_batch(2, 3, 11)
    rb = {**mb, "frames": torch.randint(0, 255, mb["frames"].shape, dtype=torch.uint8,
                                        generator=torch.Generator().manual_seed(0))}
    for real_ctx, meta_ctx in [(lambda: torch.autocast("cpu", enabled=False), lambda: MetaKernels(None, "cpu")),
                               (lambda: torch.autocast("cpu", dtype=torch.bfloat16),
                                lambda: MetaKernels(torch.bfloat16, "cpu"))]:
        want, got = measure(real, rb, real_ctx).bytes, measure(meta, mb, meta_ctx).bytes
        assert set(want) == set(got)
        for phase in want:  # "other" holds the batch index on the device: a few bytes of host copies
            assert abs(want[phase] - got[phase]) <= (256 if phase == "other" else 0), phase
        assert sum(want.values()) > 1e6


def test_sweep_dry_run_builds_every_point(capsys):
    from fovea.platform.sweep.launch import sweep_command

    kw = dict(space="scaling", base_config="stage1_135m", samples=None, scheduler=None, grace_steps=None,
              reduction_factor=2, gpus_per_trial=None, max_concurrent=None, name="t", resume=False,
              runs_dir=None, address=None, dry_run=True)
    assert sweep_command(only=["1.7B-base"], sets=[], **kw) == 0
    out = capsys.readouterr().out
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[1:-1]] for r in out.splitlines()
            if r.startswith("| 1") and "point" not in r}
    assert rows["1.7B-base"][1:4] == ["SmolLM2-1.7B-Instruct", "dinov2-base", "1,802.3M"]  # 1711.4M + 86.6M + new
    assert rows["1.7B-base"][5] == "26.9"  # 16 B a trainable parameter
    assert float(rows["1.7B-base"][5]) < float(rows["1.7B-base"][6]) < float(rows["1.7B-base"][7])  # state < typical < worst
    kw["space"] = "ablations"  # which sets no model: a --set one that does not exist reaches the build
    assert sweep_command(only=["baseline"], sets=["model.dino=/nonexistent/dinov2"], **kw) == 2
    assert "points whose model does not build:\n  baseline: " in capsys.readouterr().err
