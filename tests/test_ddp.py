"""DDP's all-reduce settings (platform/train/ddp.py): gradients as bucket views and the bf16 wire
dtype give the gradients plain DDP gives, over 2 real processes (gloo)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ports import free_port
from torch.nn.parallel import DistributedDataParallel as DDP


def _train(rank: int, world: int, port: int, view: bool, bf16: bool, out: str) -> None:
    from fovea.platform.train.ddp import bf16_allreduce_hook

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    # bucket_cap_mb tiny: several buckets, so the hook runs more than once a step
    net = DDP(model, gradient_as_bucket_view=view, bucket_cap_mb=0.001)
    if bf16:
        net.register_comm_hook(None, bf16_allreduce_hook)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    grads = []
    for step in range(3):
        x = torch.randn(16, 8, generator=torch.Generator().manual_seed(100 * step + rank))  # each rank its own data
        net(x).pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]).clone())
        opt.step()
        opt.zero_grad(set_to_none=True)
    if rank == 0:
        torch.save({"grads": grads, "params": [p.detach().clone() for p in model.parameters()]}, out)
    dist.barrier()  # both ranks done before gloo tears down
    dist.destroy_process_group()
    # Leave without interpreter teardown: a gloo worker thread still joinable at exit makes
    # std::terminate abort the process now and then ("terminate called without an active
    # exception"), after the results are written.
    os._exit(0)


def _run(tmp_path, view: bool, bf16: bool) -> dict:
    out = str(tmp_path / f"view{int(view)}_bf16{int(bf16)}.pt")
    mp.start_processes(_train, args=(2, free_port(), view, bf16, out), nprocs=2, start_method="spawn")
    return torch.load(out)


def test_bucket_view_and_bf16_wire_give_plain_ddp_gradients(tmp_path):
    plain = _run(tmp_path, view=False, bf16=False)
    # the plain run's gradients are the mean over both ranks' batches: recompute rank 0 + rank 1 by hand
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    loss = sum(ref(torch.randn(16, 8, generator=torch.Generator().manual_seed(r))).pow(2).mean() for r in (0, 1)) / 2
    loss.backward()
    assert torch.allclose(plain["grads"][0], torch.cat([p.grad.flatten() for p in ref.parameters()]), atol=1e-6)

    view = _run(tmp_path, view=True, bf16=False)
    for a, b in zip(plain["grads"], view["grads"]):
        assert torch.equal(a, b)  # the same arithmetic, only where the gradients live differs
    for a, b in zip(plain["params"], view["params"]):
        assert torch.equal(a, b)

    wire = _run(tmp_path, view=True, bf16=True)
    a, b = plain["grads"][0], wire["grads"][0]  # the same weights: later steps start from rounded updates
    assert not torch.equal(a, b)  # rounded on the wire...
    # ...to bf16's 8 significant bits, twice (each rank's gradient, then their sum)
    assert (a - b).abs().max() <= 2 ** -7 * a.abs().max()


# (step, micro-batch, rank, where) of each injected OOM: a no_sync micro-batch's forward, the
# synced one's backward after DDP has all-reduced some buckets, the synced one's forward, and
# two ranks at once
OOMS = [(2, 0, 1, "forward"), (3, 2, 0, "backward"), (5, 2, 1, "forward"), (6, 1, 0, "backward"),
        (6, 1, 1, "backward")]


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(6))
        self.side = torch.nn.Linear(16, 16)  # unused in some steps on rank 0 (find_unused_parameters)
        self.register_buffer("scale", torch.ones(16))  # a buffer, which wrap_ddp does not broadcast

    def forward(self, x, use_side: bool):
        for layer in self.layers:
            x = layer(x) * self.scale
        return x + self.side(x) if use_side else x


def _oom_processes(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    res = {fu: _oom_windows(rank, world, fu) for fu in (True, False)}
    torch.save(res, f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # see _train


def _oom_windows(rank: int, world: int, find_unused: bool) -> dict:
    """7 grad-accum windows of 3 micro-batches with the loop's OOM agreement; OOMs injected per OOMS."""
    import contextlib

    from fovea.platform.config import RunConfig
    from fovea.platform.train.ddp import wrap_ddp
    from fovea.platform.train.oom import OomAgreement, hooked, release_ddp

    torch.manual_seed(0)
    model = _Net()
    cfg = RunConfig.model_validate({"cluster": {"ddp_bucket_mb": 0.002, "ddp_find_unused": find_unused}})
    agreement = OomAgreement(world)
    net = wrap_ddp(model, cfg, agreement)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dropped, stepped = [], 0

    def fail(*_):
        raise torch.OutOfMemoryError("injected")

    for step in range(1, 8):
        agreement.start_window()
        for micro in range(3):
            where = [w for s, m, r, w in OOMS if (s, m, r) == (step, micro, rank)]
            hook = None if not where else hooked(model.layers[3].register_forward_pre_hook(fail) if where[0] == "forward"
                                                 else model.layers[1].weight.register_hook(fail))
            sync = net.no_sync() if micro < 2 else contextlib.nullcontext()
            try:
                with sync, hook or contextlib.nullcontext():
                    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(10 * step + micro + 100 * rank))
                    net(x, use_side=not find_unused or rank == 1 or step % 2 == 0).pow(2).mean().backward()
            except torch.OutOfMemoryError:
                agreement.failed = True
            if agreement.settle():
                break
        else:
            opt.step()
            opt.zero_grad(set_to_none=True)
            stepped += 1
            continue
        dropped.append(step)
        opt.zero_grad(set_to_none=True)
        release_ddp(net)
        net = wrap_ddp(model, cfg, agreement)
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    everyone = [torch.zeros_like(params) for _ in range(world)]
    dist.all_gather(everyone, params)
    return {"dropped": dropped, "stepped": stepped, "same_params": all(torch.equal(everyone[0], p) for p in everyone)}


