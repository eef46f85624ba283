"""Stage ``report``: figures, the study HTML page, DVC metrics and plot series."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402
from scipy import stats as st  # noqa: E402

from fclab.framework import __version__  # noqa: E402
from fclab.framework.contracts import as_scale  # noqa: E402
from fclab.framework.figures import GROUP_COLOURS, finish_figure  # noqa: E402
from fclab.framework.io import write_text  # noqa: E402

PACKAGES = ("nilearn", "nibabel", "numpy", "pandas", "scipy", "statsmodels", "pyarrow", "pluggy", "dvc")


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe form of ``text``. When that loses anything (other characters, length), a
    short hash of the original is appended, so distinct names never share a file."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    if safe == text and len(safe) <= limit:
        return safe
    return f"{safe[:limit]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}".lstrip("-")


def csv_text(frame: pd.DataFrame) -> str:
    """CSV of ``frame`` with text cells a spreadsheet would run as a formula (=, +, -, @, tab, CR
    first) prefixed with a quote; numbers are untouched."""
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            frame[col] = [f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v
                          for v in frame[col]]
    return frame.to_csv(index=False, float_format="%.6g")


def edge_label(a: str, b: str) -> str:
    return f"{a} – {b}"


def group_counts(edges: pd.DataFrame, tests: pd.DataFrame, baseline: str, groups) -> pd.DataFrame:
    """Per row of ``tests`` and per group, the subjects with data: for ``group:window`` those with a
    value in both the window and the baseline, for ``group`` those with a value in the window; missing
    (NA) for other terms."""
    keys = ["metric", "roi_a", "roi_b", "window"]
    have = edges.loc[np.isfinite(edges["value"].to_numpy(float)), [*keys, "subject", "group"]]
    base = have.loc[have["window"] == baseline, ["metric", "roi_a", "roi_b", "subject"]]
    counts = {
        "group": have.groupby([*keys, "group"], observed=True).size(),
        "group:window": have.merge(base, on=["metric", "roi_a", "roi_b", "subject"]).groupby(
            [*keys, "group"], observed=True).size(),
    }
    out = pd.DataFrame(pd.NA, index=tests.index, columns=list(groups), dtype="Int64")
    for term, table in counts.items():  # one lookup per term, not per row
        rows = (tests["term"] == term).to_numpy()
        if not rows.any():
            continue
        wide = table.unstack("group")
        wide.index = pd.MultiIndex.from_arrays([wide.index.get_level_values(k).astype(str) for k in keys])
        want = pd.MultiIndex.from_arrays([tests.loc[rows, k].astype(str) for k in keys])
        found = wide.reindex(index=want, columns=list(groups)).fillna(0).to_numpy(np.int64)
        out.loc[rows] = found
    return out


def change_from_baseline(edges: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per subject, edge and non-baseline window: value minus the subject's baseline value."""
    keys = ["metric", "subject", "group", "roi_a", "roi_b"]
    base = edges[edges["window"] == baseline][keys + ["value"]].rename(columns={"value": "baseline"})
    out = edges[edges["window"] != baseline].merge(base, on=keys, how="left", sort=False)
    out["delta"] = out["value"] - out["baseline"]
    return out


def event_zero(frame: pd.DataFrame, events: pd.DataFrame, specs) -> np.ndarray:
    """Per row of ``frame`` (subject, window): the time in seconds from the run start that the row's
    window is timed from — its event's onset in that subject's run, or 0 for a window without an event
    (and NaN when the subject has no such event)."""
    zero = np.zeros(len(frame))
    for spec in specs:
        rows = (frame["window"] == spec.name).to_numpy()
        if spec.event is None or not rows.any():
            continue
        onset = events[(events["run"] == spec.run) & (events["trial_type"] == spec.event)]
        onset = onset.drop_duplicates("subject").set_index("subject")["onset_s"]
        zero[rows] = frame.loc[rows, "subject"].map(onset).to_numpy(float)
    return zero


