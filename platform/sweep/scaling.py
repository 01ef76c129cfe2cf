"""A sweep's scaling report, written, printed and logged: what ``jobs/scaling_report.py --sweep
NAME`` runs, and what a sweep of a scaling space (``SCALING_SPACES``) runs at its end.

    rc = scaling_command("scaling_flops-20260101-120000", runs_dir="runs")

The analysis is ``scaling_analysis.build_report`` (the fit of L(N, D), iso-FLOP parabolas, the
compute-optimal N(C) and D(C)); the figure is ``scaling_plot``.  Files go to
``<runs_dir>/tune/<sweep>/scaling/`` (``scaling.md``, ``scaling.png``, ``scaling.json``) and to
the sweep's parent MLflow run under ``scaling/``; the markdown is printed.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

from fovea.platform.sweep.scaling_analysis import BOOTSTRAP_DRAWS, ScalingReport, build_report
from fovea.platform.sweep.scaling_runs import TEXT_TOKENS, find_plan

log = logging.getLogger("fovea.sweep")

SCALING_SPACES = ("scaling", "scaling_flops", "scaling_tiny")
ARTIFACT_DIR = "scaling"


def _g(v: Any, fmt: str = ".3g") -> str:
    return "–" if v is None else format(v, fmt)


def _ci(v: tuple[float, float] | None) -> str:
    return "–" if not v else f"[{v[0]:.3g}, {v[1]:.3g}]"


def runs_table(rep: ScalingReport) -> list[str]:
    out = ["| experiment | status | LLM | N | D (samples) | C (FLOPs) | frames/sample | best | final | falls |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for c in rep.curves + rep.other:
        out.append(f"| {c.experiment} | {c.status} | {c.llm} | {c.n_params:.3g} | {c.final_samples:.0f} | "
                   f"{c.final_flops:.3g} | {c.frames:.2f} | {_g(c.best_loss, '.4f')} | {_g(c.final_loss, '.4f')} | "
                   f"{'yes' if c.falls else 'NO'} |")
    return out


def law_table(rep: ScalingReport) -> list[str]:
    if rep.fit is None:
        return ["No fit of L(N, D): see below."]
    out = [f"L(N, D) = E + A / N^alpha + B / D^beta, Huber (delta 1e-3) on log-residuals, L-BFGS from a grid; "
           f"{rep.fit.n_points} points ({'each evaluation after warm-up' if rep.point_mode == 'curve' else 'final values'}"
           f" of {len({c.experiment for c in rep.curves if c.falls})} runs), RMS log-residual {rep.fit.rmse_log:.4f}; "
           f"95 % intervals from {len(rep.boot)} bootstrap refits over the runs.", "",
           "| parameter | fit | 95 % interval |", "|---|---|---|"]
    for k, v in rep.fit.law.values().items():
        out.append(f"| {k} | {v:.4g} | {_ci(rep.ci.get(k))} |")
    return out


def optimal_table(rep: ScalingReport) -> list[str]:
    if rep.fit is None and not any(r["n_iso"] for r in rep.optimal):
        return ["None: no fit of L(N, D) and no iso-FLOP minimum (see below)."]
    out = ["| C (FLOPs) | N_opt (law) | 95 % | D_opt (law) | 95 % | loss | N_opt (iso-FLOP parabola) |",
           "|---|---|---|---|---|---|---|"]
    for r in rep.optimal:
        mark = " (extrapolated)" if r["extrapolated"] else ""
        out.append(f"| {r['budget']:.3g}{mark} | {_g(r['n_law'])} | {_ci(r['n_ci'])} | {_g(r['d_law'])} | "
                   f"{_ci(r['d_ci'])} | {_g(r['loss_law'], '.4f')} | {_g(r['n_iso'])} |")
    return out


def iso_table(rep: ScalingReport) -> list[str]:
    out = ["| C (FLOPs) | loss at C by N | parabola minimum N | note |", "|---|---|---|---|"]
    for i in rep.iso:
        pts = ", ".join(f"{n:.3g}: {v:.4f}" for n, v in zip(i.n, i.loss)) or "–"
        out.append(f"| {i.budget:.3g} | {pts} | {_g(i.n_opt)} | {i.note or 'within the sizes'} |")
    if rep.iso_power:
        out.append(f"\nIso-FLOP minima: N_opt ~ C^{rep.iso_power[0]:.3f}.")
    return out


def report_markdown(rep: ScalingReport) -> str:
    f = io.StringIO()
    f.write(f"## Scaling report: sweep {rep.sweep} ({rep.space})\n\n")
    f.write(f"N = LLM parameters ({rep.params.replace('_', '-')}); D = samples seen; C = D x training FLOPs a "
            f"sample (platform/profiling/throughput.py's FLOP model, the run's mean real frames, "
            f"{rep.text_tokens} text tokens); loss = "
            f"{rep.curves[0].loss_name if rep.curves else 'val_loss'}; DINOv2: {rep.dino}.\n\n")
    sections = [("Runs", runs_table(rep)), ("Fitted law", law_table(rep)),
                ("Iso-FLOP profiles", iso_table(rep)), ("Compute-optimal size", optimal_table(rep))]
    for title, lines in sections:
        f.write(f"### {title}\n\n" + "\n".join(lines) + "\n\n")
    f.write("### What the points support\n\n")
    f.write("\n".join(f"- {v}" for v in rep.verdicts) if rep.verdicts else "- a complete sweep; nothing to flag")
    f.write("\n")
    return f.getvalue()


def report_json(rep: ScalingReport) -> dict[str, Any]:
    return {
        "sweep": rep.sweep, "space": rep.space, "params": rep.params, "dino": rep.dino,
        "runs": [{"experiment": c.experiment, "status": c.status, "llm": c.llm, "n": c.n_params,
                  "llm_params": c.llm_params, "llm_non_embedding": c.llm_non_embedding, "frames": c.frames,
                  "flops_per_sample": c.flops_per_sample, "samples": c.samples.tolist(), "loss": c.loss.tolist(),
                  "falls": c.falls} for c in rep.curves],
        "problems": rep.problems,
        "fit": None if rep.fit is None else {"values": rep.fit.law.values(), "rmse_log": rep.fit.rmse_log,
                                             "points": rep.fit.n_points, "at_bound": rep.fit.at_bound,
                                             "mode": rep.point_mode},
        "intervals": rep.ci, "bootstrap_draws": len(rep.boot),
        "iso_flop": [{"budget": i.budget, "n": i.n.tolist(), "loss": i.loss.tolist(), "n_opt": i.n_opt,
                      "inside": i.inside, "note": i.note} for i in rep.iso],
        "iso_power": rep.iso_power, "optimal": rep.optimal, "verdicts": rep.verdicts,
    }


def write_report(rep: ScalingReport, out_dir: str | Path) -> dict[str, Path]:
    """``scaling.md``, ``scaling.json`` and ``scaling.png`` in ``out_dir``."""
    from fovea.platform.sweep.scaling_plot import plot_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"md": out / "scaling.md", "json": out / "scaling.json"}
    files["md"].write_text(report_markdown(rep))
    files["json"].write_text(json.dumps(report_json(rep), indent=1, default=str))
    if rep.curves:
        files["png"] = plot_report(rep, out / "scaling.png")
    return files


def log_report(plan: dict[str, Any], files: dict[str, Path]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(plan["tracking_uri"])
    for f in files.values():
        client.log_artifact(plan["parent_run_id"], str(f), ARTIFACT_DIR)


def run_report(plan: dict[str, Any], *, out_dir: str | Path | None = None, log_to_mlflow: bool = True,
               **options) -> tuple[ScalingReport, dict[str, Path]]:
    """Build, write, log and print the report of the sweep of ``plan``."""
    rep = build_report(plan, **options)
    files = write_report(rep, out_dir or Path(plan["tune_dir"]) / ARTIFACT_DIR)
    if log_to_mlflow and plan.get("parent_run_id"):
        log_report(plan, files)
    print("\n" + files["md"].read_text(), flush=True)
    print(f"scaling report: {', '.join(str(p) for p in files.values())}"
          + (f"; logged on MLflow run {plan['parent_run_id']} under {ARTIFACT_DIR}/" if log_to_mlflow else ""),
          flush=True)
    return rep, files


def after_sweep(plan: dict[str, Any]) -> None:
    """The end of a sweep: the report for the scaling spaces (never fails the sweep)."""
    if plan.get("space") not in SCALING_SPACES or not plan.get("parent_run_id"):
        return
    try:
        run_report(plan)
    except Exception as e:  # noqa: BLE001 - a report problem never fails a finished sweep
        log.warning("the scaling report failed (%s: %s); rerun it with: python jobs/scaling_report.py "
                    "--sweep %s --runs-dir %s", type(e).__name__, e, plan["sweep"], plan.get("runs_dir"))


def scaling_command(sweep: str, *, runs_dir: str | None = "runs", tracking_uri: str | None = None,
                    params: str = "non_embedding", text_tokens: int = TEXT_TOKENS, dino: str | None = None,
                    points: str = "auto", draws: int = BOOTSTRAP_DRAWS, out: str | None = None,
                    log_to_mlflow: bool = True) -> int:
    """``jobs/scaling_report.py``: 0 with a report (even one that says no fit), 2 without the sweep."""
    try:
        plan = find_plan(sweep, runs_dir, tracking_uri)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if tracking_uri:
        plan["tracking_uri"] = tracking_uri
    if not plan.get("parent_run_id"):
        print(f"error: sweep {sweep!r} has no MLflow parent run (tracking was off): nothing to read",
              file=sys.stderr)
        return 2
    if out is None and not Path(plan["tune_dir"]).exists():  # a plan read from MLflow, made elsewhere
        out = f"{sweep}-scaling"
    run_report(plan, out_dir=out, log_to_mlflow=log_to_mlflow, params=params, text_tokens=text_tokens,
               dino=dino, points=points, draws=draws)
    return 0
