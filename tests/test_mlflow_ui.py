"""What a user sees first in the MLflow UI (`make ui`), and what fovea stores for it.

A store shaped like `make demo`'s (a training run with every metric name training logs, its
nested evaluation run, a second training run) plus a sweep (a parent and two trials, as
`fovea.platform.sweep.tune` lays them out) is written through the platform's own `Tracker`,
which marks each experiment as model training and saves its chart view
(`fovea.platform.runs.ui_views`).  The fast tests read those tags back and check the view's run
filter with MLflow's own search.  The browser test runs `jobs/mlflow_ui.py` (what `make ui`
runs) on 127.0.0.1, takes the links it prints, and opens them in headless Chromium (Debian's
`chromium`, driven by Playwright; Playwright's own browser is never downloaded): on the first
screen, without scrolling or searching, the charts titled loss_fine, loss_coarse and loss_ratio
are in the viewport, first, with a line per training run.  Screenshot of that first screen:
test-artifacts/mlflow_ui.png (and mlflow_ui_sweep.png, the sweep's view).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ports import free_port

from fovea.platform.runs import ui_views

CHROMIUM = os.environ.get("FOVEA_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1000}
SWEEP = "uitest"
TRIALS = (f"{SWEEP}-baseline", f"{SWEEP}-A6")
DEMO_RUNS = ("demo_stage1_lr3e-4", "demo_stage1")  # oldest first
# The names a stage-1 run logs (platform/train/window.py, loop.py; DINOv2-small: 12 layers) and
# its end-of-run caption scores: forty-odd charts, which MLflow alone sorts loss_fine among.
WINDOW = ["loss", "loss_fine", "loss_coarse", "loss_ratio", "grad_norm", "data_wait_frac", "data_wait_frac_max",
          "compile_s_max", "gc_s_max", "gc_full_max", "gc_frozen", "samples_per_s", "frames_per_s",
          "samples_seen", "window_s", "step", "lr_connector", "lr_dino", "lr_llm", "rank_cost_imbalance",
          "oom_skipped", "nonfinite_skipped", "epoch", "epoch_s", "epoch_compile_s"]
DIAGNOSTICS = (["q_static_std", "q_init_std", "attn_entropy_coarse", "attn_entropy_fine", "attn_entropy_max",
                "fine_coarse_token_diff"] + [f"attn_entropy_{q}_l{i}" for q in ("coarse", "fine") for i in range(12)])
CAPTIONS = [f"eval/caption/{k}" for k in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")]


def log_training(uri: str, experiment: str, name: str, scale: float, tags: dict | None = None) -> str:
    from fovea.platform.runs.tracking import Tracker

    t = Tracker(uri, experiment, run_name=name, tags={"stage": "1", **(tags or {})})
    for step in range(5, 45, 5):
        fine = scale * 3.2 / (step / 5) ** 0.35
        m = {k: 0.01 * step for k in WINDOW}
        m.update(loss=fine, loss_fine=fine, loss_coarse=1.04 * fine, loss_ratio=1 / 1.04)
        if step % 10 == 0:
            m.update({k: 1.0 for k in DIAGNOSTICS})
        if step % 20 == 0:
            m.update(val_loss=fine + 0.1, val_loss_fine=fine + 0.1, val_loss_coarse=1.04 * fine + 0.1,
                     val_loss_ratio=(fine + 0.1) / (1.04 * fine + 0.1))
        t.log_metrics(m, step)
    t.log_metrics({k: 0.1 for k in CAPTIONS}, 40)
    t.finish()
    return t.run_id


def make_store(runs_dir: Path) -> dict[str, str]:
    """`make demo`'s experiment (two training runs, the first one's evaluation nested under it)
    and a sweep's; returns run name -> run id."""
    from fovea.platform.runs.loss_overlay import log_loss_overlay
    from fovea.platform.runs.tracking import Tracker

    uri = f"sqlite:///{runs_dir / 'mlflow.db'}"
    ids = {name: log_training(uri, "demo", name, scale) for name, scale in zip(DEMO_RUNS, (1.1, 1.0))}
    ev = Tracker(uri, "demo", run_name="eval-demo_stage1",
                 tags={"job": "evaluate", "mlflow.parentRunId": ids["demo_stage1"]})
    ev.log_metrics({"eval/coarse_fine/loss": 2.0, "eval/autoregressive/loss": 2.01, "eval/gap": 0.005}, 40)
    ev.finish()
    log_loss_overlay(uri, ids["demo_stage1"])  # what the end-of-run hook logs
    parent = Tracker(uri, "sweep-ablations", run_name=SWEEP,
                     tags={"sweep": SWEEP, "sweep_role": "parent", "space": "ablations"})
    for name, scale in zip(TRIALS, (1.0, 1.08)):
        ids[name] = log_training(uri, "sweep-ablations", name, scale,
                                 {"mlflow.parentRunId": parent.run_id, "sweep": SWEEP, "sweep_role": "trial",
                                  "experiment_id": name.split("-", 1)[1]})
    parent.finish()
    ids["eval-demo_stage1"], ids[SWEEP] = ev.run_id, parent.run_id
    return ids


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    runs = tmp_path_factory.mktemp("ui") / "runs"
    runs.mkdir()
    return runs, make_store(runs)


