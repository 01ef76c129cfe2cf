"""Scaling-law fits: the loss surface L(N, D) = E + A / N^alpha + B / D^beta, the iso-FLOP
parabolas and the compute-optimal frontier N(C), D(C).  Numbers in, numbers out (numpy, scipy).

    law = fit_law(N, D, L, groups)                 # LawFit: the fit and its objective
    boot = bootstrap_law(N, D, L, groups, law)     # refits on runs drawn with replacement
    iso = iso_flop_parabola(C, N_at_C, L_at_C)     # the loss against log N at one budget
    n_opt, d_opt, l_opt = frontier(law.law, flops_model, budgets)

The law is fitted as in the compute-optimal scaling literature (Hoffmann et al. 2022, "approach
3"): in log space, log L = LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b,
E = e^e, minimising the Huber loss (delta 1e-3) of the log-residuals with L-BFGS from the best
points of a grid of initialisations.  Every run weighs the same (its points share one unit of
weight), so a long curve does not outvote a short one, and the bootstrap draws *runs*.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

HUBER_DELTA = 1e-3
N_PARAMS = 5  # E, A, B, alpha, beta
# The initialisation grid of the literature: e, a, b (log E, log A, log B), alpha, beta.
GRID = (np.arange(-1.0, 1.51, 0.5), np.arange(0.0, 25.1, 5.0), np.arange(0.0, 25.1, 5.0),
        np.arange(0.0, 2.01, 0.5), np.arange(0.0, 2.01, 0.5))
BOUNDS = [(-30.0, 80.0), (-30.0, 80.0), (-10.0, 10.0), (0.0, 5.0), (0.0, 5.0)]  # a, b, e, alpha, beta
STARTS = 8  # L-BFGS runs from the best grid points


@dataclass(frozen=True)
class Law:
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n, d):
        return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

    @property
    def n_exponent(self) -> float:
        """a in N_opt ~ C^a when C is proportional to N x D (beta / (alpha + beta))."""
        s = self.alpha + self.beta
        return self.beta / s if s > 0 else float("nan")

    @property
    def d_exponent(self) -> float:
        s = self.alpha + self.beta
        return self.alpha / s if s > 0 else float("nan")

    def values(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
                "a = beta/(alpha+beta)": self.n_exponent, "b = alpha/(alpha+beta)": self.d_exponent}


@dataclass(frozen=True)
class LawFit:
    law: Law
    theta: np.ndarray  # a, b, e, alpha, beta
    objective: float
    rmse_log: float  # root mean square of the log-residuals (unweighted)
    n_points: int
    at_bound: list[str]  # parameters that ended on a bound of the search: "alpha=high", "E=low", ...


def _theta_law(theta) -> Law:
    a, b, e, alpha, beta = (float(x) for x in theta)
    return Law(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta)


def _terms(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """[..., 3, n]: the three terms of the log-sum-exp for parameter rows ``theta`` [..., 5]."""
    a, b, e, alpha, beta = (theta[..., i:i + 1] for i in range(5))
    return np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (a * log_n).shape)], axis=-2)


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def objective(theta: np.ndarray, log_n, log_d, log_l, w, delta: float = HUBER_DELTA) -> tuple[float, np.ndarray]:
    """The weighted Huber loss of the log-residuals and its gradient in (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    t1, t2 = a - alpha * log_n, b - beta * log_d
    m = np.maximum(np.maximum(t1, t2), e)
    x1, x2, x3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    s = x1 + x2 + x3
    r = m + np.log(s) - log_l
    g = np.clip(r, -delta, delta) * w / s  # d pred / d term_i = x_i / s
    g1, g2 = g * x1, g * x2
    grad = np.array([g1.sum(), g2.sum(), (g * x3).sum(), -(g1 * log_n).sum(), -(g2 * log_d).sum()])
    return float((_huber(r, delta) * w).sum()), grad


def grid_starts(log_n, log_d, log_l, w, k: int = STARTS, delta: float = HUBER_DELTA) -> np.ndarray:
    """Starting points [k, 5] (a, b, e, alpha, beta) from the initialisation grid: for each pair
    of exponents, its best (a, b, e); then the ``k`` best of those.  (The best grid points alone
    are often one flat basin: a term so small that its exponent has no gradient.)"""
    e, a, b, al, be = GRID
    grid = np.array([(ai, bi, ei, ali, bei) for ei, ai, bi, ali, bei in itertools.product(e, a, b, al, be)])
    t = _terms(grid, log_n, log_d)  # [G, 3, n]
    m = t.max(axis=1)
    pred = m + np.log(np.exp(t - m[:, None, :]).sum(axis=1))
    loss = (_huber(pred - log_l, delta) * w).sum(axis=1)
    best: dict[tuple[float, float], int] = {}
    for i in np.argsort(loss):
        best.setdefault((grid[i, 3], grid[i, 4]), int(i))
    rows = sorted(best.values(), key=lambda i: loss[i])
    return grid[rows[:k]]


def weights_by_group(groups: np.ndarray, counts: dict | None = None) -> np.ndarray:
    """Each group's points share one unit of weight (times its count in a bootstrap draw)."""
    uniq, inv, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    mult = np.array([1.0 if counts is None else counts.get(u, 0) for u in uniq])
    return (mult / sizes)[inv]


def _minimise(starts: np.ndarray, log_n, log_d, log_l, w, delta: float):
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    best = None
    # One BLAS thread: L-BFGS-B's solves are 5 x 5, and a threaded BLAS spins its threads on
    # each of them (20x slower on a busy 2-core machine).
    with threadpool_limits(1, user_api="blas"):
        for s in starts:
            res = minimize(objective, s, args=(log_n, log_d, log_l, w, delta), jac=True, method="L-BFGS-B",
                           bounds=BOUNDS, options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-9})
            if best is None or res.fun < best.fun:
                best = res
    return best


