"""Results of a sweep: the table of child runs, its markdown/CSV, the plots (final losses per
trial; the loss overlay of the experiment's training runs), its MLflow chart view and UI links.

Used by ``fovea.platform.sweep.tune`` at the end of a sweep.  Everything here reads
MLflow and never fails a sweep: MLflow trouble is logged and skipped (``best_effort``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from fovea.platform.runs import ui_views
from fovea.platform.runs.loss_overlay import OVERLAY_NAME, experiment_overlay
from fovea.search_spaces.spaces import format_overrides

log = logging.getLogger("fovea.sweep")

RESULT_COLUMNS = [
    "experiment", "overrides", "status", "steps", "loss", "loss_fine", "loss_coarse", "loss_ratio",
    "best_val_loss", "samples_per_s", "trial_start", "trial_end", "wall_s", "run_id",
]


def log_override_params(client, run_id: str, overrides: dict[str, Any]) -> None:
    """The trial's overrides as ``override.<key>`` params of its MLflow run (those not yet there)."""
    from mlflow.entities import Param

    run = client.get_run(run_id)
    params = [Param(f"override.{k}", format_value_str(v)) for k, v in overrides.items()
              if f"override.{k}" not in run.data.params]
    if params:
        client.log_batch(run_id, params=params)


def format_value_str(v: Any) -> str:
    from fovea.search_spaces.spaces import format_value

    return format_value(v)


def best_effort(fn, what: str):
    """``fn()``, or None with a warning naming ``what`` when it raises."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - MLflow trouble never fails a sweep
        log.warning("%s failed (%s: %s)", what, type(e).__name__, e)
        return None


# -- results --------------------------------------------------------------------------------

def child_runs(client, parent_run_id: str) -> list:
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                              max_results=5000)


def _iso_ms(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).isoformat(timespec="seconds") if ms else ""


def _wall(start: str, end: str) -> float:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return float("nan")


def collect_results(plan: dict[str, Any], statuses: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per experiment of the plan, from the parent's MLflow child runs."""
    from mlflow.tracking import MlflowClient

    statuses = statuses or {}
    client = MlflowClient(plan["tracking_uri"])
    by_exp = {}
    for r in child_runs(client, plan["parent_run_id"]):
        exp = r.data.tags.get("experiment_id")
        if exp and (exp not in by_exp or r.info.start_time > by_exp[exp].info.start_time):
            by_exp[exp] = r
    rows = []
    for exp in plan["experiments"]:
        overrides = format_overrides(plan["overrides"][exp])
        run = by_exp.get(exp)
        tune_status = statuses.get(exp, "")
        if run is None:
            rows.append({"experiment": exp, "overrides": overrides,
                         "status": "NOT_STARTED" if tune_status in ("", "PENDING") else tune_status,
                         "run_id": ""})
            continue
        status, stopped_at = _reconcile_status(client, plan, run, tune_status)
        best_effort(lambda rid=run.info.run_id, exp=exp: log_override_params(client, rid, plan["overrides"][exp]),
                    "logging override params")
        rows.append({"experiment": exp, "overrides": overrides, "status": status,
                     **_run_figures(client, run, status, stopped_at)})
    return rows


def _reconcile_status(client, plan: dict[str, Any], run, tune_status: str) -> tuple[str, str | None]:
    """The trial's status from its MLflow run and Tune's view of it, and when a trial the
    scheduler stopped ended (None otherwise). A stopped trial's run is marked KILLED in MLflow."""
    rid, status = run.info.run_id, run.info.status
    if status == "RUNNING" and tune_status == "TERMINATED":
        # Stopped by the scheduler (ASHA): the driver was ended mid-fit.
        hist = best_effort(lambda: client.get_metric_history(rid, "loss"), "history") or []
        last_ms = max((x.timestamp for x in hist), default=None)
        stopped_at = _iso_ms(last_ms)

        def mark():
            client.set_tag(rid, "stopped_by", plan.get("scheduler") or "tune")
            if stopped_at:
                client.set_tag(rid, "trial_end", stopped_at)
            client.set_terminated(rid, "KILLED", end_time=last_ms)
        best_effort(mark, "marking a stopped trial")
        return "STOPPED", stopped_at
    if status == "RUNNING" and tune_status in ("PENDING", "RUNNING", "PAUSED"):
        return "INTERRUPTED", None
    if tune_status == "ERROR":
        return "ERROR", None
    return status, None


