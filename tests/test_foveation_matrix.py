"""The foveation check's matrix (platform/check/matrix.py): its variants, the time-shuffled
control's frames, and how the findings read the controls and the bug rows."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from scripts import load_script
from fovea.platform.check.matrix import (
    CONTROLS, VARIANTS, MatrixData, backbone_reads, bug_caught, findings, format_matrix, merge_matrices,
    select_variants, variant_overrides, variant_task, why,
)
from fovea.platform.check.presets import PRESETS
from fovea.platform.check.task import GlyphTaskConfig, render_video
from fovea.platform.config import ConfigError


def _args(**kw):
    base = dict(videos=None, frames=None, glyph_size=None, alphabet=None, motion=None, speed=None, distractors=None,
                clutter=None, pan=None, noise=None, caption=None, time_shuffle=None, task_seed=None)
    return argparse.Namespace(**{**base, **kw})


def test_the_matrix_has_eight_variants_and_two_controls_with_distinct_tasks():
    rows = select_variants(None, controls=True)
    assert len([v for v in rows if not v.control]) >= 8 and {v.control for v in rows} >= {"random_backbone",
                                                                                           "time_shuffled"}
    preset = PRESETS["gpu-tiny-standin"]
    stamps = {variant_task(_args(), preset, v).stamp() for v in VARIANTS}
    assert len(stamps) == len(VARIANTS)  # every variant is a task of its own
    # the random-backbone control reads the preset's own task with the stand-in's random twin
    rnd = CONTROLS[0]
    assert variant_task(_args(), preset, rnd).stamp() == variant_task(_args(), preset, VARIANTS[0]).stamp()
    assert variant_overrides(preset, rnd) == ["model.dino=facebook/dinov2-small"]
    assert variant_overrides(preset, VARIANTS[3]) == []
    # the command line's task knobs apply under the variant's own fields
    t = variant_task(_args(videos=50, alphabet="letters"), preset, VARIANTS[3])
    assert (t.num_videos, t.alphabet) == (50, "digits")
    assert [v.name for v in select_variants("fixed-shapes,control-time-shuffled", True)] == [
        "fixed-shapes", "control-time-shuffled"]
    with pytest.raises(ConfigError, match="unknown --variants .*'nope'"):
        select_variants("fixed-shapes,nope", True)
    with pytest.raises(ConfigError, match="random_dino"):
        variant_overrides(PRESETS["cpu-tiny"], rnd)
    # --controls-on: the controls run another variant's task, and are read against its row
    on = {v.name: v for v in select_variants(None, True, controls_on="circle-colours-noise")}
    circle = variant_task(_args(), preset, on["circle-colours-noise"])
    assert variant_task(_args(), preset, on["control-random-backbone"]).stamp() == circle.stamp()
    shuffled = variant_task(_args(), preset, on["control-time-shuffled"])
    assert (shuffled.motion, shuffled.clutter, shuffled.time_shuffle) == ("circle", "noise", True)
    with pytest.raises(ConfigError, match="unknown --controls-on 'control-time-shuffled'"):
        select_variants(None, True, controls_on="control-time-shuffled")


def test_time_shuffled_frames_are_the_same_frames_in_another_order():
    cfg = GlyphTaskConfig(num_videos=4, frames=5, frame_size=64, glyph_size=0.3, clutter="noise", caption="sequence")
    shuf = GlyphTaskConfig(**{**cfg.to_dict(), "time_shuffle": True})
    moved = 0
    for i in range(4):
        frames, meta = render_video(cfg, i)
        sframes, smeta = render_video(shuf, i)
        order = [r["shown_from"] for r in smeta["glyphs"]]
        assert sorted(order) == list(range(5)) and [r["t"] for r in smeta["glyphs"]] == list(range(5))
        for t, k in enumerate(order):
            assert np.array_equal(sframes[t], frames[k])
            assert smeta["glyphs"][t]["box"] == meta["glyphs"][k]["box"]
        assert smeta["labels"] == [meta["labels"][k] for k in order]  # the caption follows the shown order
        moved += order != list(range(5))
    assert moved >= 3
    assert shuf.stamp() != cfg.stamp()


def _row(variant, acc, a6_acc, loss_fine, a6_loss, verdict, warnings=(), chance=0.125):
    return {"variant": variant, "glyph_acc": acc, "a6_glyph_acc": a6_acc, "loss_fine": loss_fine, "a6_loss": a6_loss,
            "loss_coarse": a6_loss, "chance": chance, "verdict": verdict, "warnings": list(warnings), "why": "",
            "entropy_fine": 4.0, "lift": 3.0, "lift_distractors": 0.5, "seconds": 60.0}


HELP = "foveation is helping"


def test_matrix_data_is_made_ahead_once_per_task_and_a_failure_waits_for_its_row(tmp_path):
    """prefetch makes every row's set in row order, one per task (the random-backbone control
    shares its variant's); a set that fails to be made raises in its own row's get."""
    made = []

    def prepare(task, data_dir, llm_ref, stage, preset, workers, how, connect):
        if task.alphabet == "digits":
            raise RuntimeError("no digits today")
        made.append((task.stamp(), how))
        return {"splits": {"train": 1, "val": 1}}

    args = _args(data_path="auto", data_dir=str(tmp_path), runs_dir=str(tmp_path), workers=None, address=None,
                 overrides=[])
    rows = select_variants("fixed-colours,fixed-digits,control-random-backbone,line-colours", True)
    preset = PRESETS["cpu-standin"]
    data = MatrixData(args, preset, prepare)
    data.prefetch(rows).join(timeout=60)
    stamps = [variant_task(args, preset, v).stamp() for v in rows]
    assert made == [(stamps[0], "direct"), (stamps[3], "direct")]  # the control reuses fixed-colours' set
    assert data.get(rows[2])["task"].stamp() == stamps[0] and len(made) == 2
    with pytest.raises(RuntimeError, match="no digits today"):
        data.get(rows[1])


def test_findings_read_the_controls_against_a_reference_with_an_edge():
    ref = _row("fixed-colours", 0.9, 0.4, 0.50, 0.80, HELP)
    rnd = _row("control-random-backbone", 0.2, 0.15, 1.9, 1.95, "inconclusive: neither arm learned")
    shuf = _row("control-time-shuffled", 0.5, 0.45, 0.76, 0.79, "inconclusive: a6 failed")
    f = findings({"none": [ref, rnd, shuf]})
    assert f[0].startswith("PASS random-backbone control") and "+0.700" in f[0]
    assert f[1].startswith("PASS time-shuffled control") and "+0.0300 against +0.3000" in f[1]
    # a shuffled row that keeps the edge fails; a random backbone as good as the stand-in fails
    f = findings({"none": [ref, {**rnd, "glyph_acc": 0.85}, {**shuf, "loss_fine": 0.4}]})
    assert f[0].startswith("FAIL random-backbone") and f[1].startswith("FAIL time-shuffled")
    # no edge to lose and nothing learned: the controls are reported, not judged
    flat = _row("fixed-colours", 0.1, 0.1, 2.0, 2.0, "inconclusive: neither arm learned")
    f = findings({"none": [flat, {**rnd, "lift": 1.0}, shuf]})
    # nothing read yet: the random-backbone control reads where the queries look instead
    assert f[0].startswith("PASS random-backbone control, by attention only") and "1.00x against 3.00x" in f[0]
    assert findings({"none": [flat, rnd]})[0].startswith("INFO random-backbone control, by attention")
    circle = {**ref, "variant": "circle-colours-noise"}
    assert findings({"none": [circle, rnd, shuf]}) == []  # no fixed-colours row: nothing to read against
    assert findings({"none": [circle, rnd, shuf]}, "circle-colours-noise")[0].startswith("PASS random-backbone")
    assert f[1].startswith("INFO time-shuffled") and "not read" in f[1]


def test_a_bug_row_is_caught_by_its_own_signatures_or_a_lost_verdict():
    clean = _row("fixed-colours", 0.9, 0.4, 0.5, 0.8, HELP, warnings=["entropy_uniform"])
    assert bug_caught(_row("fixed-colours", 0.2, 0.4, 0.9, 0.8, "foveation is NOT helping"), clean)
    assert bug_caught(_row("fixed-colours", 0.8, 0.4, 0.6, 0.8, "inconclusive: lift failed"), clean)  # lost helping
    assert bug_caught(_row("fixed-colours", 0.9, 0.4, 0.5, 0.8, HELP, ["entropy_uniform", "q_static_std"]), clean)
    # the same verdict with only the clean row's own signatures: the bug did not show
    assert not bug_caught(_row("fixed-colours", 0.9, 0.4, 0.5, 0.8, HELP, ["entropy_uniform"]), clean)
    assert not bug_caught(_row("x", 0.9, 0.4, 0.5, 0.8, HELP), None)
    table = {"none": [clean], "both": [_row("fixed-colours", 0.9, 0.4, 0.5, 0.8, HELP, ["entropy_uniform"])]}
    assert findings(table)[-1].startswith("FAIL bug=both: 0 of 1 rows") and "(not: fixed-colours)" in findings(table)[-1]
    table["both"][0]["warnings"].append("q_static_std")
    assert findings(table)[-1].startswith("PASS bug=both: 1 of 1 rows")
    text = format_matrix({"preset": "p", "models": "m", "rows": table, "findings": findings(table)})
    assert "-- bug=both --" in text and "fixed-colours" in text and "PASS bug=both" in text


@pytest.mark.slow
def test_one_row_of_the_matrix_on_the_tiny_standin(repo_root, standin_tiny, tmp_path):
    """The check in `make test`: the cpu-standin preset (tiny LLM + the tiny stand-in backbone),
    one variant as a one-row matrix, both arms on Ray Train, probed on held-out videos, judged,
    and logged as a matrix run with the row's run nested under it.

    20 steps teach the tiny LLM no glyph names, but the stand-in's patch features already give
    the queries something to look at: on this task the fine query's attention entropy sits near
    2.6 (log N = 5.55) with ~2.4x uniform mass on the target, where the same row on the random
    tiny ViT (control-random-backbone) stays at 5.549 and 1.00x."""
    import ray
    from mlflow.tracking import MlflowClient

    from fovea.platform.check.matrix import run_matrix
    from fovea.platform.check.presets import STANDIN_TINY

    job = load_script("jobs/foveation_check.py")
    try:
        summary = run_matrix(job.parse_args([
            "--preset", "cpu-standin", "--matrix", "--variants", "fixed-colours", "--steps", "20",
            "--eval-videos", "8", "--runs-dir", str(tmp_path), "--workers", "2", "--parallel", "yes",
            "--data-path", "direct", "--name", "mx"]))
    finally:
        ray.shutdown()
    (row,) = summary["rows"]["none"]
    assert row["variant"] == "fixed-colours" and "standin-tiny-dinov2-glyphs" in summary["models"]
    for k in ("loss_fine", "loss_ar", "loss_coarse", "a6_loss", "glyph_acc", "a6_glyph_acc", "entropy_fine", "lift"):
        assert isinstance(row[k], float) and math.isfinite(row[k]), k
    assert row["entropy_fine"] < 0.8 * row["log_n"] and row["lift"] >= 2.0, row
    assert row["verdict"] and "VERDICT" not in row["verdict"] and "fixed-colours" in summary["text"]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    mrun = client.get_run(summary["matrix_run_id"])
    assert mrun.info.status == "FINISHED" and mrun.data.tags["foveation_check"] == "matrix"
    arts = {f.path for f in client.list_artifacts(mrun.info.run_id, "foveation_matrix")}
    assert {"foveation_matrix/matrix.txt", "foveation_matrix/matrix.json"} <= arts
    heat = {f.path for f in client.list_artifacts(mrun.info.run_id, "foveation_matrix/heatmaps/none")}
    assert heat == {"foveation_matrix/heatmaps/none/fixed-colours.png"}
    assert mrun.data.metrics["none.fixed-colours.lift"] == pytest.approx(row["lift"])
    rrun = client.get_run(row["parent_run_id"])
    assert rrun.data.tags["mlflow.parentRunId"] == mrun.info.run_id
    assert rrun.data.tags["foveation_check.variant"] == "fixed-colours"
    arms = client.search_runs([rrun.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{rrun.info.run_id}'")
    assert len(arms) == 2 and {a.data.params["model.dino"] for a in arms} == {STANDIN_TINY}


def test_why_names_the_budget_the_task_or_the_backbone():
    flat = _row("fixed-shapes", 0.2, 0.2, 0.5, 0.5, "inconclusive: neither arm learned", chance=1 / 6)
    assert why(flat).startswith("budget: neither arm reads the glyphs")
    assert why({**flat, "backbone_reads": 0.05}).startswith("backbone: the stand-in names this alphabet's patches at 0.05")
    assert why({**flat, "backbone_reads": 0.9}).startswith("budget")  # the backbone reads them: the budget is short
    same = _row("fixed-colours-0d-plain", 0.9, 0.9, 0.3, 0.3, "inconclusive: a6 failed")  # lift 3.0, distractors 0.5
    assert why(same).startswith("task: the static query reads it as well")
    assert why({**same, "lift_distractors": 3.5}).startswith("the fine query looks at the distractors as much")
    assert why({**same, "warnings": ["q_static_std"]}).startswith("bug: q_static_std")
    assert why(_row("x", 0.9, 0.4, 0.5, 0.8, HELP)) == ""
    split = _row("line-colours", 0.52, 0.84, 0.125, 0.169, "inconclusive: captions failed")
    assert why(split).startswith("the measures disagree: the baseline's held-out loss is lower (0.125 against A6 0.169)")
    assert why({**split, "loss_ar": 0.160}).startswith("the measures disagree")  # its own queries still beat A6
    assert why({**split, "loss_ar": 0.210}).startswith(
        "the deployment loop: trained on the coarse pass's queries the baseline's held-out loss is 0.125, with the "
        "queries it makes for itself frame by frame (as captions are generated) 0.210, above A6's 0.169")
    assert why({**split, "glyph_acc": 0.84}) == "the baseline learned more, but not by the verdict's margins"
    assert backbone_reads("fovea/tiny-dinov2", "colours") is None  # random weights: no marker


def test_backbone_reads_comes_from_the_standin_marker(standin_tiny):
    import json

    marker = json.loads((standin_tiny / "STANDIN.json").read_text())
    assert backbone_reads("fovea/standin-tiny-dinov2-glyphs", "colours") == marker["held_out"]["trained"]["colours_acc"]


def test_matrices_run_in_parts_merge_into_one_table_and_findings(tmp_path, repo_root):
    """A matrix split over device calls: the controls in one part, their reference row in
    another; the merged table reads the controls against it, and a part's later row wins."""
    ref = {**_row("circle-colours-noise", 0.70, 0.12, 0.18, 0.65, HELP), "control": ""}
    shuf = {**_row("control-time-shuffled", 0.43, 0.59, 0.45, 0.39, "foveation is NOT helping"),
            "control": "time_shuffled"}
    stale = {**_row("fixed-colours", 0.1, 0.1, 0.9, 0.9, "inconclusive: budget"), "control": ""}
    fresh = {**_row("fixed-colours", 0.76, 0.99, 0.13, 0.04, "foveation is NOT helping"), "control": ""}
    part = lambda rows, on: {"preset": "gpu-tiny-standin", "models": "m", "rows": {"none": rows},  # noqa: E731
                             "controls_on": on, "findings": [], "matrix_run_id": "r"}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(part([shuf, stale], "circle-colours-noise")))
    b.write_text(json.dumps(part([ref, fresh], "fixed-colours")))
    merged = merge_matrices([str(a), str(b)], out=str(tmp_path / "merged"))
    assert merged["controls_on"] == "circle-colours-noise"  # from the part that ran the controls
    assert [r["variant"] for r in merged["rows"]["none"]] == ["control-time-shuffled", "fixed-colours",
                                                              "circle-colours-noise"]
    assert merged["rows"]["none"][1]["glyph_acc"] == 0.76
    (finding,) = merged["findings"]
    assert finding.startswith("PASS time-shuffled control: the baseline's held-out loss edge over A6 -0.0600 "
                              "against +0.4700")
    assert json.loads((tmp_path / "merged" / "matrix.json").read_text())["findings"] == [finding]
    with pytest.raises(ConfigError, match="cannot read .*nope.json"):
        merge_matrices([str(tmp_path / "nope.json")])
    # and from the command line, as a user merges the parts' files
    r = subprocess.run([sys.executable, str(repo_root / "jobs" / "foveation_check.py"), "--merge-matrices",
                        f"{a},{b}", "--out", str(tmp_path / "cli")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "PASS time-shuffled control" in r.stdout and (tmp_path / "cli" / "matrix.txt").exists()
