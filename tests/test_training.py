"""Ray Train on CPU with tiny models: learning, exact resume, fault tolerance, MLflow,
stage chaining.  One local Ray cluster (2 CPUs) serves the whole module."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch

from fovea.platform.config import load_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from fovea.platform.runs.cluster import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory, tokenizer, model_store):
    from colour_shards import write_colour_shards

    return write_colour_shards(tmp_path_factory.mktemp("shards"), tokenizer)


def tiny_cfg(runs: Path, shards: dict, name: str, *extra: str):
    return load_config("tiny", [
        f"name={name}", f"runs_dir={runs}",
        f"data.train_shards=['{shards['train']}']", f"data.val_shards=['{shards['val']}']",
        f"data.text_shards=['{shards['text']}']", "data.shuffle_buffer=0",
        *extra,
    ])


def read_metrics(runs: Path, name: str) -> list[dict]:
    lines = (runs / "ray" / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.extended
def test_two_workers_lower_the_loss_and_track_in_mlflow(ray_local, shards, tmp_path):
    from mlflow.tracking import MlflowClient

    from fovea.platform.stages import train_stage

    cfg = tiny_cfg(tmp_path, shards, "learn", "training.max_steps=30", "training.checkpoint_every=15",
                   "training.log_every=5", "eval.every_steps=15", "eval.caption_samples=1",
                   "eval.max_new_tokens=4", "training.profile_steps=[15,16]", "training.gc_freeze=true")
    s = train_stage(cfg)
    rows = [r for r in read_metrics(tmp_path, "learn")]
    assert rows[0]["step"] == 5 and rows[-1]["step"] == 30
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"], [r["loss"] for r in rows]
    assert s.best_checkpoint is not None and (s.best_checkpoint / "model").is_dir()
    # the worst of the 2 ranks is at least their mean; no torch.compile here, so no compile time
    assert all(r["data_wait_frac_max"] >= r["data_wait_frac"] - 1e-12 and r["compile_s_max"] == 0 for r in rows)
    # 2 ranks with their own token-budget batches: the costlier rank of a step is >= the mean
    assert all(r["rank_cost_imbalance"] >= 1.0 for r in rows) and any(r["rank_cost_imbalance"] > 1.0 for r in rows)
    # once an epoch is whole, rank 0 logs how long it took (bench_train's equal-work figure uses epochs >= 1)
    assert all(("epoch_s" in r) == (r["epoch"] >= 1) for r in rows) and rows[-1]["epoch"] >= 2
    assert all(r["epoch_s"] > 0 for r in rows if "epoch_s" in r)
    assert all(r["epoch_compile_s"] == 0 for r in rows if "epoch_s" in r)  # with its compile time (none here)
    # Python's collection pauses, worst rank: the first window holds the full collection before
    # the freeze after step 1 (training.gc_freeze=true); later ones walk no set-up objects, so they stay
    # short, but for the window of steps 16-20, whose step 16 writes the profile and frees its
    # events in one full collection (tests/test_step_profiler.py)
    assert rows[0]["gc_full_max"] >= 1 and rows[0]["gc_s_max"] > 0
    assert all(0 <= r["gc_s_max"] < 0.25 for r in rows[1:] if r["step"] != 20), [r["gc_s_max"] for r in rows]
    assert all(r["gc_frozen"] > 10_000 for r in rows)  # a Ray worker with torch + transformers: far more
    # training.profile_steps: each rank profiled steps 15..16 and wrote its op table
    for r in (0, 1):
        text = (tmp_path / "ray" / "learn" / "profile" / f"rank{r}.txt").read_text()
        assert text.startswith(f"rank {r}, steps 15..16\nwall ") and "aten::" in text, text[:300]
        # the per-phase timeline (on CPU: no GPU, so all of it idle) and the Chrome trace beside it;
        # step 15 ends a window with a validation and a checkpoint, which the timeline names
        assert "timeline per step" in text, text[:800]
        for ph in ("encode_patches", "fine_text", "backward", "optimizer", "data", "checkpoint"):
            assert f"\n{ph} " in text, (ph, text[:800])
        trace = json.loads(gzip.decompress((tmp_path / "ray" / "learn" / "profile" / f"rank{r}_trace.json.gz")
                                           .read_bytes()))
        assert any(e.get("name") == "fovea/backward" for e in trace["traceEvents"])

    client = MlflowClient(cfg.tracking_uri())
    run = client.get_run(s.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.lr_connector"] == "0.001"
    assert run.data.params["model.llm"] == "fovea/tiny-llama"
    assert run.data.tags["stage"] == "1" and run.data.tags["git_commit"]
    for key in ("loss", "loss_fine", "loss_coarse", "loss_ratio", "grad_norm", "lr_connector", "lr_dino",
                "lr_llm", "samples_per_s", "frames_per_s", "val_loss", "attn_entropy_fine", "attn_entropy_coarse",
                "attn_entropy_max", "q_static_std", "fine_coarse_token_diff"):
        assert key in run.data.metrics, key
    fine = client.get_metric_history(s.mlflow_run_id, "loss_fine")
    assert len(fine) == len(rows)
    arts = {a.path for a in client.list_artifacts(s.mlflow_run_id)}
    assert "resolved_config.yaml" in arts
    # train_stage's end-of-run hook: the generated captions, logged by rank 0 into the same run,
    # and the loss overlay of the experiment's runs
    assert "evaluation/captions.jsonl" in {a.path for a in client.list_artifacts(s.mlflow_run_id, "evaluation")}
    assert [a.path for a in client.list_artifacts(s.mlflow_run_id, "plots")] == ["plots/loss_overlay.png"]
    assert run.data.tags["best_checkpoint"] == str(s.best_checkpoint)


def test_runs_go_without_ray_trains_placement_group_cleaner():
    """The cleaner takes a State API miss for a dead controller and tears down live runs
    (platform/train/ray_trainer.py); every other default callback stays."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from fovea.platform.train.ray_trainer import RunTrainer

    def names(trainer_cls):
        t = trainer_cls(lambda c: None, scaling_config=ray.train.ScalingConfig(num_workers=1))
        return [type(c).__name__ for c in t._create_default_callbacks()]

    assert "PlacementGroupCleanerCallback" in names(TorchTrainer)
    assert names(RunTrainer) == [n for n in names(TorchTrainer) if n != "PlacementGroupCleanerCallback"]