def test_experiments_are_marked_as_training_with_the_losses_view(store):
    from mlflow.tracking import MlflowClient

    runs, ids = store
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("demo")
    assert exp.tags[ui_views.EXPERIMENT_KIND_TAG] == "custom_model_development"
    envelope = json.loads(exp.tags[ui_views.VIEW_TAG_PREFIX + ui_views.LOSSES_VIEW])
    assert set(envelope) == {"name", "createdAt", "updatedAt", "state"}
    state = json.loads(envelope["state"])
    first = [c for c in state["compareRunCharts"] if c["metricSectionId"] == state["compareRunSections"][0]["uuid"]]
    assert state["compareRunSections"][0]["name"] == "Losses" and state["isAccordionReordered"] is True
    assert [c["displayName"] for c in first[:3]] == ["loss_fine", "loss_coarse", "loss_ratio"]
    assert ["loss_fine", "loss_coarse"] in [c["selectedMetricKeys"] for c in first]  # the overlay chart
    # The view's run filter, run through MLflow's own search: the training runs, not the
    # evaluation run nor the sweep's parent.
    found = {r.info.run_name for e in ("demo", "sweep-ablations")
             for r in client.search_runs([client.get_experiment_by_name(e).experiment_id], state["searchFilter"])}
    assert found == {*DEMO_RUNS, *TRIALS}
    # Reopening an experiment does not rewrite an unchanged view.
    from fovea.platform.runs.tracking import Tracker

    Tracker(f"sqlite:///{runs / 'mlflow.db'}", "demo", run_id=ids["demo_stage1"])
    again = client.get_experiment_by_name("demo").tags[ui_views.VIEW_TAG_PREFIX + ui_views.LOSSES_VIEW]
    assert json.loads(again)["updatedAt"] == envelope["updatedAt"]


def test_every_training_run_gets_the_loss_overlay(store):
    from mlflow.tracking import MlflowClient

    runs, ids = store
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    art = [f.path for f in client.list_artifacts(ids["demo_stage1"], "plots")]
    assert art == [ui_views.OVERLAY_ARTIFACT]
    local = Path(client.download_artifacts(ids["demo_stage1"], ui_views.OVERLAY_ARTIFACT, str(runs.parent)))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and local.stat().st_size > 10_000


