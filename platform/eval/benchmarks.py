"""The multiple-choice benchmarks of an evaluation: every benchmark present under a root
(``benchmark_items``), scored by likelihood (``mcq``) in each inference mode, with the local
reference VLM as an extra column when its weights are in the model store.  Each benchmark
stands alone: an absent, failing or unscorable one is reported and the others run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from fovea.platform.config import ConfigError, RunConfig
from fovea.platform.eval import benchmark_items as bm
from fovea.platform.eval import mcq
from fovea.platform.eval.batches import autocast

log = logging.getLogger("fovea.evaluation")


class BenchmarksDirError(ConfigError):
    """The benchmarks folder of a run is missing, empty, or holds no benchmark in a known layout."""


def check_benchmarks_dir(root: str | Path, key: str = "eval.benchmarks_dir") -> dict[str, Path]:
    """Before Ray or MLflow start: the benchmarks under ``root`` (name -> folder, none read);
    ``BenchmarksDirError``, one line naming ``key``, the folder and the layouts, when there is none."""
    if "://" in str(root):
        raise BenchmarksDirError(f"{key}={root} is a URL: benchmarks are read from a local folder (download "
                                 f"them to one, as benchmark_items.py lays out)")
    root = Path(root)
    found = bm.find_benchmarks(root) if root.is_dir() else {}
    if found:
        return found
    if not root.exists():
        why = "does not exist"
    elif not root.is_dir():
        why = "is a file, not a folder"
    elif not any(root.iterdir()):
        why = "is empty"
    else:
        inside = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        itself = bm.benchmark_named(root)
        why = (f"is the {itself} folder itself (pass its parent, {root.parent})" if itself else
               f"holds no benchmark in a known layout (it has {', '.join(inside[:6])}"
               f"{', ...' if len(inside) > 6 else ''})")
    layouts = "; ".join(f"<folder>/{spec.short}" for spec in bm.BENCHMARKS.values())
    raise BenchmarksDirError(f"{key}={root} {why}; expected at least one of: {layouts} "
                             f"(folder names as downloaded also work: Video-MME, MVLU, MVBench, ScienceQA)")


def _option_losses(model, mode: str, pad: int | None, device: torch.device, precision: str):
    """``mcq.foveated_option_losses`` of ``mode``, run under the evaluation's autocast."""
    inner = mcq.foveated_option_losses(model, mode, pad)

    def fn(*a):
        with autocast(device, precision):
            return inner(*a)
    return fn


def run_benchmarks(model, tokenizer, root: str | Path, modes: Sequence[str], cfg: RunConfig,
                   device: torch.device, progress: bool = True, reference: bool = True,
                   on_result: Callable[[str, dict], None] | None = None) -> dict:
    """Every MCQ benchmark present under ``root`` in each mode (+ the local reference VLM).

    Returns {results: {name: entry}, missing: {name: download hint}, failed: {name: error}}.
    A benchmark that is absent, or that fails, is reported and the next one runs; malformed
    annotation rows are left out and listed in the entry (``malformed``); an entry whose items
    could not be scored (``unscored``: their videos are not unpacked) carries no accuracy.
    ``on_result(name, entry)`` is called as soon as a benchmark is done (the MLflow logging)."""
    ev = cfg.eval
    pad = tokenizer.pad_token_id if ev.mcq_pad_quirk else None
    out: dict[str, Any] = {"results": {}, "missing": {}, "failed": {}}
    ref = _Reference(ev.reference_model if reference else None, device, cfg.data.max_frames, out)
    for name in bm.BENCHMARKS:
        try:
            entry = _one_benchmark(name, root, model, tokenizer, modes, cfg, device, pad, progress, ref)
        except bm.BenchmarkNotFound as e:
            print(f"[benchmark skipped] {e}", flush=True)
            out["missing"][name] = str(e)
            continue
        except Exception as e:  # noqa: BLE001 - one benchmark's failure must not cost the others
            log.debug("benchmark %s failed", name, exc_info=True)
            print(f"[benchmark failed] {name}: {type(e).__name__}: {e}", flush=True)
            out["failed"][name] = f"{type(e).__name__}: {e}"
            continue
        out["results"][name] = entry
        if on_result is not None:
            on_result(name, entry)
    return out


def _one_benchmark(name: str, root, model, tokenizer, modes, cfg: RunConfig, device, pad, progress,
                   ref: "_Reference") -> dict:
    """One benchmark scored in every mode: {modes, reference, malformed, n_items[, unscored]}."""
    malformed: list[bm.MalformedItem] = []
    items = bm.load_benchmark(name, root, cfg.eval.benchmark_max_items, malformed)
    for m in malformed[:5]:
        print(f"[benchmark {name}] malformed item skipped: {m}", flush=True)
    if len(malformed) > 5:
        print(f"[benchmark {name}] ... {len(malformed) - 5} more malformed items skipped", flush=True)
    scorers = {m: mcq.TokenMCQScorer(tokenizer, _option_losses(model, m, pad, device, cfg.training.precision),
                                     name=m, max_frames=cfg.data.max_frames, image_frames=cfg.eval.image_frames,
                                     device=device) for m in modes}
    res = mcq.run_mcq_many(items, scorers, progress=progress, desc=name)
    entry: dict[str, Any] = {"modes": res, "reference": {}, "n_items": len(items),
                             "malformed": [str(m) for m in malformed]}
    if next(iter(res.values()))["n"] == 0:
        entry["unscored"] = unscored_reason(name, bm.benchmark_folder(root, name), items, next(iter(res.values())))
        print(f"[benchmark {name}] {entry['unscored']}", flush=True)
    else:
        ref.score(name, items, entry, progress)
    return entry


def unscored_reason(name: str, folder: Path, items: list[bm.MCQItem], res: dict) -> str:
    """Why none of a benchmark's items was scored, and what to do."""
    missing = bm.missing_media(items)
    first = (res.get("skipped_examples") or ["?"])[0]
    if not missing:
        return f"no item scored: all {len(items)} items failed to load (first: {first})"
    zips = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.zip"))
    more = ", ..." if len(zips) > 3 else ""
    packed = f"; {len(zips)} zip file(s) there ({', '.join(zips[:3])}{more})" if zips else ""
    return (f"no item scored: the media of {len(missing)} of {len(items)} items are not on disk "
            f"(first: {missing[0]}){packed}; {bm.BENCHMARKS[name].media}")


class _Reference:
    """The local reference VLM as an extra column, loaded on first use; absent weights print
    the hint, a failure drops the column for the rest of the run (recorded in ``out``)."""

    def __init__(self, model_ref: str | None, device, max_frames: int, out: dict):
        self.scorer, self.device, self.max_frames, self.out = None, device, max_frames, out
        self.path = mcq.find_reference_model(model_ref) if model_ref else None
        if model_ref and self.path is None:
            print(mcq.reference_model_hint(model_ref), flush=True)
            out["reference_missing"] = mcq.reference_model_hint(model_ref)

    def score(self, name: str, items, entry: dict, progress: bool) -> None:
        if self.path is None:
            return
        try:
            self.scorer = self.scorer or mcq.HFVLMScorer(self.path, device=self.device, max_frames=self.max_frames)
            entry["reference"][self.scorer.name] = mcq.run_mcq(items, self.scorer, progress, f"{name}/ref")
        except Exception as e:  # noqa: BLE001 - the comparison column must not stop the run
            log.warning("reference model %s failed: %s", self.path, e)
            self.out["reference_error"] = f"{type(e).__name__}: {e}"
            self.path = None
