"""The metric contract's checks (docs/plugins.md, "Metrics"), one function each, on Gaussian signals."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from fclab.framework.conformance.kit import Conformance, Step, Unmet, reads_undeclared, run_steps
from fclab.framework.conformance.study import as_outputs, window_series
from fclab.framework.pluginhost.contracts import Metric


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


class MetricCase:
    """What the metric checks share, each part computed when a check first asks for it: Gaussian test
    signals of ``n_rois`` ROIs correlated 0.3, long enough for the metric, and its output on one window."""

    def __init__(self, metric: Metric, n_rois: int = 5, tr: float = 2.0, seed: int = 0):
        self.metric, self.R, self.tr = metric, n_rois, tr
        self.rng = np.random.default_rng(seed)
        self.corr = np.full((n_rois, n_rois), 0.3) + 0.7 * np.eye(n_rois)
        self.scales = metric.scale_info()
        self._fitted = False

    @cached_property
    def n_min(self) -> int:
        """The shortest window ``problem()`` accepts."""
        n = next((n for n in range(1, 513) if self.metric.problem(n, self.tr) is None), None)
        if n is None:
            raise Unmet("problem() refuses every length up to 512 volumes")
        return n

    @cached_property
    def T(self) -> int:
        return max(4 * self.n_min, 120)

    @cached_property
    def ts(self) -> np.ndarray:
        """Six (T, R) windows."""
        return window_series(self.rng, 6, self.T, self.R, self.corr)

    def fit(self) -> None:
        """A group-fitted metric's fit on the first three windows (once)."""
        if self.metric.group_fit and not self._fitted:
            self._fitted = True
            self.metric.fit(list(self.ts[:3]), self.tr)

    def compute(self, x) -> dict[str, np.ndarray]:
        self.fit()
        return as_outputs(self.metric.compute(x, self.tr))

    @cached_property
    def single(self) -> dict[str, np.ndarray]:
        """The outputs for the first window."""
        return self.compute(self.ts[0])


def check_metric_minimum_length(case: MetricCase) -> str | None:
    metric, tr = case.metric, case.tr
    try:
        n_min = case.n_min
    except Unmet as exc:
        return str(exc)
    bad = [n for n in range(n_min, n_min + 64) if metric.problem(n, tr) is not None]
    if bad:
        return f"problem() accepts {n_min} volumes but refuses {bad[0]}"
    if n_min > 1:
        why = metric.problem(n_min - 1, tr)
        if not (isinstance(why, str) and why.strip()):
            return f"problem({n_min - 1}) should be a reason (a non-empty string), got {why!r}"
    return None


def check_metric_fit(case: MetricCase) -> str | None:
    case.fit()
    return None


def check_metric_single_window(case: MetricCase) -> str | None:
    res, metric = case.single, case.metric
    if set(res) != set(metric.outputs()):
        return f"outputs {sorted(res)} but outputs() declares {sorted(metric.outputs())}"
    for k, v in res.items():
        if v.shape != (case.R, case.R):
            return f"output {k!r}: shape {v.shape} for a ({case.T}, {case.R}) window, expected ({case.R}, {case.R})"
    return None


def check_metric_batch_dimensions(case: MetricCase) -> str | None:
    T, R = case.T, case.R
    stacked = case.ts.reshape(2, 3, T, R)
    res = case.compute(stacked)
    for k, v in res.items():
        if v.shape != (2, 3, R, R):
            return f"output {k!r}: shape {v.shape} for input (2, 3, {T}, {R})"
        for a in range(2):
            for b in range(3):
                why = _same(v[a, b], case.compute(stacked[a, b])[k])
                if why:
                    return f"output {k!r}, batch item ({a}, {b}) differs from the single-window call: {why}"
    return None


def check_metric_symmetry(case: MetricCase) -> str | None:
    metric = case.metric
    for k, v in case.single.items():
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


def check_metric_scale_range(case: MetricCase) -> str | None:
    for k, v in case.single.items():
        sc = case.scales[k]
        off = _off(v)
        off = off[np.isfinite(off)]
        if sc.low is not None and (off < sc.low - 1e-9).any():
            return f"output {k!r}: {off.min():.4g} below the declared range of scale {sc.name!r} ({sc.low:g})"
        if sc.high is not None and (off > sc.high + 1e-9).any():
            return f"output {k!r}: {off.max():.4g} above the declared range of scale {sc.name!r} ({sc.high:g})"
        if sc.signed is False and (off < 0).any():
            return f"output {k!r}: negative value {off.min():.4g} on non-negative scale {sc.name!r}"
    return None


def check_metric_deterministic(case: MetricCase) -> str | None:
    single = case.single
    again = case.compute(case.ts[0])
    for k, v in single.items():
        if not np.array_equal(v, again[k], equal_nan=True):
            return f"output {k!r} changed between two calls on the same input"
    return None


