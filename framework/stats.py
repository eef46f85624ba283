"""Stage ``stats``: run every selected test and adjust p-values within each declared family."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy  # scipy.stats loads on first use

from fclab.framework.contracts import RESULT_COLUMNS, TEST_INPUTS, Design, StatTest
from fclab.framework.edgestore import Edges
from fclab.framework.errors import DataError, ParamsError, PluginError
from fclab.framework.params import StatsParams, did_you_mean, plugin_spec
from fclab.framework.registry import get_registry

TEST_COLUMNS = RESULT_COLUMNS + ["family", "scale"]


def build_tests(p: StatsParams) -> list[StatTest]:
    registry = get_registry()
    out = []
    for i, spec in enumerate(p.tests):
        name, opts = plugin_spec(spec, f"stats.tests[{i}]")
        cls = registry.get("test", name, f"stats.tests[{i}]")
        out.append(cls(cls.Params.model_validate(opts)))
    return out


def subject_table(participants: pd.DataFrame, run_qc: pd.DataFrame | None) -> pd.DataFrame:
    """One row per subject: participants.tsv's columns plus mean_fd over the subject's runs."""
    table = participants.copy()
    if run_qc is not None and "mean_fd" in run_qc:
        fd = run_qc.groupby("subject")["mean_fd"].mean()
        table["mean_fd"] = table["subject"].map(fd)
    return table


def make_design(p: StatsParams, edges: pd.DataFrame, windows: list[str],
                subjects: pd.DataFrame | None = None, sliding: pd.DataFrame | None = None,
                run_qc: pd.DataFrame | None = None) -> Design:
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
    return Design(groups=tuple(p.groups), baseline_window=p.baseline_window, windows=tuple(windows),
                  subjects=table, alpha=p.alpha, covariates=tuple(p.covariates),
                  confirmatory=frozenset(frozenset(pair) for pair in p.confirmatory),
                  family_by=tuple(p.family), sliding=sliding, run_qc=run_qc)


def _positions(column: pd.Series, values) -> np.ndarray:
    """Position of each entry of ``column`` in ``values`` (−1 if absent); fast for categoricals."""
    index = pd.Index(values)
    if isinstance(column.dtype, pd.CategoricalDtype):
        lut = np.append(index.get_indexer(column.cat.categories), -1)
        return lut[column.cat.codes.to_numpy()]
    return index.get_indexer(column)


def _codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and their labels; categoricals use their own codes (no hashing)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), np.asarray(column.cat.categories, dtype=object)
    codes, labels = pd.factorize(column)
    return codes, np.asarray(labels, dtype=object)


def edge_cube(edges: pd.DataFrame | Edges, design: Design) -> tuple[pd.DataFrame, np.ndarray]:
    """The edge table as an array: keys (metric, roi_a, roi_b) and values (E, subjects, windows).

    ``edges`` is the long table or the packed ``Edges`` (read straight into the array, no long table).
    Subjects and windows follow ``design.subjects`` and ``design.windows``; NaN marks a value that
    is missing or absent. Edges are ordered by (metric, roi_a, roi_b) codes: category order for
    categorical columns, order of first appearance otherwise (for ``Edges``: metrics as stored, the
    upper triangle in ROI order, which is the same order for a table fclab wrote).
    """
    if isinstance(edges, Edges):
        return edges.cube(design.subjects["subject"], design.windows)
    s_codes = _positions(edges["subject"], design.subjects["subject"])
    w_codes = _positions(edges["window"], design.windows)
    (m, lm), (a, la), (b, lb) = (_codes(edges[c]) for c in ("metric", "roi_a", "roi_b"))
    sel = (s_codes >= 0) & (w_codes >= 0) & (m >= 0) & (a >= 0) & (b >= 0)
    values = edges["value"].to_numpy(float)
    if not sel.all():
        s_codes, w_codes, m, a, b, values = (x[sel] for x in (s_codes, w_codes, m, a, b, values))
    space = len(lm) * len(la) * len(lb)
    itype = np.int32 if space < 2**31 else np.int64
    m, a, b = (x.astype(itype, copy=False) for x in (m, a, b))
    combined = (m * itype(len(la)) + a) * itype(len(lb)) + b
    if space <= 50_000_000:  # a dense lookup table: linear time, no hashing
        present = np.zeros(space, bool)
        present[combined] = True
        uniq = np.flatnonzero(present)
        lut = np.full(space, -1, itype)
        lut[uniq] = np.arange(len(uniq))
        e_codes = lut[combined]
    else:
        uniq, e_codes = np.unique(combined, return_inverse=True)
    mi, rest = np.divmod(uniq, len(la) * len(lb))
    ai, bi = np.divmod(rest, len(lb))
    keys = pd.DataFrame({"metric": lm[mi].astype(str), "roi_a": la[ai].astype(str), "roi_b": lb[bi].astype(str)})
    S, W = len(design.subjects), len(design.windows)
    cube = np.full(len(keys) * S * W, np.nan)
    flat = e_codes.astype(np.int64) * S
    flat += s_codes
    flat *= W
    flat += w_codes
    cube[flat] = values
    return keys, cube.reshape(len(keys), S, W)


def change_cube(edges: pd.DataFrame | Edges, design: Design) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Keys, the change from baseline (E, subjects, non-baseline windows) and a target-group mask."""
    keys, cube = edge_cube(edges, design)
    k = design.windows.index(design.baseline_window)
    others = [i for i in range(len(design.windows)) if i != k]
    delta = cube[:, :, others] - cube[:, :, k : k + 1]
    return keys, delta, (design.subjects["group"] == design.groups[1]).to_numpy()


