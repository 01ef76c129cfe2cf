"""One stage-1 training step in one process, for the benchmarks that time or profile it
(jobs/bench/bench_train.py's matrix, profile_train_step.py, bench_gc.py): the stage1_135m
model, optimizer and loader over given shards with the training CUDA settings, and the step
the training loop takes (forward, backward, clip, fused AdamW)."""

from __future__ import annotations

import torch

from fovea.model import build_model
from fovea.model.naive import naive_encoder
from fovea.pipelines.batch import model_inputs
from fovea.pipelines.loader import build_train_loader
from fovea.platform.config import load_config
from fovea.platform.train.loop import configure_cuda_backends
from fovea.platform.train.optim import build_optimizer


def endless_batches(data_cfg):
    """The training loader's batches, epoch after epoch (large batches outrun small shard sets)."""
    epoch = 0
    while True:
        n = 0
        for batch in build_train_loader(data_cfg, rank=0, world_size=1, epoch=epoch, seed=0):
            n += 1
            yield batch
        if n == 0:
            raise RuntimeError(f"no batches in {data_cfg.train_shards}")
        epoch += 1


def bench_setup(shards: str, batch: int, frames_cap: int | None, loader_workers: int, overrides: list[str], *,
                packed: bool = True, compiled: bool = False, naive: bool = False):
    """(model, AdamW, endless batch iterator, device) for timing stage-1 training steps in one
    process: the stage1_135m config over ``shards``, no text batches, the training CUDA settings."""
    cfg = load_config("stage1_135m", [
        f"data.train_shards=['{shards}']", "data.text_ratio=0", f"data.batch_size={batch}",
        f"data.max_total_frames={frames_cap if frames_cap else 'null'}", f"data.packed_frames={str(packed).lower()}",
        f"data.num_workers={loader_workers}", f"data.shuffle_buffer={max(256, 4 * batch)}", *overrides])
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: a smoke test only
    configure_cuda_backends()  # TF32, no cuDNN SDPA (see its docstring)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(dev).train()
    if naive:
        naive_encoder(model)  # fovea.model.naive
    if compiled:
        model.compile_blocks()
    return model, build_optimizer(model, cfg.training), endless_batches(cfg.data), dev


def train_step(model, optimizer, host: dict, dev, autocast) -> None:
    """One training step on a loader batch: forward (fine loss), backward, clip, AdamW."""
    b = {k: v.to(dev, non_blocking=True) for k, v in model_inputs(host).items()}
    with autocast():
        out = model(**b, mode="coarse_fine", compute_coarse=False, return_logits=False)
    out["loss"].backward()
    float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))  # the training loop's sync
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
