"""Every point of a sweep built before any GPU is rented (``jobs/sweep.py --dry-run``): each
trial's model on the meta device (its exact shapes from the published configs or the store, no
weights, no memory), its parameters, the estimated memory of its training step
(platform/profiling/step_memory.py), its optimizer steps, samples and training FLOPs
(the FLOP model of platform/profiling/throughput.py), one row a point:

    print(points_table(plan))      # plan from plan.make_plan

A point whose model cannot be built (an unknown model, a query width the model refuses) is
named with its error, and ``check_points`` raises after the table so that the dry run fails.
"""

from __future__ import annotations

from typing import Any

from fovea.platform.config import ConfigError, RunConfig
from fovea.platform.sweep.plan import trial_steps

COLUMNS = ("point", "LLM", "DINO", "params", "trainable", "state GB", "step GB typical", "step GB worst",
           "worst micro-batch", "steps", "samples", "train FLOP")


def short(ref: str) -> str:
    """``HuggingFaceTB/SmolLM2-1.7B-Instruct`` -> ``SmolLM2-1.7B-Instruct``."""
    return ref.rstrip("/").rsplit("/", 1)[-1]


def point_row(name: str, cfg: RunConfig) -> dict[str, Any]:
    """One point's figures (strings); ``error`` set when its model cannot be built."""
    from fovea.model.store import model_config
    from fovea.platform.profiling.step_memory import TYPICAL_FRAMES, TYPICAL_TEXT, estimate_step_memory
    from fovea.platform.profiling.throughput import flops_per_sample

    row = {"point": name, "LLM": short(cfg.model.llm), "DINO": short(cfg.model.dino),
           "steps": f"{trial_steps(cfg):,}", "samples": f"{cfg.training.total_samples:,}"}
    try:
        est = estimate_step_memory(cfg, gpu=True)
        flop = flops_per_sample(TYPICAL_FRAMES, TYPICAL_TEXT, model_config(cfg.model.dino), model_config(cfg.model.llm))
    except Exception as e:  # noqa: BLE001 - any failure to build is what the dry run reports
        return {**row, "error": f"{type(e).__name__}: {e}"}
    return {**row, "params": f"{est.total / 1e6:,.1f}M", "trainable": f"{est.trainable / 1e6:,.1f}M",
            "state GB": f"{est.state_gb:.1f}", "step GB typical": f"{est.typical_gb:.1f}",
            "step GB worst": f"{est.worst_gb:.1f}", "worst micro-batch": est.worst_batch,
            "train FLOP": f"{cfg.training.total_samples * flop:.2e}"}


def points_table(plan: dict[str, Any]) -> tuple[str, list[str]]:
    """A Markdown table of every point of ``plan`` and the errors (``point: message``)."""
    rows = [point_row(e, RunConfig.model_validate(plan["configs"][e])) for e in plan["experiments"]]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    errors = []
    for r in rows:
        if "error" in r:
            errors.append(f"{r['point']}: {r['error']}")
            r = {**r, "params": "ERROR (below)"}
        lines.append("| " + " | ".join(r.get(c, "") for c in COLUMNS) + " |")
    return "\n".join(lines), errors


def describe_points(plan: dict[str, Any]) -> str:
    """The table with how to read it; raises ConfigError naming every point that does not build."""
    table, errors = points_table(plan)
    notes = ("  Models built on the meta device (published configs / the store; no weights). Step memory on one\n"
             "  GPU worker, bf16 autocast: training state (trainable: parameter + gradient + AdamW moments) +\n"
             "  activations saved for backward, for a typical micro-batch (data.batch_size samples of 8 frames,\n"
             "  128 tokens) and the worst (data.max_frames frames, data.max_text_tokens tokens each). On an H100 a\n"
             "  plain AdamW step peaked at 0.88-1.10x this; DDP buckets, torch.compile and fragmentation add more\n"
             "  (docs/PERFORMANCE.md). steps: with the workers above. train FLOP: samples x the FLOP model's\n"
             "  training FLOPs of a sample of 8 frames, 128 text tokens (platform/profiling/throughput.py).")
    if errors:
        raise ConfigError(f"{table}\n\npoints whose model does not build:\n  " + "\n  ".join(errors))
    return f"{table}\n{notes}"