def fit_law(n, d, loss, groups, *, delta: float = HUBER_DELTA, starts: np.ndarray | None = None,
            counts: dict | None = None) -> LawFit:
    """The fit of L(N, D) to points (``groups``: which run each point comes from)."""
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    w = weights_by_group(np.asarray(groups), counts)
    keep = w > 0
    log_n, log_d, log_l, w = log_n[keep], log_d[keep], log_l[keep], w[keep]
    if starts is None:
        starts = grid_starts(log_n, log_d, log_l, w, delta=delta)
    res = _minimise(starts, log_n, log_d, log_l, w, delta)
    theta = np.asarray(res.x, float)
    pred = _terms(theta, log_n, log_d)
    resid = np.log(np.exp(pred).sum(axis=0)) - log_l
    names = ("A", "B", "E", "alpha", "beta")
    at_bound = [f"{nm}={'low' if x - lo < hi - x else 'high'}" for nm, x, (lo, hi) in zip(names, theta, BOUNDS)
                if min(x - lo, hi - x) < 1e-6]
    return LawFit(_theta_law(theta), theta, float(res.fun), float(np.sqrt(np.mean(resid ** 2))), int(keep.sum()),
                  at_bound)


def bootstrap_law(n, d, loss, groups, fit: LawFit, *, draws: int = 200, seed: int = 0,
                  delta: float = HUBER_DELTA) -> list[Law]:
    """Refits on the runs drawn with replacement (a cluster bootstrap), from the full fit's
    optimum and the best grid points."""
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    starts = np.vstack([fit.theta[None, :], grid_starts(log_n, log_d, log_l, weights_by_group(groups), k=1,
                                                        delta=delta)])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        drawn = rng.choice(uniq, size=len(uniq), replace=True)
        counts = {u: int((drawn == u).sum()) for u in uniq}
        out.append(fit_law(n, d, loss, groups, delta=delta, starts=starts, counts=counts).law)
    return out