def check_metric_compute_ranges(case: MetricCase) -> str | None:
    n, T, ts, single = case.n_min, case.T, case.ts, case.single
    lengths = np.array([max(n, T // 2), max(n, T // 3), max(n, T // 2), T])
    starts = np.array([0, T // 4, T - lengths[2], 0])
    stops = starts + lengths
    res = as_outputs(case.metric.compute_ranges(ts[1], starts, stops, case.tr))
    for k in single:
        if k not in res:
            return f"compute_ranges lacks output {k!r}"
        for q, (a, b) in enumerate(zip(starts, stops)):
            why = _same(res[k][q], case.compute(ts[1, a:b])[k])
            if why:
                return f"output {k!r}, window {a}:{b} differs from compute: {why}"
    return None


def check_metric_compute_edges(case: MetricCase) -> str | None:
    n, T, ts, single = case.n_min, case.T, case.ts, case.single
    starts = np.unique(np.linspace(0, max(0, T - n - 1), 6).astype(int))  # overlapping, as sliding windows
    stops = np.minimum(starts + max(n, T // 2), T)
    res = case.metric.compute_edges(ts[1], starts, stops, case.tr)
    iu = np.triu_indices(ts.shape[-1], 1)
    for k in single:
        if k not in res:
            return f"compute_edges lacks output {k!r}"
        if np.shape(res[k]) != (len(starts), iu[0].size):
            return f"compute_edges output {k!r} has shape {np.shape(res[k])}, not {(len(starts), iu[0].size)}"
        for q, (a, b) in enumerate(zip(starts, stops)):
            why = _same(np.asarray(res[k][q]), case.compute(ts[1, a:b])[k][iu])
            if why:
                return f"output {k!r}, window {a}:{b} differs from compute: {why}"
    return None


def check_metric_constant_signal(case: MetricCase) -> str | None:
    x = case.ts[2].copy()
    x[:, 0] = 3.0
    with np.errstate(all="ignore"):
        res = case.compute(x)
    for k, v in res.items():
        if np.isinf(_off(v)).any():
            return f"output {k!r}: infinite values for a constant ROI signal"
        if case.metric.affine_invariant and np.isfinite(np.r_[v[0, 1:], v[1:, 0]]).any():
            return f"output {k!r}: a value for a constant ROI signal (it has no defined correlation; NaN expected)"
    return None


def check_metric_minimum_length_computes(case: MetricCase) -> str | None:
    n = case.n_min
    res = case.compute(case.ts[3, :n])
    for k, v in res.items():
        if v.shape != (case.R, case.R) or np.isinf(_off(v)).any():
            return f"output {k!r} at the minimum length {n}: shape {v.shape} or infinite values"
    return None


def check_metric_affine_invariance(case: MetricCase) -> str | None:
    ts = case.ts  # drawn before the scalings, as in a whole run
    a = case.rng.uniform(0.5, 20, case.R)
    b = case.rng.normal(0, 100, case.R)
    plain = case.compute(ts[4])
    res = case.compute(ts[4] * a + b)
    for k, v in res.items():
        why = _same(v, plain[k], rtol=1e-5, atol=1e-7)
        if why:
            return f"output {k!r} changes when ROI signals are scaled and shifted: {why}"
    return None


def check_metric_two_rois(case: MetricCase) -> str | None:
    """Last: a group-fitted metric is refitted on two ROIs."""
    metric, ts = case.metric, case.ts
    if metric.group_fit:
        case.fit()
        metric.fit([w[:, :2] for w in ts[:3]], case.tr)
    res = as_outputs(metric.compute(ts[5][:, :2], case.tr))
    for k, v in res.items():
        if v.shape != (2, 2):
            return f"output {k!r}: shape {v.shape} for 2 ROIs"
        if not np.isfinite(v[0, 1]):
            return f"output {k!r}: no value for 2 ROIs"
    return None


def check_metric_reads_declared(case: MetricCase) -> str | None:
    """Fitting (if group-fitted) and computing open only declared inputs (``kit.reads_undeclared``)."""
    def work(fresh):
        if fresh.group_fit:
            fresh.fit(list(case.ts[:3]), case.tr)
        fresh.compute(case.ts[0], case.tr)
    return reads_undeclared(case.metric, work)


def metric_checks(metric: Metric):
    """The metric contract's checks (docs/plugins.md, "Metrics"), in the order they run."""
    yield Step("problem() gives a minimum length with a reason below it", check_metric_minimum_length, gate=True)
    if metric.group_fit:
        yield Step("fit() on reference windows", check_metric_fit)
    yield Step("compute(ts, tr) on one (T, R) window gives (R, R) per declared output", check_metric_single_window,
               gate=True)
    yield Step("leading batch dimensions give the same values as one window at a time", check_metric_batch_dimensions)
    yield Step("symmetry as declared (symmetric, antisymmetric_outputs); finite on good signals", check_metric_symmetry)
    yield Step("values within the declared scale's range and sign", check_metric_scale_range)
    yield Step("deterministic", check_metric_deterministic)
    yield Step("compute_ranges equals compute on each window", check_metric_compute_ranges)
    yield Step("compute_edges equals the upper triangle of compute on each window", check_metric_compute_edges)
    yield Step("a constant ROI signal gives NaN (affine-invariant metrics) and never inf", check_metric_constant_signal)
    yield Step("computes at the minimum length problem() accepts", check_metric_minimum_length_computes)
    if metric.affine_invariant:
        yield Step("affine invariance (claimed): positive scaling and shifts of ROI signals change nothing",
                   check_metric_affine_invariance)
    yield Step("works on two ROIs", check_metric_two_rois)
    yield Step("opens only the input files it declares (file-open audit)", check_metric_reads_declared)


def check_metric(metric: Metric, n_rois: int = 5, tr: float = 2.0, seed: int = 0,
                 only: str | None = None) -> Conformance:
    """The metric contract (docs/plugins.md, "Metrics"), on Gaussian test signals; ``only``: one check by name."""
    return run_steps(Conformance("metric", metric.name), metric_checks(metric), MetricCase(metric, n_rois, tr, seed),
                     only)
