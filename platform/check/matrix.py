"""The foveation check over task variants: one row per variant, baseline against A6, and the
controls that say what the verdicts rest on.

    python jobs/foveation_check.py --preset gpu-tiny-standin --matrix                   # 9 variants + 2 controls
    python jobs/foveation_check.py --preset gpu-tiny-standin --matrix --matrix-bugs none,both
    python jobs/foveation_check.py --preset cpu-standin --matrix --variants fixed-colours
    python jobs/foveation_check.py --preset gpu-tiny-standin --matrix --controls-on circle-colours-noise

A row is ``run.check_variant`` on that variant's data: both arms trained with the same budget,
probed on held-out videos and judged, under an MLflow parent run nested in the matrix's run.
The controls run the task of one variant (``--controls-on``, default the preset's own task,
``fixed-colours``), and the findings read them against that variant's row:

    control-random-backbone   the stand-in's architecture at random init: what the backbone's
                              pretraining made possible (glyph accuracy falls toward chance)
    control-time-shuffled     each video's frames in a random order: knowing frames 1..t-1 no
                              longer says where frame t's target is, so the fine query's edge
                              over A6 must shrink

``--matrix-bugs none,both`` runs the same rows again with BUG-001/BUG-002 reintroduced on the
same data; a bug row should read "NOT helping" or carry failure signatures. The matrix run
holds the table (``matrix.txt`` / ``matrix.json``) and every row's heatmap strip
(``heatmaps/<bug>/<variant>.png``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fovea.platform.check.presets import PRESETS, Preset
from fovea.platform.check.report import LEARNED_MARGIN, LIFT_MIN
from fovea.platform.check.task import GlyphTaskConfig, config_from_args
from fovea.platform.config import ConfigError


@dataclass(frozen=True)
class Variant:
    name: str
    task: dict = field(default_factory=dict)  # GlyphTaskConfig fields over the preset's task
    control: str = ""  # "" | "random_backbone" | "time_shuffled"
    about: str = ""


VARIANTS = (
    Variant("fixed-colours", {}, about="the preset's task: one circle shared by every video"),
    Variant("fixed-colours-2d", dict(distractors=2), about="two distractors"),
    Variant("fixed-shapes", dict(alphabet="shapes"), about="white shapes: form, not colour"),
    Variant("fixed-digits", dict(alphabet="digits"), about="digits on plates"),
    Variant("line-colours", dict(motion="line"), about="a straight bouncing line per video"),
    Variant("circle-colours-noise", dict(motion="circle", clutter="noise"), about="an orbit per video, noise clutter"),
    Variant("random-colours", dict(motion="random"),
            about="no path: where the target is cannot be predicted; with one label a video (the tiny presets) "
                  "it is the glyph that stays while the distractors change, so a query can follow what it looks like"),
    Variant("fixed-colours-3d-seq", dict(distractors=3, caption="sequence"), about="a label per frame, 3 distractors"),
    Variant("fixed-colours-0d-plain", dict(distractors=0, clutter="plain"),
            about="nothing to confuse: the glyph is the only thing to find on a plain frame"),
)
CONTROLS = (
    Variant("control-random-backbone", {}, control="random_backbone", about="the backbone at random init"),
    Variant("control-time-shuffled", dict(time_shuffle=True), control="time_shuffled",
            about="frames in a random order: the past no longer says where to look"),
)
BY_NAME = {v.name: v for v in VARIANTS + CONTROLS}
REFERENCE = "fixed-colours"  # the preset's own task: the controls' default


def select_variants(names: str | None, controls: bool, controls_on: str = REFERENCE) -> list[Variant]:
    """``--variants a,b`` (any of VARIANTS and CONTROLS), or all variants plus the controls; the
    controls on the task of variant ``controls_on``."""
    if controls_on not in BY_NAME or BY_NAME[controls_on].control:
        raise ConfigError(f"unknown --controls-on {controls_on!r}; it takes a variant: "
                          f"{', '.join(v.name for v in VARIANTS)}")
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else \
        [v.name for v in VARIANTS + (CONTROLS if controls else ())]
    unknown = [n for n in wanted if n not in BY_NAME]
    if unknown:
        raise ConfigError(f"unknown --variants {unknown}; known: {', '.join(BY_NAME)}")
    on = BY_NAME[controls_on]
    return [replace(v, task={**on.task, **v.task}, about=f"{v.about} (on {on.name}'s task)") if v.control else v
            for v in (BY_NAME[n] for n in wanted)]


def variant_task(args: argparse.Namespace, preset: Preset, v: Variant) -> GlyphTaskConfig:
    """The preset's task, the command line's task knobs, then the variant's own fields."""
    base = config_from_args(args, GlyphTaskConfig(**preset.task))
    return GlyphTaskConfig(**{**base.to_dict(), **v.task})


