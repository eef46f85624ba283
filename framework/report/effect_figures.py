"""The figures of the effect: change from baseline per window with the primary test's stars, the
sliding-window course per group, and power curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fclab.framework.pluginhost.contracts import as_scale  # noqa: E402
from fclab.framework.report.figures import GROUP_COLOURS, finish_figure, short  # noqa: E402
from fclab.framework.report.methods import edge_label  # noqa: E402


def stars(p: float, alpha: float) -> str:
    """Significance marks relative to α: * p < α, ** p < α/5, *** p < α/50 (.05, .01, .001 at α .05)."""
    return "***" if p < alpha / 50 else "**" if p < alpha / 5 else "*" if p < alpha else ""


def window_axis_label(specs, windows) -> str:
    """The x label of the change-from-baseline figure, from the windows' definitions: the event they are
    timed from when they share one, else the run."""
    specs = [s for s in specs if s.name in set(windows)]
    events = {s.event for s in specs}
    if len(events) == 1 and None not in events:
        return f"Window after {events.pop()} onset"
    runs = {s.run for s in specs}
    return f"Window of the {runs.pop()} run" if len(runs) == 1 else "Window"


def delta_figure(summary: pd.DataFrame, tests: pd.DataFrame, a: str, b: str, groups, windows, scale, path,
                 alpha: float = 0.05, xlabel: str = "Window"):
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=150)
    x = np.arange(len(windows))
    for k, (g, colour) in enumerate(zip(groups, GROUP_COLOURS)):
        s = summary[(summary["roi_a"] == a) & (summary["roi_b"] == b) & (summary["group"] == g)].set_index("window")
        s = s.reindex(windows)
        off = (k - 0.5) * 0.18
        ax.errorbar(x + off, s["mean_delta"], yerr=[s["mean_delta"] - s["ci_low"], s["ci_high"] - s["mean_delta"]],
                    fmt="o-", color=colour, capsize=4, lw=1.8, label=f"{short(g)} (n={int(s['n'].max())})")
    ax.axhline(0, color="0.5", lw=0.8, ls="--")
    t = tests[(tests["roi_a"] == a) & (tests["roi_b"] == b)].set_index("window")
    these = summary[(summary["roi_a"] == a) & (summary["roi_b"] == b)]
    top, bottom = these["ci_high"].max(), these["ci_low"].min()
    span = max(top - bottom, 1e-6)
    ax.set_ylim(bottom - 0.05 * span, top + 0.18 * span)  # room for the significance marks
    for i, w in enumerate(windows):
        if w in t.index and t.loc[w, "p_adj"] < alpha:
            ax.annotate(stars(t.loc[w, "p_adj"], alpha), (i, top + 0.04 * span), ha="center", va="bottom", fontsize=14)
    ax.set_xticks(x, [short(w.replace("min", " min")) for w in windows])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"Δ connectivity from baseline ({as_scale(scale).label})")
    finish_figure(fig, ax, edge_label(a, b), path)


def course_figure(course: pd.DataFrame, a: str, b: str, groups, scale: str, spec: dict, path) -> None:
    fig, ax = plt.subplots(figsize=(6.0, 3.6), dpi=150)
    for g, colour in zip(groups, GROUP_COLOURS):
        s = course[(course["roi_a"] == a) & (course["roi_b"] == b) & (course["group"] == g)]
        ax.fill_between(s["centre_min"], s["ci_low"], s["ci_high"], color=colour, alpha=0.25, lw=0)
        ax.plot(s["centre_min"], s["mean"], color=colour, lw=1.8, label=f"{short(g)} (n={int(s['n'].max())})")
    ref = f"{spec['event']} onset" if spec.get("event") else "run start"
    ax.set_xlabel(f"Window centre (min from {ref})")
    ax.set_ylabel(f"Sliding-window connectivity ({as_scale(scale).label})")
    finish_figure(fig, ax, edge_label(a, b), path)


def power_figure(curve: pd.DataFrame, detectable: pd.DataFrame, title: str, path) -> None:
    """Power against the planted Δz, one line per test and term, with the 80 % line."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=150)
    for (test, term), f in curve[curve["outcome"] == "single_adj"].groupby(["test", "term"], sort=False):
        f = f.sort_values("delta_z")
        line = ax.plot(f["delta_z"], f["rate"], marker="o", ms=3, label=f"{test} ({term})")[0]
        ax.fill_between(f["delta_z"], f["ci_low"], f["ci_high"], color=line.get_color(), alpha=0.15, lw=0)
    target = float(detectable["power"].iloc[0]) if len(detectable) else 0.8
    ax.axhline(target, color="0.4", lw=0.8, ls="--")
    ax.set_xlabel("planted decrease Δz (Fisher z), target group only")
    ax.set_ylabel("power (adjusted p < α)")
    ax.set_ylim(0, 1)
    finish_figure(fig, ax, title, path)