def test_cost_imbalance_is_the_slowest_rank_over_the_mean():
    from fovea.platform.train.collectives import cost_imbalance

    assert cost_imbalance([[10.0, 10.0], [10.0, 20.0]]) == (10 + 20) / (10 + 15)
    assert cost_imbalance([[5.0, 7.0]]) == 1.0  # one rank: nothing to wait for
    assert cost_imbalance([[3.0, 3.0], [3.0, 3.0]]) == 1.0


def test_device_busy_is_the_union_of_kernel_intervals():
    from fovea.platform.profiling.step_profiler import device_busy

    spans = [("nvjet_gemm", 0, 10), ("triton_poi_fused_gelu", 5, 12),   # overlap: busy 0..12
             ("ncclDevKernel_AllReduce_Sum_f32", 11, 20),              # 1 us under compute, 8 exposed
             ("Memcpy HtoD", 30, 32)]
    b = device_busy(spans)
    assert b == {"busy": 22.0, "compute": 14.0, "comm": 9.0, "comm_exposed": 8.0, "activities": 4.0}
    assert device_busy([])["busy"] == 0.0


def test_timeline_puts_gpu_idle_on_the_host_phase_and_finds_syncs():
    from fovea.platform.profiling.step_timeline import format_summary, timeline_summary

    def x(cat, name, ts, dur, tid=1, pid=1):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": pid, "tid": tid}

    trace = {"traceEvents": [
        x("user_annotation", "fovea/forward", 0, 100), x("user_annotation", "fovea/encode_patches", 10, 40),
        x("user_annotation", "fovea/backward", 100, 100),
        x("user_annotation", "fovea/data", 0, 30, tid=7),  # another thread: not the loop's
        x("cpu_op", "aten::nonzero", 60, 30), x("cuda_runtime", "cudaStreamSynchronize", 65, 20),
        x("cuda_runtime", "cudaLaunchKernel", 20, 2),
        x("cuda_driver", "cuLaunchKernel", 120, 80, tid=9),   # autograd's thread, blocked on a full queue
        x("cuda_runtime", "cudaMemcpyAsync", 130, 4, tid=9),
        x("cuda_runtime", "cudaLaunchKernel", 30, 60, pid=2),  # another process: not counted
        x("kernel", "gemm", 5, 45, pid=0, tid=7),       # busy 5..50: forward idle 0..5, encode idle none
        x("kernel", "flash", 90, 60, pid=0, tid=7),     # busy 90..150: forward idle 50..90 (40), backward 150..200
        x("gpu_memcpy", "Memcpy HtoD", 140, 20, pid=0, tid=8),  # busy to 160
        x("kernel", "tail", 190, 40, pid=0, tid=7)]}   # busy 190..230: 30 of it after the last phase
    s = timeline_summary(trace, steps=2)
    assert s["window_ms"] == pytest.approx(0.1) and s["gpu_busy_ms"] == pytest.approx(0.0625)
    # the work queued past the window counts in the GPU's work a step, not in the window's busy
    assert s["gpu_after_ms"] == pytest.approx(0.015) and s["gpu_work_ms"] == pytest.approx(0.0775)
    ph = s["phases"]
    close = pytest.approx
    assert ph["encode_patches"]["wall_ms"] == close(0.02) and ph["encode_patches"]["gpu_idle_ms"] == 0.0
    assert ph["forward"]["wall_ms"] == close(0.03) and ph["forward"]["gpu_idle_ms"] == close(0.0225)
    assert ph["backward"]["gpu_idle_ms"] == close(0.015) and "data" not in ph
    assert ph["forward"]["syncs"] == 0.5 and ph["forward"]["sync_ms"] == close(0.01)
    assert s["sync_sites"] == [("aten::nonzero", "forward", 0.5, close(0.01))]
    # launches: by the phase they start in, from any thread of the loop's process; blocked = >= 50 us
    assert (ph["encode_patches"]["launches"], ph["encode_patches"]["blocked_ms"]) == (0.5, 0.0)
    assert ph["encode_patches"]["launch_ms"] == close(0.001)
    assert ph["backward"]["launches"] == 1.0 and ph["backward"]["launch_ms"] == close(0.042)
    assert ph["backward"]["blocked_ms"] == close(0.04) and ph["forward"]["launches"] == 0.0
    text = format_summary(s)
    assert "aten::nonzero in forward" in text and text.splitlines()[3].startswith("forward")
    assert text.splitlines()[1].startswith("GPU work a step 0.1 ms, 0.0 ms of it after the last phase")
    assert text.splitlines()[2].split()[-5:] == ["launches", "launch", "ms", "blocked", "ms"]
    backward_row = next(r for r in text.splitlines() if r.startswith("backward")).split()
    assert backward_row[-3:] == ["1", "0.0", "0.0"]  # per step, in ms: 0.042 and 0.040
    assert timeline_summary({"traceEvents": []}) == {}


