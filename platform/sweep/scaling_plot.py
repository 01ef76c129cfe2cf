"""The scaling report's figure (matplotlib, one PNG, four panels):

    (a) loss against training FLOPs, one colour a model size: each run's curve, the fitted
        law along each size (dashed) and the fitted frontier (the lowest loss any size reaches
        at each budget, black); the budgets as dotted lines
    (b) the iso-FLOP curves: loss against N at each budget, the parabola in log N and its minimum
    (c) the compute-optimal N(C): the law's frontier with its bootstrap band, the parabolas' minima
    (d) the compute-optimal D(C), the same way
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fovea.platform.sweep import scaling_fit as sf
from fovea.platform.sweep.scaling_analysis import ScalingReport


def plot_report(rep: ScalingReport, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 10))
    size_colours = {n: plt.cm.viridis(i / max(1, len(rep.sizes) - 1)) for i, n in enumerate(rep.sizes)}
    panel_curves(axes[0, 0], rep, size_colours)
    panel_iso(axes[0, 1], rep, plt.cm.plasma)
    panel_frontier(axes[1, 0], rep, "n")
    panel_frontier(axes[1, 1], rep, "d")
    title = f"Scaling report: sweep {rep.sweep} ({rep.space}), N = LLM parameters ({rep.params})"
    if rep.fit is None:
        title += "\nno fit of L(N, D): " + next((v for v in rep.verdicts if "no fit" in v), "see the report")
    elif rep.fit.rmse_log > 0.1:
        title += (f"\nthe fitted law misses the points by {rep.fit.rmse_log:.0%}: it does not describe these curves "
                  "(scaling.md says what the points support)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _n_label(n: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _flop_grid(rep: ScalingReport) -> np.ndarray:
    lo = min(c.flops[0] for c in rep.curves)
    hi = max(c.final_flops for c in rep.curves)
    return np.geomspace(lo, hi * 1.5, 200)


def panel_curves(ax, rep: ScalingReport, colours: dict) -> None:
    from matplotlib.ticker import FormatStrFormatter

    for c in rep.curves:
        col = colours[c.n_params]
        ax.plot(c.flops, c.loss, "-", color=col, alpha=0.8, lw=1.2)
        ax.plot([c.final_flops], [c.final_loss], "o", color=col, ms=5)
    for n, col in colours.items():
        ax.plot([], [], "-o", color=col, label=f"N = {_n_label(n)}")
    for b in rep.budgets:
        ax.axvline(b, color="grey", ls=":", lw=0.8)
    if rep.fit is not None and rep.curves:
        grid, fps = _flop_grid(rep), rep.fps_model()
        for n, col in colours.items():
            ax.plot(grid, rep.fit.law.loss(n, grid / fps(np.array([n]))[0]), "--", color=col, lw=1)
        best = sf.frontier(rep.fit.law, fps, grid, (rep.sizes[0], rep.sizes[-1]))[2]
        ax.plot(grid, best, "k-", lw=2, label="fitted frontier (best N at each C)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    ax.set_xlabel("training FLOPs C")
    ax.set_ylabel(rep.curves[0].loss_name if rep.curves else "loss")
    ax.set_title("(a) loss against FLOPs, one colour a size (dashed: the fitted law)")
    ax.legend(fontsize=8)


def panel_iso(ax, rep: ScalingReport, cmap) -> None:
    for i, iso in enumerate(rep.iso):
        col = cmap(i / max(1, len(rep.iso) - 1) * 0.85)
        ax.plot(iso.n, iso.loss, "o", color=col, label=f"C = {iso.budget:.3g}")
        if iso.coef is not None:
            ln = np.linspace(np.log(iso.n[0]) - 0.5, np.log(iso.n[-1]) + 0.5, 100)
            ax.plot(np.exp(ln), iso.curve(ln), "-", color=col, lw=1)
        if iso.n_opt is not None:
            marker_y = iso.curve(np.log(iso.n_opt))
            ax.plot([iso.n_opt], [marker_y], "*", color=col, ms=14, mec="k",
                    alpha=1.0 if iso.inside else 0.4)
    ax.set_xscale("log")
    ax.set_xlabel("N (LLM parameters)")
    ax.set_ylabel("loss at the budget")
    ax.set_title("(b) iso-FLOP curves, parabolas in log N; star: minimum (faint: outside the sizes)", fontsize=10)
    if rep.iso:
        ax.legend(fontsize=8)


def panel_frontier(ax, rep: ScalingReport, which: str) -> None:
    key, ci_key = f"{which}_law", f"{which}_ci"
    rows = [r for r in rep.optimal if r[key] is not None]
    if rows:
        c = [r["budget"] for r in rows]
        ax.plot(c, [r[key] for r in rows], "k-o", ms=4, label="from the fitted law")
        band = [r for r in rows if r[ci_key]]
        if band:
            ax.fill_between([r["budget"] for r in band], [r[ci_key][0] for r in band],
                            [r[ci_key][1] for r in band], color="grey", alpha=0.3, label="95 % bootstrap band")
    iso = [i for i in rep.iso if i.n_opt is not None and i.inside]
    if iso:
        fps = rep.fps_model()
        y = [i.n_opt if which == "n" else i.budget / fps(np.array([i.n_opt]))[0] for i in iso]
        ax.plot([i.budget for i in iso], y, "*", color="tab:red", ms=12, label="iso-FLOP minima")
    if which == "n":
        for n in rep.sizes:
            ax.axhline(n, color="tab:blue", lw=0.6, alpha=0.4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs C")
    ax.set_ylabel("N_opt (LLM parameters)" if which == "n" else "D_opt (samples)")
    ax.set_title(f"({'c' if which == 'n' else 'd'}) compute-optimal {'N' if which == 'n' else 'D'}(C)"
                 + (f", log-log slope {_exponent(rep, which):.2f}" if rep.fit is not None else ""))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _exponent(rep: ScalingReport, which: str) -> float:
    """The local slope of the law's frontier over the sweep's budgets (log-log)."""
    rows = [r for r in rep.optimal if r[f"{which}_law"] is not None]
    fit = sf.power_law([r["budget"] for r in rows], [r[f"{which}_law"] for r in rows])
    return fit[0] if fit else float("nan")
