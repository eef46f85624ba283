"""The numbers the report draws and the DVC views hold: change from baseline per subject, group means
with their intervals, sliding-window courses, group counts, the planted-truth check, metrics.json, and
the CSV and file-name helpers."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as st

from fclab.framework.io import write_text


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe form of ``text``. When that loses anything (other characters, length), a
    short hash of the original is appended, so distinct names never share a file."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    if safe == text and len(safe) <= limit:
        return safe
    return f"{safe[:limit]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}".lstrip("-")


def csv_text(frame: pd.DataFrame, sep: str = ",", float_format: str | None = "%.6g") -> str:
    """CSV (or, with ``sep``, TSV) of ``frame`` with text cells a spreadsheet would run as a formula
    (=, +, -, @, tab, CR first) prefixed with a quote; numbers are untouched."""
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            frame[col] = [f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v
                          for v in frame[col]]
    return frame.to_csv(index=False, sep=sep, float_format=float_format)


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


def ci_level(alpha: float) -> str:
    """The confidence level that α gives, as the report prints it: '95 %', '99 %', '99.5 %'."""
    return f"{100 * (1 - alpha):.10g} %"


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


def truth_contrasts(truth: pd.DataFrame, groups: tuple[str, str], windows: list[str], baseline: str) -> pd.DataFrame:
    """The group difference in change from ``baseline`` (target minus reference) per metric, edge and
    fixed window: the planted value of a group:window contrast, on both scales."""
    t = truth[truth["window"].isin(windows)]
    val = ["measured_delta", "latent_delta_z"]
    piv = t.set_index(["metric", "roi_a", "roi_b", "window", "group"])[val + ["measured_se"]].unstack("group")
    ref, tgt = groups
    out = pd.DataFrame(index=piv.index)
    for v in val:
        out[v] = piv[(v, tgt)] - piv[(v, ref)]
    out["measured_se"] = np.hypot(piv[("measured_se", tgt)], piv[("measured_se", ref)])
    out = out.reset_index()
    base = out[out["window"] == baseline].set_index(["metric", "roi_a", "roi_b"])[val]
    out = out[out["window"] != baseline].join(base, on=["metric", "roi_a", "roi_b"], rsuffix="_base")
    for v in val:
        out[v] = out[v] - out.pop(f"{v}_base")
    return out.reset_index(drop=True)