@pytest.mark.extended
def test_a_nonfinite_step_is_skipped_on_the_device_and_a_run_of_them_aborts(ray_local, shards, tmp_path,
                                                                            monkeypatch):
    from fovea.platform.train.trainer import fit

    common = ("training.log_every=2", "eval.every_steps=0", "tracking.enabled=false", "cluster.max_failures=0",
              "training.max_nonfinite_steps=3")
    # rank 1's loss is NaN at step 3: its NaN gradient reaches rank 0 through DDP's all-reduce,
    # both skip the update, and the run goes on with finite figures
    monkeypatch.setenv("FOVEA_NAN_INJECT", "steps=3,rank=1")
    fit(tiny_cfg(tmp_path, shards, "one-nan", "training.max_steps=6", *common))
    rows = read_metrics(tmp_path, "one-nan")
    assert rows[0]["step"] == 2 and rows[-1]["step"] == 6  # (and a log at each checkpoint)
    assert [r["nonfinite_skipped"] for r in rows] == [0] + [1] * (len(rows) - 1)
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    # three in a row (steps 2..4, across two log windows) abort the run when the window is read
    monkeypatch.setenv("FOVEA_NAN_INJECT", "steps=2-4,rank=0")
    with pytest.raises(Exception, match="3 non-finite steps in a row by step 4"):
        fit(tiny_cfg(tmp_path, shards, "nan-run", "training.max_steps=8", *common, "tracking.enabled=true"))
    assert [r["step"] for r in read_metrics(tmp_path, "nan-run")] == [2]
    # the aborted run is marked FAILED in MLflow, not left RUNNING
    from mlflow.tracking import MlflowClient

    run_id = (tmp_path / "ray" / "nan-run" / "mlflow_run_id").read_text().strip()
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).info.status == "FAILED"


