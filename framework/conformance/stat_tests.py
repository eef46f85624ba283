"""The statistical-test contract's checks (docs/plugins.md, "Statistical tests"), one function each,
on the kit's fake study."""

from __future__ import annotations

import json
from functools import cached_property

import numpy as np
import pandas as pd

from fclab.framework.conformance.kit import Conformance, Step, Unmet, reads_undeclared, run_steps
from fclab.framework.conformance.study import FAKE_ROIS, fake_design, fake_edges
from fclab.framework.connectome.edgestore import Edges
from fclab.framework.errors import FclabError
from fclab.framework.pluginhost.contracts import RESULT_COLUMNS, Metric, StatTest


NUMERIC_COLUMNS = ("estimate", "se", "stat", "df", "p", "p_adj", "ci_low", "ci_high", "effect_size",
                   "effect_size_ci_low", "effect_size_ci_high")


class StatTestCase:
    """What the test checks share: ``fake_edges``' study (Pearson's Fisher z, or ``metric``'s values),
    its design, and the test's result on it (computed when a check first asks for it)."""

    def __init__(self, test: StatTest, metric: Metric | None = None, seed: int = 0):
        self.test, self.seed = test, seed
        self.edges = fake_edges(metric, seed=seed)
        self.design = fake_design(self.edges, seed=seed)

    def given(self, table):
        """A test that declares packed_edges gets the packed form, as the stage gives it."""
        return Edges.from_long(table) if self.test.packed_edges else table

    @cached_property
    def res(self) -> pd.DataFrame:
        res = self.test.run(self.given(self.edges), self.design)
        if not isinstance(res, pd.DataFrame) or res.empty:
            raise Unmet(f"run() returned {type(res).__name__}{' (empty)' if isinstance(res, pd.DataFrame) else ''}")
        return res


def check_test_runs(case: StatTestCase) -> str | None:
    try:
        case.res
    except Unmet as exc:
        return str(exc)
    return None


def check_test_columns(case: StatTestCase) -> str | None:
    res = case.res
    needed = ["metric", "roi_a", "roi_b", "window", "term", "estimate", "n"]
    missing = [c for c in needed if c not in res.columns]
    if missing:
        return f"missing column(s) {', '.join(missing)}"
    unknown = [c for c in res.columns if c not in RESULT_COLUMNS]
    if unknown:
        return f"columns not in the contract (RESULT_COLUMNS): {', '.join(unknown)}"
    for c in NUMERIC_COLUMNS:
        if c in res.columns and not (pd.api.types.is_numeric_dtype(res[c]) or res[c].isna().all()):
            return f"column {c!r} is {res[c].dtype}, not numeric"
    n = pd.to_numeric(res["n"], errors="coerce")
    if n.isna().any() or (n < 1).any() or not np.allclose(n, np.round(n)):
        return "column 'n' must be a whole number of subjects (≥ 1) on every row"
    return None


def check_test_keys(case: StatTestCase) -> str | None:
    res, design, test, edges = case.res, case.design, case.test, case.edges
    bad_w = sorted(set(res["window"]) - set(design.windows) - {"trend"})
    if bad_w:
        return f"window(s) {bad_w} are not windows of the study"
    pairs = set(zip(edges["roi_a"], edges["roi_b"]))
    if not set(zip(res["roi_a"], res["roi_b"])) <= pairs:
        return "rows for ROI pairs that are not edges of the study"
    if test.terms and not set(res["term"]) <= set(test.terms):
        return f"terms {sorted(set(res['term']) - set(test.terms))} not in the declared terms {test.terms}"
    if res.duplicated(["metric", "roi_a", "roi_b", "window", "term"]).any():
        return "more than one row per metric, edge, window and term"
    return None


def check_test_p_values(case: StatTestCase) -> str | None:
    res = case.res
    p = pd.to_numeric(res["p"], errors="coerce") if "p" in res else pd.Series(np.nan, index=res.index)
    if ((p < 0) | (p > 1)).any():
        return f"p outside [0, 1]: {p[(p < 0) | (p > 1)].iloc[0]}"
    est = pd.to_numeric(res["estimate"], errors="coerce")
    reason = res["reason"] if "reason" in res else pd.Series(None, index=res.index)
    blank = est.isna() & (reason.isna() | (reason.astype(str).str.strip() == ""))
    if blank.any():
        return f"{int(blank.sum())} row(s) without an estimate and without a reason"
    if p.isna().all() and est.isna().all():
        return "no row has an estimate or a p-value"
    return None


