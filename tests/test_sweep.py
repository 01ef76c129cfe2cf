"""Sweeps: search spaces as data, trial plans, the results table/plot, and a real Ray Tune sweep
of tiny models on CPU that is killed after its first trial and resumed (jobs/sweep.py)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fovea.platform.sweep import tune as sw
from fovea.platform.sweep import plan as swp
from fovea.platform.sweep import results as swr
from fovea.platform.config import ConfigError, RunConfig
from fovea.platform.sweep.spaces import load_space
from fovea.search_spaces.spaces import SpaceError, available_spaces

# -- search spaces ---------------------------------------------------------------------------


def test_every_space_loads_and_validates():
    assert {"ablations", "lr", "scaling", "scaling_flops"} <= set(available_spaces())
    abl = {e.name: e.overrides for e in load_space("ablations").experiments}
    assert abl == {
        "baseline": {},
        "A1": {"model.deep_query": False},
        "A2": {"model.query_dim": 192},
        "A3": {"model.query_bias": True},
        "A4": {"model.query_init_std": 0.02},
        "A5": {"training.lr_dino": 0.0},
        "A6": {"model.coarse_only": True},
        "A7": {"model.deep_query": False, "model.coarse_only": True},
    }
    # DESIGN.md 5.1 baseline: cosine, 5 % warm-up, connector 1e-4, backbones 1e-5, 300K samples.
    common = load_space("ablations").common
    assert common["training.lr_connector"] == 1e-4 and common["training.schedule"] == "cosine"
    lr = load_space("lr")
    ratios = {e.name: e.overrides["training.lr_connector"] / lr.common["training.lr_dino"] for e in lr.experiments}
    assert ratios == pytest.approx({"LR1": 10, "LR2": 100, "LR3": 3, "LR4": 1})
    assert lr.common["training.lr_dino"] == lr.common["training.lr_llm"] == 1e-5


def test_scaling_grid_follows_the_spec_rules():
    from fovea.model.store import DINO_CONFIGS

    llm_params = {"135M": 134.5, "360M": 361.8, "1.7B": 1711.0}
    sp = load_space("scaling")
    assert len(sp.experiments) == 6
    base = {}
    for e in sp.experiments:
        o = e.overrides
        size, dino = e.name.split("-")
        assert o["model.dino"] == f"facebook/dinov2-{dino}"
        assert o["model.query_dim"] == DINO_CONFIGS[o["model.dino"]]["hidden_size"]  # Dq = DINO width
        assert o.get("model.gradient_checkpointing", False) is (size == "1.7B")
        assert o["data.batch_size"] * o["training.grad_accum"] == 32  # equal samples -> equal steps
        assert "training.total_samples" not in o  # equal sample budgets: one value for the grid
        assert o["training.lr_dino"] == o["training.lr_llm"] == pytest.approx(o["training.lr_connector"] / 100)
        if size == "135M":
            base[dino] = o["training.lr_connector"]
    assert base == {"small": 1e-3, "base": 1e-3}
    for e in sp.experiments:
        size = e.name.split("-")[0]
        rule = 1e-3 / math.sqrt(llm_params[size] / llm_params["135M"])
        lr = e.overrides["training.lr_connector"]
        if size == "1.7B":
            assert lr == pytest.approx(rule, rel=0.1)  # 2.8e-4 by the rule, the reference's 3e-4
        if size == "360M":
            assert lr == 7e-4 and lr == pytest.approx(rule, rel=0.15)  # the reference's measured 7e-4; rule 6.1e-4
    flops = load_space("scaling_flops")
    samples = {e.name: e.overrides["training.total_samples"] for e in flops.experiments}
    assert samples["135M-C1"] == 64688 and samples["360M-C4"] == 701920 and samples["1.7B-C3"] == 140022


def test_a_typo_fails_naming_the_key_and_the_file(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("space: mine\nexperiments:\n  X1:\n    overrides: {model.deep_qery: false}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model.deep_qery' in .*mine.yaml \(experiment X1\)"):
        load_space(bad)
    bad.write_text("space: mine\ncommon: {trainng.lr_dino: 0}\nexperiments:\n  X1: {overrides: {}}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'trainng.lr_dino' in .*mine.yaml \(common\)"):
        load_space(bad)
    bad.write_text("space: mine\nexperiments:\n  X1:\n    overrides: {model.query_dim: wide}\n")
    with pytest.raises(ConfigError, match=r"bad value for 'model.query_dim' in .*mine.yaml"):
        load_space(bad)
    with pytest.raises(SpaceError, match="unknown experiment"):
        load_space("ablations").select(["A9"])


def test_list_prints_every_experiment_with_its_overrides(repo_root):
    out = subprocess.run([sys.executable, str(repo_root / "jobs" / "sweep.py"), "--list"], capture_output=True,
                         text=True, check=True, cwd=repo_root).stdout
    for space in ("ablations", "lr", "scaling"):
        for e in load_space(space).experiments:
            line = next(ln for ln in out.splitlines() if ln.strip().startswith(e.name + " "))
            for k in e.overrides:
                assert k in line, (e.name, k)
    assert "model.coarse_only=true" in out and "training.lr_connector=0.001" in out


def test_every_ablation_builds_and_trains_one_step(model_store):
    """Each ablation's model.* overrides reach the model: it builds, takes a step in its mode."""
    import torch

    from fovea.model.build import build_model
    from fovea.pipelines.batch import dummy_batch, model_inputs
    from fovea.platform.config import load_config
    from fovea.platform.train.optim import param_groups

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops on a shared 2-core machine
    try:
        batch = dummy_batch([2, 1], [9, 6], T=2, S=10)
        for e in load_space("ablations").experiments:
            cfg = load_config("tiny", [f"{k}={v}" for k, v in e.overrides.items()])
            torch.manual_seed(0)
            model = build_model(cfg.model)
            mode = "coarse_only" if cfg.model.coarse_only else "coarse_fine"
            out = model(**model_inputs(batch), mode=mode, compute_coarse=True)
            out["loss"].backward()
            assert math.isfinite(out["loss"].item()), e.name
            assert model.q_static.grad is not None and model.dino_to_llm.weight.grad is not None, e.name
            enc = model.encoder
            assert enc.deep_query is cfg.model.deep_query, e.name
            assert model.q_static.shape[-1] == (192 if e.name == "A2" else enc.dim), e.name
            assert (enc.query_input_proj.bias is not None) is (e.name == "A3"), e.name
            assert (model.q_init.detach().std().item() < 0.1) is (e.name == "A4"), e.name
            # A5 is the reference's lr_dino = 0: DINOv2 trainable, its group kept at LR 0
            assert any(p.requires_grad for p in enc.dino.parameters()), e.name
            groups = {g["name"]: g["lr"] for g in param_groups(model, cfg.training)}
            assert (groups["dino"] == 0) is (e.name == "A5"), e.name
    finally:
        torch.set_num_threads(n_threads)


