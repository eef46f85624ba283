"""The stages as functions of validated params: read inputs, call the work, write outputs."""

from __future__ import annotations

import gc
import gzip
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from fclab.framework.connectivity import build_metrics, connectivity, output_scales, scale_descriptions
from fclab.framework.edgestore import Edges, read_edges, write_edges
from fclab.framework.contracts import Plugin, Scale, as_scale
from fclab.framework import references as refs
from fclab.framework import runcache
from fclab.framework.errors import DataError, ParamsError
from fclab.framework.executor import OneThread, make_executor, progress
from fclab.framework.extract import extract
from fclab.framework.io import (
    atomic_dir, check_fresh, file_digest, git_commit, provenance, read_parquet, read_provenance, staged_members,
    write_json, write_parquet, write_text,
)
from fclab.framework.params import Params, section_hash
from fclab.framework.registry import get_registry

EXTRACT_DIR = Path("results/extract")
CONNECTIVITY_DIR = Path("results/connectivity")
STATS_DIR = Path("results/stats")
TRUTH_DIR = Path("results/truth")
REPORT_DIR = Path("reports")
EXTRACT_FILES = {"timeseries.parquet", "roi_qc.parquet", "run_qc.parquet", "events.parquet", "participants.parquet",
                 "motion.parquet", "carpets.parquet", "rois.parquet", "rois.nii.gz", "rois.dlabel.nii"}
STAGES = ("simulate", "extract", "connectivity", "truth", "stats", "report")


def default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _plugin_versions(plugins: list[Plugin]) -> dict[str, str]:
    versions = {(i.kind, i.name): i.version for i in get_registry().infos()}
    return {p.name: versions.get((p.kind, p.name), "unknown") for p in plugins}


def _provenance(stage: str, params_hash: str, plugins: list[Plugin], inputs: dict[str, str],
                references: tuple[str, ...] = ()) -> dict:
    """A stage's provenance: plugin versions, plugin code hashes, the hashes of its input files (the
    files its plugins read included), and the works to cite for its methods (its own, then its plugins')."""
    registry = get_registry()
    records = [registry.record(p) for p in plugins]
    inputs = dict(inputs) | {f: d for r in records for f, d in r["inputs"].items()}
    prov = provenance(stage, params_hash, _plugin_versions(plugins), inputs)
    prov["plugin_code"] = {p.name: r["code"] for p, r in zip(plugins, records)}
    prov["references"] = list(dict.fromkeys([*references, *(r for p in plugins for r in p.references)]))
    return prov


PLUGINS_DIR = Path("results/plugins")
PLUGIN_SECTIONS = (("roi", "extract.rois"), ("metric", "connectivity.metrics"), ("test", "stats.tests"))


def selected_plugins(params: Params):
    """(kind, params key, name, plugin instance) for every plugin params.yaml selects, in order."""
    from fclab.framework.params import plugin_spec

    registry = get_registry()
    for kind, key in PLUGIN_SECTIONS:
        section, attr = key.split(".")
        for i, spec in enumerate(getattr(getattr(params, section), attr)):
            name, opts = plugin_spec(spec, f"{key}[{i}]")
            cls = registry.get(kind, name, f"{key}[{i}]")
            yield kind, f"{key}[{i}]", name, cls(cls.Params.model_validate(opts))


def stage_plugins(params: Params) -> None:
    """results/plugins/{roi,metric,test}.json: what the plugins params.yaml selects depend on (code
    hash, version, requirements, input files), and events.json, the events files of
    extract.data.events_root. A DVC stage that always runs; a file changes only when what it
    describes does, so `dvc repro` reruns just the stages that use it."""
    registry = get_registry()
    entries = {kind: [] for kind, _ in PLUGIN_SECTIONS}
    for kind, _, name, plugin in selected_plugins(params):
        entries[kind].append({"name": name, **registry.record(plugin)})
    entries["events"] = events_manifest(params.extract.data.events_root)
    with atomic_dir(PLUGINS_DIR, {f"{k}.json" for k in entries}.__contains__) as out_dir:
        for kind, rows in entries.items():
            write_json(out_dir / f"{kind}.json", rows)


def events_manifest(events_root: str | None) -> list[dict]:
    """Every events.tsv under extract.data.events_root (the raw BIDS dataset) with its hash: a directory
    DVC cannot list as a dependency when the setting is optional, so the manifest stage records it."""
    if not events_root or not Path(events_root).is_dir():
        return []
    root = Path(events_root)
    return [{"path": str(f.relative_to(root)), "sha256": file_digest(f)} for f in sorted(root.rglob("*_events.tsv"))]


def plugin_input_problems(params: Params) -> list[str]:
    """A line for each input file a selected plugin declares that does not exist."""
    return [f"{f}: not found (an input file of {key}, {name})" for _, key, name, plugin in selected_plugins(params)
            for f in plugin.input_files() if not Path(f).is_file()]


def _digests(*paths: Path) -> dict[str, str]:
    return {str(p): file_digest(p) for p in paths}


def executor(params: Params, jobs: int | None = None):
    """The backend for independent jobs that params.executor names (-j sizes the local one)."""
    return make_executor(params.executor, jobs or default_jobs())


def stage_simulate(params: Params, jobs: int | None = None) -> Path:
    from fclab.framework.simulate import simulate

    return simulate(params.simulate, n_jobs=executor(params, jobs))


