"""Foveation failure signatures (DESIGN.md 7): is the fine pass doing anything?

``failure_signatures(metrics, init_std)`` is a pure function over one dict of diagnostics
(what the training loop logs every ``training.diagnostics_every`` steps, see
``model/diagnostics.py``) that returns the known failure signatures it sees:

| name               | fires when                                                        | known cause            |
|--------------------|-------------------------------------------------------------------|------------------------|
| `ratio_stuck`      | abs(loss_fine / loss_coarse - 1) < 0.005 (within 0.5 % of 1.0),   | BUG-001 / BUG-004: the |
|                    | from step ``WARMUP_STEPS`` on                                     | queries change nothing |
| `entropy_uniform`  | attention entropy > 0.98 log N (N = keys, 257 -> 5.44 nats), from  | BUG-001/002/004; also  |
|                    | step ``WARMUP_STEPS`` on (fine query's; the coarse one's if no     | random DINOv2 at init  |
|                    | fine entropy is logged)                                           |                        |
| `q_static_std`     | q_static std < 0.1 (reference: ~1.0; BUG-001 used 0.02), or its ratio  | BUG-001; or a collapse |
|                    | to the init std outside [0.5, 2] (drifted far from its init)      | / blow-up in training  |
| `tokens_identical` | mean abs(z_fine - z_coarse) < 0.05 (healthy > 0.5; BUG-001 0.012) | BUG-001 / BUG-002      |

Why a warm-up for the first two: at initialisation the LLM ignores the visual tokens (so the
loss ratio is ~1 in healthy runs too), and a randomly initialised DINOv2 attends almost
uniformly until it trains; "stuck" means still there after ``WARMUP_STEPS`` optimizer steps.
The metric dict may say ``step``; without it the warm-up is not applied (a final report).
In ``coarse_only`` runs (A6/A7) the fine pass is not trained, so only ``q_static_std`` applies.

Metric names accepted (first found wins): ratio ``loss_ratio`` then ``val_loss_ratio`` (else
computed from ``loss_fine``/``loss_coarse``); entropy ``attn_entropy_fine`` then
``attn_entropy`` then ``attn_entropy_coarse``; log N ``attn_entropy_max`` (else ln 257);
token difference ``fine_coarse_token_diff`` then ``fine_coarse_diff``.

``flag_failure_signatures(metrics, cfg, tracker, rank, step)`` is the training loop's hook:
it adds ``warning.<name> = 1`` to the metrics (so metrics.jsonl and MLflow carry a series),
and on rank 0 logs a WARNING line and sets the MLflow tag ``warning.<name>`` to
"step S: message" (the last step it fired).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("fovea.foveation")

RATIO_TOL = 0.005  # |loss_fine/loss_coarse - 1| below this: ratio stuck at 1.0
ENTROPY_FRAC = 0.98  # entropy above this fraction of log N: attention ~ uniform
Q_STD_MIN = 0.1  # q_static std below this: queries too small for the encoder (BUG-001: 0.02)
Q_STD_DRIFT = 2.0  # q_static std / init std outside [1/2, 2]: drifted far from its init
TOKEN_DIFF_MIN = 0.05  # mean |z_fine - z_coarse| below this: the fine tokens copy the coarse ones
WARMUP_STEPS = 100  # ratio_stuck / entropy_uniform only from this optimizer step on
LOG_N_DEFAULT = math.log(257)  # 16 x 16 patches + CLS


@dataclass(frozen=True)
class Signature:
    name: str
    message: str


def _first(metrics: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        v = metrics.get(k)
        if v is None:
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            return v
    return None


def failure_signatures(metrics: dict[str, Any], init_std: float, *, mode: str = "coarse_fine",
                       warmup_steps: int = WARMUP_STEPS) -> list[Signature]:
    """The known failure signatures present in one dict of diagnostics (see the module doc)."""
    out: list[Signature] = []
    step = _first(metrics, "step")
    warm = step is None or step >= warmup_steps

    q = _first(metrics, "q_static_std")
    if q is not None:
        if q < Q_STD_MIN:
            out.append(Signature("q_static_std", (
                f"q_static std {q:.4g} < {Q_STD_MIN} (reference: ~1.0): queries this small let the projection "
                f"bias decide the attention, so every query looks alike (BUG-001: init std 0.02; "
                f"model.query_init_std={init_std:g})")))
        elif init_std > 0 and not (1 / Q_STD_DRIFT <= q / init_std <= Q_STD_DRIFT):
            out.append(Signature("q_static_std", (
                f"q_static std {q:.4g} drifted far from its init {init_std:g} (ratio {q / init_std:.2f} outside "
                f"[{1 / Q_STD_DRIFT:g}, {Q_STD_DRIFT:g}]): the static query is collapsing or blowing up")))
    if mode == "coarse_only":
        return out

    ratio = _first(metrics, "loss_ratio", "val_loss_ratio")
    if ratio is None or ratio == 0.0:
        lf, lc = _first(metrics, "loss_fine", "val_loss_fine"), _first(metrics, "loss_coarse", "val_loss_coarse")
        ratio = lf / lc if (lf is not None and lc) else None
    if warm and ratio is not None and ratio > 0 and abs(ratio - 1.0) < RATIO_TOL:
        out.append(Signature("ratio_stuck", (
            f"loss_fine / loss_coarse = {ratio:.4f}, within {RATIO_TOL:.1%} of 1.0"
            + (f" at step {int(step)}" if step is not None else "")
            + ": the fine pass adds nothing over the static query (BUG-001 / BUG-004; check "
              "query_init_std=1.0, query_bias=false, deep_query=true, one mode per batch)")))

    ent = _first(metrics, "attn_entropy_fine", "attn_entropy", "attn_entropy_coarse")
    log_n = _first(metrics, "attn_entropy_max") or LOG_N_DEFAULT
    if warm and ent is not None and ent > ENTROPY_FRAC * log_n:
        which = "fine" if _first(metrics, "attn_entropy_fine") is not None else "query"
        out.append(Signature("entropy_uniform", (
            f"{which} attention entropy {ent:.3f} > {ENTROPY_FRAC} x log N = {ENTROPY_FRAC * log_n:.3f} "
            f"(log N = {log_n:.3f}): the query attends ~uniformly, it looks nowhere "
            f"(BUG-001 / BUG-002 / BUG-004; healthy runs log 2.9-4.4 with pretrained DINOv2)")))

    diff = _first(metrics, "fine_coarse_token_diff", "fine_coarse_diff")
    if diff is not None and diff < TOKEN_DIFF_MIN:
        out.append(Signature("tokens_identical", (
            f"mean |z_fine - z_coarse| = {diff:.4g} < {TOKEN_DIFF_MIN} (healthy > 0.5): fine and coarse tokens "
            f"are nearly identical, different queries give the same read-out (BUG-001 / BUG-002)")))
    return out


def flag_failure_signatures(metrics: dict[str, Any], cfg, tracker=None, rank: int = 0,
                            step: int | None = None) -> list[Signature]:
    """Training-loop hook (see the module doc); never raises."""
    try:
        mode = "coarse_only" if cfg.model.coarse_only else "coarse_fine"
        sigs = failure_signatures(metrics, cfg.model.query_init_std, mode=mode)
        for s in sigs:
            metrics[f"warning.{s.name}"] = 1.0
        if rank == 0 and sigs:
            at = f"step {step if step is not None else int(metrics.get('step', -1))}"
            for s in sigs:
                log.warning("foveation warning %s (%s): %s", s.name, at, s.message)
            if tracker is not None:
                tracker.set_tags({f"warning.{s.name}": f"{at}: {s.message}"[:5000] for s in sigs})
        return sigs
    except Exception as e:  # noqa: BLE001 - a diagnostic must never stop training
        log.warning("failure-signature check failed: %s: %s", type(e).__name__, e)
        return []
