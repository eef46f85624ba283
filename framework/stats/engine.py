"""Stage ``stats``: run every selected test and adjust p-values within each declared family."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from fclab.framework.pluginhost.contracts import RESULT_COLUMNS, TEST_COLUMNS, TEST_INPUTS, Design, StatTest
from fclab.framework.connectome.edgestore import Edges
from fclab.framework.errors import DataError, ParamsError, PluginError
from fclab.framework.executor import progress
from fclab.framework.params import StatsParams
from fclab.framework.stats.adjust import adjust
from fclab.framework.errors import did_you_mean



def subject_table(participants: pd.DataFrame, run_qc: pd.DataFrame | None) -> pd.DataFrame:
    """One row per subject: participants.tsv's columns plus mean_fd over the subject's runs."""
    table = participants.copy()
    if run_qc is not None and "mean_fd" in run_qc:
        fd = run_qc.groupby("subject")["mean_fd"].mean()
        table["mean_fd"] = table["subject"].map(fd)
    return table


def make_design(p: StatsParams, edges: pd.DataFrame, windows: list[str],
                subjects: pd.DataFrame | None = None, sliding: pd.DataFrame | None = None,
                run_qc: pd.DataFrame | None = None, sessions: pd.DataFrame | None = None) -> Design:
    """The study as tests see it: one row per analysed subject with every column of ``subjects``
    (participants.tsv and mean_fd), and the sliding rows and run QC for the tests that ask."""
    # Group sizes are checked by each test (Design.check), so the error names the test.
    edges = edges.rows if isinstance(edges, Edges) else edges
    if p.baseline_window not in set(edges["window"]):
        raise DataError(f"stats.baseline_window: no {p.baseline_window!r} window in the edges")
    table = edges[["subject", "group"]].drop_duplicates().reset_index(drop=True)
    table = table[table["group"].isin(p.groups)].reset_index(drop=True)
    if p.covariates and subjects is None:
        raise DataError("stats.covariates: no participants table to take covariates from")
    if subjects is not None:
        for c in p.covariates:
            if c not in subjects.columns:
                have = ", ".join(c for c in subjects.columns if c not in ("subject", "group"))
                raise DataError(f"stats.covariates: no column {c!r} in the participants table (have: {have})")
        extra = subjects.drop(columns=[c for c in ("group",) if c in subjects.columns])
        table = table.merge(extra.drop_duplicates("subject"), on="subject", how="left")
    kind, checked = "parallel", None
    if p.design == "crossover":
        kind, table, checked = "crossover", *crossover_subjects(p, edges, table, sessions)
    return Design(groups=tuple(p.groups), baseline_window=p.baseline_window, windows=tuple(windows),
                  subjects=table, alpha=p.alpha, covariates=tuple(p.covariates),
                  confirmatory=frozenset(frozenset(pair) for pair in p.confirmatory),
                  family_by=tuple(p.family), sliding=sliding, run_qc=run_qc, kind=kind, sessions=checked)


def crossover_subjects(p: StatsParams, edges: pd.DataFrame, table: pd.DataFrame,
                       sessions: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A crossover study's subjects (one row each, with the participants' columns) and its checked
    sessions table, restricted to the subjects whose edges have both conditions' sessions."""
    from fclab.framework.stats.crossover import check_sessions

    if sessions is None:
        raise DataError("stats.design: crossover needs the sessions table (subject, session, condition, period)")
    if "session" not in edges.columns:
        raise DataError("stats.design: crossover needs edges with a session column (one scan session per condition)")
    checked = check_sessions(sessions, tuple(p.groups), "sessions table")
    seen = edges[["subject", "session"]].drop_duplicates().astype(str)
    known = seen.merge(checked[["subject", "session"]], how="left", indicator=True)
    stray = known[known["_merge"] == "left_only"]
    if len(stray):
        r = stray.iloc[0]
        raise DataError(f"sessions table: sub-{r['subject']} ses-{r['session']} has edges but no row "
                        "(condition and period unknown)")
    both = seen.groupby("subject")["session"].nunique()
    keep = both.index[both == 2]
    checked = checked[checked["subject"].isin(keep)].reset_index(drop=True)
    subjects = pd.DataFrame({"subject": list(dict.fromkeys(checked["subject"]))})
    extra = table.drop(columns=[c for c in ("group",) if c in table.columns]).drop_duplicates("subject")
    subjects = subjects.merge(extra, on="subject", how="left")
    return subjects, checked