def test_a5_lr_dino_zero_keeps_dinov2_in_the_clip_norm(model_store):
    """A5 as the reference runs it (lr_dino = 0, DESIGN.md 4.1, 5.1): DINOv2's weights do not
    move, but its gradients are computed and count in the global clip norm, so with clipping
    active the other groups' gradients are scaled by another factor than with a frozen DINOv2."""
    import torch

    from fovea.model.build import build_model
    from fovea.pipelines.batch import dummy_batch, model_inputs
    from fovea.platform.config import load_config
    from fovea.platform.train.optim import build_optimizer

    a5 = {e.name: e.overrides for e in load_space("ablations").experiments}["A5"]
    batch = model_inputs(dummy_batch([2, 1], [9, 6], T=2, S=10))
    moved, norms = {}, {}
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops on a shared 2-core machine
    try:
        for name, ov in (("A5", [f"{k}={v}" for k, v in a5.items()]), ("frozen", ["model.freeze_dino=true"])):
            cfg = load_config("tiny", [*ov, "training.grad_clip=1e-3"])  # clipping active
            torch.manual_seed(0)
            model = build_model(cfg.model)
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            opt = build_optimizer(model, cfg.training)
            model(**batch)["loss"].backward()
            norms[name] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.training.grad_clip))
            opt.step()
            moved[name] = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
            if name == "A5":
                assert all(p.grad is not None for p in model.encoder.dino.parameters() if p.requires_grad)
    finally:
        torch.set_num_threads(n_threads)
    assert not any(n.startswith("encoder.dino.") for n in moved["A5"] | moved["frozen"])
    assert "dino_to_llm.weight" in moved["A5"] and "dino_to_llm.weight" in moved["frozen"]
    assert norms["A5"] > norms["frozen"]  # DINOv2's gradients are in A5's norm