def mean_ci_table(frame: pd.DataFrame, keys: list[str], value: str, alpha: float, sort: bool) -> pd.DataFrame:
    """Mean and 1 − alpha t interval of the finite ``value``s of every ``keys`` group at once (one groupby,
    not a loop over groups); n < 2 has no interval. Columns mean, ci_low, ci_high, n, indexed by ``keys``."""
    v = frame[value].to_numpy(float)
    g = frame.assign(_v=np.where(np.isfinite(v), v, np.nan)).groupby(keys, sort=sort, observed=True)["_v"]
    out = g.agg(mean="mean", sd="std", n="count")
    with np.errstate(invalid="ignore", divide="ignore"):
        half = st.t.ppf(1 - alpha / 2, out["n"] - 1) * out["sd"] / np.sqrt(out["n"])
    half = half.where(out["n"] >= 2)
    return pd.DataFrame({"mean": out["mean"], "ci_low": out["mean"] - half, "ci_high": out["mean"] + half,
                         "n": out["n"].astype(int)})


def delta_summary(delta: pd.DataFrame, groups, windows, alpha) -> pd.DataFrame:
    """Mean change from baseline with its CI per edge, group and window; ``window_mid_min``: the
    window's centre in minutes from the time it is timed from (``delta['zero_s']``: the event onset;
    the run start when the column is absent), averaged over the group's subjects. Every edge × group
    × window appears (n = 0 where there are no values), edges in the order of ``delta``."""
    zero = delta["zero_s"] if "zero_s" in delta else 0.0
    delta = delta.assign(_mid_min=((delta["window_start_s"] + delta["window_end_s"]) / 2 - zero) / 60.0)
    delta = delta.assign(roi_a=delta["roi_a"].astype(str), roi_b=delta["roi_b"].astype(str),
                         group=delta["group"].astype(str), window=delta["window"].astype(str))
    keys = ["roi_a", "roi_b", "group", "window"]
    table = mean_ci_table(delta, keys, "delta", alpha, sort=False)
    table["window_mid_min"] = delta.groupby(keys, sort=False)["_mid_min"].mean().round(3)
    pairs = list(dict.fromkeys(zip(delta["roi_a"], delta["roi_b"])))
    grid = pd.MultiIndex.from_tuples([(a, b, g, w) for a, b in pairs for g in groups for w in windows], names=keys)
    out = table.reindex(grid).reset_index()
    out["n"] = out["n"].fillna(0).astype(int)
    out.insert(0, "edge", out["roi_a"] + "~" + out["roi_b"])
    return out[["edge", "roi_a", "roi_b", "group", "window", "window_mid_min", "mean", "ci_low", "ci_high", "n"]].rename(
        columns={"mean": "mean_delta"})


def plot_series(table: pd.DataFrame, columns: list[str], directory: Path) -> None:
    """One CSV per edge in ``directory`` (``<roi_a>__<roi_b>.csv``, groups told apart by a ``group``
    column) for DVC's plots: a directory of plots is drawn one plot per file, and the project's
    ``by_group`` template draws one line per group. The directory exists (empty) without rows."""
    directory.mkdir(parents=True, exist_ok=True)
    if table.empty:
        return
    for (a, b), frame in table.groupby(["roi_a", "roi_b"], sort=False):
        write_text(directory / f"{slug(a)}__{slug(b)}.csv", csv_text(frame[columns]))


TABLE_ROWS = 2000  # statistics rows per family on the page (the smallest adjusted p); tests.csv has all
FIGURE_EDGES = 24  # at most this many edges get per-edge figures and DVC plot files, unless confirmatory


def figure_edges(confirmatory, primary: pd.DataFrame, pairs: list[tuple[str, str]],
                 limit: int = FIGURE_EDGES) -> tuple[list[tuple[str, str]], str]:
    """The edges that get their own figures, oriented as in the data, and a sentence when that is not
    every edge: the confirmatory edges when declared; else all edges up to ``limit``; else the
    ``limit`` edges with the smallest adjusted p of the primary test (then the largest |estimate|).
    A connectome of hundreds of ROIs has tens of thousands of edges: one figure each would not be read."""
    have = set(pairs)
    if confirmatory:
        return [(a, b) if (a, b) in have else (b, a) for a, b in confirmatory], ""
    if len(pairs) <= limit:
        return list(pairs), ""
    best = primary.assign(_p=primary["p_adj"].fillna(np.inf), _e=-primary["estimate"].abs().fillna(0))
    best = best.sort_values(["_p", "_e"], kind="stable").drop_duplicates(["roi_a", "roi_b"])
    chosen = list(best[["roi_a", "roi_b"]].itertuples(index=False, name=None))[:limit]
    return chosen, (f"Figures show the {limit} of {len(pairs)} edges with the smallest adjusted p of the primary "
                    "test (no confirmatory edges are declared); every edge is in the statistics table, "
                    "tests.csv and plots/delta_by_window.csv.")