def variant_overrides(preset: Preset, v: Variant) -> list[str]:
    if v.control != "random_backbone":
        return []
    if not preset.random_dino:
        raise ConfigError(f"preset {v.name!r} has no random_dino: the random-backbone control needs a "
                          f"stand-in preset (cpu-standin, gpu-tiny-standin, gpu-standin)")
    return [f"model.dino={preset.random_dino}"]


# -- the matrix -------------------------------------------------------------------------------

def run_matrix(args: argparse.Namespace) -> dict:
    """Every selected variant for every bug setting; the table, logged and printed."""
    from fovea.platform.check.run import BUGS, prepare_data, prepare_models

    t_all = time.time()
    preset = PRESETS[args.preset]
    bugs = [b.strip() for b in (args.matrix_bugs or args.bug).split(",") if b.strip()]
    if any(b not in BUGS for b in bugs):
        raise ConfigError(f"--matrix-bugs takes {sorted(BUGS)}, got {bugs}")
    controls_on = args.controls_on or REFERENCE
    rows = select_variants(args.variants, controls=not args.no_controls, controls_on=controls_on)
    prefix = args.name or f"fovmatrix-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(args.out or Path(args.runs_dir) / "foveation_check" / prefix)
    prepare_models(args, preset)
    data = MatrixData(args, preset, prepare_data)
    data.get(rows[0])  # Ray starts here; a bad task fails before any run is opened
    data.prefetch(rows)
    matrix_run = open_matrix_run(args, preset, rows, bugs, prefix, controls_on)
    results: dict[str, dict[str, dict]] = {}
    try:
        for bug in bugs:
            results[bug] = {}
            # the controls answer questions about the clean rows; a bug is shown by the variants
            bug_rows = [v for v in rows if bug == "none" or not v.control] or rows
            run_rows(args, preset, bug_rows, data, bug, prefix, matrix_run.run_id, out / bug, results[bug],
                     lambda v, bug=bug: log_landed_row(matrix_run, args, rows, results, bug, v, out))
        table = {bug: [row_summary(v, results[bug][v.name], bug) for v in rows if v.name in results[bug]]
                 for bug in bugs}
        summary = {"preset": args.preset, "models": _models(results), "bugs": bugs, "rows": table,
                   "findings": findings(table, controls_on), "controls_on": controls_on,
                   "seconds_total": round(time.time() - t_all, 1),
                   "seconds_data": data.seconds,
                   "matrix_run_id": matrix_run.run_id, "out_dir": str(out)}
        summary["text"] = format_matrix(summary)
        log_matrix(matrix_run, summary, results, out)
    except BaseException:
        matrix_run.finish("FAILED")
        raise
    print("\n" + summary["text"] + f"\n(total {summary['seconds_total']:.0f} s; files in {out})", flush=True)
    return summary