@pytest.mark.extended
@pytest.mark.timeout(300)  # a rank left in a collective would hang the run: fail instead
def test_a_cuda_oom_on_one_rank_drops_the_window_on_both(ray_local, shards, tmp_path, monkeypatch):
    """DESIGN.md 4.5: rank 1 runs out of memory in the backward of step 3's last micro-batch, after
    DDP has all-reduced some buckets (tiny buckets; text batches, so DDP also looks for unused
    parameters). Both ranks agree (platform/train/oom.py), drop the same window without an
    optimizer or scheduler step, and the run goes on to its last step."""
    from fovea.platform.runs import checkpoints as ck
    from fovea.platform.train.batch_stream import Stream
    from fovea.platform.train.ddp import find_unused
    from fovea.platform.train.optim import lr_multiplier
    from fovea.platform.train.trainer import fit

    monkeypatch.setenv("FOVEA_OOM_INJECT", "step=3,rank=1,micro=1,at=backward")
    cfg = tiny_cfg(tmp_path, shards, "oom", "training.max_steps=5", "training.grad_accum=2",
                   "training.schedule=cosine",
                   "training.checkpoint_every=5", "eval.every_steps=0", "tracking.enabled=false",
                   "cluster.max_failures=0", "cluster.ddp_bucket_mb=0.05")
    assert find_unused(cfg)
    fit(cfg)
    rows = read_metrics(tmp_path, "oom")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["oom_skipped"] for r in rows] == [0, 0, 1, 1, 1]  # the windows dropped, the same on both ranks
    lr = lr_multiplier("cosine", 5, cfg.training.warmup_ratio)  # the scheduler did not step on the dropped window
    assert [r["lr_connector"] for r in rows] == pytest.approx([cfg.training.lr_connector * lr(s) for s in range(1, 6)])
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    # each rank read 6 windows of 2 batches for its 5 steps: both dropped the same third window
    state = ck.read_train_state(ck.latest_checkpoint(tmp_path / "ray" / "oom"))
    assert state["step"] == 5
    for rank in (0, 1):
        stream = Stream(cfg, rank, 2)
        for _ in range(6 * 2):
            stream.next()
        assert tuple(state["data_positions"][rank]) == stream.position(), rank


