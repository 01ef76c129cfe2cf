"""How fovea's MLflow experiments open in the MLflow UI (3.17): as model training, on a chart
layout whose first charts are loss_fine, loss_coarse and their ratio, for every training run
or one run; and the links ``make ui`` prints.

What MLflow itself stores and reads (its web bundle, ``mlflow/server/js``):

* The experiment page picks its view (GenAI traces or model-training runs) from the URL's
  ``workflowType`` (else the browser's last choice, GenAI by default); the experiment tag
  ``mlflow.experimentKind`` (``custom_model_development``) is MLflow's own record of the kind,
  written here too.  So every link this module builds carries ``workflowType=machine_learning``.
* A chart layout is stored with the experiment as a *saved view*: the experiment tag
  ``mlflow.sharedViewState.<id>`` holds ``{name, createdAt, updatedAt, state}``, ``state`` being
  the runs page's own state as JSON (chart cards, sections, the run filter); the UI opens it from
  ``#/experiments/<id>/runs?viewStateShareKey=<id>`` and lists it under *Views*.  Without a
  saved view MLflow sorts prefixed sections (``eval/caption``) before the unprefixed metrics and
  the charts alphabetically, which buries loss_fine among forty charts.
* The runs table nests child runs (sweep trials) under their parent, collapsed and so not
  plotted, whenever it sorts by start time; the views sort by the training loss, which lists
  them flat.

Every experiment a ``Tracker`` opens is marked (``mark_training_experiment``); ``make ui``
marks the store's experiments again (stores written before) and adds a view of the latest
training run (``ui_links``).
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
LOSSES_VIEW = "fovea-losses"
LATEST_RUN_VIEW = "fovea-latest-run"
# Training runs are the ones that log ``loss`` (every training window does, coarse-only runs too,
# whose loss_fine is NaN and never logged); sweep parents and evaluation runs do not.
TRAINING_RUNS = "metrics.loss >= 0"
UI_QUERY = "compareRunsMode=CHART&workflowType=machine_learning"
OVERLAY_ARTIFACT = "plots/loss_overlay.png"  # every training run's (``fovea.platform.runs.loss_overlay``)
# Sections and their charts, first to last: (section, [(title, metric keys on one axis)]).
LAYOUT = (
    ("Losses", [("loss_fine", ["loss_fine"]), ("loss_coarse", ["loss_coarse"]),
                ("loss_ratio", ["loss_ratio"]),
                ("loss_fine vs loss_coarse", ["loss_fine", "loss_coarse"]),
                ("loss", ["loss"]), ("grad_norm", ["grad_norm"])]),
    ("Validation losses", [("val_loss_fine vs val_loss_coarse", ["val_loss_fine", "val_loss_coarse"]),
                           ("val_loss_ratio", ["val_loss_ratio"]), ("val_loss", ["val_loss"])]),
)


def line_chart(uid: str, section: str, title: str, keys: list[str]) -> dict:
    """A line-chart card as the runs page stores it (its defaults, keys on one axis by step)."""
    return {"uuid": uid, "type": "LINE", "runsCountToCompare": 20, "metricSectionId": section,
            "deleted": False, "isGenerated": False, "displayName": title, "metricKey": keys[0],
            "selectedMetricKeys": list(keys), "lineSmoothness": 0, "xAxisScaleType": "linear",
            "scaleType": "linear", "range": {}, "xAxisKey": "step", "selectedXAxisMetricKey": "",
            "yAxisKey": "metric", "yAxisExpressions": [], "ignoreOutliers": False,
            "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True}


def view_state(search_filter: str, runs_hidden_mode: str = "FIRST_20_RUNS") -> dict:
    """The runs page's state: ``LAYOUT`` first (MLflow appends the other metrics' sections
    after it), the runs matching ``search_filter`` by their last training loss, lowest first (a
    sort other than by start time also lists child runs flat, so sweep trials are plotted)."""
    charts, sections = [], []
    for i, (section, cards) in enumerate(LAYOUT):
        sid = f"fovea-section-{i}"
        sections.append({"uuid": sid, "name": section, "display": True, "isReordered": True,
                         "deleted": False, "isGenerated": False})
        charts += [line_chart(f"fovea-chart-{i}-{j}", sid, title, keys) for j, (title, keys) in enumerate(cards)]
    return {"searchFilter": search_filter, "orderByKey": "metrics.`loss`", "orderByAsc": True,
            "compareRunCharts": charts, "compareRunSections": sections, "isAccordionReordered": True,
            "runsHiddenMode": runs_hidden_mode, "hideEmptyCharts": True}


def saved_view(name: str, state: dict, created_ms: int) -> str:
    """The value of a ``mlflow.sharedViewState.<id>`` tag."""
    return json.dumps({"name": name, "createdAt": created_ms, "updatedAt": created_ms,
                       "state": json.dumps(state, sort_keys=True)})


def put_view(client, experiment_id: str, view_id: str, name: str, state: dict, tags: dict) -> None:
    """Write the saved view unless the experiment holds the same one (``tags``: its tags)."""
    key = VIEW_TAG_PREFIX + view_id
    try:
        old = json.loads(tags[key])
        if old.get("name") == name and old.get("state") == json.dumps(state, sort_keys=True):
            return
    except (KeyError, TypeError, ValueError):
        pass
    client.set_experiment_tag(experiment_id, key, saved_view(name, state, int(time.time() * 1000)))


def mark_training_experiment(client, experiment_id: str, tags: dict | None = None) -> None:
    """Mark the experiment as model training and store the losses view (only what changed)."""
    tags = dict(tags or {})
    if tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    put_view(client, experiment_id, LOSSES_VIEW, "fovea: loss_fine / loss_coarse, every training run",
             view_state(TRAINING_RUNS), tags)


def view_url(base: str, experiment_id: str, view_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={quote(view_id)}&{UI_QUERY}"


def run_url(base: str, experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """A run's page (its Overview), or one of its artifacts shown in the Artifacts tab."""
    tab = f"/artifacts/{artifact}" if artifact else ""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{tab}?workflowType=machine_learning"