def merge_matrices(paths: list[str], controls_on: str | None = None, out: str | None = None) -> dict:
    """One table from matrices run in parts (``--variants`` splits a matrix over device calls):
    each part's ``matrix.json``, rows by bug setting in the order given, a later part's row
    replacing an earlier one of the same variant; the findings read again over the whole table
    (a control and its reference row may have landed in different parts)."""
    parts = []
    for p in paths:
        try:
            parts.append(json.loads(Path(p).read_text()))
        except (OSError, ValueError) as e:
            raise ConfigError(f"--merge-matrices: cannot read {p}: {e}; it takes the matrix.json files "
                              f"that --matrix writes to its --out folder") from e
        if not isinstance(parts[-1].get("rows"), dict):
            raise ConfigError(f"--merge-matrices: {p} has no 'rows': not a matrix.json written by --matrix")
    on = controls_on or next((s["controls_on"] for s in parts
                              if any(r.get("control") for rows in s["rows"].values() for r in rows)), REFERENCE)
    table: dict[str, dict[str, dict]] = {}
    for s in parts:
        for bug, rows in s["rows"].items():
            table.setdefault(bug, {}).update({r["variant"]: r for r in rows})
    rows = {bug: list(by_variant.values()) for bug, by_variant in table.items()}
    models = "; ".join(sorted({m for s in parts for m in s["models"].split("; ") if m and m != "-"})) or "-"
    summary = {"preset": ", ".join(sorted({s["preset"] for s in parts})), "models": models,
               "bugs": list(rows), "rows": rows, "findings": findings(rows, on), "controls_on": on,
               "parts": [{"file": str(p), "matrix_run_id": s.get("matrix_run_id"),
                          "seconds_total": s.get("seconds_total")} for p, s in zip(paths, parts)]}
    summary["text"] = format_matrix(summary)
    if out:
        write_matrix(summary, Path(out))
    return summary


class MatrixData:
    """Each row's shards: one set at a time (each uses every core), made ahead by ``prefetch``
    while the rows already made train, so that a row whose turn comes finds its data ready; rows
    with the same task share a set (a control reads its variant's task, the bug rows their clean
    row's). ``--data-path auto`` means ``direct`` here: the same shards from the rendered frames,
    without the mp4 encode and decode round trip, which costs the matrix more than it tells it;
    the single check keeps the preprocessing path, which is what it exercises."""

    def __init__(self, args: argparse.Namespace, preset: Preset, prepare):
        from fovea.platform.check.run import task_llm

        self.args, self.preset, self.prepare = args, preset, prepare
        self.llm_ref, self.stage = task_llm(args, preset)
        self.how = args.data_path if args.data_path != "auto" else "direct"
        self.data_dir = Path(args.data_dir) if args.data_dir else Path(args.runs_dir) / "foveation_check" / "data"
        self.by_stamp: dict[str, dict] = {}
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()

    def get(self, v: Variant) -> dict:
        from fovea.platform.runs.cluster import connect

        task = variant_task(self.args, self.preset, v)
        with self.lock:
            if task.stamp() not in self.by_stamp:
                t0 = time.time()
                self.by_stamp[task.stamp()] = self.prepare(task, self.data_dir, self.llm_ref, self.stage, self.preset,
                                                           self.args.workers, self.how,
                                                           lambda: connect(self.args.address))
                self.seconds[v.name] = round(time.time() - t0, 1)
                print(f"[foveation matrix] data {v.name}: {self.by_stamp[task.stamp()]['splits']} in "
                      f"{self.seconds[v.name]:.0f} s", flush=True)
            return {**self.by_stamp[task.stamp()], "task": task}

    def prefetch(self, rows: list[Variant]) -> threading.Thread:
        """Every row's data in row order, in the background; a failure is left for the row's own
        ``get`` to raise and report in its place."""
        def run() -> None:
            for v in rows:
                try:
                    self.get(v)
                except Exception:  # noqa: BLE001 - the row reports it
                    pass
        t = threading.Thread(target=run, name="matrix-data", daemon=True)
        t.start()
        return t