@pytest.mark.timeout(120)  # a rank left in a collective would hang: fail instead
def test_an_oom_on_one_rank_drops_the_window_on_every_rank(tmp_path):
    """platform/train/oom.py over 2 real processes (gloo), with and without DDP's unused-parameter
    search: wherever a rank runs out of memory (a no_sync forward, the synced backward with
    buckets already all-reduced, the synced forward, two ranks at once), both ranks leave the same
    window, nothing hangs, and the weights stay equal."""
    out = str(tmp_path / "oom")
    mp.start_processes(_oom_processes, args=(2, free_port(), out), nprocs=2, start_method="spawn")
    res = [torch.load(f"{out}.{r}") for r in (0, 1)]
    for find_unused in (True, False):
        r0, r1 = res[0][find_unused], res[1][find_unused]
        assert r0["dropped"] == r1["dropped"] == [2, 3, 5, 6], find_unused
        assert r0["stepped"] == r1["stepped"] == 3 and r0["same_params"] and r1["same_params"], find_unused


def test_ddp_kwargs_follow_the_cluster_section():
    from fovea.platform.config import RunConfig
    from fovea.platform.train.ddp import ddp_kwargs, no_forward_buffer_sync

    cfg = RunConfig.model_validate({"cluster": {"ddp_bucket_mb": 100, "ddp_bucket_view": True},
                                    "data": {"text_ratio": 0.0}})
    assert ddp_kwargs(cfg) == {"find_unused_parameters": False, "bucket_cap_mb": 100.0,
                               "gradient_as_bucket_view": True, **no_forward_buffer_sync()}
    with pytest.raises(ValueError, match="ddp_comm_dtype"):
        RunConfig.model_validate({"cluster": {"ddp_comm_dtype": "fp16"}})


def test_buffer_sync_is_off_without_a_deprecation_warning():
    """The buffer switch names whichever argument this torch's DDP takes, and building DDP with
    it warns of nothing (torch 2.13 deprecates ``broadcast_buffers``; 2.11 lacks
    ``forward_sync_buffers``)."""
    import inspect
    import warnings

    from fovea.platform.train.ddp import no_forward_buffer_sync

    (key, off), = no_forward_buffer_sync().items()
    assert off is False and key in inspect.signature(DDP.__init__).parameters
    port = free_port()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning fails the test
            net = DDP(torch.nn.Linear(4, 2), **no_forward_buffer_sync())
        assert net.module.weight.shape == (2, 4)
    finally:
        dist.destroy_process_group()