def stage_extract(params: Params, jobs: int | None = None) -> None:
    p = params.extract
    out = extract(p, executor=executor(params, jobs), cache=runcache.enabled())
    if out.cached:
        print(f"extract: {out.computed} runs extracted, {out.cached} from the per-run cache "
              f"({runcache.cache_dir()})", file=sys.stderr)
    ts, roi_qc, run_qc, plugins = out.timeseries, out.roi_qc, out.run_qc, out.plugins
    d = p.denoise
    band = (f"band-pass filtered between {d.high_pass_hz} and {d.low_pass_hz} Hz (Butterworth)"
            if d.high_pass_hz and d.low_pass_hz else "not band-pass filtered")
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
    methods = (
        f"ROI time series were extracted from the {out.surface or f'{p.data.space} preprocessed BOLD'} of "
        f"{run_count_text(run_qc)}, "
        "for these ROIs: "
        f"{'; '.join(pl.describe() for pl in plugins)}. {confounds}"
        f"{'detrended, ' if d.detrend else ''}{band}{cleaned}, "
        f"and standardised ({d.standardize}) with nilearn signal.clean."
    )
    cite = (refs.FMRIPREP, refs.NILEARN) + ((refs.DENOISING,) if d.strategy != "none" else ()) + (
        (refs.SCRUBBING,) if d.strategy == "scrubbing" else ())
    prov = _provenance("extract", section_hash(p), plugins, out.digests, cite)
    prov["methods"] = methods
    with atomic_dir(EXTRACT_DIR, EXTRACT_FILES.__contains__) as out_dir:
        write_parquet(ts, out_dir / "timeseries.parquet", prov)
        write_parquet(roi_qc, out_dir / "roi_qc.parquet", prov)
        write_parquet(run_qc, out_dir / "run_qc.parquet", prov)
        write_parquet(out.events, out_dir / "events.parquet", prov)
        write_parquet(out.participants, out_dir / "participants.parquet", prov)
        write_parquet(out.motion, out_dir / "motion.parquet", prov)
        write_parquet(out.carpets, out_dir / "carpets.parquet", prov)
        write_parquet(out.atlas, out_dir / "rois.parquet", prov)
        if isinstance(out.atlas_img, nib.Cifti2Image):  # surface data: a CIFTI dlabel over their grayordinates
            (out_dir / "rois.dlabel.nii").write_bytes(out.atlas_img.to_bytes())
        else:  # gzip without a timestamp: reproducible bytes
            (out_dir / "rois.nii.gz").write_bytes(gzip.compress(out.atlas_img.to_bytes(), mtime=0))


def _window_text(w) -> str:
    lo, hi = w.bounds_s()
    if lo is None:
        return f"{w.name} (the whole {w.run} run)"
    ref = f"after {w.event} onset" if w.event else "from the run start"
    return f"{w.name} ({lo / 60:g}–{hi / 60:g} min {ref})"


def _connectivity_methods(p, metrics) -> str:
    text = (f"Connectivity was computed per subject in the windows {'; '.join(_window_text(w) for w in p.windows)}"
            f", each needing at least {p.min_volumes} clean volumes")
    if p.equalize:
        how = "one contiguous block" if p.equalize_contiguous else "randomly chosen volumes"
        size = p.equalize_volumes or "the smallest window's count"
        text += f", subsampled to the same number of clean volumes ({size}; {how}, seed {p.seed})"
    for s in p.sliding:
        taper = "" if s.taper == "none" else f", {s.taper} taper"
        text += f"; and in sliding windows '{s.name}' of {s.length_s:g} s every {s.step_s:g} s{taper}"
    return text + f", with {'; '.join(m.describe() for m in metrics)}."


def check_windows_have_values(edges: Edges, windows: list[str]) -> None:
    """A fixed window without a single value leaves nothing to test: an error with the commonest reason."""
    for w in windows:
        sel = edges.where(windows=[w])
        if len(sel) and not np.isfinite(sel.values).any():
            reason = str(sel.long()["reason"].astype(str).value_counts().index[0])
            error = ParamsError if "min_volumes" in reason or "equalize" in reason else DataError
            raise error(f"connectivity: window {w!r} has no value for any subject (e.g. {reason})")


def stage_connectivity(params: Params) -> None:
    p = params.connectivity
    inputs = [EXTRACT_DIR / f for f in ("timeseries.parquet", "run_qc.parquet", "events.parquet",
                                       "participants.parquet")]
    run_qc, events, participants = (read_parquet(f) for f in inputs[1:])
    metrics = build_metrics(p)
    roi_qc = read_parquet(EXTRACT_DIR / "roi_qc.parquet")
    roi_reasons = {(r.subject, r.run, r.roi): r.reason for r in roi_qc[roi_qc["missing"]].itertuples()}
    # the time series table is not kept here, so connectivity can free it once each run is an array
    edges = connectivity(p, read_parquet(inputs[0]), run_qc, events, metrics, participants["subject"].tolist(),
                         roi_reasons)
    check_windows_have_values(edges, [w.name for w in p.windows])
    inputs.append(EXTRACT_DIR / "roi_qc.parquet")
    prov = _provenance("connectivity", section_hash(p), metrics, _digests(*inputs))
    prov["methods"] = _connectivity_methods(p, metrics)
    prov["scales"] = output_scales(metrics)
    prov["scale_info"] = scale_descriptions(metrics)
    prov["windows"] = [w.name for w in p.windows]
    prov["sliding"] = [{"name": s.name, "run": s.run, "event": s.event} for s in p.sliding]
    with atomic_dir(CONNECTIVITY_DIR, {"edges.parquet"}.__contains__) as out_dir:
        write_edges(edges, out_dir / "edges.parquet", prov)


def export_edges(out: Path | None, windows=None, metrics=None) -> str:
    """A summary of edges.parquet, or (``out``) its long view written to ``out``; returns what to print."""
    path = CONNECTIVITY_DIR / "edges.parquet"
    suffix = Path(out).suffix.lower() if out is not None else None
    if out is not None and suffix not in (".parquet", ".csv", ".tsv"):
        raise ParamsError(f"--long {out}: the file name must end in .parquet, .csv or .tsv")
    edges = read_edges(path, windows, metrics)
    if out is None:
        rows = edges.rows
        return (f"{path}: {len(rows)} rows (subject × window × metric) of {edges.n_edges} edges over "
                f"{len(edges.rois)} ROIs; {rows['subject'].nunique()} subjects, windows "
                f"{', '.join(dict.fromkeys(rows['window']))}; metrics {', '.join(edges.metrics())}. "
                "`fclab edges --long FILE` writes one row per edge.")
    long = edges.long()
    if suffix == ".parquet":
        write_parquet(long, out, read_provenance(path))
    else:
        write_text(out, long.to_csv(index=False, sep="," if suffix == ".csv" else "\t"))
    return f"wrote {out}: {len(long)} rows"


