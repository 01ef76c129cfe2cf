"""The training loop's device-side step bookkeeping (platform/train/step_tally.py) and the
on-device skip of a non-finite step (fused AdamW's found_inf)."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from fovea.platform.train.step_tally import StepTally


def _step(t: StepTally, loss: float, norm: float, coarse: bool = True, oom: bool = False) -> None:
    losses = torch.tensor([loss, loss - 0.1, loss + 0.2], dtype=torch.float64)
    grad_norm = torch.tensor(norm)
    nonfinite = ~(torch.isfinite(grad_norm) & torch.isfinite(losses[0]))
    skip = torch.maximum(torch.tensor(float(oom)), nonfinite.float())
    t.add(losses, grad_norm, skip, nonfinite, coarse)


def test_sums_leave_out_skipped_steps_and_count_nonfinite_ones():
    t = StepTally(torch.device("cpu"))
    _step(t, 2.0, 1.0)
    _step(t, float("nan"), 5.0)          # non-finite: skipped, counted
    _step(t, 1.0, float("inf"))          # non-finite gradient: skipped, counted
    _step(t, 4.0, 3.0, coarse=False)     # no coarse loss this step
    _step(t, 9.0, 9.0, oom=True)         # OOM: skipped, not a non-finite step
    w = t.read(step=5, max_nonfinite=3)
    assert w["n"] == 2 and w["n_coarse"] == 1
    assert w["loss"] == pytest.approx(6.0) and w["fine"] == pytest.approx(5.8) and w["coarse"] == pytest.approx(2.2)
    assert w["grad_norm"] == pytest.approx(4.0) and w["nonfinite_skipped"] == 2
    assert all(math.isfinite(v) for v in w.values())
    _step(t, 1.0, 1.0)
    w2 = t.read(step=6, max_nonfinite=3)  # a fresh window; the skip count is the run's
    assert w2["n"] == 1 and w2["loss"] == pytest.approx(1.0) and w2["nonfinite_skipped"] == 2


def test_a_run_of_nonfinite_steps_aborts_when_read_even_across_windows():
    t = StepTally(torch.device("cpu"))
    _step(t, float("nan"), 1.0)
    _step(t, float("nan"), 1.0)
    t.read(step=2, max_nonfinite=3)  # 2 in a row: not yet
    _step(t, float("nan"), 1.0)      # the third, in the next window
    _step(t, 1.0, 1.0)               # the run ended, but it was 3 long
    with pytest.raises(FloatingPointError, match="3 non-finite steps in a row by step 4"):
        t.read(step=4, max_nonfinite=3)
    t2 = StepTally(torch.device("cpu"))
    for _ in range(2):
        _step(t2, float("nan"), 1.0)
        _step(t2, 1.0, 1.0)          # interrupted runs of 1: never 2 in a row
    assert t2.read(step=4, max_nonfinite=2)["nonfinite_skipped"] == 2


def test_found_inf_skips_the_update_on_the_device():
    from fovea.platform.config import TrainingConfig
    from fovea.platform.train.optim import build_optimizer

    model = torch.nn.Module()
    model.dino_to_llm = torch.nn.Linear(4, 2)  # a connector parameter, as the optimizer groups name them
    opt = build_optimizer(model, TrainingConfig())
    before = [p.detach().clone() for p in model.parameters()]
    model.dino_to_llm(torch.ones(1, 4)).sum().backward()
    opt.found_inf = torch.ones(())  # what the loop sets for a skipped step
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    opt.found_inf = torch.zeros(())
    opt.step()
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(float(s["step"]) == 1 for s in opt.state.values())  # the skipped step did not count


def test_coarse_only_windows_leave_out_the_fine_figures(tmp_path, tokenizer, model_store):
    """A coarse_only run (A6, A7) has no fine pass: its windows and validations carry no
    loss_fine, loss_ratio, val_loss_fine or val_loss_ratio instead of NaN (platform/train/window.py)."""
    from colour_shards import write_colour_shards

    from fovea.model.build import build_model
    from fovea.platform.config import load_config
    from fovea.platform.train.gc_clock import GcClock
    from fovea.platform.train.optim import build_optimizer
    from fovea.platform.train.window import Window, validation_loss, window_metrics

    t = StepTally(torch.device("cpu"))
    nan = float("nan")
    for loss in (2.0, 1.0):  # what a coarse_only forward returns: loss = coarse, fine NaN
        t.add(torch.tensor([loss, nan, loss], dtype=torch.float64), torch.tensor(1.0), torch.zeros(()),
              torch.zeros((), dtype=torch.bool), True)
    globs = write_colour_shards(tmp_path, tokenizer, n_train=0, n_val=4, n_text=0)
    cfg = load_config("tiny", ["model.coarse_only=true", f"data.val_shards=['{globs['val']}']"])
    model = build_model(cfg.model)
    m = window_metrics(Window.start(GcClock()), t.read(2, 5), 2, 4, build_optimizer(model, cfg.training),
                       torch.device("cpu"))
    assert m["loss"] == m["loss_coarse"] == pytest.approx(1.5)
    assert not {"loss_fine", "loss_ratio"} & set(m) and all(math.isfinite(v) for v in m.values())
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        val = validation_loss(model, cfg, torch.device("cpu"), contextlib.nullcontext, "coarse_only")
    finally:
        torch.set_num_threads(n)
    assert set(val) == {"val_loss", "val_loss_coarse"} and val["val_loss"] == val["val_loss_coarse"]
    # coarse_fine keeps every figure
    t.add(torch.tensor([2.0, 1.9, 2.1], dtype=torch.float64), torch.tensor(1.0), torch.zeros(()),
          torch.zeros((), dtype=torch.bool), True)
    m2 = window_metrics(Window.start(GcClock()), t.read(3, 5), 3, 6, build_optimizer(model, cfg.training),
                        torch.device("cpu"))
    assert m2["loss_ratio"] == pytest.approx(1.9 / 2.1)