def long_rows(keys: pd.DataFrame, windows: list[str], term: str, columns: dict[str, np.ndarray],
              **extra) -> pd.DataFrame:
    """Result rows from (E, windows) arrays: window-major, edges in ``keys`` order within a window."""
    W = len(windows)
    frame = pd.concat([keys] * W, ignore_index=True)
    frame["window"] = np.repeat(windows, len(keys))
    frame["term"] = term
    for k, v in {**columns, **extra}.items():
        frame[k] = np.asarray(v).T.ravel()
    return frame


def adjusted_p(p: np.ndarray, method: str) -> np.ndarray:
    """Holm, Bonferroni or Benjamini–Hochberg adjusted p-values (finite ``p`` only).

    Equal to statsmodels' ``multipletests``, which is not used here because every call runs a full
    ``gc.collect()`` (~70 ms), which dominates simulation loops.
    """
    m = len(p)
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    if method == "fdr_bh":
        return scipy.stats.false_discovery_control(p, method="bh")
    order = np.argsort(p, kind="stable")  # holm: step-down, monotone
    steps = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(steps, 1.0)
    return out


def adjust(tests: pd.DataFrame, method: str, by=("test", "metric", "term")) -> pd.DataFrame:
    """Adjust p within each family: the rows sharing ``by`` and the confirmatory/exploratory label.

    Rows whose test already adjusted them (permutation max-T, NBS) keep their p_adj and adj_method.
    """
    tests = tests.copy()
    own = tests["adj_method"].notna() if "adj_method" in tests else pd.Series(False, index=tests.index)
    if "p_adj" not in tests:
        tests["p_adj"] = np.nan
    tests["adj_method"] = tests["adj_method"].where(own, method) if "adj_method" in tests else method
    for _, idx in tests[~own].groupby([*by, "family"], sort=False).groups.items():
        p = tests.loc[idx, "p"].to_numpy()
        ok = np.isfinite(p)
        adj = np.full(p.shape, np.nan)
        if ok.any():
            adj[ok] = adjusted_p(p[ok], method)
        tests.loc[idx, "p_adj"] = adj
    return tests


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
              sliding: pd.DataFrame | Edges | None = None, run_qc: pd.DataFrame | None = None) -> pd.DataFrame:
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
    design = make_design(p, edges, windows, subjects, sliding, run_qc)
    long = None
    frames = []
    available = set(edges.columns) | set(design.subjects.columns)
    for test in tests:
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
