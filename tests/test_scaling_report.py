"""The scaling report (jobs/scaling_report.py): synthetic sweeps drawn from a known law
L(N, D) = E + A / N^alpha + B / D^beta, logged as child runs of a sweep's parent run in a real
MLflow SQLite store, read back through the FLOP model and the model store's tiny LLMs; the fit
recovers the exponents within its bootstrap intervals; partial sweeps name what is missing and
say when the points cannot support a fit."""

from __future__ import annotations

import json
import runpy

import numpy as np
import pytest

from fovea.platform.sweep import plan as swp
from fovea.platform.sweep import scaling_fit as sf
from fovea.platform.sweep import tune as sw
from fovea.platform.sweep.scaling import scaling_command
from fovea.platform.sweep.scaling_analysis import build_report
from fovea.platform.sweep.scaling_runs import llm_param_counts, sample_flops

TRUE = sf.Law(E=1.5, A=30.0, B=20.0, alpha=0.4, beta=0.5)
FRAMES = 3.0


def log_sweep(tmp_path, law: sf.Law, *, name="synth", logged=None, sets=(), noise=0.004, flat=(), finish=True,
              seed=0) -> dict:
    """The scaling_tiny plan with a parent run and a child run for each trial in ``logged`` (all by
    default): val_loss every 4 steps (16 samples) drawn from ``law`` with log-normal noise
    (``flat``: trials whose curve stays level), and the throughput metrics the FLOPs are read from."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from fovea.platform.config import RunConfig

    plan = swp.make_plan("scaling_tiny", base_config="tiny", name=name, sets=[f"runs_dir={tmp_path}", *sets],
                         cluster_cpus=2, cluster_gpus=0)
    plan["parent_run_id"] = sw.open_parent(plan)
    swp.save_plan(plan)
    client = MlflowClient(plan["tracking_uri"])
    experiment_id = client.get_run(plan["parent_run_id"]).info.experiment_id
    rng = np.random.default_rng(seed)
    for exp in logged or plan["experiments"]:
        cfg = RunConfig.model_validate(plan["configs"][exp])
        n = llm_param_counts(cfg.model.llm)[1]
        run = client.create_run(experiment_id, run_name=f"{name}-{exp}", tags={
            "mlflow.parentRunId": plan["parent_run_id"], "experiment_id": exp, "sweep": name})
        metrics = []
        for step in range(4, cfg.training.total_samples // 4 + 1, 4):
            d = 4.0 * step
            loss = 3.0 if exp in flat else law.loss(n, d) * np.exp(rng.normal(0, noise))
            metrics += [Metric(k, float(v), 0, step) for k, v in {
                "val_loss": loss, "samples_seen": d, "samples_per_s": 10.0, "frames_per_s": 10.0 * FRAMES,
                "window_s": 1.6}.items()]
        params = [Param(k, str(v)) for k, v in cfg.flat().items()]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        if finish:
            client.set_terminated(run.info.run_id, "FINISHED")
    return plan


def test_the_fit_recovers_known_exponents_within_its_intervals(tmp_path, model_store, capsys):
    plan = log_sweep(tmp_path, TRUE)
    assert scaling_command("synth", runs_dir=str(tmp_path), draws=60) == 0
    out = capsys.readouterr().out
    rep = json.loads((tmp_path / "tune" / "synth" / "scaling" / "scaling.json").read_text())
    fit, ci = rep["fit"]["values"], rep["intervals"]
    for k in ("alpha", "beta", "a = beta/(alpha+beta)"):
        lo, hi = ci[k]
        assert lo <= TRUE.values()[k] <= hi, (k, fit[k], ci[k])
        assert hi - lo < TRUE.values()[k], (k, ci[k])  # narrower than the value: it says something
    assert fit["E"] == pytest.approx(TRUE.E, rel=0.05)
    assert rep["fit"]["mode"] == "curve" and rep["fit"]["points"] > 60 and not rep["fit"]["at_bound"]
    # FLOPs come from the FLOP model at the logged frames a sample: one budget holds s, m and l.
    run = {r["experiment"]: r for r in rep["runs"]}
    assert run["s-C1"]["flops_per_sample"] == pytest.approx(sample_flops("fovea/tiny-llama-s", "fovea/tiny-dinov2",
                                                                        FRAMES))
    assert len(rep["iso_flop"]) == 3 and all(len(i["n"]) == 3 for i in rep["iso_flop"])
    # N_opt grows with C under this law (beta > alpha: a > 1/2), and the law gives every budget one
    assert [r["n_law"] for r in rep["optimal"][:3]] == sorted(r["n_law"] for r in rep["optimal"][:3])
    assert "### Fitted law" in out and "| alpha | " in out and "missing:" not in out
    # logged on the parent run
    from mlflow.tracking import MlflowClient

    arts = {a.path for a in MlflowClient(plan["tracking_uri"]).list_artifacts(plan["parent_run_id"], "scaling")}
    assert arts == {"scaling/scaling.md", "scaling/scaling.png", "scaling/scaling.json"}
    png = tmp_path / "tune" / "synth" / "scaling" / "scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 30_000


def test_a_partial_sweep_names_what_is_missing_and_refuses_a_fit_it_cannot_support(tmp_path, model_store,
                                                                                       repo_root, capsys):
    # Three of the nine trials ran, unfinished; one stayed level.
    plan = log_sweep(tmp_path, TRUE, name="part", logged=["s-C1", "m-C1", "l-C1"], flat=("l-C1",), finish=False)
    rep = build_report(plan, draws=0)
    text = "\n".join(rep.verdicts)
    assert "missing: s-C2: not started (no MLflow run)" in text and "missing: l-C3: not started" in text
    assert "missing: s-C1: RUNNING at 95% of its samples; its curve so far is used" in text
    assert "curves that do not fall (left out of the fits): l-C1 (3 -> 3)" in text
    assert rep.fit is not None and "no bootstrap interval (fewer than 3 runs)" in text  # 2 sizes, many points
    assert "parabola needs 3" in text  # two falling sizes at each budget
    assert "the compute-optimal size is not bracketed by this sweep" in text
    # Final values only (a cosine schedule): two falling runs are 2 points for 5 parameters.
    plan = log_sweep(tmp_path, TRUE, name="cosine", logged=["s-C1", "m-C1", "l-C1"], flat=("l-C1",),
                     sets=["training.schedule=cosine"])
    rep = build_report(plan, draws=0)
    assert rep.point_mode == "final" and rep.fit is None
    assert "2 point(s) for 5 parameters (E, A, B, alpha, beta): no fit of L(N, D)" in rep.verdicts
    # The job: a report that says why there is no fit (exit 0); an unknown sweep (exit 2).
    job = runpy.run_path(str(repo_root / "jobs" / "scaling_report.py"), run_name="scaling_report")["main"]
    assert job(["--sweep", "cosine", "--runs-dir", str(tmp_path), "--no-log"]) == 0
    md = capsys.readouterr().out
    assert "No fit of L(N, D)" in md and "| l-C1 | FINISHED | fovea/tiny-llama-l |" in md and "| NO |" in md
    assert job(["--sweep", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "no sweep 'nope'" in capsys.readouterr().err
