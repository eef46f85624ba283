"""The report's methods paragraph, every sentence of it: what extraction, connectivity and the
statistics did, in words, from their params, their plugins and the tables they wrote. The stages store
their sentence in their outputs' provenance (so it describes what ran); ``methods_text`` joins them."""

from __future__ import annotations

import importlib.metadata as md

import numpy as np
import pandas as pd

from fclab.framework import __version__
from fclab.framework.params import is_mni_space


PACKAGES = ("nilearn", "nibabel", "numpy", "pandas", "scipy", "statsmodels", "pyarrow", "pluggy", "dvc")


def edge_label(a: str, b: str) -> str:
    return f"{a} – {b}"


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


def window_text(w) -> str:
    lo, hi = w.bounds_s()
    if lo is None:
        return f"{w.name} (the whole {w.run} run)"
    ref = f"after {w.event} onset" if w.event else "from the run start"
    return f"{w.name} ({lo / 60:g}–{hi / 60:g} min {ref})"


def window_dof(rows: pd.DataFrame, run_qc: pd.DataFrame, windows) -> dict[str, pd.Series]:
    """Each fixed window's effective temporal degrees of freedom per subject with a value, pro rata
    of its run's (run_qc's dof_left times the window's share of the run's clean volumes). The share
    is conservative: cut from the cleaned run, a 10-min window of the default infusion run has 83 by
    the exact count of ``denoise.temporal_dof`` on its rows, 74 pro rata."""
    if "dof_left" not in run_qc or rows.empty:
        return {}
    per_run = run_qc.set_index(["subject", "run"])
    ratio = (per_run["dof_left"] / per_run["n_retained"]).to_dict()
    first = rows[rows["metric"] == rows["metric"].iloc[0]]
    out = {}
    for w in windows:
        sel = first[(first["window"] == w.name) & first["reason"].isna()]
        dof = pd.Series([ratio.get((s, w.run), np.nan) * n for s, n in zip(sel["subject"], sel["n_volumes"])],
                        dtype=float).dropna()
        if len(dof):
            out[w.name] = dof
    return out


def window_dof_text(dofs: dict[str, pd.Series]) -> str:
    """'; pro rata of its run's, a window kept a median of 74.1 effective temporal degrees of freedom
    (baseline 40.3, 40.0–40.6; ...)'."""
    if not dofs:
        return ""
    each = "; ".join(f"{w} {d.median():.1f}" + (f", {d.min():.1f}–{d.max():.1f}" if d.min() < d.max() else "")
                     for w, d in dofs.items())
    return f"; pro rata of its run's, each window kept these effective temporal degrees of freedom (median, range): {each}"


def connectivity_methods(p, metrics, dofs: dict[str, pd.Series] | None = None) -> str:
    """The connectivity stage's sentence: its windows, volume rules, sliding windows, metrics, and
    the windows' degrees of freedom (``window_dof``)."""
    text = (f"Connectivity was computed per subject in the windows {'; '.join(window_text(w) for w in p.windows)}"
            f", each needing at least {p.min_volumes} clean volumes")
    if p.equalize:
        how = "one contiguous block" if p.equalize_contiguous else "randomly chosen volumes"
        size = p.equalize_volumes or "the smallest window's count"
        text += f", subsampled to the same number of clean volumes ({size}; {how}, seed {p.seed})"
    for s in p.sliding:
        taper = "" if s.taper == "none" else f", {s.taper} taper"
        text += f"; and in sliding windows '{s.name}' of {s.length_s:g} s every {s.step_s:g} s{taper}"
    return text + f", with {'; '.join(m.describe() for m in metrics)}{window_dof_text(dofs or {})}."


def skipped_runs(run_qc: pd.DataFrame) -> pd.Series:
    return run_qc["reason"].astype(str).str.startswith("skipped:") if "reason" in run_qc else run_qc["run"].isna()


