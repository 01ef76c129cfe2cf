"""Browser test of the MLflow UI comparison the users asked for (docs/SWEEPS.md).

`jobs/mlflow_ui.py` (what `make ui` runs) serves a store holding a sweep: a parent run and
two trial runs logging `loss_fine` and `loss_coarse` series, laid out exactly as
`fovea.platform.sweep.tune` writes them.  Headless Chromium (Debian's `chromium`, driven by
Playwright; Playwright's own browser is never downloaded) opens the experiment's runs view,
expands the sweep, selects both trials -> Compare, then the chart view, and finds both
metrics for both runs.  Screenshots: test-artifacts/mlflow_ui.png (chart view) and
test-artifacts/mlflow_ui_compare.png.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ports import free_port

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("FOVEA_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SWEEP = "uitest"
RUNS = (f"{SWEEP}-baseline", f"{SWEEP}-A6")


def make_store(runs_dir: Path) -> tuple[str, dict[str, str]]:
    """A sweep in MLflow the way fovea.platform.sweep.tune lays it out; returns (experiment id, run ids)."""
    from mlflow.tracking import MlflowClient

    from fovea.platform.runs.tracking import Tracker

    uri = f"sqlite:///{runs_dir / 'mlflow.db'}"
    parent = Tracker(uri, "sweep-ablations", run_name=SWEEP,
                     tags={"sweep": SWEEP, "sweep_role": "parent", "space": "ablations"})
    ids = {}
    for name, scale in zip(RUNS, (1.0, 1.08)):
        exp = name.split("-", 1)[1]
        t = Tracker(uri, "sweep-ablations", run_name=name,
                    tags={"mlflow.parentRunId": parent.run_id, "sweep": SWEEP, "sweep_role": "trial",
                          "experiment_id": exp})
        t.log_params({"model.coarse_only": exp == "A6"})
        for step in range(1, 13):
            fine = scale * (3.2 / step ** 0.35)
            t.log_metrics({"loss": fine, "loss_fine": fine, "loss_coarse": 1.04 * fine,
                           "loss_ratio": 1 / 1.04}, step)
        t.finish()
        ids[name] = t.run_id
    parent.finish()
    exp_id = MlflowClient(uri).get_experiment_by_name("sweep-ablations").experiment_id
    return exp_id, ids


def expand_sweep(page) -> None:
    """Show the trial rows nested under the sweep's parent row (the (+) button by its name)."""
    page.wait_for_timeout(1000)
    if not page.get_by_text(RUNS[0], exact=True).is_visible():
        page.locator("button[data-component-id*=runnamecellrenderer]").first.click()
    for name in RUNS:
        page.get_by_text(name, exact=True).wait_for(timeout=20_000)


@pytest.fixture
def ui_server(tmp_path, repo_root):
    """`jobs/mlflow_ui.py` on 127.0.0.1:<free port> over a fresh store; stopped afterwards."""
    runs = tmp_path / "runs"
    runs.mkdir()
    exp_id, ids = make_store(runs)
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(repo_root / "jobs" / "mlflow_ui.py"), "--runs-dir", str(runs),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if urllib.request.urlopen(base + "/health", timeout=2).read().strip() == b"OK":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not come up: {(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, exp_id, ids
    finally:
        # The server forks workers and job consumers: stop the whole session we started.
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            time.sleep(0.5)
        log.close()


def test_ui_compares_loss_fine_and_loss_coarse(ui_server, repo_root):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    base, exp_id, ids = ui_server
    out = repo_root / "test-artifacts"
    out.mkdir(exist_ok=True)
    with sync_playwright() as p:
        # Playwright gives the browser a fresh temporary profile (the notes' --user-data-dir).
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            # 1. Runs view of the experiment: the sweep's parent row, expanded to its trials.
            page.goto(f"{base}/#/experiments/{exp_id}/runs")
            page.get_by_text(SWEEP, exact=True).wait_for(timeout=60_000)
            close = page.get_by_role("button", name="Close")
            if close.count():  # the MLflow Assistant side panel takes a third of the width
                close.first.click()
            expand_sweep(page)

            # 2. Select both trials -> Compare: a metrics table with loss_fine and loss_coarse per run.
            for name in RUNS:
                idx = page.locator("[role=row]", has=page.get_by_text(name, exact=True)).first.get_attribute(
                    "row-index")
                page.locator(f"[row-index='{idx}'] input.ag-checkbox-input").first.check(force=True)
            page.get_by_role("button", name="Compare").click()
            page.get_by_text("loss_coarse").first.wait_for(timeout=30_000)
            page.get_by_text(RUNS[1], exact=True).first.wait_for(timeout=30_000)
            assert "compare-runs" in page.url
            assert all(ids[n] in page.url for n in RUNS), page.url
            try:  # the parallel-coordinates plot draws a moment later (screenshot only)
                page.locator(".js-plotly-plot").first.wait_for(timeout=15_000)
                page.wait_for_timeout(1000)
            except Exception:  # noqa: BLE001
                pass
            text = page.inner_text("body")
            page.screenshot(path=str(out / "mlflow_ui_compare.png"), full_page=True)
            for needle in ("loss_fine", "loss_coarse", *RUNS):
                assert needle in text, f"{needle!r} missing from the Compare page"

            # 3. Chart view of the runs page: one chart per metric, a line per visible run.
            page.goto(f"{base}/#/experiments/{exp_id}/runs")
            page.get_by_text(SWEEP, exact=True).wait_for(timeout=60_000)
            expand_sweep(page)  # the UI remembers expanded rows: only click when collapsed
            page.locator("label", has=page.locator("input[name=runs-view-mode][value=CHART]")).click()
            page.get_by_text(f"{RUNS[1]} (loss_coarse)").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1500)  # let the charts finish drawing for the screenshot
            assert "compareRunsMode=CHART" in page.url
            close = page.get_by_role("button", name="Close")
            if close.count():
                close.first.click()
                page.wait_for_timeout(500)
            text = page.inner_text("body")
            page.screenshot(path=str(out / "mlflow_ui.png"), full_page=True)
        finally:
            browser.close()
    for needle in ("loss_fine", "loss_coarse", *RUNS):
        assert needle in text, f"{needle!r} missing from the chart view"
    for name in RUNS:  # each run has a line in each of the two charts
        assert f"{name} (loss_fine)" in text and f"{name} (loss_coarse)" in text, name
    assert (out / "mlflow_ui.png").stat().st_size > 10_000