def start_ui(runs: Path, repo_root: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`jobs/mlflow_ui.py` on 127.0.0.1:<free port>, started (``wait_healthy`` waits for it)."""
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(repo_root / "jobs" / "mlflow_ui.py"), "--runs-dir", str(runs),
                                 "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_healthy(proc: subprocess.Popen, base: str, log_path: Path) -> None:
    deadline = time.time() + 150
    while True:
        try:
            if urllib.request.urlopen(base + "/health", timeout=2).read().strip() == b"OK":
                return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"mlflow server did not come up: {log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    """The server forks workers and job consumers: stop the whole session we started."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def printed_links(text: str) -> dict[str, str]:
    """'<experiment>/<what>' -> URL, from what jobs/mlflow_ui.py printed."""
    out, exp = {}, None
    for line in text.splitlines():
        m = re.match(r"\s+experiment '([^']+)'", line)
        if m:
            exp = m.group(1)
        m = re.match(r"\s+(.+?): (http://\S+)$", line)
        if m and exp:
            out[f"{exp}/{m.group(1)}"] = m.group(2)
    return out


def in_viewport(page, text: str) -> bool:
    """A chart titled ``text`` is drawn wholly inside the window, as first shown."""
    box = page.get_by_text(text, exact=True).first.bounding_box()
    return (box is not None and box["y"] >= 0 and box["x"] >= 0
            and box["y"] + box["height"] <= VIEWPORT["height"] and box["x"] + box["width"] <= VIEWPORT["width"])


def first_screen(context, url: str, wait_for: str, settle_ms: int = 1500):
    """``url`` opened in a new page of ``context``, charts drawn."""
    page = context.new_page()
    page.goto(url)
    page.get_by_text(wait_for).first.wait_for(timeout=60_000)
    page.wait_for_timeout(settle_ms)  # let the charts finish drawing (for the screenshots)
    return page


@pytest.mark.extended
@pytest.mark.slow
def test_make_ui_opens_on_loss_fine_and_loss_coarse(store, repo_root, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    runs, ids = store
    out = repo_root / "test-artifacts"
    out.mkdir(exist_ok=True)
    log = tmp_path / "server.log"
    proc, base = start_ui(runs, repo_root, log)
    try:
        with sync_playwright() as p:
            # Playwright gives the context a fresh temporary profile: a user's first visit.
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                wait_healthy(proc, base, log)
                links = printed_links(log.read_text())
                context = browser.new_context(viewport=VIEWPORT)
                page = first_screen(context, links["demo/loss_fine, loss_coarse, ratio of every training run"],
                                    f"{DEMO_RUNS[0]} (loss_fine)")
                page.screenshot(path=str(out / "mlflow_ui.png"))  # the viewport: the first screen
                shown = {t: in_viewport(page, t) for t in ("Losses", "loss_fine", "loss_coarse", "loss_ratio")}
                text = page.inner_text("body")
                sections = [page.get_by_text(s, exact=True).first.bounding_box()["y"]
                            for s in ("Losses", "Model metrics", "eval/caption")]
                page = first_screen(context, links["demo/the same for the latest training run, demo_stage1"],
                                    "demo_stage1 (loss_fine)", 0)
                latest_text, latest_shown = page.inner_text("body"), in_viewport(page, "loss_fine")
                page = first_screen(context, links["sweep-ablations/loss_fine, loss_coarse, ratio of every "
                                                   "training run"], f"{TRIALS[1]} (loss_coarse)")
                page.screenshot(path=str(out / "mlflow_ui_sweep.png"))
                sweep_text, sweep_shown = page.inner_text("body"), in_viewport(page, "loss_coarse")
            finally:
                browser.close()
    finally:
        stop(proc)
    overlay = links["demo/demo_stage1's loss overlay plot"]  # the run's page, on its overlay plot
    assert overlay.startswith(f"{base}/#/experiments/") and overlay.endswith(
        f"/runs/{ids['demo_stage1']}/artifacts/{ui_views.OVERLAY_ARTIFACT}?workflowType=machine_learning")
    assert shown == {"Losses": True, "loss_fine": True, "loss_coarse": True, "loss_ratio": True}, shown
    assert sections[0] < min(sections[1:]), f"the Losses section is not the first: {sections}"
    assert "Judges" not in text and "Sessions" not in text  # the model-training view, not GenAI's
    for name in DEMO_RUNS:  # a line per training run in the loss charts; evaluation runs filtered out
        assert f"{name} (loss_fine)" in text and f"{name} (loss_coarse)" in text, name
    assert "eval-demo_stage1 (loss_fine)" not in text
    assert latest_shown and "demo_stage1 (loss_fine)" in latest_text
    assert f"{DEMO_RUNS[0]} (loss_fine)" not in latest_text  # the latest run alone
    # The sweep's trials are plotted without expanding their parent row.
    assert sweep_shown and all(f"{t} (loss_coarse)" in sweep_text for t in TRIALS)
    assert (out / "mlflow_ui.png").stat().st_size > 10_000
