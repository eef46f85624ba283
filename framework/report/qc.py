"""Study QC tables for the report: motion and censoring per window and group (with a group test),
per-subject summaries, outlier subjects, and QC-FC over every edge and window.

In an infusion study head motion can change with the drug, and motion changes connectivity: these
tables show whether the groups moved differently in the windows the statistics compare.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy  # scipy.stats loads on first use

MOTION_MEASURES = {"mean_fd": "mean FD (mm)", "censored": "censored fraction"}


def window_motion(motion: pd.DataFrame, cuts: pd.DataFrame) -> pd.DataFrame:
    """Per subject and fixed window: the mean framewise displacement and the censored fraction of the
    volumes the window spans (volume ``k`` at ``k × TR`` s from the run start, within
    [start, end) as the connectivity stage selects them), and how many volumes that is.

    ``cuts``: ``windows.resolve`` rows (bounds in seconds from the run start); runs without motion
    rows (skipped at extraction) are left out."""
    fixed = cuts[(cuts["kind"] == "fixed") & np.isfinite(cuts["window_start_s"].to_numpy(float))]
    runs = {key: f for key, f in motion.groupby(["subject", "run"], sort=False)}
    rows = []
    for c in fixed.itertuples(index=False):
        f = runs.get((c.subject, c.run))
        if f is None:
            continue
        t = f["volume"].to_numpy() * c.tr_s
        inside = (t >= c.window_start_s - 1e-9) & (t < c.window_end_s - 1e-9)
        fd = f["framewise_displacement"].to_numpy(float)[inside]
        rows.append({"subject": c.subject, "group": c.group, "window": c.window, "n_volumes": int(inside.sum()),
                     "mean_fd": float(np.nanmean(fd)) if np.isfinite(fd).any() else np.nan,
                     "censored": float(f["censored"].to_numpy()[inside].mean()) if inside.any() else np.nan})
    return pd.DataFrame(rows, columns=["subject", "group", "window", "n_volumes", "mean_fd", "censored"])


def window_motion_tests(wm: pd.DataFrame, groups, windows) -> pd.DataFrame:
    """Per measure and window: each group's mean and SD over subjects, the difference (target −
    reference), and a two-sided Mann–Whitney U test of the groups (motion is skewed), Holm-adjusted
    over the windows of each measure."""
    rows = []
    for measure in MOTION_MEASURES:
        for w in windows:
            f = wm[wm["window"] == w]
            x = [f.loc[f["group"] == g, measure].dropna().to_numpy(float) for g in groups]
            row = {"measure": measure, "window": w}
            for g, v in zip(groups, x):
                row[f"mean_{g}"] = float(v.mean()) if v.size else np.nan
                row[f"sd_{g}"] = float(v.std(ddof=1)) if v.size > 1 else np.nan
                row[f"n_{g}"] = int(v.size)
            row["difference"] = row[f"mean_{groups[1]}"] - row[f"mean_{groups[0]}"]
            if min(v.size for v in x) < 2 or np.ptp(np.concatenate(x)) == 0:  # too few subjects, or every value equal (no censoring)
                row["u"], row["p"] = np.nan, np.nan
            else:
                res = scipy.stats.mannwhitneyu(x[1], x[0], alternative="two-sided")
                row["u"], row["p"] = float(res.statistic), float(res.pvalue)
            rows.append(row)
    out = pd.DataFrame(rows)
    out["p_holm"] = np.nan
    for _, idx in out.groupby("measure", sort=False).groups.items():
        p = out.loc[idx, "p"]
        ok = p.notna()
        if ok.any():
            from statsmodels.stats.multitest import multipletests

            out.loc[p[ok].index, "p_holm"] = multipletests(p[ok].to_numpy(), method="holm")[1]
    return out


def subject_qc(run_qc: pd.DataFrame, motion: pd.DataFrame, roi_qc: pd.DataFrame) -> pd.DataFrame:
    """One row per subject: group, runs analysed and excluded, mean and max FD and censored fraction
    over all their volumes, mean DVARS before and after denoising, the fewest temporal degrees of
    freedom denoising left in a run, and the lowest ROI coverage and ROI tSNR over their runs."""
    m = motion.groupby("subject", sort=False).agg(
        mean_fd=("framewise_displacement", "mean"), max_fd=("framewise_displacement", "max"),
        censored=("censored", "mean"), dvars_raw=("dvars_raw", "mean"), dvars_clean=("dvars_clean", "mean"))
    r = roi_qc.groupby("subject", sort=False).agg(min_coverage=("coverage", "min"), min_tsnr=("tsnr", "min"))
    dof = {"min_dof": ("dof_left", "min")} if "dof_left" in run_qc else {}
    runs = run_qc.groupby("subject", sort=False).agg(group=("group", "first"), runs=("run", "size"),
                                                     excluded=("excluded", "sum"), **dof)
    out = runs.join(m).join(r).reset_index()
    out["excluded"] = out["excluded"].astype(int)
    return out


# Which side of the distribution makes a subject an outlier, per measure.
OUTLIER_SIDES = {"mean_fd": "high", "max_fd": "high", "censored": "high", "dvars_clean": "high",
                 "min_tsnr": "low", "min_coverage": "low"}
OUTLIER_LABELS = {"mean_fd": "mean FD (mm)", "max_fd": "max FD (mm)", "censored": "censored fraction",
                  "dvars_clean": "DVARS after denoising (%)", "min_tsnr": "lowest ROI tSNR",
                  "min_coverage": "lowest ROI coverage"}


def outliers(subjects: pd.DataFrame, k: float = 1.5) -> pd.DataFrame:
    """Subjects outside Tukey's fences (quartile ∓ ``k`` × IQR over all subjects) on a QC measure, on
    the side that is bad for that measure; one row per subject and measure, worst first."""
    rows = []
    for measure, side in OUTLIER_SIDES.items():
        v = subjects[measure].to_numpy(float)
        ok = np.isfinite(v)
        if ok.sum() < 4:
            continue
        q1, q3 = np.percentile(v[ok], [25, 75])
        iqr = q3 - q1
        fence = q3 + k * iqr if side == "high" else q1 - k * iqr
        bad = ok & ((v > fence) if side == "high" else (v < fence))
        if iqr == 0:  # every subject the same but a few: those few are not outliers of a spread
            continue
        for i in np.flatnonzero(bad):
            rows.append({"subject": subjects["subject"].iloc[i], "group": subjects["group"].iloc[i],
                         "measure": measure, "label": OUTLIER_LABELS[measure], "value": float(v[i]),
                         "fence": float(fence), "side": side,
                         "distance_iqr": float(abs(v[i] - (q3 if side == "high" else q1)) / iqr)})
    out = pd.DataFrame(rows, columns=["subject", "group", "measure", "label", "value", "fence", "side",
                                      "distance_iqr"])
    return out.sort_values("distance_iqr", ascending=False, kind="stable").reset_index(drop=True)


def qc_fc_all(edges: pd.DataFrame, run_qc: pd.DataFrame, windows) -> pd.DataFrame:
    """QC-FC per edge and fixed window: Pearson r across subjects between each subject's mean FD
    (over their runs) and the edge's value, with its two-sided p (scipy.stats.pearsonr's exact null
    distribution of r). All edges at once: per-group sums by ``np.bincount``, no loop over edges."""
    fd = run_qc.groupby("subject")["mean_fd"].mean()
    keys = ["window", "roi_a", "roi_b"]
    e = edges.loc[edges["window"].isin(windows), [*keys, "subject", "value"]]
    grouped = e.groupby(keys, sort=False, observed=True)
    g = grouped.ngroup().to_numpy()
    out = e.loc[~grouped.ngroup().duplicated(), keys].reset_index(drop=True)  # first appearance order
    x, y = e["subject"].map(fd).to_numpy(float), e["value"].to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    g, x, y = g[ok], x[ok], y[ok]
    k = len(out)
    n = np.bincount(g, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - (np.bincount(g, x, k) / n)[g]  # two passes: deviations from each group's mean
        dy = y - (np.bincount(g, y, k) / n)[g]
        sxx, syy, sxy = np.bincount(g, dx * dx, k), np.bincount(g, dy * dy, k), np.bincount(g, dx * dy, k)
        r = np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0)
    spread = pd.DataFrame({"g": g, "x": x, "y": y}).groupby("g").agg(["min", "max"]).reindex(range(k))
    varies = ((spread[("x", "max")] > spread[("x", "min")]) & (spread[("y", "max")] > spread[("y", "min")])).to_numpy()
    usable = (n > 2) & varies
    r = np.where(usable, r, np.nan)
    ab = np.where(usable, n / 2 - 1, 1.0)
    p = np.where(usable, 2 * scipy.stats.beta.sf(np.abs(r), ab, ab, loc=-1, scale=2), np.nan)
    return out.assign(qc_fc_r=r, p=np.minimum(p, 1.0), n=n.astype(int))[["window", "roi_a", "roi_b", "qc_fc_r", "p", "n"]]


def qc_fc_summary(q: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Per window: edges, median |QC-FC r|, and the fraction of edges with p < α (uncorrected; about
    α when connectivity does not follow motion)."""
    rows = []
    for w, f in q.groupby("window", sort=False):
        r, p = f["qc_fc_r"].dropna(), f["p"].dropna()
        rows.append({"window": w, "edges": len(f), "median_abs_r": float(np.median(np.abs(r))) if len(r) else np.nan,
                     "fraction_p_below_alpha": float((p < alpha).mean()) if len(p) else np.nan})
    return pd.DataFrame(rows, columns=["window", "edges", "median_abs_r", "fraction_p_below_alpha"])
