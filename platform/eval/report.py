"""Reporting of an evaluation (``fovea.platform.eval.harness.run_evaluation``): the results
table (markdown / CSV, DESIGN.md 6.4 layout), a JSON dump, the stdout summary, the MLflow metrics
and artifacts, and the attention-heatmap grid."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import torch

from fovea.platform.config import RunConfig
from fovea.platform.eval.batches import visual_only
from fovea.platform.eval.captions import records_text
from fovea.platform.eval.losses import MODES

# What an evaluation writes to its out_dir (the last two only when captions / heatmaps ran).
EVAL_FILES = ("results.md", "results.csv", "results.json", "captions.jsonl", "attention_grid.png")


# -- results table --------------------------------------------------------------------------

def results_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """DESIGN.md 6.4-style table: one row per metric, one column per mode (+ reference model)."""
    modes = [m for m in MODES if m in results.get("loss", {})] or list(results.get("modes", []))
    ref_cols = sorted({r for b in results.get("benchmarks", {}).values() for r in b.get("reference", {})})
    header = ["metric"] + modes + ref_cols
    rows: list[list[str]] = []

    def fmt(v, pct=False):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.1f} %" if pct else f"{v:.4f}"

    if results.get("loss"):
        rows.append(["val loss (n=%d)" % next(iter(results["loss"].values()))["n_samples"]]
                    + [fmt(results["loss"].get(m, {}).get("loss")) for m in modes] + ["-"] * len(ref_cols))
        rows.append(["val samples/s"] + [f"{results['loss'][m]['samples_per_s']:.2f}" if m in results["loss"]
                                         else "-" for m in modes] + ["-"] * len(ref_cols))
    if results.get("gap") is not None:
        rows.append(["gap (ar-cf)/cf"] + [f"{100 * results['gap']:+.3f} %" if m == "autoregressive" else "-"
                                          for m in modes] + ["-"] * len(ref_cols))
    for name, b in results.get("benchmarks", {}).items():
        n = next(iter(b.get("modes", {}).values()), {}).get("n", 0)
        if not n:  # nothing scored is not 0 %
            rows.append([f"{name}: no item scored"] + ["-"] * (len(modes) + len(ref_cols)))
            continue
        rows.append([f"{name} (n={n})"] + [fmt(b.get("modes", {}).get(m, {}).get("accuracy"), True) for m in modes]
                    + [fmt(b.get("reference", {}).get(r, {}).get("accuracy"), True) for r in ref_cols])
    for k, v in (results.get("generation") or {}).get("captions", {}).items():
        rows.append([k] + ["-" if m != "autoregressive" else fmt(v) for m in modes] + ["-"] * len(ref_cols))
    if (results.get("generation") or {}).get("vqa_accuracy") is not None:
        v = results["generation"]["vqa_accuracy"]
        rows.append(["VQA accuracy"] + ["-" if m != "autoregressive" else fmt(v, True) for m in modes]
                    + ["-"] * len(ref_cols))
    return header, rows


def results_markdown(results: dict) -> str:
    header, rows = results_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def results_csv(results: dict) -> str:
    header, rows = results_rows(results)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def flat_metrics(results: dict) -> dict[str, float]:
    """MLflow metric names: eval/<mode>/loss, eval/gap, eval/<bench>/<mode>/accuracy, ...
    (a benchmark with no item scored logs its counts, no accuracy)."""
    m: dict[str, float] = {}
    for mode, r in results.get("loss", {}).items():
        for k in ("loss", "loss_token", "samples_per_s"):
            m[f"eval/{mode}/{k}"] = r[k]
    if results.get("gap") is not None:
        m["eval/gap"] = results["gap"]
        m["eval/gap_token"] = results["gap_token"]
    for name, b in results.get("benchmarks", {}).items():
        m[f"eval/{name}/items_scored"] = next(iter(b.get("modes", {}).values()), {}).get("n", 0)
        m[f"eval/{name}/items_malformed"] = len(b.get("malformed", []))
        for mode, r in list(b.get("modes", {}).items()) + list(b.get("reference", {}).items()):
            m[f"eval/{name}/{mode}/accuracy"] = r["accuracy"]
            for cat, acc in r.get("per_category", {}).items():
                m[f"eval/{name}/{mode}/cat/{re.sub(r'[^A-Za-z0-9_.-]+', '_', cat)}"] = acc
    gen = results.get("generation") or {}
    for k, v in gen.get("captions", {}).items():
        m[f"eval/caption/{k}"] = v
    if gen.get("vqa_accuracy") is not None:
        m["eval/vqa_accuracy"] = gen["vqa_accuracy"]
    return {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and v == v}


def write_results(results: dict, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"results.md": results_markdown(results), "results.csv": results_csv(results),
             "results.json": json.dumps(jsonable(results), indent=2)}
    paths = {}
    for name, text in files.items():
        (out / name).write_text(text)
        paths[name] = out / name
    return paths


def jsonable(x):
    """Results as plain JSON: without per-item ``records``, non-finite floats as None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items() if k != "records"}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def output_files(results: dict, out_dir: Path) -> dict[str, str]:
    """Write results.md/.csv/.json to ``out_dir``; name -> path of every ``EVAL_FILES`` there."""
    write_results(results, out_dir)
    return {name: str(out_dir / name) for name in EVAL_FILES if (out_dir / name).exists()}