# -- plans -----------------------------------------------------------------------------------


def test_plan_applies_overrides_in_order_and_sizes_the_trials(tmp_path):
    plan = swp.make_plan("ablations", only=["baseline", "A6"], base_config="tiny", name="p1",
                         sets=[f"runs_dir={tmp_path}", "model.coarse_only=false", "training.lr_dino=5e-4",
                               "eval.every_steps=7"],
                         samples=48, cluster_cpus=2, cluster_gpus=0)
    cfgs = {k: RunConfig.model_validate(v) for k, v in plan["configs"].items()}
    assert list(cfgs) == ["baseline", "A6"]
    assert cfgs["A6"].model.coarse_only is True  # the experiment's own override beats --set
    assert cfgs["baseline"].model.coarse_only is False
    for c in cfgs.values():
        assert c.training.lr_dino == 5e-4  # --set beats the space's common keys
        assert c.eval.every_steps == 7
        assert c.training.schedule == "cosine"  # common beats the base file (tiny: constant)
        assert c.training.total_samples == 48  # --samples
        assert c.tracking.experiment == "sweep-ablations"
        assert c.cluster.use_gpu is False
    assert cfgs["A6"].name == "p1-A6" and plan["tune_dir"] == str(tmp_path / "tune" / "p1")
    # tiny: 2 workers x 1 CPU + the trial driver's 1 CPU > 2 CPUs: one trial at a time.
    assert plan["max_concurrent_trials"] == 1

    gpu = swp.make_plan("ablations", only=["baseline", "A6"], name="p2", gpus_per_trial=1,
                        sets=[f"runs_dir={tmp_path}"], cluster_cpus=32, cluster_gpus=2)
    assert gpu["max_concurrent_trials"] == 2 and gpu["use_gpu"]
    for c in gpu["configs"].values():
        assert c["cluster"]["num_workers"] == 1 and c["cluster"]["use_gpu"] is True
    two = swp.make_plan("ablations", only=["baseline", "A6"], name="p3", gpus_per_trial=2,
                        sets=[f"runs_dir={tmp_path}"], cluster_cpus=32, cluster_gpus=2)
    assert two["max_concurrent_trials"] == 1
    with pytest.raises(ConfigError, match="unknown key 'trainng.x'"):
        swp.make_plan("lr", sets=["trainng.x=1"], cluster_cpus=2, cluster_gpus=0)

    scaling = swp.make_plan("scaling", samples=100_000, name="p4", sets=[f"runs_dir={tmp_path}"],
                            cluster_cpus=2, cluster_gpus=0)
    assert {c["training"]["total_samples"] for c in scaling["configs"].values()} == {100_000}


def test_asha_scheduler_uses_val_loss_and_steps(tmp_path):
    plan = swp.make_plan("lr", base_config="tiny", name="a", scheduler="asha",
                         sets=[f"runs_dir={tmp_path}", "training.max_steps=40", "data.val_shards=['x']",
                               "eval.every_steps=10"], cluster_cpus=2, cluster_gpus=0)
    s = sw._scheduler(plan)
    assert s._metric == "val_loss" and s._mode == "min" and s._time_attr == "step"
    assert s._max_t == 40
    assert sorted(t for t, _ in s._brackets[0]._rungs) == [10, 20, 40]  # grace = eval.every_steps, rf 2


# -- results table and plot -------------------------------------------------------------------


