"""training.profile_steps on the CPU: what writing a profile costs the training thread."""

from __future__ import annotations

import gc

import torch


def test_writing_a_profile_pauses_for_one_full_collection(tmp_path):
    """With the set-up objects frozen (training.gc_freeze), reading a trace's events started
    a full collection for each burst of them (4 here, 8 in a GPU profile of the real step).
    StepProfiler collects once, after the files are written, and leaves nothing for later."""
    from fovea.platform.profiling.step_profiler import StepProfiler
    from fovea.platform.train.gc_clock import GcClock, freeze_setup_objects

    model = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(50)])
    x = torch.randn(8, 32)
    freeze_setup_objects()
    clock = GcClock().start()
    try:
        prof = StepProfiler((2, 3), tmp_path, 0, torch.device("cpu"))
        written = []
        for step in range(4):
            prof.before_step(step)
            for _ in range(6):
                model(x).sum().backward()
            before = clock.read()[1]
            path = prof.after_step(step + 1)
            if path is not None:
                full = clock.read()[1] - before
                left = gc.collect()  # unreachable objects the profile left for a later collection
                written.append((path, full, left))
        (path, full, left), = written
        assert full == 1 and left == 0, (full, left)
        text = path.read_text()
        assert text.startswith("rank 0, steps 2..3") and "process CPU" in text, text[:200]
        assert (tmp_path / "rank0_trace.json.gz").stat().st_size > 0
    finally:
        clock.stop()
        gc.unfreeze()