class EvalRun:
    """The evaluation's MLflow run, opened before anything is computed so that each result is
    logged as it is computed (``log``): validation losses first, then captions, then each
    benchmark.  ``tracker`` is used as it is (the caller finishes it); else a new run in
    ``cfg.tracking`` (or the existing ``run_id``, left open) with extra ``tags``."""

    def __init__(self, cfg: RunConfig, tracker=None, run_id: str | None = None, tags: dict[str, str] | None = None,
                 params: dict[str, str] | None = None, model_dir: Path | None = None):
        self.own, self.run_id_given = tracker is None, run_id is not None
        self.step = int(cfg.training.max_steps or 0)
        if tracker is None and cfg.tracking.enabled:
            from fovea.platform.runs.tracking import Tracker

            tracker = Tracker(cfg.tracking_uri(), cfg.tracking.experiment, run_id=run_id,
                              run_name=cfg.tracking.run_name or f"eval-{cfg.name}",
                              tags={"job": "evaluate", "checkpoint": str(model_dir or ""), **(tags or {})},
                              artifact_location=cfg.tracking.artifact_location)
            tracker.log_params(params or {})
        self.tracker = tracker

    def log(self, part: dict) -> None:
        """The metrics of a part of the results (``flat_metrics``), now."""
        if self.tracker is not None:
            self.tracker.log_metrics(flat_metrics(part), step=self.step)

    def finish(self, results: dict, out_dir: Path, status: str = "FINISHED") -> None:
        """``EVAL_FILES`` as artifacts; sets ``results["mlflow_run_id"]``; ends a run it opened."""
        if self.tracker is None:
            return
        for name in EVAL_FILES:
            if (out_dir / name).exists():
                self.tracker.log_artifact(out_dir / name, "evaluation")
        results["mlflow_run_id"] = self.tracker.run_id
        if self.own and not self.run_id_given:
            self.tracker.finish(status)


def summary_text(results: dict) -> str:
    """What an evaluation prints: losses and gap, the generated captions (flagging those cut at
    max_new_tokens), the results table, per benchmark what was scored, skipped or malformed and
    its per-category / domain / duration tables, and the benchmarks missing or failed."""
    lines = ["", "== evaluation =="]
    for mode, r in results.get("loss", {}).items():
        lines.append(f"val loss [{mode:14s}] {r['loss']:.4f}  (token mean {r['loss_token']:.4f}, "
                     f"n={r['n_samples']}, {r['samples_per_s']:.2f} samples/s)")
    if results.get("gap") is not None:
        lines.append(f"train/inference gap (ar - cf) / cf = {100 * results['gap']:+.3f} % "
                     f"(token-weighted {100 * results['gap_token']:+.3f} %; reference |gap| < 0.6 %)")
    gen = results.get("generation") or {}
    if gen.get("captions"):
        lines.append("captions: " + ", ".join(f"{k} {v:.4f}" for k, v in gen["captions"].items()))
    if gen.get("vqa_accuracy") is not None:
        lines.append(f"VQA accuracy: {gen['vqa_accuracy']:.2f} % (n={gen['vqa_n']})")
    if gen.get("samples"):
        lines += ["", records_text(gen["samples"])]
    lines += ["", results_markdown(results)]
    for name, b in results.get("benchmarks", {}).items():
        lines += benchmark_lines(name, b)
    for name, why in results.get("benchmarks_failed", {}).items():
        lines.append(f"{name}: FAILED ({why}); the other benchmarks ran")
    if results.get("benchmarks_missing"):
        lines.append("benchmarks not found: " + ", ".join(results["benchmarks_missing"])
                     + " (the download hints are printed above)")
    if results.get("mlflow_run_id"):
        lines.append(f"MLflow run: {results['mlflow_run_id']}")
    return "\n".join(lines)