def check_names(p: StatsParams, groups, roi_names) -> None:
    """stats.groups must be groups of the data and stats.confirmatory edges pairs of its ROIs: a typo
    would otherwise drop a group or move a pre-registered edge into the exploratory family."""
    groups, roi_names = sorted(set(map(str, groups))), list(dict.fromkeys(roi_names))
    for g in p.groups:
        if g not in groups:
            raise ParamsError(f"stats.groups: {g!r} is not a group of the data ({', '.join(groups)})"
                              f"{did_you_mean(g, groups)}")
    for i, pair in enumerate(p.confirmatory):
        for k, name in enumerate(pair):
            if name not in roi_names:
                raise ParamsError(f"stats.confirmatory[{i}][{k}]: {name!r} is not an ROI "
                                  f"({', '.join(roi_names)}){did_you_mean(name, roi_names)}")
        if pair[0] == pair[1]:
            raise ParamsError(f"stats.confirmatory[{i}]: an edge needs two different ROIs (got {pair[0]!r} twice)")
    seen = {}
    for i, pair in enumerate(p.confirmatory):
        key = frozenset(pair)
        if key in seen:
            raise ParamsError(f"stats.confirmatory[{i}]: the edge {pair[0]} – {pair[1]} is listed twice "
                              f"(also stats.confirmatory[{seen[key]}])")
        seen[key] = i


def run_stats(p: StatsParams, edges: pd.DataFrame | Edges, windows: list[str], tests: list[StatTest],
              scales: dict[str, str] | None = None, subjects: pd.DataFrame | None = None,
              sliding: pd.DataFrame | Edges | None = None, run_qc: pd.DataFrame | None = None,
              sessions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every test on ``edges`` (the fixed windows; long or packed) and the p-values adjusted within
    each family. A test that does not declare ``packed_edges`` gets packed edges as the long table."""
    if isinstance(edges, Edges):
        check_names(p, edges.rows["group"].unique(), edges.rois)
        edges = edges.where(groups=p.groups)
    else:
        check_names(p, edges["group"].unique(), [*edges["roi_a"].unique(), *edges["roi_b"].unique()])
        edges = edges[edges["group"].isin(p.groups)]
    if isinstance(sliding, Edges):
        sliding = sliding.where(groups=p.groups).long()
    elif sliding is not None:
        sliding = sliding[sliding["group"].isin(p.groups)].reset_index(drop=True)
    design = make_design(p, edges, windows, subjects, sliding, run_qc, sessions)
    refused = [t.name for t in tests if design.kind not in t.designs]
    if refused:
        able = sorted(t.name for t in tests if design.kind in t.designs)
        raise ParamsError(f"stats.tests: {refused[0]} does not handle a {design.kind} design "
                          f"(stats.design; of the selected tests these do: {', '.join(able) or 'none'})")
    long = None
    frames = []
    available = set(edges.columns) | set(design.subjects.columns)
    for test in progress(tests, len(tests), "stats: tests"):
        missing = [c for c in test.requires if c not in available]
        if missing:
            raise DataError(f"stats.tests: {test.name!r} needs column(s) {', '.join(missing)}, not in the data")
        given = {k: getattr(design, k) if k in test.uses else None for k in TEST_INPUTS}
        given_edges = edges
        if isinstance(edges, Edges) and not test.packed_edges:
            long = edges.long() if long is None else long
            given_edges = long
        res = test.run(given_edges, dataclasses.replace(design, **given))
        if res.empty:
            continue
        res.insert(0, "test", test.name)
        frames.append(res)
    if not frames:
        raise DataError("stats: no test produced any result")
    out = pd.concat(frames, ignore_index=True)
    for col in RESULT_COLUMNS:
        if col not in out.columns:
            out[col] = None if col in ("effect_size_kind", "reason", "adj_method") else np.nan
    out["family"] = design.family(out["roi_a"], out["roi_b"])
    out["scale"] = out["metric"].map(scales or {}).fillna("unknown")  # what the estimates are in
    out = adjust(out, p.correction, p.family)
    n = pd.to_numeric(out["n"], errors="coerce")
    if n.isna().any():
        bad = out.loc[n.isna(), "test"].iloc[0]
        raise PluginError(f"stats.tests: {bad}: rows without 'n' (the number of subjects; the StatTest contract "
                          "requires it on every row)")
    out["n"] = n.astype(np.int32)
    return out[TEST_COLUMNS].reset_index(drop=True)