def test_results_table_and_plot_from_mlflow_children(tmp_path):
    from mlflow.tracking import MlflowClient

    from fovea.platform.runs.tracking import Tracker

    plan = swp.make_plan("ablations", only=["baseline", "A6", "A7"], base_config="tiny", name="t",
                         sets=[f"runs_dir={tmp_path}"], cluster_cpus=2, cluster_gpus=0)
    uri = plan["tracking_uri"]
    plan["parent_run_id"] = sw.open_parent(plan)
    for exp, (fine, coarse) in {"baseline": (1.30, 1.35), "A6": (None, 1.40)}.items():
        t = Tracker(uri, plan["mlflow_experiment"], run_name=f"t-{exp}",
                    tags={"mlflow.parentRunId": plan["parent_run_id"], "experiment_id": exp,
                          "trial_start": "2026-01-01T10:00:00", "trial_end": "2026-01-01T10:05:00"})
        for step in (1, 2):
            m = {"loss": coarse if fine is None else fine, "loss_coarse": coarse + 0.1 / step,
                 "val_loss": coarse + 0.05 * step, "samples_per_s": 10.0 * step, "step": step}
            if fine is not None:
                m["loss_fine"] = fine + 0.1 / step
            t.log_metrics(m, step)
        t.finish()
    rows = swr.collect_results(plan, {"baseline": "TERMINATED", "A6": "TERMINATED", "A7": "PENDING"})
    by = {r["experiment"]: r for r in rows}
    assert [r["experiment"] for r in rows] == ["baseline", "A6", "A7"]
    assert by["baseline"]["loss_fine"] == pytest.approx(1.35) and by["baseline"]["loss_coarse"] == pytest.approx(1.40)
    assert by["baseline"]["loss_ratio"] == pytest.approx(1.35 / 1.40)
    assert by["baseline"]["best_val_loss"] == pytest.approx(1.40) and by["baseline"]["samples_per_s"] == 15.0
    assert by["A6"]["loss_fine"] is None and by["A6"]["loss_ratio"] is None
    assert by["A6"]["overrides"] == "model.coarse_only=true" and by["A6"]["wall_s"] == 300
    assert by["A7"]["status"] == "NOT_STARTED"
    assert swr.max_overlap(rows) == 2
    files = swr.write_results(rows, tmp_path / "res", plan, swr.ui_links("1", ["a", "b"], "t"))
    md = files["md"].read_text()
    assert "| baseline | (none) | FINISHED | 2 | 1.3000 | 1.3500 | 1.4000 |" in md
    assert "| A6 | model.coarse_only=true |" in md and "compare-runs?runs=" in md
    header = files["csv"].read_text().splitlines()[0]
    assert header.split(",")[:8] == ["experiment", "overrides", "status", "steps", "loss", "loss_fine",
                                     "loss_coarse", "loss_ratio"]
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files["png"].stat().st_size > 10_000
    # The parent also gets the loss overlay of its experiment's training runs (those logging loss_fine).
    assert files["overlay"].name == "loss_overlay.png" and files["overlay"].stat().st_size > 10_000
    assert "viewStateShareKey=fovea-sweep-t" in md and "workflowType=machine_learning" in md
    # The override params reach the child runs (logged by collect_results for any run without them).
    client = MlflowClient(uri)
    assert client.get_run(by["A6"]["run_id"]).data.params["override.model.coarse_only"] == "true"


def test_trial_status_reconciles_mlflow_with_tune(tmp_path):
    """A run MLflow still calls RUNNING is STOPPED when Tune terminated it (the scheduler ended
    the driver mid-fit: the run is marked KILLED at its last logged metric), INTERRUPTED when Tune
    had not finished it, and ERROR whenever Tune says so."""
    from mlflow.tracking import MlflowClient

    from fovea.platform.runs.tracking import Tracker

    plan = swp.make_plan("ablations", only=["baseline", "A6", "A7"], base_config="tiny", name="t",
                         sets=[f"runs_dir={tmp_path}"], cluster_cpus=2, cluster_gpus=0, scheduler="asha")
    plan["parent_run_id"] = sw.open_parent(plan)
    for exp in ("baseline", "A6", "A7"):
        t = Tracker(plan["tracking_uri"], plan["mlflow_experiment"], run_name=f"t-{exp}",
                    tags={"mlflow.parentRunId": plan["parent_run_id"], "experiment_id": exp})
        t.log_metrics({"loss": 2.0, "step": 1}, 1)
        if exp == "A7":
            t.finish()  # FINISHED in MLflow, but Tune saw the trial fail afterwards
    rows = swr.collect_results(plan, {"baseline": "TERMINATED", "A6": "RUNNING", "A7": "ERROR"})
    by = {r["experiment"]: r for r in rows}
    assert [by[e]["status"] for e in ("baseline", "A6", "A7")] == ["STOPPED", "INTERRUPTED", "ERROR"]
    run = MlflowClient(plan["tracking_uri"]).get_run(by["baseline"]["run_id"])
    assert run.info.status == "KILLED" and run.data.tags["stopped_by"] == "asha"
    assert by["baseline"]["trial_end"] == run.data.tags["trial_end"] and by["baseline"]["wall_s"] is not None
    assert by["A6"]["trial_end"] == "" and by["A6"]["wall_s"] is None  # still open: no end time


