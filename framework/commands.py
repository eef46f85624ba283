"""The commands that are not DVC stages: ``fclab validate``, ``edges``, ``power``, ``calibrate``,
``cache --warm`` and ``run`` (every stage in this process), and the headline ``make run`` prints. Each
reads what it needs from the results layout (``stages``) and calls its engine."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fclab.framework.connectome.edgestore import read_edges
from fclab.framework.errors import DataError, ParamsError
from fclab.framework.io import locked, read_parquet, read_provenance, write_parquet, write_text
from fclab.framework.params import Params, capped
from fclab.framework.pluginhost.builder import build_all, selected
from fclab.framework.pluginhost.registry import get_registry
from fclab.framework.report.methods import counted
from fclab.framework.stages import (
    CONNECTIVITY_DIR, REPORT_DIR, STATS_DIR, executor, plugins, roi_builder, stage_connectivity, stage_extract,
    stage_report, stage_simulate, stage_stats, stage_truth,
)


def plugin_input_problems(params: Params) -> list[str]:
    """A line for each input file a selected plugin declares that does not exist."""
    return [f"{f}: not found (an input file of {key}, {name})"
            for _, key, name, plugin in selected(params, get_registry())
            for f in plugin.input_files() if not Path(f).is_file()]


@locked(shared=True)
def export_edges(out: Path | None, windows=None, metrics=None) -> str:
    """A summary of edges.parquet, or (``out``) its long view written to ``out``; returns what to print."""
    path = CONNECTIVITY_DIR / "edges.parquet"
    suffix = Path(out).suffix.lower() if out is not None else None
    if out is not None and suffix not in (".parquet", ".csv", ".tsv"):
        raise ParamsError(f"--long {out}: the file name must end in .parquet, .csv or .tsv")
    if out is not None and Path(out).resolve() == path.resolve():
        raise ParamsError(f"--long {out}: that is the table it reads; write the long view to another file")
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
        from fclab.framework.report.summaries import csv_text  # text cells a spreadsheet would run are quoted

        write_text(out, csv_text(long, sep="," if suffix == ".csv" else "\t", float_format=None))
    return f"wrote {out}: {len(long)} rows"


def collapse_repeats(problems: list[str]) -> list[str]:
    """Problems that differ only in the subject (its sub- label, in paths too) as one line, the first
    with how many more subjects have it: a study-wide cause (a strategy the confounds cannot serve, a
    window's missing events) reads once, not once per run."""
    import re

    groups: dict[str, list[str]] = {}
    for msg in problems:
        groups.setdefault(re.sub(r"sub-[A-Za-z0-9]+", "sub-*", msg), []).append(msg)
    return [msgs[0] + (f" (and {counted(len(msgs) - 1, 'more subject')} alike)" if len(msgs) > 1 else "")
            for msgs in groups.values()]


def validate_inputs(params: Params) -> tuple[list[str], list[str]]:
    """(summary lines, problems) for every input of the extract stage; nothing is computed or written."""
    from fclab.framework.errors import FclabError
    from fclab.framework.extraction.engine import check_inputs, run_reference
    from fclab.framework.extraction.bids import discover
    from fclab.framework.stats.engine import check_names

    runs, problems = check_inputs(params.extract, [*params.connectivity.windows, *params.connectivity.sliding])
    problems += plugin_input_problems(params)
    try:  # names the stats section refers to: groups of participants.tsv, ROIs of the ROI set
        participants, found = discover(params.extract.data, [])
        groups = participants["group"].unique()
        first = next((r for r in found if all(f.is_file() for f in (r.mask or r.bold,))), None)
        grid = run_reference(first, params.extract.data.space)[0] if first else None
        names = roi_builder(params.extract).for_grid(grid, first.subject).names if first else None
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
    lines = [f"{params.extract.data.root}: {counted(len(subjects), 'subject')} ({per_group or 'none'}), "
             f"{counted(len(runs), 'run')} "
             f"({', '.join(f'{k} {v}' for k, v in runs['run'].value_counts().sort_index().items())})",
             f"TR (s): {trs or '-'}; volumes per run: "
             + (f"{int(vols.min())}–{int(vols.max())}" if len(vols) else "-")]
    return lines, collapse_repeats(problems)


def warm_caches(params: Params) -> str:
    """Do now the one-off work a machine's first run would do: compile the numba kernels (~2 s; numba
    keeps them in the source's __pycache__, or NUMBA_CACHE_DIR), build the anatomy of the simulated
    study's grid (~2 s; .fclab-cache/simulate/) and the ROI figures' 2 mm template (~0.5 s;
    .fclab-cache/report/). Like compiling bytecode at install time, it changes no result: each is
    rebuilt when its code or inputs change."""
    from fclab.framework.report.figures import mni152_background
    from fclab.framework.connectome.kernels import window_correlations
    from fclab.framework.simulation.study import Anatomy

    window_correlations(np.arange(6.0).reshape(3, 2) ** 2, np.array([0]), np.array([3]))
    Anatomy.cached(params.simulate.voxel_size_mm)
    mni152_background()
    return (f"compiled the sliding-window kernels; built the {params.simulate.voxel_size_mm:g} mm "
            "simulation anatomy and the report's template")


def power(params: Params, deltas: list[float], n_sims: int, edge: tuple[str, str] | None,
          window: str | None, n_ref: int | None, n_target: int | None, seed: int = 0,
          jobs: int | None = None, out_dir: Path = REPORT_DIR / "power", planted: bool = False):
    """Simulation-based power at ROI level for every test in params; writes power.csv and power.png.

    With ``planted``, the effects are simulate.effects (the default study's when unset) with their
    Δr multiplied by each value of ``deltas``; otherwise one edge and window get a decrease of Δz.
    """
    from dataclasses import replace

    from fclab.framework.report.effect_figures import power_figure
    from fclab.framework.report.summaries import csv_text
    from fclab.framework.simulation.power import detectable_effect, power_curve, power_planted
    from fclab.framework.simulation.roi_level import RoiStudy

    _cap(n_sims, "power --n-sims")
    sp = params.stats
    study = RoiStudy.from_params(params)
    study = replace(study, n_ref=n_ref or study.n_ref, n_target=n_target or study.n_target)
    if planted:
        curve, edge, window = power_planted(study, sp, plugins(params, "test"), params.simulate.planted(), deltas,
                                            n_sims, seed, executor(params, jobs))
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
        curve = power_curve(study, sp, plugins(params, "test"), deltas, n_sims, seed, edge, window,
                            executor(params, jobs))
        what = ""
    curve = curve[curve["term"] != "group"]  # the within-window group difference ignores baseline
    found = detectable_effect(curve)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = curve.assign(n_ref=study.n_ref, n_target=study.n_target, edge=f"{edge[0]}~{edge[1]}", window=window)
    write_text(out_dir / "power.csv", csv_text(table))
    ref, target = sp.groups
    power_figure(curve, found, f"{what}{edge[0]} – {edge[1]}, {window}\n{study.n_target} {target} vs "
                    f"{study.n_ref} {ref}, {n_sims} simulated studies per point", out_dir / "power.png")
    return table, found, study


CALIBRATION_BAND = (0.035, 0.065)


def _cap(value: int, key: str) -> None:
    """A command's count option within its cap (``params.capped``), as a one-line ParamsError."""
    try:
        capped(value, key)
    except ValueError as exc:
        raise ParamsError(str(exc)) from exc


def calibrate(params: Params, kind: str, n: int, seed: int = 0, jobs: int | None = None,
              tests: list | None = None, out_dir: Path = REPORT_DIR / "calibration") -> pd.DataFrame:
    """Null calibration of the stats tests in params: false-positive rate and FWER per test and term.

    ``kind`` ``relabel`` relabels the groups ``n`` times on this study's own connectivity values
    (results/connectivity/edges.parquet); ``roi`` simulates ``n`` realistic ROI-level null studies of
    the design params describes. Writes ``<kind>.csv`` with exact (Clopper–Pearson) 95 % CIs.
    """
    from fclab.framework.report.summaries import csv_text
    from fclab.framework.simulation.power import rates, relabel_many, simulate_many
    from fclab.framework.simulation.roi_level import RoiStudy

    _cap(n, "calibrate --n")
    sp = params.stats if tests is None else params.stats.model_copy(update={"tests": tests})
    chosen = build_all("test", sp.tests, get_registry())
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
        out = relabel_many(edges, sp, chosen, windows, n, seed, edge, window, executor(params, jobs))
    else:
        study = RoiStudy.from_params(params)
        edge = edge or study.rois[:2]
        out = simulate_many(study, sp, chosen, n, seed, edge, window, executor(params, jobs))
    r = rates(out)
    r = r[r["outcome"].isin(["single", "confirmatory", "exploratory"])].reset_index(drop=True)
    r["in_band"] = r["rate"].between(*CALIBRATION_BAND)
    write_text(out_dir / f"{kind}.csv", csv_text(r.assign(kind=kind, edge=f"{edge[0]}~{edge[1]}", window=window,
                                                          alpha=sp.alpha)))
    return r


@locked
def run_all(params: Params, jobs: int | None = None) -> Path:
    """Every stage in order, in this process, without DVC. The default study is simulated first."""
    if params.analyses_simulated_study():
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