def stage_truth(params: Params, jobs: int | None = None) -> bool:
    """The planted effects on the measured scale (results/truth/), for the simulated study; for other
    data, empty outputs that say so. Returns whether the study is simulated."""
    from fclab.framework.truth import TRUTH_COLUMNS, is_simulated, measured_truth

    simulated = is_simulated(params)
    inputs = [EXTRACT_DIR / f"{f}.parquet" for f in ("timeseries", "run_qc", "events", "participants", "roi_qc")]
    inputs.append(CONNECTIVITY_DIR / "edges.parquet")
    prov = provenance("truth", section_hash({k: section_hash(getattr(params, k))
                                             for k in ("simulate", "extract", "connectivity")}), {}, {})
    truth = pd.DataFrame({c: pd.Series(dtype=float if c.startswith(("measured", "latent", "window_")) else object)
                          for c in TRUTH_COLUMNS})
    latent = {}
    if simulated:
        ts, run_qc, events, participants, roi_qc = (read_parquet(f) for f in inputs[:-1])
        check_fresh(inputs[-1])
        edges = read_edges(inputs[-1]).long()
        metrics = build_metrics(params.connectivity)
        prov["plugins"] = _plugin_versions(metrics)
        prov["inputs"] = _digests(*inputs)
        roi_reasons = {(r.subject, r.run, r.roi): r.reason for r in roi_qc[roi_qc["missing"]].itertuples()}
        truth = measured_truth(params, ts, run_qc, events, participants, roi_reasons, edges, metrics,
                               TRUTH_DIR.parent, executor(params, jobs))
        latent = json.loads((Path(params.simulate.output_dir) / "ground_truth.json").read_text())
    prov["simulated"] = simulated
    with atomic_dir(TRUTH_DIR, {"truth.parquet", "ground_truth.json"}.__contains__) as out_dir:
        write_parquet(truth, out_dir / "truth.parquet", prov)
        write_json(out_dir / "ground_truth.json", {
            "simulated": simulated,
            "description": "The planted effects on two scales. latent: the change of the simulated sources' "
            "correlation (ground_truth.json of the simulated data). measured: the mean over a group's subjects of "
            "(edge value of the study) - (edge value of the same study simulated with the same seed but no effect), "
            "through this study's extraction and connectivity settings; measured_se is its Monte Carlo standard "
            "error. Rows per metric, edge, window and group are in truth.parquet." if simulated
            else "The study's data are not the simulated study: there is no ground truth.",
            "latent": latent,
            "measured": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
                         for row in truth[truth["window"].isin([w.name for w in params.connectivity.windows])]
                         .to_dict("records")],
        })
    return simulated


def stage_stats(params: Params) -> None:
    from fclab.framework.stats import build_tests, run_stats, subject_table

    p = params.stats
    path = CONNECTIVITY_DIR / "edges.parquet"
    upstream = check_fresh(path)
    tests = build_tests(p)
    # sliding windows are for time courses; a test gets them only when it asks (StatTest.uses), and
    # otherwise their rows (most of the table with sliding windows) are never read
    wants_sliding = any("sliding" in t.uses for t in tests)
    windows = upstream.get("windows")
    edges = read_edges(path, None if wants_sliding or not windows else windows)
    windows = windows or list(dict.fromkeys(edges.rows["window"]))
    fixed = edges.rows["window"].isin(windows).to_numpy()
    sliding = edges.select(~fixed) if wants_sliding else None
    edges = edges.select(fixed)
    run_qc = read_parquet(EXTRACT_DIR / "run_qc.parquet")
    subjects = subject_table(read_parquet(EXTRACT_DIR / "participants.parquet"), run_qc)
    result = run_stats(p, edges, windows, tests, upstream.get("scales"), subjects, sliding,
                       run_qc if any("run_qc" in t.uses for t in tests) else None)
    prov = _provenance("stats", section_hash(p), tests, _digests(path), refs.CORRECTIONS[p.correction])
    prov["caveats"] = {t.name: t.caveat for t in tests if t.caveat}
    ref, target = p.groups
    prov["methods"] = (
        f"Group differences ({target} − {ref}) in the change from the {p.baseline_window} window were "
        f"tested with {'; and '.join(t.describe() for t in tests)}."
        + (f" Models with covariates adjusted for {', '.join(p.covariates)} (centred)." if p.covariates else "")
        + terms_text(result)
        + exclusion_text(run_qc, params.extract.exclude)
    )
    with atomic_dir(STATS_DIR, {"tests.parquet"}.__contains__) as out_dir:
        write_parquet(result, out_dir / "tests.parquet", prov)


def validate_inputs(params: Params) -> tuple[list[str], list[str]]:
    """(summary lines, problems) for every input of the extract stage; nothing is computed or written."""
    from fclab.framework.errors import FclabError
    from fclab.framework.extract import RoiBuilder, check_inputs, discover, run_reference
    from fclab.framework.stats import check_names

    runs, problems = check_inputs(params.extract, [*params.connectivity.windows, *params.connectivity.sliding])
    problems += plugin_input_problems(params)
    try:  # names the stats section refers to: groups of participants.tsv, ROIs of the ROI set
        participants, found = discover(params.extract.data, [])
        groups = participants["group"].unique()
        first = next((r for r in found if all(f.is_file() for f in (r.mask or r.bold,))), None)
        grid = run_reference(first, params.extract.data.space)[0] if first else None
        names = RoiBuilder(params.extract.rois).for_grid(grid).names if first else None
        if names is not None:
            check_names(params.stats, groups, names)
    except FclabError as exc:
        problems.append(str(exc))
    except (OSError, nib.filebasedimages.ImageFileError):
        pass  # an unreadable mask is already among the problems
    subjects = runs.drop_duplicates("subject")
    per_group = ", ".join(f"{g} {n}" for g, n in subjects["group"].value_counts().sort_index().items())
    trs = ", ".join(f"{t:g}" for t in sorted(runs["tr_s"].dropna().unique()))
    vols = runs["n_volumes"].dropna()
    lines = [f"{params.extract.data.root}: {len(subjects)} subjects ({per_group or 'none'}), {len(runs)} runs "
             f"({', '.join(f'{k} {v}' for k, v in runs['run'].value_counts().sort_index().items())})",
             f"TR (s): {trs or '-'}; volumes per run: "
             + (f"{int(vols.min())}–{int(vols.max())}" if len(vols) else "-")]
    return lines, problems


