"""The analysis behind a sweep's scaling report: how the loss falls with LLM size N and data D,
and which size is compute-optimal, from the sweep's child runs in MLflow.

    rep = build_report(find_plan("scaling_flops-..."))      # ScalingReport (fovea.platform.sweep.scaling
                                                             # writes, plots and logs it)

* the points: each run's loss curve (``scaling_runs``) against D (samples) and C (FLOPs); the
  fit uses every evaluation after warm-up when all runs train at a constant LR (a point on a
  constant-LR curve is what a shorter run would have reached), else each run's final value;
* L(N, D) = E + A / N^alpha + B / D^beta (``scaling_fit``), with 95 % bootstrap intervals over
  the runs, and the compute-optimal N(C), D(C) it implies (the N minimising L(N, C / FLOPs a
  sample(N)));
* per FLOP budget (the runs' final FLOPs, grouped when within ``BUDGET_RATIO``), the loss of each
  size at that budget (read off its curve) and a parabola in log N with its minimum;
* what is missing (experiments not run or not finished) and, in plain words, what the points
  cannot support (fewer points than parameters, one size, curves that do not fall, exponents on
  the edge of the search).

The runs of one DINOv2 backbone are fitted (N counts the LLM only): the most common one, or
``dino``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fovea.platform.sweep import scaling_fit as sf
from fovea.platform.sweep.scaling_runs import TEXT_TOKENS, RunCurve, read_curves

BUDGET_RATIO = 1.5  # final FLOPs within this factor of each other are one budget
REACH = 1.02  # a curve counts at a budget up to 2 % past its last point (rounding of whole batches)
BOOTSTRAP_DRAWS = 200
BOUND_WORDS = {
    "E=low": "E fell to the floor of the search (~0): the points show no irreducible loss, so A, B and the "
             "exponents carry it (read them with care)",
    "alpha=low": "alpha = 0: the points show no effect of N at a given D",
    "beta=low": "beta = 0: the points show no effect of D at a given N",
}
POINT_MODES = ("auto", "curve", "final")  # the law's points: every evaluation after warm-up, or final values


@dataclass
class ScalingReport:
    sweep: str
    space: str
    params: str  # how N counts the LLM's parameters
    text_tokens: int  # text tokens a sample in the FLOP model
    dino: str | None
    curves: list[RunCurve]  # the runs of the fitted backbone
    other: list[RunCurve]  # runs of other backbones, left out
    problems: dict[str, str]  # experiment -> why it has no curve
    point_mode: str = "final"  # "curve" or "final"
    fit: sf.LawFit | None = None
    boot: list[sf.Law] = field(default_factory=list)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    budgets: list[float] = field(default_factory=list)
    iso: list[sf.IsoFlop] = field(default_factory=list)
    iso_power: tuple[float, float] | None = None
    optimal: list[dict[str, Any]] = field(default_factory=list)  # one row a budget
    verdicts: list[str] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def sizes(self) -> list[float]:
        return sorted({c.n_params for c in self.curves})

    def fps_model(self):
        by_size = {c.n_params: c.flops_per_sample for c in self.curves}
        return sf.flops_model(list(by_size.items())) if by_size else None


# -- building --------------------------------------------------------------------------------------

def build_report(plan: dict[str, Any], *, params: str = "non_embedding", text_tokens: int = TEXT_TOKENS,
                 dino: str | None = None, points: str = "auto", draws: int = BOOTSTRAP_DRAWS,
                 seed: int = 0) -> ScalingReport:
    """Everything the report says, from the sweep's runs (nothing written or logged).  ``points``:
    what the law is fitted to (``POINT_MODES``; auto: curve when every run's LR is constant)."""
    if points not in POINT_MODES:
        raise ValueError(f"points must be one of {POINT_MODES}, got {points!r}")
    curves, problems = read_curves(plan, params, text_tokens)
    dino = dino or (Counter(c.dino for c in curves).most_common(1)[0][0] if curves else None)  # ties: plan order
    rep = ScalingReport(plan["sweep"], plan["space"], params, text_tokens, dino, [c for c in curves if c.dino == dino],
                        [c for c in curves if c.dino != dino], problems, plan=plan)
    rep.verdicts += missing_lines(rep)
    constant = bool(rep.curves) and all(c.schedule == "constant" for c in rep.curves)
    rep.point_mode = points if points != "auto" else ("curve" if constant else "final")
    if rep.point_mode == "curve" and not constant:
        rep.verdicts.append("curve points of runs whose LR is not constant: a point before the end of such a run "
                            "is not what a shorter run would reach")
    fit_law_of(rep, draws, seed)
    falling = [c for c in rep.curves if c.falls]
    rep.budgets = budgets_of(falling)
    rep.iso = [iso_at(falling, c) for c in rep.budgets]
    inside = [i for i in rep.iso if i.n_opt is not None and i.inside]
    rep.iso_power = sf.power_law([i.budget for i in inside], [i.n_opt for i in inside])
    rep.optimal = optimal_rows(rep)
    rep.verdicts += iso_lines(rep)
    return rep


def missing_lines(rep: ScalingReport) -> list[str]:
    """What the sweep lacks: experiments without a curve, runs not finished, other backbones."""
    lines = [f"missing: {exp}: {why}" for exp, why in rep.problems.items()]
    for c in rep.curves:
        if not c.finished:
            done = f"{c.final_samples / c.planned_samples:.0%} of its samples" if c.planned_samples else "part"
            lines.append(f"missing: {c.experiment}: {c.status} at {done}; its curve so far is used")
    if rep.other:
        names = ", ".join(c.experiment for c in rep.other)
        lines.append(f"left out: {names} (another DINOv2 backbone than {rep.dino}; N counts the LLM only: "
                     "report them with --dino)")
    return lines


def fit_points(curves: list[RunCurve], mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, L, run) of the points the law is fitted to."""
    rows = []
    for c in curves:
        if mode == "curve":
            keep = (c.samples > c.warmup_samples) & (c.loss > 0)
            rows += [(c.n_params, d, l, c.experiment) for d, l in zip(c.samples[keep], c.loss[keep])]
        elif c.final_loss and c.final_loss > 0:
            rows.append((c.n_params, c.final_samples, c.final_loss, c.experiment))
    if not rows:
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, dtype=object)
    n, d, l, g = zip(*rows)
    return np.array(n, float), np.array(d, float), np.array(l, float), np.array(g, dtype=object)


def unsupported(n: np.ndarray, d: np.ndarray, runs: list[RunCurve]) -> str | None:
    """Why these points cannot support a fit of L(N, D), or None."""
    if len(runs) == 0:
        return "no run with a falling curve: no fit of L(N, D)"
    if len(n) <= sf.N_PARAMS:
        return f"{len(n)} point(s) for {sf.N_PARAMS} parameters (E, A, B, alpha, beta): no fit of L(N, D)"
    if len(np.unique(n)) < 2:
        return "one model size: A and alpha (the N term) cannot be fitted; no fit of L(N, D)"
    if len(np.unique(d)) < 2:
        return "one data size: B and beta (the D term) cannot be fitted; no fit of L(N, D)"
    return None


def fit_law_of(rep: ScalingReport, draws: int, seed: int) -> None:
    """The fit of L(N, D) on the runs whose curves fall, its bootstrap, and what to make of it."""
    flat = [c for c in rep.curves if not c.falls]
    if flat:
        rep.verdicts.append("curves that do not fall (left out of the fits): "
                            + ", ".join(f"{c.experiment} ({c.loss[0]:.3g} -> {c.loss[-1]:.3g})" for c in flat))
    used = [c for c in rep.curves if c.falls]
    n, d, l, g = fit_points(used, rep.point_mode)
    why = unsupported(n, d, used)
    if why:
        rep.verdicts.append(why)
        return
    rep.fit = sf.fit_law(n, d, l, g)
    if draws > 0 and len(used) >= 3:
        rep.boot = sf.bootstrap_law(n, d, l, g, rep.fit, draws=draws, seed=seed)
        rep.ci = sf.intervals(rep.boot)
    else:
        rep.verdicts.append("no bootstrap interval (" + ("fewer than 3 runs" if len(used) < 3 else "no draws asked")
                            + ")")
    rep.verdicts += fit_lines(rep)


def fit_lines(rep: ScalingReport) -> list[str]:
    """Plain words on how far the fitted law can be trusted."""
    fit, out = rep.fit, []
    for bound in fit.at_bound:
        out.append(BOUND_WORDS.get(bound, f"{bound.split('=')[0]} ended on the edge of the search: "
                                          "the points do not determine it"))
    for k in ("alpha", "beta"):
        lo, hi = rep.ci.get(k, (math.nan, math.nan))
        v = fit.law.values()[k]
        if math.isfinite(lo) and hi - lo > max(v, 1e-9):
            out.append(f"{k} is poorly constrained: {v:.3g}, 95 % interval [{lo:.3g}, {hi:.3g}]")
    if fit.rmse_log > 0.1:
        out.append(f"the law misses the points by {fit.rmse_log:.0%} (RMS of log-residuals): L(N, D) does not "
                   "describe these curves (a plateau then a sudden drop, say), so neither its exponents nor its "
                   "N_opt(C) carry weight")
    elif fit.rmse_log > 0.03:
        out.append(f"the law misses the points by {fit.rmse_log:.1%} (RMS of log-residuals)")
    return out


# -- budgets and iso-FLOP profiles -----------------------------------------------------------------

def budgets_of(curves: list[RunCurve]) -> list[float]:
    """The FLOP budgets: the runs' final FLOPs, grouped when within ``BUDGET_RATIO``; each
    group's smallest, so every run of the group reaches it."""
    finals = sorted(c.final_flops for c in curves if c.final_flops > 0)
    groups: list[list[float]] = []
    for f in finals:
        if groups and f / groups[-1][0] < BUDGET_RATIO:
            groups[-1].append(f)
        else:
            groups.append([f])
    return [g[0] for g in groups]


def loss_at(curve: RunCurve, budget: float) -> float | None:
    """The curve's loss at ``budget`` FLOPs (linear in log FLOPs), None outside the curve."""
    f = curve.flops
    if len(f) == 0 or budget < f[0] or budget > f[-1] * REACH:
        return None
    return float(np.interp(np.log(budget), np.log(f), curve.loss))


def iso_at(curves: list[RunCurve], budget: float) -> sf.IsoFlop:
    """Each size's loss at ``budget`` (from the run of that size that ends nearest it), and the
    parabola in log N through them."""
    by_size: dict[float, tuple[float, float]] = {}
    for c in curves:
        v = loss_at(c, budget)
        if v is None:
            continue
        gap = abs(math.log(c.final_flops / budget))
        if c.n_params not in by_size or gap < by_size[c.n_params][0]:
            by_size[c.n_params] = (gap, v)
    n = sorted(by_size)
    return sf.iso_flop_parabola(budget, n, [by_size[x][1] for x in n])


def iso_lines(rep: ScalingReport) -> list[str]:
    """Plain words on the iso-FLOP profiles: budgets without a minimum, parabolas with no
    residual to check them by, minima that do not grow with the budget."""
    out = [f"budget {i.budget:.3g} FLOPs: {i.note}" for i in rep.iso if i.note]
    if rep.budgets and not any(i.n_opt is not None and i.inside for i in rep.iso):
        out.append("no iso-FLOP curve has its minimum within the sizes sampled: the compute-optimal size "
                   "is not bracketed by this sweep")
    exact = [i for i in rep.iso if i.coef is not None and len(i.n) == 3]
    if exact:
        out.append(f"{len(exact)} parabola(s) through exactly 3 sizes: each passes through its points, so its "
                   "minimum moves with every wiggle of the losses (more sizes give a check)")
    if rep.iso_power is not None and rep.iso_power[0] <= 0:
        out.append(f"the iso-FLOP minima do not grow with the budget (N_opt ~ C^{rep.iso_power[0]:.2f}): the "
                   "parabolas do not resolve the optimum; the losses of the sizes differ less than their noise")
    return out


def optimal_rows(rep: ScalingReport) -> list[dict[str, Any]]:
    """Compute-optimal N and D at each budget (and 10x, 100x the largest): from the law (with
    bootstrap intervals) and from the iso-FLOP parabola."""
    if not rep.budgets:
        return []
    budgets = list(rep.budgets) + [rep.budgets[-1] * 10, rep.budgets[-1] * 100]
    fps, sizes = rep.fps_model(), rep.sizes
    rows = [{"budget": c, "n_law": None, "d_law": None, "loss_law": None, "n_ci": None, "d_ci": None,
             "n_iso": None, "extrapolated": i >= len(rep.budgets)} for i, c in enumerate(budgets)]
    for r, iso in zip(rows, rep.iso):
        r["n_iso"] = iso.n_opt if iso.n_opt is not None else None
    if rep.fit is None:
        return rows
    n, d, l = sf.frontier(rep.fit.law, fps, budgets, (sizes[0], sizes[-1]))
    boots = [sf.frontier(b, fps, budgets, (sizes[0], sizes[-1]))[:2] for b in rep.boot]
    for i, r in enumerate(rows):
        r.update(n_law=_num(n[i]), d_law=_num(d[i]), loss_law=_num(l[i]))
        if boots:
            bn, bd = np.array([b[0][i] for b in boots]), np.array([b[1][i] for b in boots])
            r["n_ci"], r["d_ci"] = _ci(bn), _ci(bd)
        if r["n_law"] is not None and not sizes[0] <= r["n_law"] <= sizes[-1]:
            r["extrapolated"] = True
    return rows


def _num(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _ci(x: np.ndarray) -> tuple[float, float] | None:
    x = x[np.isfinite(x)]
    return (float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))) if len(x) else None