def run_rows(args: argparse.Namespace, preset: Preset, rows: list[Variant], data: MatrixData, bug: str,
             prefix: str, matrix_run_id: str | None, out: Path, done: dict[str, dict], landed=lambda v: None) -> None:
    """The rows of one bug setting into ``done``, ``--matrix-parallel`` at a time; a failed row is
    reported in its place and the others go on. ``landed(v)`` runs after each row (under the lock)."""
    from fovea.platform.check.run import check_variant
    from fovea.platform.runs.cluster import cluster_gpus

    k = max(1, args.matrix_parallel or (4 if cluster_gpus() else 1))
    lock = threading.Lock()

    def one(v: Variant) -> None:
        t0 = time.time()
        row_args = argparse.Namespace(**{**vars(args), "bug": bug})
        tags = {"mlflow.parentRunId": matrix_run_id or "", "foveation_check.variant": v.name,
                "foveation_check.control": v.control or "none"}
        try:
            d = data.get(v)
            t0 = time.time()  # a row's time: its two arms and their probes (its data: data.seconds)
            st = check_variant(row_args, preset, d["task"], d, f"{prefix}-{bug}-{v.name}",
                               {"phase": "setup", "trained": {}}, extra=variant_overrides(preset, v),
                               parent_tags=tags, out_dir=out / v.name, concurrent=k)
        except Exception as e:  # noqa: BLE001 - the row says why; the matrix goes on
            st = {"error": f"{type(e).__name__}: {e}"}
        st["seconds_row"] = round(time.time() - t0, 1)
        r = row_summary(v, st, bug)
        with lock:
            done[v.name] = st
            print(f"[foveation matrix] bug={bug} {len(done)}/{len(rows)} {v.name}: {row_line(r)}", flush=True)
            landed(v)

    with ThreadPoolExecutor(max_workers=k) as ex:
        list(ex.map(one, rows))


def write_partial(args: argparse.Namespace, rows: list[Variant], results: dict[str, dict[str, dict]],
                  out: Path) -> Path:
    """``matrix.partial.txt``: the rows landed so far, so that a run cut short keeps its table."""
    table = {bug: [row_summary(v, got[v.name], bug) for v in rows if v.name in got] for bug, got in results.items()}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "matrix.partial.txt"
    path.write_text(format_matrix({"preset": args.preset, "models": _models(results), "rows": table,
                                   "findings": findings(table, args.controls_on)}) + "\n")
    return path


def log_landed_row(run, args: argparse.Namespace, rows: list[Variant], results: dict[str, dict[str, dict]],
                   bug: str, v: Variant, out: Path) -> None:
    """As each row lands: the table so far and the row's heatmap strip on the matrix run, so that a
    matrix killed at a time limit keeps in MLflow every row it finished."""
    run.log_artifact(write_partial(args, rows, results, out), "foveation_matrix")
    heatmap = results[bug][v.name].get("heatmap_file")
    if heatmap and Path(heatmap).exists():
        dest = out / "heatmaps" / bug / f"{v.name}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(heatmap, dest)
        run.log_artifact(dest, f"foveation_matrix/heatmaps/{bug}")


# -- rows, findings, table ----------------------------------------------------------------------

def row_summary(v: Variant, st: dict, bug: str) -> dict[str, Any]:
    """The matrix's row of one variant: the held-out figures, the verdict and why."""
    r: dict[str, Any] = {"variant": v.name, "control": v.control, "about": v.about, "bug": bug,
                         "seconds": st.get("seconds_row"), "seconds_train": st.get("seconds_train"),
                         "seconds_probe": st.get("seconds_probe")}
    if "error" in st:
        return {**r, "verdict": "failed: " + st["error"][:300], "why": "the row failed"}
    b, a = st["eval"]["baseline"], st["eval"]["a6"]
    fa = b.get("attn_fine", {})
    chance = 1 / len(GlyphTaskConfig.from_dict(st["task"]).labels)
    r.update({"loss_fine": b["loss_fine"], "loss_coarse": b["loss_coarse"], "a6_loss": a["loss"],
              "loss_ar": b.get("loss_autoregressive"),
              "glyph_acc": b["glyph_accuracy"], "a6_glyph_acc": a["glyph_accuracy"], "chance": chance,
              "entropy_fine": b["diagnostics"].get("attn_entropy_fine"), "log_n": st["log_n"],
              "lift": fa.get("lift"), "lift_distractors": fa.get("distractor_lift"),
              "verdict": st["verdict"], "warnings": sorted(set(st["warnings"]["baseline"]) | set(st["warnings"]["held_out"])),
              "heatmap": st.get("heatmap_file"), "parent_run_id": st.get("parent_run_id")})
    r["backbone_reads"] = backbone_reads(st["models"].split(" + ")[-1], st["task"]["alphabet"])
    r["why"] = why(r)
    return r