def check_test_intervals(case: StatTestCase) -> str | None:
    res = case.res
    if "ci_low" not in res or "ci_high" not in res:
        return None
    lo, hi, est = (pd.to_numeric(res[c], errors="coerce") for c in ("ci_low", "ci_high", "estimate"))
    ok = lo.isna() | hi.isna() | est.isna() | ((lo <= est + 1e-12) & (est <= hi + 1e-12))
    if not ok.all():
        r = res[~ok].iloc[0]
        return f"ci_low ≤ estimate ≤ ci_high fails at {r['roi_a']}–{r['roi_b']} {r['window']}"
    return None


def check_test_deterministic(case: StatTestCase) -> str | None:
    res = case.res
    again = case.test.run(case.given(case.edges), case.design)
    if not res.reset_index(drop=True).equals(again.reset_index(drop=True)):
        return "two runs on the same study differ (seed any randomness)"
    return None


def check_test_packed_as_long(case: StatTestCase) -> str | None:
    if not case.test.packed_edges:
        return None
    res = case.res
    from_long = case.test.run(case.edges, case.design).reset_index(drop=True)
    if not from_long.equals(res.reset_index(drop=True)):
        return "results from the packed edges differ from those from the long table"
    return None


def check_test_effect_sign(case: StatTestCase) -> str | None:
    res = case.res
    sel = ((res["roi_a"] == FAKE_ROIS[0]) & (res["roi_b"] == FAKE_ROIS[1]) & (res["window"] != "trend")
           & (res["window"] != case.design.baseline_window))
    est = pd.to_numeric(res.loc[sel, "estimate"], errors="coerce")
    if sel.any() and est.notna().any() and not (est.dropna() > 0).all():
        return (f"the planted increase (target − reference) of {FAKE_ROIS[0]}–{FAKE_ROIS[1]} has estimates "
                f"{est.round(3).tolist()}")
    return None


def check_test_missing_window(case: StatTestCase) -> str | None:
    edges = case.edges
    gone = edges[~((edges["subject"] == "s00") & (edges["window"] == "w1"))]
    r = case.test.run(case.given(gone), fake_design(gone, seed=case.seed))
    if r.empty:
        return "no rows when one subject misses a window"
    return None


def check_test_covariates(case: StatTestCase) -> str | None:
    r = case.test.run(case.given(case.edges), fake_design(case.edges, covariates=("age", "sex"), seed=case.seed))
    if r.empty:
        return "no rows with covariates age and sex"
    return None


def check_test_group_of_one(case: StatTestCase) -> str | None:
    edges = case.edges
    small = edges[(edges["group"] == "control") | (edges["subject"] == "s08")]
    try:
        r = case.test.run(case.given(small), fake_design(small, seed=case.seed))
    except FclabError as exc:
        msg = str(exc)
        return None if "\n" not in msg.strip() else "the error is more than one line"
    p = pd.to_numeric(r["p"], errors="coerce") if "p" in r else pd.Series(dtype=float)
    reason = r["reason"] if "reason" in r else pd.Series(None, index=r.index)
    if p.notna().any() or reason.isna().any():
        return "a group of one subject gave p-values (or rows without a reason) instead of an error"
    return None


def check_test_as_primary(case: StatTestCase) -> str | None:
    from fclab.framework.params import StatsParams
    from fclab.framework.report.summaries import headline_metrics, metrics_payload
    from fclab.framework.stats.engine import run_stats

    test, design, edges = case.test, case.design, case.edges
    p = StatsParams(groups=design.groups, baseline_window=design.baseline_window, tests=[test.name],
                    confirmatory=[tuple(sorted(FAKE_ROIS[:2]))])
    table = run_stats(p, edges, list(design.windows), [test], {"pearson": "fisher_z"}, design.subjects)
    if table.empty:
        return "run_stats produced no rows"
    metric_name = str(edges["metric"].iloc[0])
    payload = metrics_payload(table, test.name, metric_name, {g: 8 for g in design.groups},
                              pd.DataFrame({"excluded": [False]}))
    if not payload["edges"]:
        return "no confirmatory rows for the report's headline"
    json.dumps(payload, allow_nan=False)  # NaN or inf would make the JSON invalid
    json.dumps(headline_metrics(payload, design.alpha), allow_nan=False)
    return None