def counted(n: int, noun: str) -> str:
    """'1 run', '2 runs'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def run_count_text(run_qc: pd.DataFrame) -> str:
    """'52 runs of 26 subjects (14 midazolam, 12 ketamine; 2 runs per subject)', saying how many runs
    could not be read."""
    skipped = skipped_runs(run_qc)
    read = run_qc[~skipped]
    per = read.groupby("subject").size()
    each = (f"{counted(per.iloc[0], 'run')} per subject" if per.nunique() == 1
            else f"{per.min()}–{per.max()} runs per subject")
    groups = read.groupby("group", sort=True)["subject"].nunique()
    by_group = ", ".join(f"{n} {g}" for g, n in groups.items())
    text = f"{counted(len(read), 'run')} of {counted(read['subject'].nunique(), 'subject')} ({by_group}; {each})"
    if skipped.any():
        k = int(skipped.sum())
        lost = ", ".join(f"sub-{r.subject} {r.run}" for r in run_qc[skipped].head(5).itertuples())
        text += (f"; {k} further run{'s' if k > 1 else ''} could not be read and {'were' if k > 1 else 'was'} "
                 f"left out ({lost}{', …' if k > 5 else ''}; run_qc.parquet gives the reasons)")
    return text


def censoring_text(run_qc: pd.DataFrame) -> str:
    """'; this censored 412 of 30,576 volumes (1.3 %; 0–9.8 % per run)', over the runs read."""
    read = run_qc[~skipped_runs(run_qc) & run_qc["n_volumes"].notna()]
    total, kept = read["n_volumes"].sum(), read["n_retained"].sum()
    per_run = 1 - read["n_retained"] / read["n_volumes"]
    return (f"; this censored {int(total - kept):,} of {int(total):,} volumes ({100 * (total - kept) / total:.1f} %; "
            f"{100 * per_run.min():.1f}–{100 * per_run.max():.1f} % per run)") if total else ""


TERMS = {"group:window": "the group difference in the change from baseline, per window",
         "group": "the group difference within each window",
         "group:trend": "the group difference in the linear trend of the change from baseline across windows, "
                        "per window step"}


def terms_text(result: pd.DataFrame) -> str:
    """' Results are reported for the terms ...', per test, from the rows the tests produced."""
    parts = []
    for test, rows in result.groupby("test", sort=False):
        terms = list(dict.fromkeys(rows["term"]))
        parts.append(f"{test}: " + "; ".join(f"{t} ({TERMS[t]})" if t in TERMS else t for t in terms))
    return f" Terms reported, by test: {' — '.join(parts)}." if parts else ""


def name_ranges(names: list[str]) -> str:
    """Names joined by commas, numbered series shortened: cosine00, ..., cosine06 -> 'cosine00–cosine06'."""
    import re

    out, i = [], 0
    while i < len(names):
        m = re.fullmatch(r"(.*?)(\d+)", names[i])
        j = i
        while m and j + 1 < len(names):
            nxt = re.fullmatch(r"(.*?)(\d+)", names[j + 1])
            if not (nxt and nxt.group(1) == m.group(1) and len(nxt.group(2)) == len(m.group(2))
                    and int(nxt.group(2)) == int(m.group(2)) + (j + 1 - i)):
                break
            j += 1
        out.append(f"{names[i]}–{names[j]}" if j - i >= 2 else ", ".join(names[i:j + 1]))
        i = j + 1
    return ", ".join(out)


def regressors_text(run_qc: pd.DataFrame) -> str:
    """': 26 regressors (trans_x, ...)' when every extracted run used the same confound columns; else
    the ones common to every run and the range and names of the others (runs of different lengths get
    different numbers of cosine drift terms; run_qc.parquet lists each run's)."""
    used = run_qc.loc[~skipped_runs(run_qc), "confounds"] if "confounds" in run_qc else pd.Series(dtype=str)
    lists = [c.split(",") for c in used if c]
    if not lists:
        return ""
    common = [c for c in lists[0] if all(c in other for other in lists[1:])]
    rest = [[c for c in names if c not in common] for names in lists]
    text = f": {len(common)} regressors in every run ({name_ranges(common)})"
    counts = [len(r) for r in rest]
    if max(counts) == 0:
        return text
    others = sorted({c for r in rest for c in r})
    span = f"{min(counts)}–{max(counts)}" if min(counts) != max(counts) else f"{max(counts)}"
    return text + f", plus {span} run-specific ones ({name_ranges(others)}; run_qc.parquet lists each run's)"


def exclusion_rules_text(rules) -> str:
    """The active run exclusion rules in words."""
    parts = []
    if rules.max_mean_fd is not None:
        parts.append(f"mean framewise displacement above {rules.max_mean_fd:g} mm")
    if rules.max_censored_fraction is not None:
        parts.append(f"more than {rules.max_censored_fraction:.0%} of volumes censored")
    if rules.min_clean_volumes is not None:
        parts.append(f"fewer than {rules.min_clean_volumes} clean volumes")
    if rules.min_dof is not None:
        parts.append(f"fewer than {rules.min_dof:g} effective temporal degrees of freedom left by denoising")
    if not parts:
        return "no run exclusion rule was set"
    text = "runs were excluded for " + " or ".join(parts)
    return text + (" (and then every run of that subject)" if rules.whole_subject else "")


def exclusion_text(run_qc: pd.DataFrame, rules=None) -> str:
    """The exclusion rules, then how many runs they excluded, of how many subjects, and why."""
    from fclab.framework.params import ExclusionParams

    rule = exclusion_rules_text(rules or ExclusionParams())
    rule = rule[0].upper() + rule[1:]
    excl = run_qc[run_qc["excluded"] & ~skipped_runs(run_qc)] if "excluded" in run_qc else run_qc.iloc[:0]
    if excl.empty:
        return f" {rule}." if rule.startswith("No ") else f" {rule}; no run was excluded."
    why = "; ".join(f"sub-{r.subject} {r.run}: {r.reason}" for r in excl.itertuples())
    return (f" {rule}. {len(excl)} of {len(run_qc)} runs ({excl['subject'].nunique()} subjects) were excluded and "
            f"their windows treated as missing ({why}).")


def extraction_methods(p, run_qc: pd.DataFrame, surface: str | None, plugins) -> str:
    """The extract stage's sentence: the data, the ROI sets, the confounds and the signal cleaning."""
    d = p.denoise
    if p.data.format == "xcpd":
        return (f"ROI time series were XCP-D's denoised mean time series of the atlas-{p.data.atlas} parcels "
                f"({p.data.space_entity or 'native'} space; its confound regression, filtering and censoring of "
                f"high-motion volumes, whose times fclab keeps) for {run_count_text(run_qc)}, for these ROIs: "
                f"{'; '.join(pl.describe() for pl in plugins)}"
                f"{censoring_text(run_qc).replace('this censored', 'its dummy volumes and censoring left out')}. fclab then "
                f"{'detrended and ' if d.detrend else ''}standardised them ({d.standardize}) with nilearn "
                "signal.clean, and regressed nothing more. The temporal degrees of freedom XCP-D's regression and "
                "filter left are not counted (its outputs do not give them per run), so no run was excluded for them.")
    band = filter_text(d.high_pass_hz, d.low_pass_hz)
    opts = ", ".join(f"{k}={v}" for k, v in d.strategy_options.items())
    cols = ", ".join(d.columns)
    if d.strategy == "none":
        confounds = (f"Confounds were the columns {cols} of the fMRIPrep confounds file" if d.columns
                     else "No confound was regressed out")
    else:
        confounds = (f"Confounds followed nilearn's load_confounds_strategy '{d.strategy}'"
                     f"{f' ({opts})' if opts else ''}{f', plus the columns {cols}' if d.columns else ''}"
                     f"{regressors_text(run_qc)}")
    if d.strategy == "scrubbing":
        confounds += ("; volumes flagged by the strategy were censored through nilearn's sample mask "
                      "(interpolated before filtering, then left out)" + censoring_text(run_qc))
    confounds += "; signals were "
    cleaned = ", cleaned of confounds orthogonally to the filter" if d.strategy != "none" or d.columns else ""
    if d.smoothing_fwhm:
        confounds = f"Images were smoothed with a {d.smoothing_fwhm:g} mm FWHM Gaussian before extraction. " + confounds
    return (
        f"ROI time series were extracted from the {surface or bold_text(p.data.space)} of "
        f"{run_count_text(run_qc)}, "
        "for these ROIs: "
        f"{'; '.join(pl.describe() for pl in plugins)}. {confounds}"
        f"{'detrended, ' if d.detrend else ''}{band}{cleaned}, "
        f"and standardised ({d.standardize}) with nilearn signal.clean.{dof_text(run_qc)}"
    )


def bold_text(space: str) -> str:
    """The BOLD images the ROIs were read from, in their space's words."""
    if is_mni_space(space):
        return f"{space} preprocessed BOLD"
    if space == "native":
        return "preprocessed BOLD in each run's native (scanner) space"
    return f"preprocessed BOLD in each subject's {space} space"


def filter_text(high_pass_hz: float | None, low_pass_hz: float | None) -> str:
    """The temporal filter in words: band-pass, high-pass only, low-pass only, or none."""
    if high_pass_hz and low_pass_hz:
        return f"band-pass filtered between {high_pass_hz:g} and {low_pass_hz:g} Hz (Butterworth)"
    if high_pass_hz:
        return f"high-pass filtered above {high_pass_hz:g} Hz (Butterworth; no low-pass)"
    if low_pass_hz:
        return f"low-pass filtered below {low_pass_hz:g} Hz (Butterworth; no high-pass)"
    return "not temporally filtered"


def dof_text(run_qc: pd.DataFrame) -> str:
    """' Denoising left these effective temporal degrees of freedom per run (...): baseline 40.3
    (40.0–40.6) of 52.6 after filtering and censoring alone; ...', per run label, over the runs
    denoised (run_qc's dof_band, dof_left and band_variance_kept)."""
    if "dof_left" not in run_qc:
        return ""
    read = run_qc[~skipped_runs(run_qc) & run_qc["dof_left"].notna()]
    if read.empty:
        return ""

    def spread(x: pd.Series) -> str:
        return f"{x.median():.1f}" + (f" ({x.min():.1f}–{x.max():.1f})" if x.min() < x.max() else "")

    each = "; ".join(f"{run} {spread(f['dof_left'])} of {spread(f['dof_band'])}"
                     for run, f in read.groupby("run", sort=False))
    text = (" Denoising left these effective temporal degrees of freedom per run (Worsley & Friston, 1995; "
            f"median, range, of those after filtering and censoring alone): {each}")
    kept = read["band_variance_kept"].dropna()
    if len(kept):
        text += (f"; the confound regression kept a median of {100 * kept.median():.1f} % of the "
                 "band-limited variance of a run's sampled brain voxels")
    return text + "."


def stats_methods(p, tests, result: pd.DataFrame, run_qc: pd.DataFrame, rules) -> str:
    """The stats stage's sentence: the contrast, every test, the covariates, the terms reported and
    the run exclusions."""
    ref, target = p.groups
    return (
        f"Group differences ({target} − {ref}) in the change from the {p.baseline_window} window were "
        f"tested with {'; and '.join(t.describe() for t in tests)}."
        + (f" Models with covariates adjusted for {', '.join(p.covariates)} (centred)." if p.covariates else "")
        + terms_text(result)
        + exclusion_text(run_qc, rules)
    )