def _run_figures(client, run, status: str, stopped_at: str | None) -> dict[str, Any]:
    """A run's columns of the results table: final losses, best val_loss, mean samples/s, times."""
    rid, m = run.info.run_id, run.data.metrics
    vals = [x.value for x in best_effort(lambda: client.get_metric_history(rid, "val_loss"), "history") or []]
    sps = [x.value for x in best_effort(lambda: client.get_metric_history(rid, "samples_per_s"), "history") or []]
    start = run.data.tags.get("trial_start") or _iso_ms(run.info.start_time)
    end = (run.data.tags.get("trial_end") or stopped_at
           or (_iso_ms(run.info.end_time) if status not in ("RUNNING", "INTERRUPTED") else ""))
    return {
        "steps": int(m["step"]) if "step" in m else None,
        "loss": m.get("loss"), "loss_fine": m.get("loss_fine"), "loss_coarse": m.get("loss_coarse"),
        # final fine / final coarse (the logged `loss_ratio` may come from a diagnostics batch)
        "loss_ratio": (m["loss_fine"] / m["loss_coarse"]
                       if m.get("loss_fine") is not None and m.get("loss_coarse") else None),
        "best_val_loss": min(vals) if vals else None,
        "samples_per_s": sum(sps) / len(sps) if sps else None,
        "trial_start": start, "trial_end": end, "wall_s": int(_wall(start, end)) if end else None,
        "run_id": rid,
    }


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def max_overlap(rows: list[dict[str, Any]]) -> int:
    """Most trials running at the same time, from their start/end times."""
    events = []
    for r in rows:
        try:
            s, e = datetime.fromisoformat(r["trial_start"]), datetime.fromisoformat(r["trial_end"])
        except (KeyError, TypeError, ValueError):
            continue
        events += [(s, 1), (e, -1)]
    cur = best = 0
    for _, d in sorted(events, key=lambda x: (x[0], x[1])):
        cur += d
        best = max(best, cur)
    return best


UI_DEFAULT = "http://127.0.0.1:5000"  # `make ui`


def trials_filter(sweep: str) -> str:
    return f"tags.sweep = '{sweep}' and tags.sweep_role = 'trial'"


def sweep_view_id(sweep: str) -> str:
    return f"fovea-sweep-{sweep}"