def check_test_crossover(case: StatTestCase) -> str | None:
    """A test that lists ``"crossover"`` in ``designs``: on a small simulated crossover study (ROI level,
    a planted within-subject increase of one edge in the target condition) it gives rows of its
    declared ``crossover_terms`` with p in [0, 1], at most the subjects with both sessions as ``n``,
    and the planted sign; a test that does not is refused by the stage in one line."""
    from fclab.framework.params import StatsParams
    from fclab.framework.params.models import EffectSpec
    from fclab.framework.simulation.roi_level import RoiStudy, simulate_crossover_edges
    from fclab.framework.stats.engine import run_stats

    test = case.test
    groups = ("midazolam", "ketamine")
    p = StatsParams(design="crossover", groups=groups, tests=[test.name], confirmatory=[("Left_Amygdala", "vmPFC")])
    effect = EffectSpec(roi_a="Left_Amygdala", roi_b="vmPFC", group="ketamine", delta_r=0.5, course="step", end_min=40.0)
    study = RoiStudy(n_ref=5, n_target=5, groups=groups, design="crossover", effects=(effect,))
    edges, sessions = simulate_crossover_edges(study, case.seed, 0.05)
    if "crossover" not in test.designs:
        try:
            run_stats(p, edges, list(study.windows), [test], sessions=sessions)
        except FclabError as exc:
            return None if "\n" not in str(exc).strip() else "the refusal is more than one line"
        return "a test without \"crossover\" in designs was run on a crossover study"
    if not test.crossover_terms:
        return "designs lists \"crossover\" but crossover_terms declares no term"
    res = run_stats(p, edges, list(study.windows), [test], sessions=sessions)
    if res.empty:
        return "no rows on a crossover study"
    if not set(res["term"]) <= set(test.crossover_terms):
        return f"terms {sorted(set(res['term']) - set(test.crossover_terms))} not in crossover_terms"
    pv = pd.to_numeric(res["p"], errors="coerce")
    if ((pv < 0) | (pv > 1)).any():
        return "p outside [0, 1] on a crossover study"
    if (pd.to_numeric(res["n"], errors="coerce") > 10).any():
        return "n above the 10 subjects of the crossover study (a session counted as a subject?)"
    sel = (res["roi_a"] == "Left_Amygdala") & (res["roi_b"] == "vmPFC") & (res["window"] != "trend")
    est = pd.to_numeric(res.loc[sel, "estimate"], errors="coerce").dropna()
    if len(est) and not (est > 0).all():
        return f"the planted within-subject increase (target − reference) has estimates {est.round(3).tolist()}"
    return None


def check_test_reads_declared(case: StatTestCase) -> str | None:
    """Running on the fake study opens only declared inputs (``kit.reads_undeclared``)."""
    return reads_undeclared(case.test, lambda fresh: fresh.run(case.given(case.edges), case.design))


def stat_test_checks(test: StatTest):
    """The statistical-test contract's checks (docs/plugins.md, "Statistical tests"), in order."""
    yield Step("run() on a small study returns result rows", check_test_runs, gate=True)
    yield Step("documented columns and types (RESULT_COLUMNS; n on every row)", check_test_columns)
    yield Step("rows name study edges and windows, declared terms, one row per key", check_test_keys)
    yield Step("p in [0, 1] (or absent); a row without an estimate carries a reason", check_test_p_values)
    yield Step("ci_low ≤ estimate ≤ ci_high", check_test_intervals)
    yield Step("deterministic", check_test_deterministic)
    yield Step("opens only the input files it declares (file-open audit)", check_test_reads_declared)
    yield Step("packed_edges: the same results from the packed and the long table", check_test_packed_as_long)
    yield Step("estimates have the sign of the planted group difference (target − reference)", check_test_effect_sign)
    yield Step("a subject missing a window is handled", check_test_missing_window)
    yield Step("covariates (numeric and categorical) are accepted", check_test_covariates)
    yield Step("a group of one subject is a one-line error (or rows with reasons, no p)", check_test_group_of_one)
    yield Step("crossover design: its declared crossover terms and the planted sign, or a one-line refusal",
               check_test_crossover)
    yield Step("goes through the stats stage and the report's headline (metrics.json) as the primary test",
               check_test_as_primary)


def check_stat_test(test: StatTest, metric: Metric | None = None, seed: int = 0,
                    only: str | None = None) -> Conformance:
    """The statistical-test contract (docs/plugins.md, "Statistical tests"), on ``fake_edges``' study
    (Pearson's Fisher z, or ``metric``'s values); ``only``: one check by name."""
    return run_steps(Conformance("test", test.name), stat_test_checks(test), StatTestCase(test, metric, seed), only)