def stars(p: float, alpha: float) -> str:
    """Significance marks relative to α: * p < α, ** p < α/5, *** p < α/50 (.05, .01, .001 at α .05)."""
    return "***" if p < alpha / 50 else "**" if p < alpha / 5 else "*" if p < alpha else ""


def ci_level(alpha: float) -> str:
    """The confidence level that α gives, as the report prints it: '95 %', '99 %', '99.5 %'."""
    return f"{100 * (1 - alpha):.10g} %"


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
                    fmt="o-", color=colour, capsize=4, lw=1.8, label=f"{g} (n={int(s['n'].max())})")
    ax.axhline(0, color="0.5", lw=0.8, ls="--")
    t = tests[(tests["roi_a"] == a) & (tests["roi_b"] == b)].set_index("window")
    these = summary[(summary["roi_a"] == a) & (summary["roi_b"] == b)]
    top, bottom = these["ci_high"].max(), these["ci_low"].min()
    span = max(top - bottom, 1e-6)
    ax.set_ylim(bottom - 0.05 * span, top + 0.18 * span)  # room for the significance marks
    for i, w in enumerate(windows):
        if w in t.index and t.loc[w, "p_adj"] < alpha:
            ax.annotate(stars(t.loc[w, "p_adj"], alpha), (i, top + 0.04 * span), ha="center", va="bottom", fontsize=14)
    ax.set_xticks(x, [w.replace("min", " min") for w in windows])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"Δ connectivity from baseline ({as_scale(scale).label})")
    finish_figure(fig, ax, edge_label(a, b), path)


def sliding_course(edges: pd.DataFrame, events: pd.DataFrame, spec: dict, groups, alpha) -> pd.DataFrame:
    """Mean and CI across subjects per group, edge and window centre (minutes after the event)."""
    sl = edges[edges["window"] == spec["name"]].copy()
    zero = 0.0
    if spec.get("event"):
        onset = events[(events["run"] == spec["run"]) & (events["trial_type"] == spec["event"])]
        sl = sl.merge(onset[["subject", "onset_s"]], on="subject", how="left")
        zero = sl["onset_s"]
    sl["centre_min"] = ((sl["window_start_s"] + sl["window_end_s"]) / 2 - zero) / 60.0
    sl["centre_min"] = sl["centre_min"].round(4)
    sl = sl[sl["group"].isin(list(groups))]
    out = mean_ci_table(sl, ["roi_a", "roi_b", "group", "centre_min"], "value", alpha, sort=True).reset_index()
    out.insert(0, "edge", out["roi_a"].astype(str) + "~" + out["roi_b"].astype(str))
    return out[["edge", "roi_a", "roi_b", "group", "centre_min", "mean", "ci_low", "ci_high", "n"]]


def course_figure(course: pd.DataFrame, a: str, b: str, groups, scale: str, spec: dict, path) -> None:
    fig, ax = plt.subplots(figsize=(6.0, 3.6), dpi=150)
    for g, colour in zip(groups, GROUP_COLOURS):
        s = course[(course["roi_a"] == a) & (course["roi_b"] == b) & (course["group"] == g)]
        ax.fill_between(s["centre_min"], s["ci_low"], s["ci_high"], color=colour, alpha=0.25, lw=0)
        ax.plot(s["centre_min"], s["mean"], color=colour, lw=1.8, label=f"{g} (n={int(s['n'].max())})")
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


def package_versions() -> dict[str, str]:
    out = {"fclab": __version__}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


ADJUSTMENTS = {
    "holm": "Holm's step-down method", "bonferroni": "Bonferroni's method",
    "fdr_bh": "the Benjamini–Hochberg false discovery rate",
    "maxT": "the single-step max-|t| permutation method (Westfall–Young maxT)",
    "maxT-exact": "the max-|t| method over every relabeling (exact)",
    "nbs": "the network-based statistic's component-wise family-wise error",
}


def adjustment_text(tests: pd.DataFrame) -> str:
    """How each test's p-values were adjusted, from what the stats stage recorded (``adj_method``):
    'mmrm, lmm and change_welch: Holm's step-down method; permutation: ...'."""
    by_method: dict[str, list[str]] = {}
    for test, frame in tests.groupby("test", sort=False):
        methods = sorted({m for m in frame["adj_method"].dropna().astype(str) if m})
        key = " and ".join(ADJUSTMENTS.get(m, m) for m in methods) or "no adjustment (no p-values)"
        by_method.setdefault(key, []).append(str(test))

    def names(items):
        return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"

    return "; ".join(f"{names(t)}: {m}" for m, t in by_method.items())