def _skipped(run_qc: pd.DataFrame) -> pd.Series:
    return run_qc["reason"].astype(str).str.startswith("skipped:") if "reason" in run_qc else run_qc["run"].isna()


def run_count_text(run_qc: pd.DataFrame) -> str:
    """'52 runs of 26 subjects (14 midazolam, 12 ketamine; 2 runs per subject)', saying how many runs
    could not be read."""
    skipped = _skipped(run_qc)
    read = run_qc[~skipped]
    per = read.groupby("subject").size()
    each = f"{per.iloc[0]} runs per subject" if per.nunique() == 1 else f"{per.min()}–{per.max()} runs per subject"
    groups = read.groupby("group", sort=True)["subject"].nunique()
    by_group = ", ".join(f"{n} {g}" for g, n in groups.items())
    text = f"{len(read)} runs of {read['subject'].nunique()} subjects ({by_group}; {each})"
    if skipped.any():
        k = int(skipped.sum())
        lost = ", ".join(f"sub-{r.subject} {r.run}" for r in run_qc[skipped].head(5).itertuples())
        text += (f"; {k} further run{'s' if k > 1 else ''} could not be read and {'were' if k > 1 else 'was'} "
                 f"left out ({lost}{', …' if k > 5 else ''}; run_qc.parquet gives the reasons)")
    return text


def censoring_text(run_qc: pd.DataFrame) -> str:
    """'; this censored 412 of 30,576 volumes (1.3 %; 0–9.8 % per run)', over the runs read."""
    read = run_qc[~_skipped(run_qc) & run_qc["n_volumes"].notna()]
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
    used = run_qc.loc[~_skipped(run_qc), "confounds"] if "confounds" in run_qc else pd.Series(dtype=str)
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
    if not parts:
        return "no run exclusion rule was set"
    text = "runs were excluded for " + " or ".join(parts)
    return text + (" (and then every run of that subject)" if rules.whole_subject else "")


def exclusion_text(run_qc: pd.DataFrame, rules=None) -> str:
    """The exclusion rules, then how many runs they excluded, of how many subjects, and why."""
    from fclab.framework.params import ExclusionParams

    rule = exclusion_rules_text(rules or ExclusionParams())
    rule = rule[0].upper() + rule[1:]
    excl = run_qc[run_qc["excluded"] & ~_skipped(run_qc)] if "excluded" in run_qc else run_qc.iloc[:0]
    if excl.empty:
        return f" {rule}." if rule.startswith("No ") else f" {rule}; no run was excluded."
    why = "; ".join(f"sub-{r.subject} {r.run}: {r.reason}" for r in excl.itertuples())
    return (f" {rule}. {len(excl)} of {len(run_qc)} runs ({excl['subject'].nunique()} subjects) were excluded and "
            f"their windows treated as missing ({why}).")


def stage_report(params: Params, jobs: int | None = None) -> Path:
    """reports/: figures, plot series, per-subject QC pages, metrics.json and index.html, staged
    together and moved in with index.html last; other entries of reports/ (calibration, power) are
    left alone."""
    members = {"figures": lambda n: n.endswith(".png"), "plots": lambda n: n.endswith(".csv"),
               "subjects": lambda n: n.endswith((".html", ".png", ".jpg")),
               "metrics.json": None, "confirmatory.json": None, "tests.csv": None, "index.html": None}
    with staged_members(REPORT_DIR, members) as out:
        _report(params, out, jobs or default_jobs())
    return REPORT_DIR / "index.html"