def store_sweep_view(tracking_uri: str, experiment_id: str, sweep: str) -> str:
    """Save the sweep's chart view with its experiment (loss_fine, loss_coarse, loss_ratio first,
    every trial; ``fovea.platform.runs.ui_views``); returns the view's id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    tags = client.get_experiment(experiment_id).tags
    vid = sweep_view_id(sweep)
    ui_views.put_view(client, experiment_id, vid, f"fovea: sweep {sweep}, loss_fine / loss_coarse per trial",
                      ui_views.view_state(trials_filter(sweep), "SHOW_ALL"), tags)
    return vid


def ui_links(experiment_id: str, run_ids: list[str], sweep: str, base: str = UI_DEFAULT) -> dict[str, str]:
    """MLflow UI pages for a sweep: its chart view (``store_sweep_view``), the runs view filtered
    to its trials, and the Compare page."""
    from urllib.parse import quote

    filt = quote(trials_filter(sweep))
    runs = quote(json.dumps(run_ids, separators=(",", ":")))
    exps = quote(json.dumps([str(experiment_id)], separators=(",", ":")))
    ml = "workflowType=machine_learning"
    return {"losses": ui_views.view_url(base, str(experiment_id), sweep_view_id(sweep)),
            "runs": f"{base}/#/experiments/{experiment_id}/runs?searchFilter={filt}&{ml}",
            "chart": f"{base}/#/experiments/{experiment_id}/runs?searchFilter={filt}&compareRunsMode=CHART&{ml}",
            "compare": f"{base}/#/compare-runs?runs={runs}&experiments={exps}"}


def results_markdown(rows: list[dict[str, Any]], plan: dict[str, Any] | None = None,
                     links: dict[str, str] | None = None) -> str:
    cols = [c for c in RESULT_COLUMNS if c != "run_id"]
    out = io.StringIO()
    if plan:
        out.write(f"## Sweep {plan['sweep']} ({plan['space']}, base {plan['base_config']})\n\n")
    out.write("| " + " | ".join(cols) + " |\n")
    out.write("|" + "---|" * len(cols) + "\n")
    for r in rows:
        out.write("| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in cols) + " |\n")
    done = [r for r in rows if r.get("best_val_loss") is not None]
    if done:
        best = min(done, key=lambda r: r["best_val_loss"])
        out.write(f"\nBest val_loss: **{best['experiment']}** ({best['best_val_loss']:.4f}).")
    out.write(f"\nMost trials running at once: {max_overlap(rows)}.\n")
    if plan and plan.get("parent_run_id"):
        out.write(f"MLflow parent run {plan['parent_run_id']} in experiment {plan['mlflow_experiment']!r} "
                  f"({plan['tracking_uri']}).\n")
    if links:
        out.write(f"\nCompare in the MLflow UI (`make ui`): [loss_fine, loss_coarse and their ratio, every "
                  f"trial]({links['losses']}) · [final values side by side]({links['compare']}) "
                  f"· [the sweep's trials]({links['runs']}).\n")
    return out.getvalue()


def write_results(rows: list[dict[str, Any]], out_dir: str | Path, plan: dict[str, Any] | None = None,
                  links: dict[str, str] | None = None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "results.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in RESULT_COLUMNS})
    md_path = out_dir / "results.md"
    md_path.write_text(results_markdown(rows, plan, links))
    files = {"csv": csv_path, "md": md_path}
    png_path = best_effort(lambda: plot_results(rows, out_dir / "results.png", title=plan["sweep"] if plan else None),
                           "plotting the results")
    if png_path:
        files["png"] = png_path
    if plan and plan.get("parent_run_id"):
        overlay = best_effort(lambda: _overlay(plan, rows, out_dir / OVERLAY_NAME), "plotting the loss overlay")
        if overlay:
            files["overlay"] = overlay
    return files


def _overlay(plan: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> Path:
    """The loss overlay of the parent's experiment, the sweep's trials drawn thicker."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(plan["tracking_uri"])
    exp_id = client.get_run(plan["parent_run_id"]).info.experiment_id
    return experiment_overlay(client, exp_id, path, highlight=[r["run_id"] for r in rows if r.get("run_id")])


def plot_results(rows: list[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Bars of final loss_fine and loss_coarse per experiment, and their ratio below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def val(r, k):
        v = r.get(k)
        return float("nan") if v is None else float(v)

    names = [r["experiment"] for r in rows]
    fine = [val(r, "loss_fine") for r in rows]
    coarse = [val(r, "loss_coarse") for r in rows]
    ratio = [f / c if c and not math.isnan(f) and not math.isnan(c) else float("nan")
             for f, c in zip(fine, coarse)]
    x = list(range(len(names)))
    w = 0.38
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, 1.1 * len(names) + 3), 6.5), sharex=True,
                                   gridspec_kw={"height_ratios": [2, 1]})
    ax1.bar([i - w / 2 for i in x], fine, w, label="loss_fine", color="#1f77b4")
    ax1.bar([i + w / 2 for i in x], coarse, w, label="loss_coarse", color="#ff7f0e")
    for i, (f, c) in enumerate(zip(fine, coarse)):
        for dx, v in ((-w / 2, f), (w / 2, c)):
            ax1.text(i + dx, 0 if math.isnan(v) else v, "n/a" if math.isnan(v) else f"{v:.3f}", ha="center",
                     va="bottom", fontsize=7)
    ax1.set_ylabel("final training loss")
    ax1.legend()
    ax1.set_title(f"Sweep {title}: final loss_fine / loss_coarse" if title else "final loss_fine / loss_coarse")
    finite = [r for r in ratio if not math.isnan(r)]
    lo, hi = min(finite + [1.0]), max(finite + [1.0])
    pad = max(0.02, (hi - lo) * 0.3)
    bottom = max(0.0, lo - pad)
    ax2.set_ylim(bottom, hi + pad)
    ax2.bar(x, [0.0 if math.isnan(r) else r - bottom for r in ratio], 0.5, bottom=bottom, color="#2ca02c")
    for i, r in enumerate(ratio):
        ax2.text(i, bottom if math.isnan(r) else r, "n/a" if math.isnan(r) else f"{r:.3f}", ha="center",
                 va="bottom", fontsize=8)
    ax2.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax2.set_ylabel("fine / coarse")
    ax2.set_xticks(x, names, rotation=30 if len(names) > 6 else 0)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