def backbone_reads(dino_ref: str, alphabet: str) -> float | None:
    """A stand-in's held-out per-patch accuracy on this alphabet (its STANDIN.json), else None."""
    from fovea.model.store import STANDIN_MARKER, is_standin, resolve_model_ref

    try:
        if not is_standin(dino_ref):
            return None
        marker = json.loads((Path(resolve_model_ref(dino_ref)) / STANDIN_MARKER).read_text())
        return marker["held_out"]["trained"].get(f"{alphabet}_acc")
    except (OSError, ValueError, KeyError):  # a marker from an older build: the row just lacks the figure
        return None


def why(r: dict) -> str:
    """A reading of a row that is not "helping": the backbone, the budget, a bug's own signature,
    where the fine query looks, or the task."""
    if r["verdict"].startswith("foveation is helping"):
        return ""
    reads = r.get("backbone_reads")
    if max(r["glyph_acc"], r["a6_glyph_acc"]) <= r["chance"] + LEARNED_MARGIN:
        if reads is not None and reads < 0.5:
            return (f"backbone: the stand-in names this alphabet's patches at {reads:.2f} held-out (STANDIN.json), "
                    f"so neither arm can read them (accuracy {r['glyph_acc']:.2f} / A6 {r['a6_glyph_acc']:.2f})")
        return (f"budget: neither arm reads the glyphs (accuracy {r['glyph_acc']:.2f} / A6 "
                f"{r['a6_glyph_acc']:.2f}, chance {r['chance']:.2f})")
    if "q_static_std" in r["warnings"]:
        return "bug: q_static_std (queries initialised at std 0.02 all look alike, BUG-001)"
    if r["a6_glyph_acc"] >= r["glyph_acc"] - 0.02 and r["a6_loss"] <= r["loss_fine"] * 1.01:
        dis, tgt = r.get("lift_distractors"), r.get("lift")
        if isinstance(dis, float) and isinstance(tgt, float) and dis >= tgt:
            return (f"the fine query looks at the distractors as much as at the target ({dis:.2f}x against "
                    f"{tgt:.2f}x): it has not learned where the target will be, so the static query reads as well")
        return "task: the static query reads it as well as the fine one"
    if r["a6_glyph_acc"] > r["glyph_acc"] + 0.02:
        ar = r.get("loss_ar")
        if isinstance(ar, float) and ar > r["a6_loss"]:
            return (f"the deployment loop: trained on the coarse pass's queries the baseline's held-out loss is "
                    f"{r['loss_fine']:.3f}, with the queries it makes for itself frame by frame (as captions are "
                    f"generated) {ar:.3f}, above A6's {r['a6_loss']:.3f}; A6's captions name the glyph more often "
                    f"({r['a6_glyph_acc']:.2f} against {r['glyph_acc']:.2f})")
        return (f"the measures disagree: the baseline's held-out loss is lower ({r['loss_fine']:.3f} against A6 "
                f"{r['a6_loss']:.3f}), A6's captions name the glyph more often ({r['a6_glyph_acc']:.2f} against "
                f"{r['glyph_acc']:.2f})")
    if r["warnings"]:
        return "signatures: " + ", ".join(r["warnings"])
    return "the baseline learned more, but not by the verdict's margins"


def row_line(r: dict) -> str:
    """One finished row in a line, printed as it lands (a run cut short still shows its rows)."""
    if "glyph_acc" not in r:
        return f"{r['verdict']} ({_f(r['seconds'], 0)} s)"
    return (f"loss_fine {_f(r['loss_fine'])} (own queries {_f(r.get('loss_ar'))}) loss_coarse "
            f"{_f(r['loss_coarse'])} A6 {_f(r['a6_loss'])} | acc {_f(r['glyph_acc'])} A6 {_f(r['a6_glyph_acc'])} | "
            f"H_fine {_f(r['entropy_fine'])} lift {_f(r['lift'], 2)}x dis {_f(r['lift_distractors'], 2)}x | {_f(r['seconds'], 0)} s (train "
            f"{_f(r.get('seconds_train'), 0)}, probe {_f(r.get('seconds_probe'), 0)}) | {r['verdict']}")