def methods_text(provs: dict[str, dict], correction: str, confirmatory, alpha,
                 family=("test", "metric", "term"), report_hash: str = "", params_hash: str = "",
                 tests: pd.DataFrame | None = None) -> str:
    ex, co, stt = provs["extract"], provs["connectivity"], provs["stats"]
    versions = package_versions()
    plugins = {**ex.get("plugins", {}), **co.get("plugins", {}), **stt.get("plugins", {})}
    plugin_list = ", ".join(f"{k} {v}" for k, v in sorted(plugins.items()))
    conf = "; ".join(edge_label(a, b) for a, b in confirmatory) or "none declared"
    return (
        f"{ex['methods']} {co['methods']} {stt['methods']} "
        f"P-values were adjusted with the {correction} method within each family: one per "
        f"{' × '.join(family)}, split into confirmatory and exploratory edges, spanning its edges"
        f"{'' if 'window' in family else ' × windows'} (confirmatory edges: {conf}; all other edges "
        f"exploratory), at α = {alpha}; permutation and network-based tests report their own "
        f"family-wise error rate over the same families"
        f"{f' (adjustment by test: {adjustment_text(tests)})' if tests is not None and len(tests) else ''}. "
        f"Analyses used fclab {versions['fclab']} with nilearn {versions['nilearn']}, nibabel "
        f"{versions['nibabel']}, numpy {versions['numpy']}, pandas {versions['pandas']}, scipy "
        f"{versions['scipy']} and statsmodels {versions['statsmodels']}; plugins: {plugin_list}. "
        f"Parameter hashes: extract {ex['params_hash']}, connectivity {co['params_hash']}, "
        f"stats {stt['params_hash']}, report {report_hash}; params.yaml as a whole {params_hash}."
    )


