"""A training window's per-step figures, kept on the device and read back once a window.

Reading a loss or a gradient norm back every step (``float(t)``) makes the host wait for
the GPU to finish the step, so it cannot queue the next step's work while the GPU still
runs this one's backward. The loop instead adds each step's figures to device tensors and
reads them when it logs (every ``training.log_every`` steps), and a non-finite step is
skipped on the device (fused AdamW's ``found_inf``) rather than by the host.

Per step (all on the device; ok = the step was not skipped):
    sums    += where(ok, [loss, loss_fine, loss_coarse or 0, grad_norm, 1, coarse ? 1 : 0], 0)
    streak   = (streak + 1) * nonfinite        non-finite steps in a row, now
    worst    = max(worst, streak)              the longest run this window
    skipped += nonfinite                       since the start of the run
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("fovea.train")

_KEYS = ("loss", "fine", "coarse", "grad_norm", "n", "n_coarse")


class StepTally:
    def __init__(self, device: torch.device):
        z = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.sums = torch.zeros(len(_KEYS), dtype=torch.float64, device=device)
        self.streak, self.worst, self.skipped = z(), z(), z()
        self._skipped_before = 0.0

    def add(self, losses: torch.Tensor, grad_norm: torch.Tensor, skip: torch.Tensor, nonfinite: torch.Tensor,
            coarse: bool) -> None:
        """losses [3] (loss, fine, coarse), grad_norm [], skip [] (1 = not applied), nonfinite [] bool."""
        one, zero = torch.ones_like(losses[0]), torch.zeros_like(losses[0])
        vals = torch.stack([losses[0], losses[1], losses[2] if coarse else zero, grad_norm.double(), one,
                            one if coarse else zero])
        self.sums += torch.where(skip == 0, vals, zero)
        nf = nonfinite.double()
        self.streak = (self.streak + 1) * nf
        self.worst = torch.maximum(self.worst, self.streak)
        self.skipped += nf

    def read(self, step: int, max_nonfinite: int) -> dict[str, float]:
        """The window's sums as floats (one read-back), then a fresh window. Raises
        FloatingPointError once ``max_nonfinite`` steps in a row were non-finite."""
        vals = torch.cat([self.sums, torch.stack([self.worst, self.skipped])]).tolist()
        out = dict(zip(_KEYS, vals[:len(_KEYS)]))
        worst, skipped = vals[len(_KEYS)], vals[len(_KEYS) + 1]
        self.sums.zero_()
        self.worst = self.streak.clone()  # a run still going carries into the next window
        if skipped > self._skipped_before:
            log.warning("%d step(s) with a non-finite loss or gradient skipped by step %d (%d so far)",
                        skipped - self._skipped_before, step, skipped)
        self._skipped_before = skipped
        if worst >= max_nonfinite:
            raise FloatingPointError(
                f"{int(worst)} non-finite steps in a row by step {step} "
                f"(training.max_nonfinite_steps={max_nonfinite}); aborting")
        out["nonfinite_skipped"] = skipped
        return out