def findings(table: dict[str, list[dict]], controls_on: str = REFERENCE) -> list[str]:
    """What the controls and the bug rows say, from the figures (never a fixed text). A
    control is read against the row of the variant whose task it ran (``controls_on``), and
    only where that row shows an edge to lose."""
    out: list[str] = []
    clean = {r["variant"]: r for r in table.get("none", [])}
    ref, rnd, shuf = clean.get(controls_on), clean.get("control-random-backbone"), clean.get("control-time-shuffled")
    ok = lambda r: r is not None and "glyph_acc" in r  # noqa: E731
    learned = ok(ref) and ref["glyph_acc"] > ref["chance"] + LEARNED_MARGIN
    if ok(ref) and ok(rnd):
        out.append(random_backbone_finding(ref, rnd, learned))
    if ok(ref) and ok(shuf):
        edge = lambda r: r["a6_loss"] - r["loss_fine"]  # noqa: E731
        shown = ref["verdict"].startswith("foveation is helping")
        tag = ("PASS" if edge(shuf) < edge(ref) else "FAIL") if shown else "INFO"
        out.append(f"{tag} time-shuffled control: the baseline's held-out loss edge over A6 {edge(shuf):+.4f} against "
                   f"{edge(ref):+.4f} in time order (a query that predicts where to look must lose its edge when "
                   f"the order says nothing)" + ("" if shown else "; not read: the time-ordered row is not helping"))
    for bug, rows in table.items():
        if bug == "none":
            continue
        done = [r for r in rows if "glyph_acc" in r]
        caught = [r for r in done if bug_caught(r, clean.get(r["variant"]))]
        out.append(f"{'PASS' if done and len(caught) == len(done) else 'FAIL'} bug={bug}: {len(caught)} of "
                   f"{len(done)} rows say NOT helping, lose the clean row's 'helping', or carry failure "
                   f"signatures the clean row lacks"
                   + (f" (not: {', '.join(r['variant'] for r in done if r not in caught)})" if len(caught) < len(done) else ""))
    return out


def random_backbone_finding(ref: dict, rnd: dict, learned: bool) -> str:
    """The stand-in's row against the same task on its architecture at random init: by glyph
    accuracy where the stand-in's row learned to read; else by where the fine query looks."""
    better = ref["glyph_acc"] - rnd["glyph_acc"]
    looks = (f"fine attention entropy {_f(rnd['entropy_fine'])} against {_f(ref['entropy_fine'])}, lift on the "
             f"target {_f(rnd['lift'], 2)}x against {_f(ref['lift'], 2)}x")
    if learned:
        tag = "PASS" if better > LEARNED_MARGIN else "FAIL"
        return (f"{tag} random-backbone control: glyph accuracy {rnd['glyph_acc']:.3f} (A6 {rnd['a6_glyph_acc']:.3f}) "
                f"against {ref['glyph_acc']:.3f} with the stand-in on the same task ({better:+.3f}; the backbone is "
                f"what made learning possible when this exceeds {LEARNED_MARGIN}); {looks}")
    sees = (ref.get("lift") or 0) >= LIFT_MIN > (rnd.get("lift") or 0)
    return (f"{'PASS' if sees else 'INFO'} random-backbone control, by attention only (neither row reads the "
            f"glyphs yet): {looks} (the stand-in's features give the queries something to look at when its lift "
            f"is >= {LIFT_MIN:g}x and the random one's is not)")


def bug_caught(r: dict, clean: dict | None) -> bool:
    """Does a bug row show its bug? Signatures the clean row of the variant does not carry
    (without one: any), a "NOT helping", or a clean "helping" that the bug takes away."""
    if r["verdict"].startswith("foveation is NOT helping"):
        return True
    if clean is None or "glyph_acc" not in clean:
        return bool(r["warnings"])
    lost = clean["verdict"].startswith("foveation is helping") and not r["verdict"].startswith("foveation is helping")
    return lost or bool(set(r["warnings"]) - set(clean["warnings"]))


def _f(x: Any, nd: int = 3) -> str:
    return "-" if not isinstance(x, (int, float)) or not math.isfinite(x) else f"{x:.{nd}f}"