def _num(value, fmt: str) -> str:
    """Format a number for the report; missing values (None, NaN) as a dash."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return fmt % v if np.isfinite(v) else "–"


EFFECT_SIZE_KINDS = {"hedges_g": "Hedges' g", "nbs_extent": "NBS extent", "nbs_intensity": "NBS intensity",
                     "bayes_factor_10": "BF₁₀"}


def _effect_kind(kind) -> str:
    """A label for an effect-size kind (a plugin's own kind as it is)."""
    return EFFECT_SIZE_KINDS.get(kind, kind) if isinstance(kind, str) else ""


def render_html(context: dict, template: str = "report.html.j2") -> str:
    env = Environment(loader=PackageLoader("fclab.framework", "templates"), autoescape=select_autoescape(["html", "j2"]))
    env.filters["num"] = _num
    env.filters["effect_kind"] = _effect_kind
    return env.get_template(template).render(**context)


def subject_page(job: dict) -> tuple[str, str]:
    """One subject's QC page and its figures in ``job['out']`` (reports/subjects/): per run the motion,
    DVARS and carpet before and after denoising, the ROI coverage and tSNR, the subject's connectivity
    per window, and the QC measures that flag it. Returns (subject, page file name)."""
    from fclab.framework.extract import read_carpet
    from fclab.framework.figures import carpet_figure, subject_matrices_figure

    s, out = job["subject"], Path(job["out"])
    stem = f"sub-{slug(s)}"
    runs = []
    carpets = {r.run: (r.png, r.n_volumes) for r in job["carpets"].itertuples()}
    for r in job["runs"].itertuples():
        entry = {**r._asdict(), "figure": None, "dvars_raw": np.nan, "dvars_clean": np.nan}  # a skipped run has none
        m = job["motion"][job["motion"]["run"] == r.run]
        if carpets.get(r.run, (b"",))[0] and len(m):
            name = f"{stem}_{slug(r.run)}_carpet.jpg"
            carpet_figure(m, read_carpet(carpets[r.run][0]), float(r.tr_s), f"sub-{s}, {r.run} run", out / name)
            entry["figure"] = name
            entry["dvars_raw"] = float(m["dvars_raw"].mean())
            entry["dvars_clean"] = float(m["dvars_clean"].mean())
        runs.append(entry)
    matrix = None
    if len(job["edges"]):
        matrix = f"{stem}_connectivity.png"
        subject_matrices_figure(job["edges"], job["rois"], job["windows"], job["scale"], out / matrix)
    roi_qc = job["roi_qc"].pivot_table(index="roi", columns="run", values=["coverage", "tsnr"], sort=False)
    roi_rows = [{"roi": roi, "cells": [(run, roi_qc.loc[roi, ("coverage", run)], roi_qc.loc[roi, ("tsnr", run)])
                                      for run in roi_qc.columns.get_level_values(1).unique()]}
                for roi in roi_qc.index] if len(job["roi_qc"]) else []
    missing = job["roi_qc"][job["roi_qc"]["missing"]].to_dict("records")
    html = render_html({"subject": s, "summary": job["summary"], "runs": runs, "matrix": matrix,
                        "roi_rows": roi_rows, "roi_runs": list(dict.fromkeys(job["roi_qc"]["run"])),
                        "missing": missing, "flags": job["flags"].to_dict("records"), "title": job["title"],
                        "scale": as_scale(job["scale"]).label}, "subject.html.j2")
    write_text(out / f"{stem}.html", html)
    return s, f"{stem}.html"


def write_report(out_dir: Path, context: dict) -> Path:
    path = out_dir / "index.html"
    write_text(path, render_html(context))
    return path


def _json_num(value, digits: int):
    """A rounded float, or None (JSON null) when it is missing or not finite."""
    value = float(value)
    return round(value, digits) if np.isfinite(value) else None


def metrics_payload(tests: pd.DataFrame, primary: str, metric: str, n_per_group: dict, run_qc: pd.DataFrame) -> dict:
    conf = tests[(tests["test"] == primary) & (tests["metric"] == metric) & (tests["family"] == "confirmatory")]
    edges = {}
    for r in conf.itertuples():
        edges.setdefault(f"{r.roi_a}~{r.roi_b}", {})[r.window] = {
            "estimate": _json_num(r.estimate, 6), "ci_low": _json_num(r.ci_low, 6),
            "ci_high": _json_num(r.ci_high, 6), "p_adj": _json_num(r.p_adj, 8),
        }
    return {
        "test": primary, "metric": metric, "term": str(tests["term"].iloc[0]) if len(tests) else None,
        "n_per_group": n_per_group,
        "excluded_runs": int(run_qc["excluded"].sum()), "edges": edges,
    }


def headline_metrics(detail: dict, alpha: float) -> dict:
    """metrics.json: the handful of numbers a `dvc exp show` table can hold — the primary test, group
    sizes, exclusions, how many confirmatory edge-windows are significant, and the strongest one.
    ``detail`` (metrics_payload, written to confirmatory.json) keeps every edge and window."""
    cells = [(edge, window, v) for edge, per in detail["edges"].items() for window, v in per.items()]
    with_p = [c for c in cells if c[2]["p_adj"] is not None]
    top = min(with_p, key=lambda c: (c[2]["p_adj"], -abs(c[2]["estimate"] or 0))) if with_p else None
    return {
        "test": detail["test"], "metric": detail["metric"], "term": detail["term"], "alpha": alpha,
        "n_per_group": detail["n_per_group"], "excluded_runs": detail["excluded_runs"],
        "confirmatory": {"edge_windows": len(cells), "significant": sum(c[2]["p_adj"] < alpha for c in with_p)},
        "top": None if top is None else {"edge": top[0], "window": top[1], "estimate": top[2]["estimate"],
                                         "p_adj": top[2]["p_adj"]},
    }


def truth_check(primary: pd.DataFrame, planted: pd.DataFrame) -> pd.DataFrame:
    """The primary test's group:window rows beside the planted contrast (simulated studies): whether
    each confidence interval covers the planted value on the measured scale."""
    keys = ["metric", "roi_a", "roi_b", "window"]
    rows = primary[["family", *keys, "estimate", "ci_low", "ci_high", "p_adj"]].merge(
        planted[[*keys, "measured_delta", "measured_se", "latent_delta_z"]], on=keys, how="inner")
    ok = np.isfinite(rows["ci_low"]) & np.isfinite(rows["ci_high"])
    rows["covered"] = np.where(ok, (rows["ci_low"] <= rows["measured_delta"]) & (rows["measured_delta"] <= rows["ci_high"]),
                               None)
    return rows
