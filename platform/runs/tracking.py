"""MLflow tracking that never stops training.

Train V2 refuses ``MLflowLoggerCallback`` in its RunConfig, so rank 0 logs itself
through this small wrapper.  Every call is guarded: if the tracking server is down
or the store is unwritable, the run prints one warning per failure kind and keeps
training; metrics are buffered and flushed on the next successful call.

Every experiment it opens is marked for the MLflow UI as model training, with a chart layout
that puts loss_fine / loss_coarse first (``fovea.platform.runs.ui_views``).

Default store: ``sqlite:///<runs_dir>/mlflow.db`` (MLflow 3's default backend kind;
a ``file://`` store is refused by MLflow 3 unless MLFLOW_ALLOW_FILE_STORE is set).
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from fovea.platform.runs.ui_views import mark_training_experiment

log = logging.getLogger("fovea.tracking")

SECRET_MARKERS = ("TOKEN", "SECRET", "PASSWORD", "API_KEY")


def git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001 - no git in the image is fine
        return os.environ.get("FOVEA_GIT_COMMIT", "unknown")


def clean_params(params: dict[str, Any]) -> dict[str, str]:
    """Stringify, truncate to MLflow's 6000-char limit, and drop anything secret-looking."""
    out = {}
    for k, v in params.items():
        if any(m in k.upper() for m in SECRET_MARKERS):
            continue
        s = str(v)
        out[k] = s if len(s) <= 6000 else s[:5990] + "..."
    return out


def artifact_root(tracking_uri: str, experiment: str, location: str | None = None) -> str | None:
    """Where a new experiment keeps its artifacts: ``location`` (``tracking.artifact_location``:
    a URL such as s3://bucket/mlartifacts, which MLflow's clients write to directly, or a
    path), in a folder per experiment; else next to a SQLite store, so that it is
    self-contained (<store dir>/mlartifacts/<experiment>); else the tracking server's choice."""
    if location:
        if "://" in location:
            return f"{location.rstrip('/')}/{experiment}"
        return (Path(location) / experiment).resolve().as_uri()
    if tracking_uri.startswith("sqlite:///"):
        root = Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts" / experiment
        return root.resolve().as_uri()
    return None  # a tracking server decides


class Tracker:
    """Soft-failing MLflow run handle (one per process, rank 0 only)."""

    def __init__(self, tracking_uri: str, experiment: str, run_id: str | None = None,
                 run_name: str | None = None, tags: dict[str, str] | None = None, enabled: bool = True,
                 artifact_location: str | None = None):
        self.enabled = enabled
        self.tracking_uri = tracking_uri
        self.run_id: str | None = run_id
        self._pending: list[tuple[dict[str, float], int]] = []
        self._warned: set[str] = set()
        self._client = None
        self.experiment_id: str | None = None
        if not enabled:
            return
        try:
            import mlflow
            from mlflow.tracking import MlflowClient

            if tracking_uri.startswith("sqlite:///"):
                Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            # A client of its own, never mlflow.set_tracking_uri: that exports MLFLOW_TRACKING_URI,
            # which every later config of this process would then take for the cluster's server.
            self._client = MlflowClient(tracking_uri)
            exp = self._client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self._client.create_experiment(
                experiment, artifact_location=artifact_root(tracking_uri, experiment, artifact_location))
            wanted = artifact_root(tracking_uri, experiment, artifact_location) if artifact_location else None
            if exp and wanted and exp.artifact_location != wanted:
                log.warning("MLflow experiment %r keeps its artifacts in %s; tracking.artifact_location=%s "
                            "applies to new experiments (name another one)", experiment,
                            exp.artifact_location, artifact_location)
            self.experiment_id = exp_id
            mark_training_experiment(self._client, exp_id, exp.tags if exp else {})
            if self.run_id is None:
                run = self._client.create_run(exp_id, run_name=run_name, tags=tags or {})
                self.run_id = run.info.run_id
            elif tags:
                for k, v in tags.items():
                    self._client.set_tag(self.run_id, k, v)
        except Exception as e:  # noqa: BLE001
            self._warn("init", e)

    # -- guarded calls -----------------------------------------------------------
    def _warn(self, kind: str, e: Exception) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("MLflow %s failed (%s: %s); training continues without it", kind, type(e).__name__, e)

    def _ok(self) -> bool:
        return self.enabled and self._client is not None and self.run_id is not None

    def log_params(self, params: dict[str, Any]) -> None:
        if not self._ok():
            return
        try:
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in clean_params(params).items()]
            for i in range(0, len(items), 90):
                self._client.log_batch(self.run_id, params=items[i:i + 90])
        except Exception as e:  # noqa: BLE001
            self._warn("log_params", e)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
        self._pending.append((clean, step))
        if not self._ok():
            return
        try:
            import time

            from mlflow.entities import Metric

            ts = int(time.time() * 1000)
            batch = [Metric(k, v, ts, s) for m, s in self._pending for k, v in m.items()]
            for i in range(0, len(batch), 900):
                self._client.log_batch(self.run_id, metrics=batch[i:i + 900])
            self._pending.clear()
        except Exception as e:  # noqa: BLE001
            self._warn("log_metrics", e)
            self._pending = self._pending[-1000:]

    def set_tags(self, tags: dict[str, str]) -> None:
        if not self._ok():
            return
        try:
            for k, v in tags.items():
                self._client.set_tag(self.run_id, k, str(v))
        except Exception as e:  # noqa: BLE001
            self._warn("set_tag", e)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not self._ok():
            return
        try:
            self._client.log_artifact(self.run_id, str(path), artifact_path)
        except Exception as e:  # noqa: BLE001
            self._warn("log_artifact", e)

    def log_text(self, text: str, artifact_file: str) -> None:
        if not self._ok():
            return
        try:
            self._client.log_text(self.run_id, text, artifact_file)
        except Exception as e:  # noqa: BLE001
            self._warn("log_text", e)

    def finish(self, status: str = "FINISHED") -> None:
        if not self._ok():
            return
        try:
            self._client.set_terminated(self.run_id, status)
        except Exception as e:  # noqa: BLE001
            self._warn("finish", e)