def _report(params: Params, out: Path, jobs: int = 1) -> None:
    from fclab.framework import report as rp
    from fclab.framework.stats import TEST_COLUMNS

    sp, rp_params = params.stats, params.report
    paths = {"edges": CONNECTIVITY_DIR / "edges.parquet", "tests": STATS_DIR / "tests.parquet",
             "run_qc": EXTRACT_DIR / "run_qc.parquet", "timeseries": EXTRACT_DIR / "timeseries.parquet"}
    provs = {"extract": read_provenance(paths["timeseries"]), "connectivity": check_fresh(paths["edges"]),
             "stats": check_fresh(paths["tests"])}
    fixed = provs["connectivity"].get("windows")
    # The fixed windows only: sliding-window rows (most of a connectome's table) are read below, for
    # the edges the course is drawn for.
    edges = read_edges(paths["edges"], fixed).long()
    tests, run_qc = read_parquet(paths["tests"], TEST_COLUMNS), read_parquet(paths["run_qc"])
    metric = rp_params.metric or edges["metric"].iloc[0]
    scale = provs["connectivity"].get("scales", {}).get(metric, "value")
    described = provs["connectivity"].get("scale_info", {}).get(scale)
    scale = Scale(**described) if described else as_scale(scale)
    windows = fixed or list(dict.fromkeys(edges["window"]))
    infusion_windows = [w for w in windows if w != sp.baseline_window]
    groups = list(sp.groups)
    edges_m = edges[(edges["metric"] == metric) & edges["window"].isin(windows)]
    delta = rp.change_from_baseline(edges_m, sp.baseline_window)
    events = read_parquet(EXTRACT_DIR / "events.parquet")
    delta["zero_s"] = rp.event_zero(delta, events, params.connectivity.windows)
    summary = rp.delta_summary(delta, groups, infusion_windows, sp.alpha)
    primary = tests[(tests["test"] == rp_params.primary_test) & (tests["metric"] == metric)
                    & (tests["term"] == rp_params.primary_term)]
    if primary.empty:
        raise DataError(f"{paths['tests']}: no rows for test {rp_params.primary_test!r}, metric {metric!r} "
                        f"and term {rp_params.primary_term!r}")

    roi_qc = read_parquet(EXTRACT_DIR / "roi_qc.parquet")
    motion = read_parquet(EXTRACT_DIR / "motion.parquet")
    qc_tables = study_qc(params, run_qc, roi_qc, motion, edges_m, windows)
    page_jobs = subject_page_jobs(params, edges_m, run_qc, roi_qc, motion, qc_tables, windows, scale, out / "subjects")
    # Worker processes draw the subject pages while this one draws the study's figures: the pool forks
    # here, before any drawing, and the pages are collected once the figures are done.
    # The tables read so far live to the end: frozen, the garbage collector stops scanning their
    # objects at every collection (in this process and the forked workers; ~12 % of a page's time).
    gc.freeze()
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 and len(page_jobs) > 1 else None
    # and no BLAS threads of this process compete with the pool's (threadpoolctl applies the limit now)
    limits = threadpool_limits(limits=1) if pool else None
    try:
        pages = pool.map(OneThread(rp.subject_page), page_jobs) if pool else map(rp.subject_page, page_jobs)
        figures = []
        pairs = list(edges_m[["roi_a", "roi_b"]].drop_duplicates().itertuples(index=False, name=None))
        figure_pairs, figure_note = rp.figure_edges(sp.confirmatory, primary, pairs)
        for a, b in progress(figure_pairs, len(figure_pairs), "report: change figures"):
            name = f"delta_{rp.slug(a)}__{rp.slug(b)}.png"
            rp.delta_figure(summary, primary, a, b, groups, infusion_windows, scale, out / "figures" / name,
                            sp.alpha, rp.window_axis_label(params.connectivity.windows, infusion_windows))
            figures.append({"src": f"figures/{name}", "alt": f"Change from baseline, {rp.edge_label(a, b)}"})

        courses = []
        sliding = provs["connectivity"].get("sliding") or []
        course_columns = ["edge", "group", "centre_min", "mean", "ci_low", "ci_high", "n"]
        # the DVC plot series exists, empty, without sliding windows
        course = pd.DataFrame(columns=course_columns + ["roi_a", "roi_b"])
        if sliding:
            spec = sliding[0]
            # the course of the figure edges only (edges.parquet has all)
            sl = read_edges(paths["edges"], [spec["name"]], [metric]).long(
                figure_pairs if len(pairs) > rp.FIGURE_EDGES else None)
            course = rp.sliding_course(sl, events, spec, groups, sp.alpha)
            drawn = list(course[["roi_a", "roi_b"]].drop_duplicates().itertuples(index=False, name=None))
            if len(drawn) > rp.FIGURE_EDGES:
                drawn = [e for e in figure_pairs if e in set(drawn)]
            for a, b in progress(drawn, len(drawn), "report: sliding-window figures"):
                name = f"course_{rp.slug(a)}__{rp.slug(b)}.png"
                rp.course_figure(course, a, b, groups, scale, spec, out / "figures" / name)
                courses.append({"src": f"figures/{name}", "alt": f"Sliding-window course, {rp.edge_label(a, b)}"})
        write_text(out / "plots" / "sliding_course.csv", rp.csv_text(course[course_columns]))
        plotted = set(figure_pairs)
        rp.plot_series(course[[(a, b) in plotted for a, b in zip(course["roi_a"], course["roi_b"])]] if len(pairs) >
                       rp.FIGURE_EDGES else course, course_columns[2:3] + course_columns[1:2] + course_columns[3:],
                       out / "plots" / "course")

        study_figs, qc_figs = study_figures(edges_m, run_qc, roi_qc, motion, qc_tables, groups, windows,
                                              sp.baseline_window, scale, out / "figures", sp.alpha, tests,
                                              rp_params.primary_test, metric)
        subject_links = {s: f"subjects/{name}"
                         for s, name in progress(pages, len(page_jobs), "report: subject pages")}
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
            limits.restore_original_limits()

    plot_csv = summary[["edge", "group", "window", "window_mid_min", "mean_delta", "ci_low", "ci_high", "n"]]
    write_text(out / "plots" / "delta_by_window.csv", rp.csv_text(plot_csv))
    rp.plot_series(summary[[(a, b) in plotted for a, b in zip(summary["roi_a"], summary["roi_b"])]]
                   if len(pairs) > rp.FIGURE_EDGES else summary,
                   ["window_mid_min", "group", "window", "mean_delta", "ci_low", "ci_high", "n"], out / "plots" / "delta")

    n_per_group = run_qc.drop_duplicates("subject")["group"].value_counts().sort_index().to_dict()
    n_per_group = {k: int(v) for k, v in n_per_group.items()}
    detail = rp.metrics_payload(primary, rp_params.primary_test, metric, n_per_group, run_qc)
    write_json(out / "confirmatory.json", detail)
    payload = rp.headline_metrics(detail, sp.alpha)
    truth, truth_note = planted_contrasts(params, paths["edges"])
    if truth is not None and rp_params.primary_term == "group:window":
        truth = rp.truth_check(primary, truth)
        conf = truth[truth["family"] == "confirmatory"] if (truth["family"] == "confirmatory").any() else truth
        covered = conf["covered"].dropna()
        payload["planted"] = {"family": str(conf["family"].iloc[0]) if len(conf) else None,
                              "intervals": int(covered.size), "covering": int(covered.sum())}
        truth_note = (f"The {rp.ci_level(sp.alpha)} intervals of {rp_params.primary_test} cover the planted "
                      f"contrast (measured scale) in {int(covered.sum())} of {covered.size} "
                      f"{payload['planted']['family']} edge-windows.")
        truth = conf.to_dict("records")
    elif truth is not None:
        truth, truth_note = None, "Planted values are given for group:window contrasts only."
    write_json(out / "metrics.json", payload)

    group_rows = []
    for g, frame in run_qc.groupby("group", sort=True):
        group_rows.append({"group": g, "subjects": frame["subject"].nunique(), "runs": len(frame),
                           "volumes": int(frame["n_volumes"].sum()), "mean_fd": float(frame["mean_fd"].mean()),
                           "excluded": int(frame["excluded"].sum())})
    excl = run_qc[run_qc["excluded"]]
    missing_rois = roi_qc[roi_qc["missing"]].to_dict("records")
    per_group = rp.group_counts(edges[edges["window"].isin(windows)], tests, sp.baseline_window, groups)
    shown = tests.assign(n_groups=[" / ".join("–" if pd.isna(v) else str(v) for v in row)
                                   for row in per_group.itertuples(index=False)])
    fams = []
    for f in ("confirmatory", "exploratory"):
        rows = shown[shown["family"] == f]
        if len(rows) > rp.TABLE_ROWS:  # the page shows the smallest adjusted p; tests.csv has every row
            order = np.lexsort((rows["p"].to_numpy(float), rows["p_adj"].to_numpy(float)))  # NaN last
            rows = rows.iloc[np.sort(order[:rp.TABLE_ROWS])]
        if (shown["family"] == f).any():
            fams.append({"name": f, "rows": rows.to_dict("records"), "total": int((shown["family"] == f).sum())})
    write_text(out / "tests.csv", rp.csv_text(pd.concat([tests[TEST_COLUMNS], per_group.add_prefix("n_")], axis=1)))
    context = {
        "title": rp_params.title or f"{groups[1]} vs {groups[0]}",
        "headline": headline(primary, sp.alpha),
        "summary": group_rows, "n_excluded": len(excl), "exclusions": excl.to_dict("records"),
        "missing_rois": missing_rois,
        "primary_test": rp_params.primary_test, "correction": sp.correction, "figures": figures,
        "figure_note": figure_note,
        "courses": courses, "study_figures": study_figs, "qc_figures": qc_figs,
        "motion_tests": qc_tables["motion_tests"][(qc_tables["motion_tests"]["measure"] != "censored")
                                                   | bool(motion["censored"].any())].to_dict("records"),
        "any_censored": bool(motion["censored"].any()), "strategy": params.extract.denoise.strategy,
        "qc_fc": qc_tables["qc_fc_summary"].to_dict("records"),
        "subject_rows": qc_tables["subjects"].to_dict("records"), "subject_links": subject_links,
        "outliers": qc_tables["outliers"].to_dict("records"),
        "families": fams, "groups": groups, "alpha": sp.alpha, "truth": truth, "truth_note": truth_note, "caveats": provs["stats"].get("caveats", {}),
        "ci_level": rp.ci_level(sp.alpha), "primary_term": rp_params.primary_term,
        "star_levels": [f"{sp.alpha:g}", f"{sp.alpha / 5:g}", f"{sp.alpha / 50:g}"],
        "methods": rp.methods_text(provs, sp.correction, sp.confirmatory, sp.alpha, sp.family,
                                   section_hash(rp_params), section_hash(params), tests),
        "references": list(dict.fromkeys([*(r for stage in ("extract", "connectivity", "stats")
                                            for r in provs[stage].get("references", [])), refs.DVC])),
        "versions": rp.package_versions(), "commit": git_commit(),
        "data_version": file_digest(paths["timeseries"]),
    }
    rp.write_report(out, context)


