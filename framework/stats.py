"""Stage ``stats``: run every selected test and adjust p-values within each declared family."""

from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from framework.contracts import RESULT_COLUMNS, Design, StatTest
from framework.errors import DataError
from framework.params import StatsParams, plugin_spec
from framework.registry import get_registry

TEST_COLUMNS = RESULT_COLUMNS + ["family", "scale"]


def build_tests(p: StatsParams) -> list[StatTest]:
    registry = get_registry()
    out = []
    for i, spec in enumerate(p.tests):
        name, opts = plugin_spec(spec, f"stats.tests[{i}]")
        cls = registry.get("test", name, f"stats.tests[{i}]")
        out.append(cls(cls.Params.model_validate(opts)))
    return out


def make_design(p: StatsParams, edges: pd.DataFrame, windows: list[str]) -> Design:
    present = set(edges["group"].unique())
    for g in p.groups:
        if g not in present:
            raise DataError(f"stats.groups: group {g!r} has no subjects in the data (found {sorted(present)})")
    if p.baseline_window not in set(edges["window"]):
        raise DataError(f"stats.baseline_window: no {p.baseline_window!r} window in the edges")
    subjects = edges[["subject", "group"]].drop_duplicates().reset_index(drop=True)
    subjects = subjects[subjects["group"].isin(p.groups)]
    return Design(groups=tuple(p.groups), baseline_window=p.baseline_window, windows=tuple(windows),
                  subjects=subjects, alpha=p.alpha)


def families(tests: pd.DataFrame, confirmatory: list[tuple[str, str]]) -> pd.Series:
    """'confirmatory' for the pre-registered edges, 'exploratory' for the rest."""
    wanted = {frozenset(pair) for pair in confirmatory}
    pairs = [frozenset(x) for x in zip(tests["roi_a"], tests["roi_b"])]
    return pd.Series(["confirmatory" if x in wanted else "exploratory" for x in pairs], index=tests.index)


def adjust(tests: pd.DataFrame, method: str) -> pd.DataFrame:
    """Adjust p within each (test, metric, term, family): the family is its edges × windows."""
    tests = tests.copy()
    tests["p_adj"] = np.nan
    tests["adj_method"] = method
    for _, idx in tests.groupby(["test", "metric", "term", "family"], sort=False).groups.items():
        p = tests.loc[idx, "p"].to_numpy()
        ok = np.isfinite(p)
        adj = np.full(p.shape, np.nan)
        if ok.any():
            adj[ok] = multipletests(p[ok], method=method)[1]
        tests.loc[idx, "p_adj"] = adj
    return tests


def run_stats(p: StatsParams, edges: pd.DataFrame, windows: list[str], tests: list[StatTest],
              scales: dict[str, str] | None = None) -> pd.DataFrame:
    edges = edges[edges["group"].isin(p.groups)]
    design = make_design(p, edges, windows)
    frames = []
    available = set(edges.columns) | set(design.subjects.columns)
    for test in tests:
        missing = [c for c in test.requires if c not in available]
        if missing:
            raise DataError(f"stats.tests: {test.name!r} needs column(s) {', '.join(missing)}, not in the data")
        res = test.run(edges, design)
        if res.empty:
            continue
        res.insert(0, "test", test.name)
        frames.append(res)
    if not frames:
        raise DataError("stats: no test produced any result")
    out = pd.concat(frames, ignore_index=True)
    for col in RESULT_COLUMNS:
        if col not in out.columns:
            out[col] = None if col in ("effect_size_kind",) else np.nan
    out["family"] = families(out, p.confirmatory)
    out["scale"] = out["metric"].map(scales or {}).fillna("unknown")  # what the estimates are in
    out = adjust(out, p.correction)
    out["n"] = out["n"].astype(np.int32)
    return out[TEST_COLUMNS].reset_index(drop=True)