def test_buffers_are_constants_so_ddp_need_not_broadcast_them(model_store):
    """ddp_kwargs turns DDP's per-forward buffer broadcast off. That is right while every buffer of
    the model is the same on every rank from construction (the same config gives the same
    values, whatever the seed) and no training step writes one: here, a forward + backward +
    AdamW step of the model in training mode."""
    from fovea.model import build_model
    from fovea.model.config import ModelConfig
    from fovea.pipelines.batch import dummy_batch, model_inputs

    cfg = ModelConfig(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    torch.manual_seed(1)  # another rank's seed
    other = dict(build_model(cfg).named_buffers())
    before = {n: b.clone() for n, b in model.named_buffers()}
    assert before and before.keys() == other.keys()
    assert all(torch.equal(before[n], other[n]) for n in before)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = model_inputs(dummy_batch([3, 1, 0, 5], [20, 31, 12, 25]))
    model(**batch, mode="coarse_fine", compute_coarse=True)["loss"].backward()
    opt.step()
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())


@pytest.mark.extended
def test_allreduce_benchmark_runs_between_two_processes(repo_root, tmp_path):
    """jobs/bench/bench_allreduce.py's code path (gloo on the CPU here; NCCL between GPUs there)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "ar.json"
    r = subprocess.run([sys.executable, str(repo_root / "jobs" / "bench" / "bench_allreduce.py"), "--cpu", "--sizes-mb", "0.4",
                        "--iters", "2", "--warmup", "1", "--env", "GLOO_SOCKET_IFNAME=lo", "--exchanges", "20",
                        "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["oom_agreement_exchange_ms"] > 0
    assert f"one gloo exchange between 2 host processes {result['oom_agreement_exchange_ms']:.3f} ms" in r.stdout
    runs = result["runs"]
    assert set(runs) == {"default", "GLOO_SOCKET_IFNAME=lo"}
    for rows in runs.values():
        assert [(x["dtype"], x["bytes"]) for x in rows] == [("float32", 400_000), ("bfloat16", 200_000)]
        assert all(x["ms"] > 0 and x["busbw_gbs"] == pytest.approx(x["bytes"] / (x["ms"] / 1e3) / 1e9)
                   for x in rows)
    bad = subprocess.run([sys.executable, str(repo_root / "jobs" / "bench" / "bench_allreduce.py"), "--cpu", "--env", "NOVALUE"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "NOVALUE" in bad.stderr


@pytest.mark.extended
def test_host_benchmark_times_processes_alone_together_and_pinned(repo_root, tmp_path):
    """jobs/bench/bench_host.py's code path on the CPU: one process, two together, two pinned."""
    import json
    import os
    import subprocess
    import sys

    cpus = sorted(os.sched_getaffinity(0))
    pin = f"{cpus[0]},{cpus[-1]}"
    out = tmp_path / "host.json"
    r = subprocess.run([sys.executable, str(repo_root / "jobs" / "bench" / "bench_host.py"), "--cpu", "--pin", pin,
                        "--python-iters", "20000", "--launch-iters", "200", "--repeats", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())["results"]
    assert [m["mode"] for m in res] == ["1 process", "2 processes, unpinned", f"2 processes on CPUs {pin}"]
    assert [len(m["procs"]) for m in res] == [1, 2, 2]
    assert [p["cpu"] for p in res[2]["procs"]] == [[cpus[0]], [cpus[-1]]]  # each pinned where asked
    for m in res:
        for p in m["procs"]:
            assert 0 < p["python_ns"] < 1e5 and 0 < p["launch_us"] < 1e4, p


@pytest.mark.extended
def test_host_benchmark_reports_a_dead_worker_at_once(repo_root):
    """A worker that cannot start (here: a GPU this machine lacks) fails the run with its rank,
    instead of leaving the parent waiting on the queue."""
    import time

    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    from fovea.platform.profiling.host_speed import run_mode

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"benchmark worker \(rank, exit code\) \[\(1, 1\)\]"):
        run_mode(["cpu", "cuda:0"], None, {"n_python": 1000, "n_launch": 10, "repeats": 1})
    assert time.monotonic() - t0 < 60