def planted_contrasts(params: Params, edges_path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """The planted group:window contrasts of a simulated study from results/truth/, or None and why not."""
    from fclab.framework.truth import contrasts

    path = TRUTH_DIR / "truth.parquet"
    if not path.exists():
        return None, None
    prov = read_provenance(path)
    if not prov.get("simulated"):
        return None, None
    if prov.get("inputs", {}).get(str(edges_path)) != file_digest(edges_path):
        return None, f"{path} was computed from other connectivity values; run fclab truth to compare with the planted effect."
    sp = params.stats
    windows = [w.name for w in params.connectivity.windows]
    return contrasts(read_parquet(path), tuple(sp.groups), windows, sp.baseline_window), None


def study_qc(params: Params, run_qc, roi_qc, motion, edges_m, windows) -> dict[str, pd.DataFrame]:
    """The report's QC tables (framework/qc.py): motion and censoring per window and group over the
    runs analysed, with the group tests; per-subject summaries and outliers; QC-FC per edge and window."""
    from fclab.framework import qc
    from fclab.framework.windows import resolve

    sp = params.stats
    analysed = run_qc[~run_qc["excluded"].astype(bool)]
    cuts = resolve(params.connectivity, analysed, read_parquet(EXTRACT_DIR / "events.parquet"))
    wm = qc.window_motion(motion, cuts[cuts["window"].isin(windows)])
    subjects = qc.subject_qc(run_qc, motion, roi_qc)
    q = qc.qc_fc_all(edges_m, run_qc, windows)
    return {"window_motion": wm, "motion_tests": qc.window_motion_tests(wm, list(sp.groups), windows),
            "subjects": subjects, "outliers": qc.outliers(subjects), "qc_fc": q,
            "qc_fc_summary": qc.qc_fc_summary(q, sp.alpha)}


def study_figures(edges_m, run_qc, roi_qc, motion, qc_tables, groups, windows, baseline, scale, fig_dir: Path,
                  alpha: float = 0.05, tests: pd.DataFrame | None = None, primary_test: str | None = None,
                  metric: str | None = None):
    """The ROI, matrix and QC figures; returns (study figures, QC figures) for the template."""
    from fclab.framework import figures as fg
    from fclab.framework.report import ci_level

    atlas = read_parquet(EXTRACT_DIR / "rois.parquet")
    rois = atlas["roi"].tolist()
    study, qc = [], []

    def add(where, name, caption):
        where.append({"src": f"figures/{name}", "alt": caption})

    if (EXTRACT_DIR / "rois.dlabel.nii").exists():  # surface or CIFTI data
        fg.surface_roi_figure(nib.load(EXTRACT_DIR / "rois.dlabel.nii"), atlas, fig_dir / "rois.png")
        add(study, "rois.png", "Regions of interest on the cortical surface (and subcortical ones on the MNI152 template)")
    else:
        fg.roi_figure(nib.load(EXTRACT_DIR / "rois.nii.gz"), atlas, fig_dir / "rois.png")
        add(study, "rois.png", "Regions of interest on the MNI152 template (axial slices)")
    fg.matrices_figure(edges_m, rois, groups, windows, scale, fig_dir / "matrices.png")
    add(study, "matrices.png", "Group-mean connectivity per window, and the group difference")
    effect_windows = [w for w in windows if w != baseline]
    views = {primary_test: f"Strongest effects, {primary_test}"} if primary_test else {}
    views.setdefault("nbs", "NBS components")  # when the study ran the network-based statistic
    for test, what in views.items():
        rows = tests[(tests["test"] == test) & (tests["term"] == "group:window") & (tests["metric"] == metric)] \
            if tests is not None else pd.DataFrame()
        if rows.empty:
            continue
        name = f"connectome_{test}.png"
        fg.connectome_figure(rows, atlas, effect_windows, alpha, f"{what}: edges with adjusted p < {alpha:g}, "
                             "coloured by the estimate", fig_dir / name)
        add(study, name, f"{what} on a glass brain, one row per window that has any: edges whose group × window "
            f"term has adjusted p < {alpha:g} (at most 40 per window, smallest adjusted p first), between ROI centroids")
    fg.motion_window_figure(qc_tables["window_motion"], qc_tables["motion_tests"], groups, windows,
                            fig_dir / "qc_motion_windows.png", alpha)
    censored = (qc_tables["window_motion"]["censored"] > 0).any()
    add(qc, "qc_motion_windows.png", "Head motion" + (" and censoring" if censored else "") +
        f" per window and group, runs analysed (mean and {ci_level(alpha)} CI over subjects; dots: subjects; "
        f"* groups differ, Holm-adjusted Mann–Whitney p < {alpha:g})")
    fg.fd_figure(motion, run_qc, groups, fig_dir / "qc_fd.png")
    add(qc, "qc_fd.png", "Framewise displacement per volume, by group")
    fg.qcfc_distance_figure(qc_tables["qc_fc"], edges_m, atlas, groups, baseline, scale, fig_dir / "qc_fc_distance.png")
    add(qc, "qc_fc_distance.png", f"QC-FC over every edge and window, and connectivity against ROI distance "
        f"({baseline} window)")
    fg.roi_qc_figure(roi_qc, fig_dir / "qc_rois.png")
    add(qc, "qc_rois.png", "ROI coverage and tSNR")
    return study, qc


def warm_caches(params: Params) -> str:
    """Do now the one-off work a machine's first run would do: compile the numba kernels (~2 s; numba
    keeps them in the source's __pycache__, or NUMBA_CACHE_DIR), build the anatomy of the simulated
    study's grid (~2 s; .fclab-cache/simulate/) and the ROI figures' 2 mm template (~0.5 s;
    .fclab-cache/report/). Like compiling bytecode at install time, it changes no result: each is
    rebuilt when its code or inputs change."""
    from fclab.framework.figures import mni152_background
    from fclab.framework.kernels import window_correlations
    from fclab.framework.simulate import Anatomy

    window_correlations(np.arange(6.0).reshape(3, 2) ** 2, np.array([0]), np.array([3]))
    Anatomy.cached(params.simulate.voxel_size_mm)
    mni152_background()
    return (f"compiled the sliding-window kernels; built the {params.simulate.voxel_size_mm:g} mm "
            "simulation anatomy and the report's template")


def subject_page_jobs(params: Params, edges_m, run_qc, roi_qc, motion, qc_tables, windows, scale,
                      out: Path) -> list[dict]:
    """The jobs of ``report.subject_page``: one per subject, each drawing reports/subjects/sub-<label>.html
    and its figures (none when ``report.subject_pages`` is off)."""
    out.mkdir(parents=True, exist_ok=True)  # a DVC output: it exists, empty, without pages
    if not params.report.subject_pages:
        return []
    carpets = read_parquet(EXTRACT_DIR / "carpets.parquet")
    rois = read_parquet(EXTRACT_DIR / "rois.parquet")["roi"].tolist()
    flags = qc_tables["outliers"]
    jobs = []
    for row in qc_tables["subjects"].to_dict("records"):
        s = row["subject"]
        jobs.append({
            "subject": s, "summary": row, "out": out, "rois": rois, "windows": windows, "scale": scale,
            "title": params.report.title or f"{params.stats.groups[1]} vs {params.stats.groups[0]}",
            "runs": run_qc[run_qc["subject"] == s], "roi_qc": roi_qc[roi_qc["subject"] == s],
            "motion": motion[motion["subject"] == s], "carpets": carpets[carpets["subject"] == s],
            "edges": edges_m[edges_m["subject"] == s], "flags": flags[flags["subject"] == s],
        })
    return jobs


def stage_power(params: Params, deltas: list[float], n_sims: int, edge: tuple[str, str] | None,
                window: str | None, n_ref: int | None, n_target: int | None, seed: int = 0,
                jobs: int | None = None, out_dir: Path = REPORT_DIR / "power", planted: bool = False):
    """Simulation-based power at ROI level for every test in params; writes power.csv and power.png.

    With ``planted``, the effects are simulate.effects (the default study's when unset) with their
    Δr multiplied by each value of ``deltas``; otherwise one edge and window get a decrease of Δz.
    """
    from dataclasses import replace

    from fclab.framework import report as rp
    from fclab.framework.power import detectable_effect, power_curve, power_planted
    from fclab.framework.roisim import RoiStudy

    sp = params.stats
    study = RoiStudy.from_params(params)
    study = replace(study, n_ref=n_ref or study.n_ref, n_target=n_target or study.n_target)
    if planted:
        curve, edge, window = power_planted(study, sp, params.simulate.planted(), deltas, n_sims, seed,
                                            executor(params, jobs))
        what = "simulate.effects scaled; "
    else:
        edge = tuple(edge) if edge else (tuple(sp.confirmatory[0]) if sp.confirmatory else study.rois[:2])
        for roi in edge:
            if roi not in study.rois:
                raise DataError(f"power: --edge: unknown ROI {roi!r} (the ROI-level study has {', '.join(study.rois)})")
        effect_windows = [w for w in study.windows if w != sp.baseline_window]
        window = window or effect_windows[0]
        if window not in effect_windows:
            raise DataError(f"power: --window: {window!r} is not a non-baseline window ({', '.join(effect_windows)})")
        curve = power_curve(study, sp, deltas, n_sims, seed, edge, window, executor(params, jobs))
        what = ""
    curve = curve[curve["term"] != "group"]  # the within-window group difference ignores baseline
    found = detectable_effect(curve)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = curve.assign(n_ref=study.n_ref, n_target=study.n_target, edge=f"{edge[0]}~{edge[1]}", window=window)
    write_text(out_dir / "power.csv", rp.csv_text(table))
    ref, target = sp.groups
    rp.power_figure(curve, found, f"{what}{edge[0]} – {edge[1]}, {window}\n{study.n_target} {target} vs "
                    f"{study.n_ref} {ref}, {n_sims} simulated studies per point", out_dir / "power.png")
    return table, found, study

CALIBRATION_BAND = (0.035, 0.065)


def stage_calibrate(params: Params, kind: str, n: int, seed: int = 0, jobs: int | None = None,
                    tests: list | None = None, out_dir: Path = REPORT_DIR / "calibration") -> pd.DataFrame:
    """Null calibration of the stats tests in params: false-positive rate and FWER per test and term.

    ``kind`` ``relabel`` relabels the groups ``n`` times on this study's own connectivity values
    (results/connectivity/edges.parquet); ``roi`` simulates ``n`` realistic ROI-level null studies of
    the design params describes. Writes ``<kind>.csv`` with exact (Clopper–Pearson) 95 % CIs.
    """
    from fclab.framework.power import rates, relabel_many, simulate_many
    from fclab.framework.report import csv_text
    from fclab.framework.roisim import RoiStudy

    sp = params.stats if tests is None else params.stats.model_copy(update={"tests": tests})
    windows = [w.name for w in params.connectivity.windows]
    effect_windows = [w for w in windows if w != sp.baseline_window]
    edge = tuple(sp.confirmatory[0]) if sp.confirmatory else None
    window = effect_windows[min(1, len(effect_windows) - 1)]
    if kind == "relabel":
        path = CONNECTIVITY_DIR / "edges.parquet"
        if not path.exists():
            raise DataError(f"calibrate: {path} not found; run `fclab connectivity` first")
        edges = read_edges(path, windows).long()
        if edge is None:
            edge = tuple(edges[["roi_a", "roi_b"]].iloc[0])
        out = relabel_many(edges, sp, windows, n, seed, edge, window, executor(params, jobs))
    else:
        study = RoiStudy.from_params(params)
        edge = edge or study.rois[:2]
        out = simulate_many(study, sp, n, seed, edge, window, executor(params, jobs))
    r = rates(out)
    r = r[r["outcome"].isin(["single", "confirmatory", "exploratory"])].reset_index(drop=True)
    r["in_band"] = r["rate"].between(*CALIBRATION_BAND)
    write_text(out_dir / f"{kind}.csv", csv_text(r.assign(kind=kind, edge=f"{edge[0]}~{edge[1]}", window=window,
                                                          alpha=sp.alpha)))
    return r


def headline(primary: pd.DataFrame, alpha: float) -> str:
    """The strongest adjusted result of the primary test, in one sentence."""
    from fclab.framework.report import ci_level

    pool = primary[primary["family"] == "confirmatory"]
    pool = pool if not pool.empty else primary
    best = pool.sort_values(["p_adj", "p"]).iloc[0]
    verdict = "significant" if best["p_adj"] < alpha else "not significant"
    return (
        f"Strongest {best['family']} effect ({best['test']}): {best['roi_a']} – {best['roi_b']} at {best['window']}, "
        f"estimate {best['estimate']:.3f} [{best['ci_low']:.3f}, {best['ci_high']:.3f}] ({ci_level(alpha)} CI), "
        f"p_adj = {best['p_adj']:.2g} ({best['adj_method']}), {verdict} at α = {alpha}."
    )


def run_all(params: Params, jobs: int | None = None) -> Path:
    """Every stage in order, in this process, without DVC. The default study is simulated first."""
    if Path(params.extract.data.root).resolve() == Path(params.simulate.output_dir).resolve():
        stage_simulate(params, jobs)
    stage_extract(params, jobs)
    stage_connectivity(params)
    stage_truth(params, jobs)
    stage_stats(params)
    return stage_report(params, jobs)


def headline_lines(n: int = 3) -> list[str]:
    """The report's top results as short lines, for the end of `fclab run`."""
    tests = read_parquet(STATS_DIR / "tests.parquet")
    metrics = pd.read_json(REPORT_DIR / "metrics.json", typ="series")
    primary = tests[(tests["test"] == metrics["test"]) & (tests["metric"] == metrics["metric"])
                    & (tests["term"] == metrics["term"])]
    pool = primary[primary["family"] == "confirmatory"]
    pool = (pool if not pool.empty else primary).sort_values(["p_adj", "p"]).head(n)
    return [f"{r.roi_a} – {r.roi_b} {r.window}: estimate {r.estimate:+.3f} "
            f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}], p_adj {r.p_adj:.2g} ({r.test})" for r in pool.itertuples()]
