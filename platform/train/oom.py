"""A CUDA out-of-memory error during a training step: every rank agrees, then all drop the window.

The reference (DESIGN.md 4.5) answers an OOM in forward or backward by skipping the batch,
emptying the cache, zeroing the gradients and restarting the accumulation window, without an
optimizer or scheduler step.  On one rank that is all.  On several, a rank that leaves its
micro-batches alone leaves the others waiting in DDP's collectives (the buffer broadcast of each
forward, the bucket all-reduces of the last micro-batch's backward, the unused-parameter map)
and in the window's metrics: a hang.  So the ranks agree first, over a CPU (gloo) group: the
allocator raises an OOM on the host, so a rank knows of its own at once and no GPU work is waited for.

* After every micro-batch every rank says whether it ran out of memory (``settle``); when one
  did, all of them leave the window together.
* Before each of DDP's bucket all-reduces a rank in its backward asks whether another rank
  failed (``agreeing_hook``, a communication hook around the usual one); once one did, no
  bucket is all-reduced any more.  A rank that failed answers these questions from ``settle``
  until every rank has left its backward, and joins DDP's unused-parameter all-reduce that
  ends the others' backward when they search for unused parameters.
* After a dropped window every rank builds a new DDP wrapper (a backward cut short leaves the
  reducer mid-iteration) and the loop goes on with the next batches; the step is not counted.

A normal step costs one gloo all-reduce of 3 numbers per micro-batch and per DDP bucket (about
26 for the 135M model's 628 MB of gradients in 25 MB buckets), on the host.
``cluster.oom_agreement=false`` leaves them out; then an OOM on a run of several ranks ends
the run (Ray restarts it from the latest checkpoint, ``cluster.max_failures``).

``FOVEA_OOM_INJECT`` (``oom_injection``) raises an OOM on one rank at one step, for the tests.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class OomAgreement:
    """One rank's side of the agreement; ``failed`` is set by the loop when this rank ran out
    of memory in the current window.  Without a group (one rank, or agreement off) nothing is
    exchanged."""

    def __init__(self, world: int, enabled: bool = True):
        self.group = dist.new_group(backend="gloo") if (world > 1 and enabled) else None
        self.recovers = world == 1 or enabled  # False: an OOM on one of several ranks ends the run
        self.failed = False
        self.saw_last_bucket = False  # this rank's backward reached DDP's last bucket
        self.net: Any = None  # the DDP wrapper whose buckets ask (``agreeing_hook``)

    def start_window(self) -> None:
        self.failed = self.saw_last_bucket = False

    def exchange(self, in_backward: bool, last_bucket: bool) -> tuple[bool, bool, bool]:
        """-> whether any rank (failed, is in its backward, is at DDP's last bucket)."""
        t = torch.tensor([float(self.failed), float(in_backward), float(last_bucket)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return bool(t[0]), bool(t[1]), bool(t[2])

    def settle(self) -> bool:
        """After a micro-batch, on every rank: whether any rank ran out of memory in this window."""
        if self.group is None:
            return self.failed
        while True:
            failed, others_in_backward, at_last = self.exchange(False, False)
            if at_last and not self.saw_last_bucket and self.net is not None and self.net.find_unused_parameters:
                # the others' reducer all-reduces its used-parameter map after its last bucket:
                # join it as DDP's own join hook does for a rank without inputs
                self.net._match_unused_params_allreduce()
            if not others_in_backward:
                return failed

    def bucket_ok(self, last: bool) -> bool:
        """In DDP's communication hook: whether every rank is still fine."""
        self.saw_last_bucket |= last
        failed, _, _ = self.exchange(True, last)
        return not failed


def agreeing_hook(state, bucket):
    """DDP communication hook: ``state`` = (OomAgreement, the hook that all-reduces, its state).
    The bucket is all-reduced only while no rank has run out of memory; otherwise it is left as
    it is (the window is dropped).  (Unannotated: DDP checks annotations against its classes.)"""
    agreement, inner, inner_state = state
    if agreement.bucket_ok(bucket.is_last()):
        return inner(inner_state, bucket)
    fut = torch.futures.Future()
    fut.set_result(bucket.buffer())
    return fut


def release_ddp(net: nn.Module) -> None:
    """Detach a DDP wrapper's reducer from the parameters before a new wrapper replaces it (a
    backward cut short by an OOM leaves it expecting gradients)."""
    net._remove_autograd_hooks()


def oom_injection(spec: str | None, model: nn.Module, step: int, rank: int, micro: int):
    """``spec`` = "step=S,rank=R,micro=M,at=forward|backward" (micro 0, backward by default):
    rank R raises torch.OutOfMemoryError in micro-batch M of optimizer step S -- in the forward,
    as the model embeds the text (inside DDP's forward), or in the backward, when the input
    embeddings' gradient arrives (late: DDP has all-reduced earlier buckets).  A context for that
    micro-batch, None for every other; the loop fires it once.  FOVEA_OOM_INJECT in the driver's
    environment."""
    if not spec:
        return None
    kv = dict(p.split("=", 1) for p in spec.split(","))
    if (step, rank, micro) != (int(kv["step"]), int(kv.get("rank", 0)), int(kv.get("micro", 0))):
        return None

    def fail(*_):
        raise torch.OutOfMemoryError(f"injected: CUDA out of memory on rank {rank}, step {step}, micro-batch {micro}")

    emb = model.llm.get_input_embeddings()
    return hooked(emb.register_forward_pre_hook(fail) if kv.get("at") == "forward" else emb.weight.register_hook(fail))


@contextlib.contextmanager
def hooked(handle):
    """Keep a hook for the duration of the context."""
    try:
        yield
    finally:
        handle.remove()