def intervals(laws: list[Law], level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals of every value of ``Law.values`` over bootstrap fits."""
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    table = [law.values() for law in laws]
    return {k: (float(np.nanpercentile([t[k] for t in table], lo)), float(np.nanpercentile([t[k] for t in table], hi)))
            for k in table[0]} if table else {}


# -- iso-FLOP parabolas ------------------------------------------------------------------------

@dataclass(frozen=True)
class IsoFlop:
    budget: float
    n: np.ndarray
    loss: np.ndarray
    coef: np.ndarray | None  # loss = c0 (log N)^2 + c1 log N + c2
    n_opt: float | None
    inside: bool  # the minimum lies within the sizes sampled
    note: str

    def curve(self, log_n: np.ndarray) -> np.ndarray:
        return np.polyval(self.coef, log_n)


def iso_flop_parabola(budget: float, n, loss) -> IsoFlop:
    """The parabola in log N through one budget's losses and its minimum, or why there is none."""
    n, loss = np.asarray(n, float), np.asarray(loss, float)
    order = np.argsort(n)
    n, loss = n[order], loss[order]
    if len(np.unique(n)) < 3:
        return IsoFlop(budget, n, loss, None, None, False, f"{len(np.unique(n))} size(s): a parabola needs 3")
    coef = np.polyfit(np.log(n), loss, 2)
    if coef[0] <= 0:
        return IsoFlop(budget, n, loss, coef, None, False, "no minimum (the curve bends down)")
    n_opt = float(np.exp(-coef[1] / (2 * coef[0])))
    inside = n[0] <= n_opt <= n[-1]
    note = "" if inside else (f"minimum beyond the sizes sampled ({'below' if n_opt < n[0] else 'above'} them): "
                              "extrapolated")
    return IsoFlop(budget, n, loss, coef, n_opt, inside, note)


def power_law(x, y) -> tuple[float, float] | None:
    """(exponent, prefactor) of y = k x^a through the points in log-log, None with fewer than 2."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or len(np.unique(x)) < 2:
        return None
    a, logk = np.polyfit(np.log(x), np.log(y), 1)
    return float(a), float(np.exp(logk))


# -- the compute-optimal frontier --------------------------------------------------------------

def flops_model(sizes: list[tuple[float, float]]) -> Callable[[np.ndarray], np.ndarray]:
    """Training FLOPs a sample as a function of N: straight lines in log-log through the sizes
    measured, continued with the end segments' slopes (a constant with one size)."""
    pts = sorted({float(n): float(f) for n, f in sizes}.items())
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])

    def fps(n):
        ln = np.log(np.asarray(n, float))
        if len(x) == 1:
            return np.full_like(ln, np.exp(y[0]))
        out = np.interp(ln, x, y)
        lo, hi = (y[1] - y[0]) / (x[1] - x[0]), (y[-1] - y[-2]) / (x[-1] - x[-2])
        out = np.where(ln < x[0], y[0] + lo * (ln - x[0]), out)
        return np.exp(np.where(ln > x[-1], y[-1] + hi * (ln - x[-1]), out))
    return fps


def frontier(law: Law, fps: Callable[[np.ndarray], np.ndarray], budgets, n_range: tuple[float, float],
             span: float = 1e3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N_opt, D_opt, L_opt) at each budget: the N minimising L(N, C / FLOPs a sample(N)),
    searched over ``n_range`` widened ``span`` times each way (NaN where the minimum is the
    search's edge: the law keeps falling that way)."""
    log_n = np.linspace(np.log(n_range[0] / span), np.log(n_range[1] * span), 1200)
    n = np.exp(log_n)
    per = fps(n)
    c = np.asarray(budgets, float)[:, None]
    d = c / per[None, :]
    loss = law.loss(n[None, :], d)
    i = np.argmin(loss, axis=1)
    edge = (i == 0) | (i == len(n) - 1)
    n_opt = np.where(edge, np.nan, n[i])
    d_opt = np.where(edge, np.nan, d[np.arange(len(c)), i])
    return n_opt, d_opt, np.where(edge, np.nan, loss[np.arange(len(c)), i])