@pytest.mark.extended
def test_stage2_starts_from_stage1_best_on_a_three_source_mixture(ray_local, shards, tmp_path, tokenizer):
    """Stage 2 from stage 1's best checkpoint, on a data.mixture of three sources (images repeated
    x 4, short clips, 4-frame clips) with the text interleave: with every LR at 0 it keeps stage
    1's weights exactly, and mix/<source>/samples and /epoch reach MLflow, adding up to
    samples_seen in every log window."""
    from mlflow.tracking import MlflowClient
    from mixture_shards import write_source
    from safetensors.torch import load_file

    from fovea.platform.train.ddp import find_unused
    from fovea.platform.train.trainer import fit

    # no text-only batches: every step uses every parameter, so DDP skips its unused-parameter search
    s1_cfg = tiny_cfg(tmp_path, shards, "s1", "training.max_steps=4", "training.checkpoint_every=2",
                      "eval.every_steps=2", "tracking.enabled=false", "data.text_ratio=0")
    assert not find_unused(s1_cfg) and find_unused(tiny_cfg(tmp_path, shards, "x"))
    s1 = fit(s1_cfg)

    write_source(tmp_path / "images", 6, 3, lambda i: 1, tokenizer)
    write_source(tmp_path / "clips", 24, 6, lambda i: 2 + i % 2, tokenizer)
    write_source(tmp_path / "long", 6, 3, lambda i: 4, tokenizer)
    write_source(tmp_path / "talk", 12, 6, None, tokenizer, text=True)

    def src(name, w, extra=""):
        return f"{name}: {{shards: ['{tmp_path}/{name}/train-*.tar'], weight: {w}{extra}}}"

    mixture = "{" + ", ".join([src("images", 0.4, ", replicate_image_frames: 4"), src("clips", 0.4),
                               src("long", 0.2)]) + "}"
    s2_cfg = load_config("tiny", [
        "name=s2", f"runs_dir={tmp_path}", "data.train_shards=[]", f"data.mixture={mixture}",
        f"data.text_shards=['{tmp_path}/talk/train-*.tar']", "data.text_ratio=0.3", "training.stage=2",
        f"training.init_from={tmp_path / 'ray' / 's1'}", "training.lr_connector=0", "training.lr_dino=0",
        "training.lr_llm=0", "cluster.num_workers=1", "training.max_steps=8", "training.log_every=4",
        "training.checkpoint_every=8", "training.diagnostics_every=100"])
    s2 = fit(s2_cfg)
    w1 = load_file(str(next((s1.best_checkpoint / "model").glob("*.safetensors"))))
    w2 = load_file(str(next((s2.latest_checkpoint / "model").glob("*.safetensors"))))
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k

    client = MlflowClient(s2_cfg.tracking_uri())
    metrics = client.get_run(s2.mlflow_run_id).data.metrics
    names = ("images", "clips", "long", "text")
    counts = {n: metrics[f"mix/{n}/samples"] for n in names}
    print("MLflow:", {f"mix/{n}/samples": counts[n] for n in names},
          {f"mix/{n}/epoch": metrics[f"mix/{n}/epoch"] for n in names}, "samples_seen", metrics["samples_seen"])
    assert sum(counts.values()) == metrics["samples_seen"] == 8 * 2  # 1 worker x batch 2 x 8 steps
    assert all(counts[n] > 0 for n in names)
    history = {n: [m.value for m in client.get_metric_history(s2.mlflow_run_id, f"mix/{n}/samples")] for n in names}
    seen = [m.value for m in client.get_metric_history(s2.mlflow_run_id, "samples_seen")]
    assert len(seen) == 2 and [sum(v) for v in zip(*history.values())] == seen
    # the small image source (6 samples = 3 batches a pass) is drawn 4 times of 8: it has restarted
    assert metrics["mix/images/epoch"] >= 1