def format_matrix(s: dict) -> str:
    head = ("variant", "loss_fine", "loss_ar", "loss_coarse", "A6 loss", "acc", "A6 acc", "H fine", "lift",
            "lift dis", "s")
    lines = [f"== foveation matrix: preset {s['preset']} ({s['models']}) =="]
    w = max([len(head[0])] + [len(r["variant"]) for rows in s["rows"].values() for r in rows])
    fmt = lambda cells: f"{cells[0]:<{w}}" + "".join(f"  {c:>{max(6, len(h))}}" for c, h in zip(cells[1:], head[1:]))  # noqa: E731,E501
    for bug, rows in s["rows"].items():
        lines += ["", f"-- bug={bug} --", fmt(head) + "  verdict"]
        for r in rows:
            cells = (r["variant"], _f(r.get("loss_fine")), _f(r.get("loss_ar")), _f(r.get("loss_coarse")),
                     _f(r.get("a6_loss")), _f(r.get("glyph_acc")), _f(r.get("a6_glyph_acc")), _f(r.get("entropy_fine")),
                     _f(r.get("lift"), 2), _f(r.get("lift_distractors"), 2), _f(r.get("seconds"), 0))
            lines.append(fmt(cells) + "  " + r["verdict"])
            if r.get("why"):
                lines.append(f"{'':<{w}}  why: {r['why']}")
    lines += ["", *s["findings"]]
    return "\n".join(lines)


# -- MLflow ------------------------------------------------------------------------------------

def open_matrix_run(args: argparse.Namespace, preset: Preset, rows: list[Variant], bugs: list[str], prefix: str,
                    controls_on: str):
    from fovea.platform.config import load_config
    from fovea.platform.runs.tracking import Tracker

    # the rows' store: their runs_dir and experiment (run.arm_configs), so the rows nest under it
    base = load_config(None, preset.overrides + [f"runs_dir={args.runs_dir}", f"tracking.experiment={args.experiment}"]
                       + list(args.overrides))
    run = Tracker(base.tracking_uri(), args.experiment, run_name=f"{prefix} matrix {args.preset}",
                  tags={"foveation_check": "matrix", "preset": args.preset, "bugs": ",".join(bugs),
                        "mode": "foveation_check"}, enabled=base.tracking.enabled,
                  artifact_location=base.tracking.artifact_location)
    run.log_params({"preset": args.preset, "bugs": ",".join(bugs), "variants": ",".join(v.name for v in rows),
                    "controls_on": controls_on,
                    "model.llm": base.model.llm, "model.dino": base.model.dino,
                    "steps": args.steps or base.training.max_steps})
    return run


def write_matrix(summary: dict, out: Path) -> tuple[Path, Path]:
    """The table as text and as JSON (everything but the text) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    txt, js = out / "matrix.txt", out / "matrix.json"
    txt.write_text(summary["text"] + "\n")
    js.write_text(json.dumps({k: v for k, v in summary.items() if k != "text"}, indent=1, default=str))
    return txt, js


def log_matrix(run, summary: dict, results: dict[str, dict[str, dict]], out: Path) -> None:
    """matrix.txt / matrix.json on the matrix run (the heatmap strips went up as their rows landed);
    per-row metrics and verdicts."""
    for f in write_matrix(summary, out):
        run.log_artifact(f, "foveation_matrix")
    metrics: dict[str, float] = {}
    for bug, rows in summary["rows"].items():
        for r in rows:
            for k in ("loss_fine", "loss_ar", "loss_coarse", "a6_loss", "glyph_acc", "a6_glyph_acc", "entropy_fine",
                      "lift", "lift_distractors", "seconds"):
                if isinstance(r.get(k), (int, float)) and math.isfinite(r[k]):
                    metrics[f"{bug}.{r['variant']}.{k}"] = float(r[k])
            metrics[f"{bug}.{r['variant']}.helping"] = float(r["verdict"].startswith("foveation is helping"))
    run.log_metrics(metrics, step=0)
    run.set_tags({f"verdict.{bug}.{r['variant']}": r["verdict"][:500] for bug, rows in summary["rows"].items()
                  for r in rows})
    failed = any(r["verdict"].startswith("failed") for rows in summary["rows"].values() for r in rows)
    run.finish("FAILED" if failed else "FINISHED")


def _models(results: dict[str, dict[str, dict]]) -> str:
    models = sorted({st["models"] for rows in results.values() for st in rows.values() if "models" in st})
    return "; ".join(models) or "-"
