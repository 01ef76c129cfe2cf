"""What a ``data.mixture`` run has read of each source: samples and passes, over all ranks, for
the log windows' ``mix/<source>/samples`` and ``mix/<source>/epoch`` metrics, and kept in the
checkpoints so that a resumed run counts on from where it stood (DESIGN.md 3.8).

Each batch of a mixture run names its source and that source's pass (``mixture_source``,
``mixture_epoch``: pipelines/loader.py); text-interleave batches count as ``text``.  A rank
counts the batches of its optimizer steps (the batches of a window dropped for a CUDA OOM are
not counted, like ``samples_seen``); at the end of a log window the ranks sum their samples and
take the furthest pass.  ``samples`` are cumulative from the start of the run; ``epoch`` is the
0-based pass the furthest reader of the source is in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fovea.pipelines.config import TEXT_SOURCE
from fovea.platform.train.collectives import all_max, all_sum


@dataclass
class MixtureCounts:
    names: list[str]  # the sources in name order, then "text" when the interleave is on
    samples: dict[str, float]  # all ranks, since the start of the run
    epochs: dict[str, float]  # the furthest pass of any reader so far
    window: dict[str, float] = field(default_factory=dict)  # this rank's samples in the window
    window_epochs: dict[str, float] = field(default_factory=dict)  # this rank's furthest passes

    @classmethod
    def for_run(cls, data_cfg, saved: dict[str, Any] | None = None) -> "MixtureCounts | None":
        """The counts of a mixture run (None without ``data.mixture``), from a checkpoint's
        ``saved`` state when resuming."""
        if data_cfg.mixture is None:
            return None
        names = list(data_cfg.mixture_weights())
        if data_cfg.text_ratio > 0 and data_cfg.text_shards:
            names.append(TEXT_SOURCE)
        saved = saved or {}
        return cls(names, {n: float(saved.get("samples", {}).get(n, 0.0)) for n in names},
                   {n: float(saved.get("epochs", {}).get(n, 0.0)) for n in names})

    def count(self, batches: list[tuple[str, int, int]]) -> None:
        """This rank's (source, samples, source pass) of one optimizer step's batches."""
        for name, n, epoch in batches:
            self.window[name] = self.window.get(name, 0.0) + n
            self.window_epochs[name] = max(self.window_epochs.get(name, 0.0), float(epoch))

    def metrics(self, device) -> dict[str, float]:
        """The window's counts summed over the ranks into the totals -> ``mix/<source>/samples``
        and ``mix/<source>/epoch`` (a collective: every rank calls it)."""
        sums = all_sum([self.window.get(n, 0.0) for n in self.names], device)
        furthest = all_max([self.window_epochs.get(n, 0.0) for n in self.names], device)
        out = {}
        for name, n, epoch in zip(self.names, sums, furthest):
            self.samples[name] += n
            self.epochs[name] = max(self.epochs[name], epoch)
            out[f"mix/{name}/samples"] = self.samples[name]
            out[f"mix/{name}/epoch"] = self.epochs[name]
        self.window, self.window_epochs = {}, {}
        return out

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (the totals; the same on every rank after ``metrics``)."""
        return {"samples": dict(self.samples), "epochs": dict(self.epochs)}