@pytest.mark.extended
def test_bench_summary_leaves_out_profiled_windows_and_times_whole_epochs(repo_root, tmp_path, model_store):
    """jobs/bench/bench_train.py's summary of a run's metrics.jsonl: windows that hold profiled steps
    are not timed, ``steady_*`` skips windows with compilation or an epoch change, and whole
    epochs after the first give the equal-work time; ``--summarize`` prints the scaling."""
    import re
    import subprocess
    import sys

    from fovea.platform.profiling.throughput import summarize_windows

    def win(step, sps, epoch, compile_s=0.0, **kw):
        return {"step": step, "samples_per_s": sps, "frames_per_s": 7 * sps, "window_s": 10.0,
                "compile_s_max": compile_s, "epoch": epoch, "data_wait_frac": 0.0, "data_wait_frac_max": 0.0,
                "rank_cost_imbalance": 1.0, **kw}

    rows = [win(10, 1, 0, 60.0), win(20, 50, 0, 5.0), win(30, 100, 0), win(40, 100, 0, 2.0),
            win(50, 10, 0), win(60, 100, 1, epoch_s=55.0), win(70, 100, 1, epoch_s=55.0),
            win(80, 100, 2, epoch_s=20.0, epoch_compile_s=2.0)]
    s = summarize_windows(rows, profiled=(45, 46))  # steps 45..46 fall in the window ending at 50
    assert s["profiled_windows_left_out"] == 1 and s["windows"] == 5  # 30, 40, 60, 70, 80
    assert s["samples_per_s"] == pytest.approx(100.0) and s["compile_s"] == 2.0
    assert s["steady_windows"] == 2 and s["steady_samples_per_s"] == pytest.approx(100.0)  # 30 and 70
    assert s["epoch_s"] == {1: 20.0}  # epoch 0 holds start-up and compilation
    assert s["epoch_compile_s"] == {1: 2.0}
    assert "steady_model_tflops" not in s  # only with a FLOP model
    # with one: each steady window at its own frames a sample (here 7), 100 samples/s x 8 TFLOP
    s = summarize_windows(rows, profiled=(45, 46), flops=lambda frames: 1e12 * (1 + frames))
    assert s["steady_model_tflops"] == pytest.approx(800.0)

    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    one.write_text("\n".join(json.dumps(r) for r in rows))
    # the 2-GPU run's windows hold shorter videos: 1.8x the samples, 1.5x the frames
    two.write_text("\n".join(json.dumps({**r, "samples_per_s": 1.8 * r["samples_per_s"],
                                         "frames_per_s": 1.5 * r["frames_per_s"],
                                         **({"epoch_s": r["epoch_s"] / 1.9, "epoch_compile_s": 0.5}
                                            if "epoch_s" in r else {})})
                             for r in rows))
    out = subprocess.run([sys.executable, str(repo_root / "jobs" / "bench" / "bench_train.py"), "--summarize",
                          f"1:{one}", f"2:{two}"], capture_output=True, text=True, check=True).stdout
    assert "scaling 1 -> 2 GPUs: 1.80x samples/s" in out and "1.50x frames/s" in out, out
    # equal work: the FLOP model at 7 frames a sample (1 GPU) and 7 * 1.5 / 1.8 (2 GPUs)
    from fovea.platform.profiling.throughput import TEXT_TOKENS, flops_per_sample
    from transformers import AutoConfig

    from fovea.model.store import resolve_model_ref

    dino = AutoConfig.from_pretrained(resolve_model_ref("facebook/dinov2-small"))
    llm = AutoConfig.from_pretrained(resolve_model_ref("HuggingFaceTB/SmolLM2-135M-Instruct"))
    ratio = 1.8 * flops_per_sample(7 * 1.5 / 1.8, TEXT_TOKENS, dino, llm) / flops_per_sample(7, TEXT_TOKENS, dino, llm)
    assert 1.5 < ratio < 1.8
    assert re.search(rf"1\.50x frames/s, {ratio:.2f}x model FLOP/s", out), (ratio, out)
    assert re.search(r"ref +1 jobs/stage1\.py metrics +- +85\.0 ", out), out  # the batch cap is not in the metrics
    assert "epoch 1 (the same samples): 20.0 s on 1 GPU, 10.5 s on 2: 1.90x" in out, out
    assert "without the 2.0 s and 0.5 s of recompilation: 1.80x" in out, out  # 18 / 10.026
    # an override after the files (argparse's list would take it as a file): the profiled window leaves
    out = subprocess.run([sys.executable, str(repo_root / "jobs" / "bench" / "bench_train.py"), "--summarize",
                          f"1:{one}", "training.profile_steps=[45,46]"], capture_output=True, text=True,
                         check=True).stdout
    assert re.search(r"ref +1 jobs/stage1\.py metrics +- +100\.0 ", out), out
    # two runs on one GPU count (variants): their same windows side by side
    out = subprocess.run([sys.executable, str(repo_root / "jobs" / "bench" / "bench_train.py"), "--summarize",
                          f"1:{one}", f"1:{one}"], capture_output=True, text=True, check=True).stdout
    assert "same windows of the 2 runs (steady in all, the same frames)" in out, out
    assert re.search(r"time / run 1: +1\.000 +1\.000", out), out


