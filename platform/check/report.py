"""Verdicts and the report of the foveation check: the training series from each arm's
metrics.jsonl, the PASS / FAIL / INFO / NOTE lines and the verdict, the text table, and the
captions CSV. The measurements behind them: ``probe.py``.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from fovea.platform.train.failure_signatures import ENTROPY_FRAC

ARMS = ("baseline", "a6")
ARM_TITLE = {"baseline": "baseline (coarse_fine)", "a6": "A6 (coarse_only)"}
LOSS_MARGIN = 0.01  # "fine beats coarse" needs a relative gap above 1 %
LIFT_MIN = 2.0  # "looks at the glyph": attention on the glyph box >= 2x a uniform spread
LEARNED_MARGIN = 0.1  # glyph accuracy this far above chance in either arm: the visual task was learned


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if not math.isfinite(x) else f"{x:.{nd}g}"
    return str(x)


# -- series from the runs' metrics.jsonl -------------------------------------------------------------

ENT_FINE = ("attn_entropy_fine",)
ENT_COARSE = ("attn_entropy_coarse", "attn_entropy")


def _get(row: dict, keys: tuple[str, ...]) -> float | None:
    for k in keys:
        v = row.get(k)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
    return None


def series(rows: list[dict], keys: tuple[str, ...]) -> list[tuple[int, float]]:
    return [(int(r["step"]), v) for r in rows if (v := _get(r, keys)) is not None]


def warnings_from_rows(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith("warning.") and v:
                w = out.setdefault(k.removeprefix("warning."), {"first": int(r["step"]), "count": 0})
                w["last"] = int(r["step"])
                w["count"] += 1
    return out


# -- verdicts and report ---------------------------------------------------------------------------

def verdicts(evals: dict, rows: dict[str, list[dict]], log_n: float, warn: dict[str, dict],
             final_sigs: list, chance: float = float("nan")) -> tuple[str, list[str]]:
    """PASS/FAIL lines and the verdict: "helping" needs the baseline's fine tokens to beat both
    its own coarse tokens and the A6 arm by LOSS_MARGIN; attention evidence qualifies it."""
    b, a = evals["baseline"], evals["a6"]
    ok: dict[str, bool] = {}
    lines = _loss_and_caption_checks(b, a, chance, ok)
    lines += _attention_checks(b, a, rows.get("baseline", []), log_n, ok)
    held_out = {s.name for s in final_sigs}
    names = sorted(set(warn) | held_out)
    lines.append(_signature_line(names, warn, held_out))
    learned = not math.isfinite(chance) or max(b["glyph_accuracy"], a["glyph_accuracy"]) > chance + LEARNED_MARGIN
    if not learned:
        lines.append(f"NOTE neither arm reads the glyphs above chance ({chance:.3f} + {LEARNED_MARGIN}): the budget "
                     f"was too small to learn the visual task, so this says nothing about foveation yet; raise "
                     f"--steps (2 GPUs: the arms run in parallel) or ease the task (--clutter plain, --glyph-size 0.35)")
    # A6 reading the glyphs better than the baseline's own captions (the deployment loop) is no
    # "helping", whatever the teacher-forced losses say (seen on the 0-distractor control task).
    a6_reads_better = (a["glyph_accuracy"], a["exact_match"]) > (b["glyph_accuracy"], b["exact_match"])
    if not learned:
        verdict = "inconclusive: neither arm learned to read the glyphs in this budget"
    elif ok["ratio"] and ok["a6"] and not a6_reads_better:
        verdict = "foveation is helping" + ("" if ok.get("lift", True) and ok["entropy"] else
                                            " (loss only: attention not clearly on the glyph)")
    elif ok["a6"] or ok["captions"]:
        verdict = "inconclusive: " + ", ".join(k for k, v in ok.items() if not v) + " failed"
    else:
        verdict = "foveation is NOT helping"
    if names and not verdict.startswith("foveation is helping"):
        verdict += f" -- signatures: {', '.join(names)}"
    return verdict, lines


def _loss_and_caption_checks(b: dict, a: dict, chance: float, ok: dict[str, bool]) -> list[str]:
    """The held-out losses (fine against coarse, baseline against A6) and the captions; fills
    ``ok`` with "ratio", "a6" and "captions"."""
    lines = []
    lf, lc, la = b["loss_fine"], b["loss_coarse"], a["loss"]
    ok["ratio"] = lf < lc * (1 - LOSS_MARGIN)
    lines.append(f"{'PASS' if ok['ratio'] else 'FAIL'} fine vs coarse tokens: baseline held-out loss_fine {lf:.4f} "
                 f"vs loss_coarse {lc:.4f} (ratio {lf / lc:.3f}; needs < {1 - LOSS_MARGIN:.2f}; with lambda_coarse=0 "
                 f"the LLM never trains on coarse tokens, so A6 below is the fair comparison)")
    ok["a6"] = lf < la * (1 - LOSS_MARGIN)
    lines.append(f"{'PASS' if ok['a6'] else 'FAIL'} baseline vs A6 (same budget): loss_fine {lf:.4f} vs A6 "
                 f"coarse_only loss {la:.4f} ({(lf - la) / la:+.1%})")
    above_chance = not math.isfinite(chance) or b["glyph_accuracy"] > chance + LEARNED_MARGIN
    ok["captions"] = above_chance and (b["glyph_accuracy"], b["exact_match"]) > (a["glyph_accuracy"], a["exact_match"])
    lines.append(f"{'PASS' if ok['captions'] else 'FAIL'} captions: exact match {b['exact_match']:.3f} vs A6 "
                 f"{a['exact_match']:.3f}; glyph accuracy {b['glyph_accuracy']:.3f} vs A6 {a['glyph_accuracy']:.3f} "
                 f"(chance {chance:.3f}; a pass also needs the baseline above chance + {LEARNED_MARGIN})")
    return lines


def _attention_checks(b: dict, a: dict, baseline_rows: list[dict], log_n: float, ok: dict[str, bool]) -> list[str]:
    """Where the fine query looks: its entropy over training, its lift on the glyph box, and how
    much its token carries of its own frame; fills ``ok`` with "entropy" and, with lift figures,
    "lift"."""
    lines = []
    ent = series(baseline_rows, ENT_FINE)
    ent_eval = b["diagnostics"].get("attn_entropy_fine")
    if ent:
        first, last = ent[0][1], ent[-1][1]
        ok["entropy"] = last < ENTROPY_FRAC * log_n
        lines.append(f"{'PASS' if ok['entropy'] else 'FAIL'} fine attention entropy over training: "
                     f"{first:.3f} (step {ent[0][0]}) -> {last:.3f} (step {ent[-1][0]}); held-out "
                     f"{_fmt(ent_eval)}; log N {log_n:.3f}, threshold {ENTROPY_FRAC} log N = {ENTROPY_FRAC * log_n:.3f}")
    else:
        ok["entropy"] = False
        lines.append("FAIL fine attention entropy: no diagnostics rows in metrics.jsonl")
    fa, ca, aa = b.get("attn_fine", {}), b.get("attn_coarse", {}), a.get("attn_coarse", {})
    if fa:
        ok["lift"] = fa["lift"] >= LIFT_MIN and fa["lift"] > max(ca.get("lift", 0.0), aa.get("lift", 0.0))
        lines.append(f"{'PASS' if ok['lift'] else 'FAIL'} looks at the glyph: attention on the target box "
                     f"{fa['lift']:.2f}x uniform for the fine query (distractors {_fmt(fa.get('distractor_lift'), 3)}x), "
                     f"baseline coarse {_fmt(ca.get('lift'), 3)}x, A6 coarse {_fmt(aa.get('lift'), 3)}x "
                     f"(needs >= {LIFT_MIN:g}x and above the coarse queries)")
        if "lift_first" in fa and "lift_rest" in fa:
            lines.append(f"INFO fine lift by frame: frame 1 (learned q_init) {fa['lift_first']:.2f}x, frames 2..T "
                         f"(queries the LLM predicted) {fa['lift_rest']:.2f}x")
            if fa["lift_first"] >= LIFT_MIN > fa["lift_rest"]:
                lines.append("NOTE the fine pass finds the target in frame 1 only: q_init learned where frame 1's "
                             "target is, but the LLM's queries do not follow it in later frames, so any gain is a "
                             "second learned static query, not the LLM predicting where to look")
    fs, afs = b.get("frame_signal", {}), a.get("frame_signal", {})
    if "fine" in fs and "coarse" in afs:
        lines.append(f"INFO token change when only its own frame is swapped, share of the token's norm: baseline "
                     f"fine {fs['fine']:.0%}, coarse {fs['coarse']:.0%}; A6 coarse {afs['coarse']:.0%}")
        if fa.get("lift", 0.0) >= LIFT_MIN and fs["fine"] < 0.25 * afs["coarse"]:
            lines.append("NOTE the fine query looks at the glyph, but its token hardly changes with the frame: "
                         "the query pass sees without carrying what it sees to the LLM")
    return lines


def _signature_line(names: list[str], warn: dict[str, dict], held_out: set[str]) -> str:
    """One line for the failure signatures seen in training (``warn``) or on held-out data."""
    if not names:
        return "OK   no failure signatures (ratio at 1.0, entropy near log N, q_static std, identical tokens)"
    return "WARN failure signatures: " + "; ".join(
        f"{n}" + (f" (training steps {warn[n]['first']}-{warn[n]['last']}, {warn[n]['count']}x)" if n in warn else "")
        + (" (held-out)" if n in held_out else "") for n in names)


def format_report(st: dict) -> str:
    b, a = st["eval"]["baseline"], st["eval"]["a6"]
    task = st["task"]
    cols = [("", ARM_TITLE["baseline"], ARM_TITLE["a6"])]
    cols.append(("train steps / wall s", f"{st['steps']} / {_fmt(st['trained'].get('baseline'))}",
                 f"{st['steps']} / {_fmt(st['trained'].get('a6'))}"))
    cols.append(("held-out loss_fine", _fmt(b["loss_fine"]), "-"))
    cols.append(("held-out loss, own queries", _fmt(b.get("loss_autoregressive")), "-"))
    cols.append(("held-out loss_coarse", _fmt(b["loss_coarse"]), f"{_fmt(a['loss'])} (trained on it)"))
    cols.append(("fine/coarse ratio", _fmt(b["ratio"]), "-"))
    cols.append(("caption exact match", f"{b['exact_match']:.3f} of {b['n_videos']}", f"{a['exact_match']:.3f} of {a['n_videos']}"))
    cols.append(("glyph accuracy", f"{b['glyph_accuracy']:.3f}", f"{a['glyph_accuracy']:.3f}"))
    cols.append(("attn entropy fine / coarse", f"{_fmt(b['diagnostics'].get('attn_entropy_fine'))} / "
                 f"{_fmt(b['diagnostics'].get('attn_entropy_coarse'))}", f"- / {_fmt(a['diagnostics'].get('attn_entropy_coarse'))}"))
    cols.append(("glyph lift fine / coarse", f"{_fmt(b.get('attn_fine', {}).get('lift'), 3)}x / "
                 f"{_fmt(b.get('attn_coarse', {}).get('lift'), 3)}x", f"- / {_fmt(a.get('attn_coarse', {}).get('lift'), 3)}x"))
    sig = lambda r, k: f"{r['frame_signal'][k]:.0%}" if k in r.get("frame_signal", {}) else "-"  # noqa: E731
    cols.append(("token change, own frame f/c", f"{sig(b, 'fine')} / {sig(b, 'coarse')}", f"- / {sig(a, 'coarse')}"))
    cols.append(("|z_fine - z_coarse|", _fmt(b["diagnostics"].get("fine_coarse_token_diff")), "-"))
    cols.append(("q_static std", _fmt(b["q_static_std"]), _fmt(a["q_static_std"])))
    w0 = max(len(c[0]) for c in cols)
    w1 = max(len(c[1]) for c in cols)
    lines = [f"== foveation check: preset {st['preset']}, bug {st['bug']}, {st['steps']} steps x "
             f"{st['batch_size']} videos per arm ==",
             f"task: {task['num_videos']} videos x {task['frames']} frames, {task['alphabet']}, {task['motion']} path, "
             f"{task['distractors']} distractors, glyph {task['glyph_size']} of the side, {task['clutter']} clutter, "
             f"{task.get('caption', 'sequence')} caption; held-out {b['n_videos']}; log N = {st['log_n']:.3f}",
             f"models: {st['models']}; data via {st['data_path']}: generate {st['seconds_generate']:.0f} s, "
             f"preprocess {st['seconds_preprocess']:.0f} s; splits {st['splits']}"]
    lines += [f"  {c[0]:<{w0}}  {c[1]:<{w1}}  {c[2]}" for c in cols]
    lines += ["", *st["verdict_lines"], f"VERDICT: {st['verdict']}", ""]
    lines.append(f"heatmap strip: {st.get('heatmap_uri', '-')}")
    lines.append(f"MLflow: parent run {st.get('parent_run_id')} (children: baseline {st['children'].get('baseline')}, "
                 f"a6 {st['children'].get('a6')}) experiment '{st['experiment']}' at {st['tracking_uri']}")
    return "\n".join(lines)


def captions_csv(evals: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["arm", "videoid", "key", "reference", "generated", "exact_match", "glyph_accuracy"])
    for arm in ARMS:
        for r in evals.get(arm, {}).get("records", []):
            w.writerow([arm, r["videoid"], r["key"], r["reference"], r["generated"], r["exact_match"],
                        f"{r['glyph_accuracy']:.3f}"])
    return buf.getvalue()
