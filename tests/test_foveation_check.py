"""Foveation failure signatures (platform/train/failure_signatures.py), their training-loop hook, the
check's verdicts and probes (platform/check), and a tiny end-to-end run of the check as
jobs/foveation_check.py parses it (task -> preprocessing -> two arms on Ray Train -> held-out
evaluation -> report, MLflow parent/children, heatmap artifact)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from scripts import load_script
from fovea.platform.train.failure_signatures import (
    ENTROPY_FRAC, RATIO_TOL, WARMUP_STEPS, failure_signatures, flag_failure_signatures,
)

LOG_N = math.log(257)
HEALTHY = {"step": 1000, "loss_fine": 1.30, "loss_coarse": 1.42, "loss_ratio": 1.30 / 1.42, "q_static_std": 0.97,
           "attn_entropy_fine": 4.1, "attn_entropy_coarse": 4.6, "attn_entropy_max": LOG_N,
           "fine_coarse_token_diff": 0.74}


def names(metrics, init_std=1.0, **kw):
    return sorted(s.name for s in failure_signatures(metrics, init_std, **kw))


def test_healthy_metrics_raise_nothing():
    assert names(HEALTHY) == []
    assert names({}) == []  # nothing logged yet: nothing to say
    assert names({**HEALTHY, "loss_ratio": float("nan"), "attn_entropy_fine": None}) == []


def test_each_signature_fires_on_its_own():
    assert names({**HEALTHY, "loss_ratio": 1.0 + RATIO_TOL / 2}) == ["ratio_stuck"]
    assert names({**HEALTHY, "loss_ratio": 1.0 - RATIO_TOL * 2}) == []
    # the ratio is recomputed from the losses when only those are there
    assert names({k: v for k, v in {**HEALTHY, "loss_coarse": 1.301}.items() if k != "loss_ratio"}) == ["ratio_stuck"]
    assert names({**HEALTHY, "attn_entropy_fine": ENTROPY_FRAC * LOG_N + 0.01}) == ["entropy_uniform"]
    assert names({**HEALTHY, "attn_entropy_fine": ENTROPY_FRAC * LOG_N - 0.01}) == []
    assert names({**HEALTHY, "q_static_std": 0.02}, init_std=0.02) == ["q_static_std"]  # BUG-001
    assert names({**HEALTHY, "q_static_std": 0.4}) == ["q_static_std"]  # collapsed from 1.0
    assert names({**HEALTHY, "q_static_std": 2.5}) == ["q_static_std"]  # blew up
    assert names({**HEALTHY, "q_static_std": 0.6}) == []
    assert names({**HEALTHY, "fine_coarse_token_diff": 0.012}) == ["tokens_identical"]


def test_bug_001_like_metrics_fire_everything_and_messages_explain():
    bug = {"step": 500, "loss_fine": 2.0, "loss_coarse": 2.0, "q_static_std": 0.02, "attn_entropy_fine": 5.548,
           "attn_entropy_coarse": 5.548, "attn_entropy_max": LOG_N, "fine_coarse_token_diff": 0.012}
    sigs = failure_signatures(bug, 0.02)
    assert sorted(s.name for s in sigs) == ["entropy_uniform", "q_static_std", "ratio_stuck", "tokens_identical"]
    text = " ".join(s.message for s in sigs)
    assert "BUG-001" in text and "BUG-002" in text and "0.02" in text


def test_warmup_aliases_and_coarse_only():
    early = {**HEALTHY, "step": WARMUP_STEPS - 1, "loss_ratio": 1.0, "attn_entropy_fine": LOG_N}
    assert names(early) == []  # at init a healthy run looks like this too
    assert names({**early, "step": WARMUP_STEPS}) == ["entropy_uniform", "ratio_stuck"]
    assert names({**early, "step": 5}, warmup_steps=0) == ["entropy_uniform", "ratio_stuck"]
    # other metric names for the same quantities
    alias = {"attn_entropy": 5.5, "fine_coarse_diff": 0.001, "val_loss_ratio": 0.999}
    assert names(alias) == ["entropy_uniform", "ratio_stuck", "tokens_identical"]
    # coarse_only (A6): the fine pass is untrained by design, only q_static is judged
    bad = {"step": 900, "loss_ratio": 1.0, "attn_entropy_fine": LOG_N, "fine_coarse_token_diff": 0.0,
           "q_static_std": 0.01}
    assert names(bad, mode="coarse_only") == ["q_static_std"]


def test_training_loop_hook_tags_rank0_and_marks_metrics():
    class FakeTracker:
        def __init__(self):
            self.tags = {}

        def set_tags(self, tags):
            self.tags.update(tags)

    cfg = SimpleNamespace(model=SimpleNamespace(coarse_only=False, query_init_std=1.0))
    tracker = FakeTracker()
    metrics = {**HEALTHY, "step": 300, "fine_coarse_token_diff": 0.001}
    sigs = flag_failure_signatures(metrics, cfg, tracker, rank=0, step=300)
    assert [s.name for s in sigs] == ["tokens_identical"]
    assert metrics["warning.tokens_identical"] == 1.0
    assert tracker.tags["warning.tokens_identical"].startswith("step 300: ")
    other = FakeTracker()
    m2 = {**HEALTHY, "fine_coarse_token_diff": 0.001}
    flag_failure_signatures(m2, cfg, other, rank=1, step=300)
    assert other.tags == {} and m2["warning.tokens_identical"] == 1.0  # same metrics on every rank
    assert flag_failure_signatures({"q_static_std": "x"}, None, tracker) == []  # never raises


# -- end to end ------------------------------------------------------------------------------

def test_verdicts():
    from fovea.platform.check.report import verdicts

    def ev(loss_fine, loss_coarse, a6_loss, acc_b, acc_a, lift=6.0):
        diag = {"attn_entropy_fine": 4.0}
        return {"baseline": {"loss_fine": loss_fine, "loss_coarse": loss_coarse, "glyph_accuracy": acc_b,
                             "exact_match": 0.0, "diagnostics": diag, "attn_fine": {"lift": lift},
                             "attn_coarse": {"lift": 1.1}},
                "a6": {"loss": a6_loss, "glyph_accuracy": acc_a, "exact_match": 0.0, "diagnostics": {},
                       "attn_coarse": {"lift": 1.2}}}

    rows = {"baseline": [{"step": 50, "attn_entropy_fine": 5.5}, {"step": 500, "attn_entropy_fine": 4.0}]}
    v, lines = verdicts(ev(0.5, 0.9, 0.7, 0.9, 0.45), rows, LOG_N, {}, [], chance=0.125)
    assert v == "foveation is helping" and sum(x.startswith("PASS") for x in lines) == 5
    # lower teacher-forced loss, but A6's captions read the glyphs better: not "helping"
    v, _ = verdicts(ev(0.002, 1.9, 0.003, 0.6, 1.0), rows, LOG_N, {}, [], chance=0.125)
    assert v == "inconclusive: captions failed"
    v, _ = verdicts(ev(0.7, 0.9, 0.7, 0.45, 0.45, lift=1.0), rows, LOG_N, {}, [], chance=0.125)
    assert v.startswith("foveation is NOT helping")
    v, lines = verdicts(ev(0.33, 1.8, 0.33, 0.13, 0.13), rows, LOG_N, {"entropy_uniform": {
        "first": 100, "last": 500, "count": 9}}, [], chance=0.125)
    assert v.startswith("inconclusive: neither arm") and "entropy_uniform" in v
    assert any(x.startswith("WARN") and "entropy_uniform" in x for x in lines)
    # beating A6 on glyph accuracy is no pass while the baseline itself is below chance
    _, lines = verdicts(ev(0.8, 1.0, 0.8, 0.062, 0.031), rows, LOG_N, {}, [], chance=0.125)
    assert any(x.startswith("FAIL captions") for x in lines)


def test_glyph_lift_splits_frame_one_from_the_llm_queries():
    """Attention on frame 1's target only (what a learned q_init alone gives on a fixed path):
    lift_first is high, lift_rest is below uniform, and the verdict lines say so."""
    import torch

    from fovea.platform.check.probe import box_coverage, glyph_lift
    from fovea.platform.check.report import verdicts

    g, T = 16, 4
    # 4 x 4 patch cells, moving 3 cells right a frame (exact in binary: coverage is 0 or 1)
    boxes = [[0.125 + 0.1875 * t, 0.125, 0.375 + 0.1875 * t, 0.375] for t in range(T)]
    meta = {"glyphs": [{"box_norm": b, "distractors": []} for b in boxes]}
    maps = torch.full((1, T, g, g), 1.0 / (g * g))
    maps[0, 0] = box_coverage(boxes[0], g) / box_coverage(boxes[0], g).sum()  # frame 1: all on the target
    maps[0, 1:] = box_coverage(boxes[0], g) / box_coverage(boxes[0], g).sum()  # later: still frame 1's spot
    out = glyph_lift(maps, [meta], torch.ones(1, T, dtype=torch.bool))
    assert out["lift_first"] == pytest.approx(16.0)  # all the mass on 16 of 256 cells
    # frame 2 overlaps frame 1's box by one column (1/4 of the mass), frames 3-4 not at all
    assert out["lift_rest"] == pytest.approx((0.25 + 0 + 0) / 3 * 16)
    ev = {"baseline": {"loss_fine": 0.5, "loss_coarse": 0.9, "glyph_accuracy": 0.5, "exact_match": 0.0,
                       "diagnostics": {"attn_entropy_fine": 4.0}, "attn_fine": {**out, "lift": 2.5},
                       "attn_coarse": {"lift": 1.1}},
          "a6": {"loss": 0.7, "glyph_accuracy": 0.3, "exact_match": 0.0, "diagnostics": {}, "attn_coarse": {"lift": 1.2}}}
    _, lines = verdicts(ev, {"baseline": [{"step": 500, "attn_entropy_fine": 4.0}]}, LOG_N, {}, [], chance=0.125)
    assert any(x.startswith("INFO fine lift by frame") for x in lines)
    assert any(x.startswith("NOTE the fine pass finds the target in frame 1 only") for x in lines)


def test_frame_signal_measures_what_a_token_carries_of_its_frame(model_store):
    """Swapping one frame for another video's: no change when the videos are the same, a change
    of the coarse token (q_static reads only its frame) when they differ; the verdict lines
    flag a fine query that looks (lift) while its token barely moves."""
    import torch

    from fovea.model.build import build_model
    from fovea.model.config import ModelConfig
    from fovea.platform.check.probe import frame_signal
    from fovea.platform.check.report import verdicts
    from fovea.model.store import TINY_DINO, TINY_LLM

    torch.manual_seed(0)
    model = build_model(ModelConfig(llm=TINY_LLM, dino=TINY_DINO)).eval()
    one = torch.randn(1, 3, 3, 224, 224)
    mask = torch.ones(3, 3, dtype=torch.bool)
    same = frame_signal(model, one.expand(3, -1, -1, -1, -1).clone(), mask)
    assert same["coarse"] == pytest.approx(0.0, abs=1e-6) and same["fine"] == pytest.approx(0.0, abs=1e-6)
    differ = frame_signal(model, torch.randn(3, 3, 3, 224, 224), mask)
    assert differ["coarse"] > 1e-3 and differ["fine"] > 1e-3
    assert frame_signal(model, torch.randn(4, 3, 224, 224), mask[:1, :]) == {}  # packed frames: not measured

    ev = {"baseline": {"loss_fine": 0.8, "loss_coarse": 0.99, "glyph_accuracy": 0.1, "exact_match": 0.0,
                       "diagnostics": {"attn_entropy_fine": 2.1}, "attn_fine": {"lift": 5.5},
                       "attn_coarse": {"lift": 4.8}, "frame_signal": {"fine": 0.05, "coarse": 0.07}},
          "a6": {"loss": 0.28, "glyph_accuracy": 0.57, "exact_match": 0.1, "diagnostics": {},
                 "attn_coarse": {"lift": 6.2}, "frame_signal": {"fine": 0.9, "coarse": 1.12}}}
    _, lines = verdicts(ev, {"baseline": [{"step": 500, "attn_entropy_fine": 2.1}]}, LOG_N, {}, [], chance=0.125)
    assert any(x.startswith("INFO token change") and "fine 5%" in x and "A6 coarse 112%" in x for x in lines)
    assert any(x.startswith("NOTE the fine query looks at the glyph, but its token hardly changes") for x in lines)


@pytest.mark.extended
@pytest.mark.slow
def test_tiny_check_end_to_end(repo_root, model_store, tmp_path):
    """cpu-tiny preset with BUG-001 + BUG-002 reintroduced: report, verdict lines, MLflow parent
    with both arms as children, heatmap artifact, and the loop's warning tags firing."""
    import ray
    from mlflow.tracking import MlflowClient

    from fovea.platform.check.run import ARTIFACT_DIR, run_check

    job = load_script("jobs/foveation_check.py")
    try:
        st = run_check(job.parse_args(["--preset", "cpu-tiny", "--runs-dir", str(tmp_path), "--workers", "1",
                                       "--parallel", "yes", "--bug", "both", "--steps", "6", "--name", "e2e"]))
    finally:
        ray.shutdown()
    report = st["report"]
    assert "== foveation check: preset cpu-tiny, bug both" in report and "VERDICT:" in report
    for word in ("held-out loss_fine", "held-out loss_coarse", "caption exact match", "attn entropy",
                 "fine vs coarse tokens", "baseline vs A6"):
        assert word in report, word
    b, a = st["eval"]["baseline"], st["eval"]["a6"]
    assert b["n_videos"] == a["n_videos"] > 0 and math.isfinite(b["loss_fine"]) and math.isfinite(b["loss_coarse"])
    assert math.isfinite(a["loss"]) and 0 <= b["exact_match"] <= 1 and 0 <= a["glyph_accuracy"] <= 1
    assert st["data_path"] == "preprocess"  # PyAV is here: the normal preprocessing path ran
    # what the tokens carry of their own frame, and where the fine query looks by frame
    assert set(b["frame_signal"]) == set(a["frame_signal"]) == {"fine", "coarse"}
    assert "token change, own frame" in report and "INFO token change when only its own frame" in report
    assert {"lift_first", "lift_rest"} <= set(b["attn_fine"]) and "INFO fine lift by frame" in report

    client = MlflowClient(st["tracking_uri"])
    parent = client.get_run(st["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["verdict"] == st["verdict"]
    children = {r.info.run_id: r for r in client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert set(children) == set(st["children"].values())
    arts = {f.path for f in client.list_artifacts(parent.info.run_id, ARTIFACT_DIR)}
    assert {f"{ARTIFACT_DIR}/heatmap_strip.png", f"{ARTIFACT_DIR}/report.txt",
            f"{ARTIFACT_DIR}/curves.png"} <= arts
    assert st["heatmap_uri"].endswith(f"{ARTIFACT_DIR}/heatmap_strip.png")
    assert Path(st["heatmap_file"]).stat().st_size > 10_000
    assert "baseline.loss_fine" in parent.data.metrics and "a6.loss" in parent.data.metrics

    # BUG-001 (init std 0.02): the training loop flagged it in the child's tags and metrics.jsonl
    base = children[st["children"]["baseline"]]
    assert "warning.q_static_std" in base.data.tags, base.data.tags
    rows = [json.loads(x) for x in (tmp_path / "ray" / "e2e-baseline" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("warning.q_static_std") for r in rows)
    assert "q_static_std" in st["warnings"]["baseline"]
    assert "warning.q_static_std" in parent.data.tags