def has_artifact(client, run_id: str, path: str) -> bool:
    folder = path.rsplit("/", 1)[0] if "/" in path else None
    try:
        return any(f.path == path for f in client.list_artifacts(run_id, folder))
    except Exception:  # noqa: BLE001 - an unreadable artifact store only costs a link
        return False


def ui_links(tracking_uri: str, base: str) -> list[str]:
    """For every experiment of the store that has runs: marked (``mark_training_experiment``),
    a view of its latest training run stored, and the lines ``make ui`` prints (its links)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    out = []
    for e in client.search_experiments():
        if not client.search_runs([e.experiment_id], max_results=1):
            continue
        trained = client.search_runs([e.experiment_id], TRAINING_RUNS, order_by=["attributes.start_time DESC"],
                                     max_results=1000)
        n = f"{len(trained)}{'+' if len(trained) == 1000 else ''}"
        out.append(f"  experiment {e.name!r}: {n} training run{'' if len(trained) == 1 else 's'}")
        if not trained:
            out.append(f"    runs: {base}/#/experiments/{e.experiment_id}/runs?workflowType=machine_learning")
            continue
        out += _experiment_links(client, e, trained[0], base)
    return out


def _experiment_links(client, e, latest, base: str) -> list[str]:
    """Mark ``e``, store the view of its ``latest`` training run; the three links to print."""
    mark_training_experiment(client, e.experiment_id, e.tags)
    name, rid = latest.info.run_name or latest.info.run_id, latest.info.run_id
    put_view(client, e.experiment_id, LATEST_RUN_VIEW, f"fovea: latest training run ({name})",
             view_state(f"attributes.run_id = '{rid}'", "SHOW_ALL"), e.tags)
    overlay = has_artifact(client, rid, OVERLAY_ARTIFACT)
    page = run_url(base, e.experiment_id, rid, OVERLAY_ARTIFACT if overlay else None)
    return [f"    loss_fine, loss_coarse, ratio of every training run: {view_url(base, e.experiment_id, LOSSES_VIEW)}",
            f"    the same for the latest training run, {name}: {view_url(base, e.experiment_id, LATEST_RUN_VIEW)}",
            f"    {name}'s {'loss overlay plot' if overlay else 'run page'}: {page}"]
