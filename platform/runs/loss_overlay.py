"""The loss overlay: loss_fine (solid) and loss_coarse (dashed) of every training run of an MLflow
experiment on one axis, one colour per run, the runs of interest drawn thicker.  Every training
run logs it at its end (``plots/loss_overlay.png``, rank 0, through the evaluation's end-of-run
hook) and every sweep parent with its results (``results/loss_overlay.png``).

    log_loss_overlay(tracking_uri, run_id)   # the plot of run_id's experiment, logged into run_id
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

from fovea.platform.runs.ui_views import OVERLAY_ARTIFACT, TRAINING_RUNS

OVERLAY_FOLDER, OVERLAY_NAME = OVERLAY_ARTIFACT.rsplit("/", 1)
MAX_RUNS = 30  # the newest training runs; more lines than this make an unreadable legend
KEYS = (("loss_fine", "-"), ("loss_coarse", "--"))


def loss_histories(client, experiment_id: str, max_runs: int = MAX_RUNS) -> list[dict]:
    """[{run_id, name, loss_fine: [(step, value)], loss_coarse: [...]}] of the experiment's newest
    training runs (``TRAINING_RUNS``), oldest first."""
    runs = client.search_runs([experiment_id], filter_string=TRAINING_RUNS,
                              order_by=["attributes.start_time DESC"], max_results=max_runs)
    out = []
    for r in reversed(runs):
        h = {"run_id": r.info.run_id, "name": r.info.run_name or r.info.run_id[:8]}
        for key, _ in KEYS:
            hist = client.get_metric_history(r.info.run_id, key)
            h[key] = sorted((m.step, m.value) for m in hist)
        out.append(h)
    return out


def plot_loss_overlay(histories: list[dict], path: str | Path, title: str,
                      highlight: Iterable[str] = ()) -> Path:
    """One axis: per run a colour, loss_fine solid and loss_coarse dashed (by step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    highlight = set(highlight)
    fig, ax = plt.subplots(figsize=(9.5, 5.2))
    colours = plt.get_cmap("tab10" if len(histories) <= 10 else "tab20")
    for i, h in enumerate(histories):
        colour, bold = colours(i % colours.N), h["run_id"] in highlight
        for key, style in KEYS:
            if h[key]:
                steps, values = zip(*h[key])
                ax.plot(steps, values, style, color=colour, lw=2.4 if bold else 1.2,
                        label=h["name"] if key == "loss_fine" else None)
    if not histories:
        ax.text(0.5, 0.5, "no training run in this experiment yet", ha="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    styles = [Line2D([], [], color="black", ls=s, label=k) for k, s in KEYS]
    first = ax.legend(handles=styles, loc="upper right", fontsize=8)
    ax.add_artist(first)
    if histories:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="run", title_fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def experiment_overlay(client, experiment_id: str, path: str | Path, highlight: Iterable[str] = ()) -> Path:
    """``plot_loss_overlay`` of the experiment's training runs, titled with its name."""
    name = client.get_experiment(experiment_id).name
    hist = loss_histories(client, experiment_id)
    return plot_loss_overlay(hist, path, f"{name}: loss_fine (solid) and loss_coarse (dashed), "
                                         f"{len(hist)} training run(s)", highlight)


def log_loss_overlay(tracking_uri: str, run_id: str, artifact_path: str = OVERLAY_FOLDER) -> str:
    """Plot the overlay of ``run_id``'s experiment (``run_id`` drawn thicker) and log it into
    ``run_id`` under ``artifact_path``; returns the artifact's path in the run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp_id = client.get_run(run_id).info.experiment_id
    with tempfile.TemporaryDirectory(prefix="fovea-overlay-") as tmp:
        p = experiment_overlay(client, exp_id, Path(tmp) / OVERLAY_NAME, highlight=[run_id])
        client.log_artifact(run_id, str(p), artifact_path)
    return f"{artifact_path}/{OVERLAY_NAME}"
