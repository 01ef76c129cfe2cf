"""Python's garbage collector inside the training loop: how long its pauses take.

A collection stops the Python thread that triggered it.  In a training step that thread is the
one launching the GPU's kernels, so a pause is GPU idle time on that rank, and under DDP the
other ranks then wait for it in the gradient all-reduce: a pause on any rank costs every rank.
The young generations are collected every few hundred allocations and are cheap; a full
collection (generation 2) walks every tracked object of the process (the model's modules,
transformers, Ray, torch.compile's caches: near a million objects in a 135M training process),
which takes a good part of a second and lands in training every few dozen steps.

``GcClock`` adds up the pauses (via ``gc.callbacks``) so that each log window can report them,
like the compilation time: ``gc_s_max`` is the worst rank's pause seconds in the window,
``gc_full_max`` its number of full collections.

``freeze_setup_objects`` (``training.gc_freeze``, after the process's first step) moves every object alive
then into the permanent generation, which collections do not walk.  Only objects alive at the
freeze are frozen (garbage is collected first); one that later becomes part of an unreachable
reference cycle is never collected while frozen, which is why the freeze happens once, over what
set-up built (modules, compiled graphs), not every window, and the training loop unfreezes them
when it ends.

A full collection pauses the thread that launches the kernels; freezing the set-up objects keeps
full collections short.  After the freeze they come more often (CPython compares the unfrozen
old objects with the few left in the oldest generation), but each walks only the objects made
since, so ``training.gc_freeze`` is on by default.  ``jobs/bench/bench_gc.py`` measures one
collection before and after the freeze.
"""

from __future__ import annotations

import gc
import time


class GcClock:
    """Cumulative garbage-collection pause time of this process since ``start()``."""

    def __init__(self) -> None:
        self.seconds = 0.0  # all generations
        self.full = 0  # generation-2 collections
        self._t0: float | None = None

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:  # "stop"
            self.seconds += time.perf_counter() - self._t0
            self.full += info.get("generation") == 2
            self._t0 = None

    def start(self) -> "GcClock":
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        return self

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def read(self) -> tuple[float, int]:
        """(pause seconds, full collections) so far."""
        return self.seconds, self.full


def freeze_setup_objects() -> int:
    """gc.collect() then gc.freeze(): returns how many objects are now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