def benchmark_lines(name: str, b: dict) -> list[str]:
    """One benchmark: items scored / skipped / malformed, then its breakdown tables."""
    modes = b.get("modes", {})
    first = next(iter(modes.values()), {})
    malformed = b.get("malformed", [])
    head = (f"{name}: {first.get('n', 0)} of {b.get('n_items', '?')} items scored, "
            f"{first.get('skipped', 0)} skipped (media unreadable), {len(malformed)} malformed")
    lines = ["", head]
    if b.get("unscored"):
        lines.append(f"  {b['unscored']}")
    lines += [f"  malformed: {m}" for m in malformed[:5]]
    if len(malformed) > 5:
        lines.append(f"  ... and {len(malformed) - 5} more malformed")
    lines += [f"  skipped: {w}" for w in first.get("skipped_examples", [])[:2]]
    if first.get("n"):
        cols = {**modes, **b.get("reference", {})}
        lines += breakdown_table("category", {c: r.get("per_category", {}) for c, r in cols.items()})
        groups = sorted({g for r in cols.values() for g in r.get("per_group", {})})
        for g in groups:
            lines += breakdown_table(g, {c: r.get("per_group", {}).get(g, {}) for c, r in cols.items()})
    return lines


def breakdown_table(what: str, per_col: dict[str, dict[str, float]]) -> list[str]:
    """A markdown table: one row per value of ``what`` (category, domain, duration), one column
    per mode / reference model, accuracy in percent."""
    keys = sorted({k for d in per_col.values() for k in d})
    if len(keys) < 2 and what == "category":
        return []  # one category: the results table already says it
    out = [f"  | {what} | " + " | ".join(per_col) + " |", "  |" + "---|" * (len(per_col) + 1)]
    for k in keys:
        cells = [f"{d[k]:.1f} %" if k in d else "-" for d in per_col.values()]
        out.append(f"  | {k} | " + " | ".join(cells) + " |")
    return out


# -- attention heatmaps ---------------------------------------------------------------------

@torch.no_grad()
def attention_grid(model, batch: dict, path: str | Path, n_videos: int = 3, n_frames: int = 4) -> Path | None:
    """PNG grid: per video a row of frames with the fine query's attention overlaid and a row
    with the coarse (q_static) query's.  Weights: CLS (index 0) dropped, mean over all
    layers and heads, 256 patches -> 16x16, bilinear upsample to the frame size; each map
    scaled to its own min-max for display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    from fovea.model.blocks import IMAGENET_MEAN, IMAGENET_STD

    batch = visual_only(batch)
    if batch is None:
        return None
    nv = min(n_videos, batch["frames"].shape[0])
    frames, fm = batch["frames"][:nv].to(model.device), batch["frame_mask"][:nv].to(model.device)
    maps = {w: model.query_attention(frames, fm, which=w) for w in ("fine", "coarse")}  # [B,T,L,H,Np]
    nf = min(n_frames, frames.shape[1])
    fig, axes = plt.subplots(2 * nv, nf, figsize=(2.2 * nf, 2.3 * 2 * nv), squeeze=False)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    size = frames.shape[-1]
    for b in range(nv):
        real = fm[b].nonzero().squeeze(1).tolist()
        k = min(nf, len(real))
        picks = [real[int(i * len(real) / k)] for i in range(k)]
        for r, which in enumerate(("fine", "coarse")):
            for c in range(nf):
                ax = axes[2 * b + r, c]
                ax.axis("off")
                if c >= len(picks):
                    continue
                t = picks[c]
                img = (frames[b, t].cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
                w = maps[which][b, t, :, :, 1:].mean(dim=(0, 1)).float().cpu()  # [Np-1]
                g = int(round(math.sqrt(w.numel())))
                heat = F.interpolate(w.view(1, 1, g, g), size=(size, size), mode="bilinear",
                                     align_corners=False)[0, 0]
                heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-12)
                ax.imshow(img)
                ax.imshow(heat.numpy(), cmap="jet", alpha=0.45)
                ax.set_title(f"v{b} t{t} {which}", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
