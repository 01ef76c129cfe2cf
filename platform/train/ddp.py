"""How a model is wrapped for data-parallel training, and DDP's gradient all-reduce.

Every rank holds the whole model; after backward, DDP averages the gradients across ranks
in buckets of ``cluster.ddp_bucket_mb`` (all-reduces start while backward still runs, one
bucket at a time, as its gradients become ready).  For the stage-1 135M model that is
~157 M parameters, 628 MB of fp32 gradients a step: a few ms over NVLink, tens of ms through
host memory (jobs/bench/bench_allreduce.py measures it on a machine).

Settings (``cluster.*``), off by default: a multi-GPU step is bound by the host's kernel
launches, not by the all-reduce, so a cheaper all-reduce has not made it faster
(docs/PERFORMANCE.md).
    ddp_bucket_view   gradients are views into the buckets: no copy of each gradient into
                      its bucket (~500 copy kernels a step here) and 628 MB less memory
    ddp_comm_dtype    bf16: gradients cast to bf16 and divided by the world size before the
                      all-reduce (half the bytes), written back as fp32 after it
"""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch import nn

from fovea.platform.config import RunConfig
from fovea.platform.train.oom import OomAgreement, agreeing_hook


def find_unused(cfg: RunConfig) -> bool:
    """DDP find_unused_parameters: a text-only batch leaves the vision side unused, and
    coarse_only leaves llm_to_query / q_init unused; otherwise every step uses every parameter."""
    if cfg.cluster.ddp_find_unused != "auto":
        return bool(cfg.cluster.ddp_find_unused)
    return cfg.data.text_ratio > 0 or cfg.model.coarse_only


def ddp_kwargs(cfg: RunConfig) -> dict:
    """Keyword arguments of ``DistributedDataParallel`` (``wrap_ddp``).

    No buffer broadcast before each forward: by default DDP broadcasts every buffer from rank 0
    before each synced forward, a collective that makes every rank's stream wait for rank 0's.
    The model's only buffers are RoPE's frequencies, equal on every rank from construction and
    never written by training (tests/test_ddp.py checks both)."""
    c = cfg.cluster
    return {"find_unused_parameters": find_unused(cfg), "bucket_cap_mb": c.ddp_bucket_mb,
            "gradient_as_bucket_view": c.ddp_bucket_view, **no_forward_buffer_sync()}


def no_forward_buffer_sync() -> dict:
    """DDP's switch for that broadcast: ``forward_sync_buffers=False`` where torch has it (it
    deprecates ``broadcast_buffers`` with a warning, and still syncs the buffers once when the
    wrapper is built, which constants allow), else ``broadcast_buffers=False``."""
    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def bf16_allreduce_hook(process_group, bucket):
    """DDP communication hook: average a bucket's gradients in bf16 -> Future[fp32 buffer].

    (Unannotated: DDP checks a hook's annotations against the real classes, and this
    module's annotations are strings.)

    bucket.buffer() [numel] fp32 -> bf16 / world -> all-reduce (sum) -> copied back to fp32.
    Works on NCCL and gloo (torch's own bf16 hook refuses gloo, so the CPU tests could not
    run it)."""
    group = process_group if process_group is not None else dist.group.WORLD
    buf = bucket.buffer()
    wire = buf.to(torch.bfloat16).div_(dist.get_world_size(group))
    fut = dist.all_reduce(wire, group=group, async_op=True).get_future()

    def back_to_fp32(f: torch.futures.Future) -> torch.Tensor:
        buf.copy_(f.value()[0])
        return buf

    return fut.then(back_to_fp32)


def wrap_ddp(model: nn.Module, cfg: RunConfig, agreement: OomAgreement | None = None) -> nn.Module:
    """The model (already on its device) wrapped in DDP, with the communication hook that
    ``cluster.ddp_comm_dtype`` names; with an ``agreement`` whose ranks talk (platform/train/oom.py)
    that hook runs inside ``agreeing_hook``, so that no bucket is all-reduced once a rank ran out
    of memory.

    ``device_ids=None``: DDP leaves the forward's inputs where they are. (With device ids, as
    Ray's ``prepare_model`` sets them, it would copy the host-side masks of the training loop
    to the GPU, and the model would read its indices back from there.)"""
    from torch.nn.parallel import DistributedDataParallel

    net = DistributedDataParallel(model, device_ids=None, **ddp_kwargs(cfg))
    hook = bf16_allreduce_hook if cfg.cluster.ddp_comm_dtype == "bf16" else None
    if agreement is not None and agreement.group is not None:
        agreement.net = net
        net.register_comm_hook((agreement, hook or allreduce_hook, None), agreeing_hook)
    elif hook is not None:
        net.register_comm_hook(None, hook)
    return net
