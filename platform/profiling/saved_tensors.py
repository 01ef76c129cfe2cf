"""Activation memory of a training step: the bytes autograd saves for backward, by phase of the
forward pass (jobs/bench/bench_memory.py).

``measure`` runs one forward pass with ``torch.autograd.graph.saved_tensors_hooks`` and counts
every saved tensor once per storage, never a parameter, under the phase that saved it: the
DINOv2 patch pass, the query passes, the LLM passes, the LM head and loss. With
``count_checkpoint_inputs``, the inputs a gradient-checkpointed region
(``torch.utils.checkpoint``) keeps alive until backward count too. Transient buffers of
backward, the allocator's fragmentation and the CUDA context are not counted: the sum is a
lower bound of a GPU's peak.
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict

import torch

from fovea.pipelines.batch import model_inputs


def storage_key(t: torch.Tensor) -> int:
    """One number per storage: its address; on the meta device (no memory, every address 0) the
    storage object's own, which stays unique while autograd keeps the tensor saved."""
    s = t.untyped_storage()
    return s._cdata if t.device.type == "meta" else s.data_ptr()


class SavedTensorLedger:
    """Bytes autograd saves for backward, by phase, once per storage, parameters excluded; on a
    real device or on the meta device (step_memory.py: a model too big for this machine)."""

    def __init__(self, model):
        self.params = {storage_key(p) for p in model.parameters()}
        self.seen: set[int] = set()
        self.bytes: dict[str, int] = defaultdict(int)
        self.phase: list[str] = ["other"]

    def record(self, t) -> None:
        if not isinstance(t, torch.Tensor) or t.untyped_storage().nbytes() == 0:
            return
        key = storage_key(t)
        if key in self.params or key in self.seen:
            return
        self.seen.add(key)
        self.bytes[self.phase[-1]] += t.untyped_storage().nbytes()

    def pack(self, t):
        self.record(t)
        # detached: a node that saves its own output would otherwise hold that tensor, whose
        # grad_fn is the node (a cycle no collector sees: every measured graph stayed alive)
        return t.detach()

    @contextlib.contextmanager
    def in_phase(self, name: str):
        self.phase.append(name)
        try:
            yield
        finally:
            self.phase.pop()

    def wrap(self, obj, method: str, name: str) -> None:
        """Calls of ``obj.method`` count under phase ``name`` (numbered per call when '#')."""
        fn, calls = getattr(obj, method), [0]

        @functools.wraps(fn)
        def wrapped(*a, **kw):
            calls[0] += 1
            with self.in_phase(name.replace("#", str(calls[0]))):
                return fn(*a, **kw)

        setattr(obj, method, wrapped)


_LEDGER: list[SavedTensorLedger] = []  # the ledger of the measure() in progress


def count_checkpoint_inputs() -> None:
    """Make ``torch.utils.checkpoint.checkpoint`` count the inputs a checkpointed region keeps
    alive until backward. Call before building the model: transformers binds its checkpoint
    function when gradient checkpointing is enabled (``model.gradient_checkpointing=true``)."""
    import torch.utils.checkpoint as ckpt
    import transformers.modeling_utils as mu

    inner = ckpt.checkpoint

    @functools.wraps(inner)
    def counting_checkpoint(fn, *args, **kw):
        for a in args if _LEDGER else ():
            _LEDGER[-1].record(a)
        return inner(fn, *args, **kw)

    ckpt.checkpoint = mu.checkpoint = counting_checkpoint


def measure(model, batch: dict, autocast) -> SavedTensorLedger:
    """One forward pass (coarse + fine, as in training) with every saved tensor counted."""
    led = SavedTensorLedger(model)
    led.wrap(model.encoder, "encode_patches", "DINOv2 patch pass")
    led.wrap(model.encoder, "query_pass", "query pass #")
    led.wrap(model, "decoder", "LLM pass #")
    led.wrap(model, "text_head", "LM head + loss")
    _LEDGER.append(led)
    try:
        with torch.autograd.graph.saved_tensors_hooks(led.pack, lambda t: t), autocast():
            out = model(**model_inputs(batch), mode="coarse_fine", compute_coarse=False, return_logits=False)
        led.record(out["loss"])
    finally:
        _LEDGER.pop()
    return led