def test_a_partly_copied_checkpoint_is_not_resumed_from(tmp_path):
    """Found by the kill test below: SIGKILL while Ray persists a checkpoint left files of the
    right names but a truncated train_state.pt, which resume then picked and failed on."""
    import torch

    from fovea.platform.runs import checkpoints as ck

    class Stub(torch.nn.Linear):
        def save_pretrained(self, d):
            Path(d).mkdir(parents=True, exist_ok=True)
            (Path(d) / "model.safetensors").write_bytes(b"w" * 64)

    model = Stub(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for step in (3, 6):
        ck.write_checkpoint(tmp_path / f"checkpoint_{step}", model, opt, sched, {"step": step}, {"step": step})
    assert ck.latest_checkpoint(tmp_path).name == "checkpoint_6"
    state = tmp_path / "checkpoint_6" / ck.TRAIN_STATE
    state.write_bytes(state.read_bytes()[:100])  # the copy was cut short
    assert ck.latest_checkpoint(tmp_path).name == "checkpoint_3"
    (tmp_path / "checkpoint_3" / ck.META).write_text('{"step": 3, "fi')  # meta itself cut short
    assert ck.latest_checkpoint(tmp_path) is None


# -- a real sweep: killed after its first trial, then resumed ---------------------------------


def _sweep_cmd(repo_root: Path, *args: str) -> list[str]:
    return [sys.executable, str(repo_root / "jobs" / "sweep.py"), *args]


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL everything in the session we started (CLI, Ray head processes, trial workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    # Ray processes that left the process group but stayed in our session.
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, sid = (int(x) for x in line.split())
        if sid == proc.pid and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _steps(runs: Path, name: str) -> list[int]:
    f = runs / "ray" / name / "metrics.jsonl"
    return [json.loads(x)["step"] for x in f.read_text().splitlines()] if f.exists() else []


@pytest.mark.slow
def test_sweep_killed_after_first_trial_resumes_without_rerunning_it(tmp_path, repo_root, tokenizer, model_store):
    from mlflow.tracking import MlflowClient

    from colour_shards import write_colour_shards

    from fovea.platform.runs.checkpoints import latest_checkpoint

    # Run from a project directory with relative paths, as a user does: Tune runs each trial in
    # a working directory of its own, so the sweep must resolve them first (platform/paths.py).
    project = tmp_path / "project"
    write_colour_shards(project / "data", tokenizer, n_train=32, n_val=8, n_text=8)
    runs = project / "runs"
    sweep_args = [
        "--space", "ablations", "--only", "baseline,A6", "--base-config", "tiny", "--name", "e2e",
        "--runs-dir", "runs", "--samples", "64",
        "--set", "data.train_shards=['data/colours/train-*.tar']", "--set", "data.val_shards=['data/colours/val-*.tar']",
        "--set", "data.text_shards=['data/text/train-*.tar']", "--set", "data.shuffle_buffer=0",
        "--set", "training.max_steps=6", "--set", "training.checkpoint_every=3",
        "--set", "eval.every_steps=3", "--set", "eval.max_samples=4", "--set", "eval.caption_samples=0",
        "--set", "cluster.num_workers=1", "--set", "cluster.cpus_per_worker=0.5", "--set", "cluster.max_failures=0",
    ]
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}  # save Tune's state often: a shorter poll
    tune_dir = runs / "tune" / "e2e"
    log1 = tmp_path / "first.log"
    with open(log1, "w") as f:
        proc = subprocess.Popen(_sweep_cmd(repo_root, *sweep_args), cwd=project, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while sw.trial_states(tune_dir).get("baseline") != "TERMINATED":
            assert proc.poll() is None, f"sweep ended before it was interrupted:\n{log1.read_text()[-4000:]}"
            assert time.time() < deadline, f"first trial did not finish:\n{log1.read_text()[-4000:]}"
            time.sleep(0.5)
        # Let the second trial write its first checkpoint (step 3), then pull the plug. A short
        # poll: with the controller polling every 0.5 s (conftest.py) the trial goes on at once.
        deadline = time.time() + 90
        while latest_checkpoint(runs / "ray" / "e2e-A6") is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
    finally:
        _kill_session(proc)  # the interruption: no clean shutdown of anything
    states = sw.trial_states(tune_dir)
    assert states.get("A6") != "TERMINATED", states
    assert _steps(runs, "e2e-baseline") == [1, 2, 3, 4, 5, 6]
    a6_before = _steps(runs, "e2e-A6")
    a6_ckpt = latest_checkpoint(runs / "ray" / "e2e-A6")
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    parent_id = (tune_dir / "parent_run_id").read_text().strip()
    base_run = {r.data.tags["experiment_id"]: r for r in swr.child_runs(client, parent_id)}["baseline"]
    assert base_run.info.status == "FINISHED"

    t0 = time.time()
    out = subprocess.run(_sweep_cmd(repo_root, "--resume", "--name", "e2e", "--runs-dir", "runs"),
                         cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    print(f"resume took {time.time() - t0:.0f}s; A6 had steps {a6_before} and checkpoint {a6_ckpt} at the kill")

    # The finished trial was not rerun: no second set of steps, same MLflow run, untouched.
    assert _steps(runs, "e2e-baseline") == [1, 2, 3, 4, 5, 6]
    a6 = _steps(runs, "e2e-A6")
    assert a6[-1] == 6 and a6[:len(a6_before)] == a6_before and set(a6) == {1, 2, 3, 4, 5, 6}
    if a6_ckpt is not None:  # killed after A6's step-3 checkpoint: Train resumed from it, not from 0
        assert a6.count(1) == 1 and a6.count(3) == 1, a6
    children = {r.data.tags["experiment_id"]: r for r in swr.child_runs(client, parent_id)}
    assert set(children) == {"baseline", "A6"}
    assert children["baseline"].info.run_id == base_run.info.run_id
    assert children["baseline"].data.tags["trial_attempt_start"] == base_run.data.tags["trial_attempt_start"]
    assert len(client.get_metric_history(base_run.info.run_id, "loss_fine")) == 6
    for exp, run in children.items():
        assert run.info.status == "FINISHED", exp
        assert run.info.run_name == f"e2e-{exp}" and run.data.tags["sweep"] == "e2e"
        assert {"loss", "loss_coarse", "val_loss", "samples_per_s"} <= set(run.data.metrics), exp
        assert run.data.tags["trial_start"] <= run.data.tags["trial_end"]
    # Both losses for the fine+coarse model; A6 trains coarse-only, so it has no fine pass.
    assert {"loss_fine", "loss_ratio"} <= set(children["baseline"].data.metrics)
    assert children["A6"].data.params["override.model.coarse_only"] == "true"
    assert children["A6"].data.tags["mode"] == "coarse_only"

    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_role"] == "parent"
    arts = {a.path for a in client.list_artifacts(parent_id, "results")}
    assert arts == {"results/results.csv", "results/results.md", "results/results.png", "results/loss_overlay.png"}
    md = (tune_dir / "results" / "results.md").read_text()
    assert "| baseline | (none) | FINISHED | 6 |" in md and "| A6 | model.coarse_only=true | FINISHED | 6 |" in md
    assert "| baseline | (none) | FINISHED | 6 |" in out.stdout  # the table is printed
    assert "resuming sweep e2e" in out.stdout