def test_bench_rates_whole_epochs_at_the_shard_sets_own_mix(repo_root, tmp_path, model_store):
    """Samples/s over each whole epoch after the first: the set's samples (--epoch-samples, or the
    bench_manifest.json beside --shards) over the epoch's time, and less its compile seconds."""
    import subprocess
    import sys

    from fovea.platform.profiling.throughput import epoch_figures

    assert epoch_figures({"epoch_s": {1: 20.0, 2: 25.0}, "epoch_compile_s": {1: 4.0}}, 2000) == {
        "epoch_samples": 2000, "epoch_samples_per_s": {1: 100.0, 2: 80.0},
        "epoch_samples_per_s_no_compile": {1: 125.0, 2: 80.0}}
    rows = [{"step": 10 * i, "samples_per_s": 100.0, "frames_per_s": 700.0, "window_s": 10.0, "compile_s_max": 0.0,
             "epoch": e, "data_wait_frac": 0.0, "data_wait_frac_max": 0.0, "rank_cost_imbalance": 1.0, **kw}
            for i, (e, kw) in enumerate([(0, {}), (0, {}), (1, {"epoch_s": 30.0}), (1, {"epoch_s": 30.0}),
                                         (2, {"epoch_s": 20.0, "epoch_compile_s": 4.0})], 1)]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in rows))
    bench = [sys.executable, str(repo_root / "jobs" / "bench" / "bench_train.py"), "--summarize", f"1:{metrics}"]
    out = subprocess.run(bench + ["--epoch-samples", "2000"], capture_output=True, text=True, check=True).stdout
    assert "whole epochs: samples/s (less compilation)" in out and "  100.0 (125.0)" in out, out
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "bench_manifest.json").write_text(json.dumps({"samples": 3000, "mean_frames": 7.0}))
    out = subprocess.run(bench + ["--shards", str(tmp_path / "set" / "train-*.tar")], capture_output=True, text=True,
                         check=True).stdout
    assert "  150.0 (187.5)" in out, out
    out = subprocess.run(bench, capture_output=True, text=True, check=True).stdout  # no set named: no epoch rate
    assert out.rstrip().endswith("-"), out
    bad = subprocess.run(bench + ["--epoch-samples", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--epoch-samples 0" in bad.stderr, bad.stderr


def test_bench_matched_windows_pair_the_same_batches(repo_root):
    """jobs/bench/bench_train.py's equal-work pairs: 1-GPU window (2p, 2s] against 2-GPU window (p, s],
    steady ones only; scaling = the 2-GPU frames/s over the 1-GPU frames/s of the pairs."""
    from fovea.platform.profiling.throughput import loader_workers_per_gpu, matched_windows

    assert (loader_workers_per_gpu(16, 1), loader_workers_per_gpu(16, 2)) == (16, 8)  # one window: 16 batches
    with pytest.raises(ValueError, match="--readers 16: must be a multiple of the GPU count 3"):
        loader_workers_per_gpu(16, 3)
    w = lambda step, s, frames, steady=True: {"step": step, "s": s, "samples": frames / 7, "frames": frames,  # noqa: E731
                                              "steady": steady}
    one = [w(16, 90.0, 4000, False), w(32, 10.0, 3000), w(48, 12.0, 3600), w(64, 9.0, 2700)]
    two = [w(8, 60.0, 4000, False), w(16, 5.5, 3000), w(24, 6.5, 3600, False), w(32, 4.6, 2790)]
    m = matched_windows(one, two)
    assert m["pairs"] == 2  # (16, 32] / (8, 16] and (48, 64] / (24, 32]; the rest are not steady
    assert (m["one_s"], m["two_s"]) == (19.0, 10.1)
    assert m["frames_ratio_min"] == 1.0 and m["frames_ratio_max"] == pytest.approx(2790 / 2700)
    assert m["scaling"] == pytest.approx((5790 / 10.1) / (5700 / 19.0))
    assert matched_windows(one, [w(10, 5.0, 3000)]) is None  # windows of other lengths: no pair


def test_bench_same_windows_compare_variants_on_the_same_batches():
    """jobs/bench/bench_train.py --summarize with several 1-GPU runs: the windows of the same steps
    that are steady in every run and hold the same frames, seconds run by run, totals over run 1's.
    A window that recompiled in one run, or that read other batches, is left out of all."""
    from fovea.platform.profiling.throughput import same_window_lines, same_windows

    w = lambda step, s, frames, steady=True: {"step": step, "s": s, "samples": frames / 7, "frames": frames,  # noqa: E731
                                              "steady": steady}
    a = [w(16, 90.0, 4000, False), w(32, 10.0, 3000), w(48, 12.0, 3600), w(64, 9.0, 2700), w(80, 8.0, 2500)]
    b = [w(16, 80.0, 4000, False), w(32, 9.0, 3000), w(48, 15.0, 3600, False), w(64, 8.1, 2700), w(80, 7.0, 2600)]
    m = same_windows([a, b])
    assert m["steps"] == ["17-32", "49-64"]  # 33-48 recompiled in b, 65-80 read other batches
    assert m["seconds"] == [[10.0, 9.0], [9.0, 8.1]] and m["totals"] == [19.0, 17.1]
    assert m["time_ratio"] == [1.0, pytest.approx(0.9)]
    lines = same_window_lines([{"log_windows": a}, {"log_windows": b}])
    assert "steps 17-32, 49-64" in lines[0] and lines[-1].split()[-2:] == ["1.000", "0.900"], lines
    assert same_windows([a, [w(10, 5.0, 3000)]]) is None


@pytest.mark.extended
def test_bench_memory_counts_saved_activations_by_phase(repo_root, shards, tmp_path):
    """jobs/bench/bench_memory.py: the bytes autograd keeps for backward, by phase, on one real batch;
    DINOv2 checkpointing shrinks the patch pass to its blocks' inputs, full checkpointing the LLM
    passes to their layers' inputs; compiled blocks (--compile) are counted too, and keep no more
    than the eager ones."""
    import subprocess
    import sys

    saved = {}
    for ckpt in ("false", "dino", "true", "false --compile"):
        ckpt, *flags = ckpt.split()
        out = tmp_path / f"{ckpt}{''.join(flags)}.json"
        subprocess.run([sys.executable, str(repo_root / "jobs" / "bench" / "bench_memory.py"), "--shards", shards["train"],
                        "--budget", "40", "--json", str(out), *flags, "model.llm=fovea/tiny-llama",
                        "model.dino=fovea/tiny-dinov2", f"model.gradient_checkpointing={ckpt}"],
                       check=True, capture_output=True, text=True)
        r = json.loads(out.read_text())
        assert r["frames"] > 0 and r["budget_units"] >= r["frames"]
        saved[ckpt + "".join(flags)] = r["saved_bytes"]
    assert {"DINOv2 patch pass", "query pass 1", "query pass 2", "LLM pass 1", "LLM pass 2",
            "LM head + loss"} <= set(saved["false"])
    assert all(v > 0 for v in saved["false"].values())
    assert saved["dino"]["DINOv2 patch pass"] < 0.5 * saved["false"]["DINOv2 patch pass"]
    assert saved["dino"]["LLM pass 2"] == saved["false"]["LLM pass 2"]
    assert saved["true"]["LLM pass 2"] < 0.5 * saved["dino"]["LLM pass 2"]
    assert saved["true"]["DINOv2 patch pass"] == saved["dino"]["DINOv2 patch pass"]
    compiled = saved["false--compile"]  # the same batch, the blocks' saved tensors chosen by AOTAutograd
    assert set(compiled) == set(saved["false"]) and all(v > 0 for v in compiled.values())
    for phase in ("DINOv2 patch pass", "LLM pass 2"):
        assert compiled[phase] <= saved["false"][phase], phase
