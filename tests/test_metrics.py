"""Metrics against independent references (nilearn, scipy, closed forms) and shared properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from nilearn.connectome import ConnectivityMeasure
from scipy import signal, stats
from sklearn.covariance import EmpiricalCovariance

from fclab.framework.pluginhost.registry import get_registry
from fclab.plugins.coherence import Coherence
from fclab.plugins.covariance import Covariance
from fclab.plugins.lagged import Lagged
from fclab.plugins.mtd import Mtd
from fclab.plugins.partial import Partial
from fclab.plugins.pearson import Pearson
from fclab.plugins.precision import Precision
from fclab.plugins.spearman import Spearman
from fclab.plugins.tangent import Tangent

TR = 2.0


def windows(n=6, T=80, R=5, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((R, R)) * 0.5 + np.eye(R)
    return rng.standard_normal((n, T, R)) @ mix + rng.standard_normal((n, 1, R)) * 3


def nilearn(kind, ts, **kw):
    return ConnectivityMeasure(kind=kind, standardize=False, **kw).fit_transform(list(ts))


def test_pearson_matches_nilearn_correlation():
    ts = windows()
    ours = Pearson(Pearson.Params(fisher_z=False)).compute(ts, TR)
    np.testing.assert_allclose(ours, nilearn("correlation", ts, cov_estimator=EmpiricalCovariance()), rtol=1e-10)
    z = Pearson().compute(ts, TR)
    off = ~np.eye(ts.shape[-1], dtype=bool)
    np.testing.assert_allclose(z[:, off], np.arctanh(ours[:, off]), rtol=1e-12)


@pytest.mark.parametrize("cls, kind", [(Covariance, "covariance"), (Precision, "precision"),
                                       (Partial, "partial correlation")])
@pytest.mark.parametrize("estimator", ["ledoit_wolf", "empirical"])
def test_covariance_family_matches_nilearn(cls, kind, estimator):
    ts = windows()
    kw = {} if estimator == "ledoit_wolf" else {"cov_estimator": EmpiricalCovariance()}
    ours = cls(cls.Params(estimator=estimator)).compute(ts, TR)
    np.testing.assert_allclose(ours, nilearn(kind, ts, **kw), rtol=1e-8, atol=1e-12)


def test_tangent_matches_nilearn():
    ts = windows(n=10)
    reference, others = ts[:6], ts[6:]
    metric = Tangent()
    metric.fit(list(reference), TR)
    measure = ConnectivityMeasure(kind="tangent", standardize=False).fit(list(reference))
    np.testing.assert_allclose(metric.mean_, measure.mean_, rtol=1e-6)
    np.testing.assert_allclose(metric.compute(others, TR), measure.transform(list(others)), rtol=1e-5, atol=1e-7)


def test_spearman_matches_scipy():
    ts = windows(n=3)
    ours = Spearman().compute(ts, TR)
    for k in range(3):
        np.testing.assert_allclose(ours[k], stats.spearmanr(ts[k]).statistic, rtol=1e-12)


def test_coherence_matches_scipy():
    ts = windows(n=2, T=200, R=3)
    metric = Coherence(Coherence.Params(band_hz=(0.01, 0.1), segment_s=60))
    ours = metric.compute(ts, TR)
    nper = 30
    for k in range(2):
        for i in range(3):
            for j in range(i + 1, 3):
                f, c = signal.coherence(ts[k, :, i], ts[k, :, j], fs=1 / TR, nperseg=nper, noverlap=nper // 2)
                band = (f >= 0.01) & (f <= 0.1)
                assert ours[k, i, j] == pytest.approx(c[band].mean(), rel=1e-10)


def test_coherence_too_short_has_a_reason():
    metric = Coherence(Coherence.Params(segment_s=120))
    assert "two 120 s segments" in metric.problem(60, 2.5)
    assert metric.problem(72, 2.5) is None
    assert "no Welch frequency" in Coherence(Coherence.Params(band_hz=(0.3, 0.4))).problem(500, 2.0)


def test_lagged_closed_form():
    rng = np.random.default_rng(1)
    x = signal.lfilter([1.0], [1, -0.8], rng.standard_normal(300))
    y = np.roll(x, 2)  # y(t) = x(t - 2): y follows x by two volumes
    ts = np.stack([x, y], axis=1)[10:]
    out = Lagged(Lagged.Params(max_lag_s=3 * TR)).compute(ts[None], TR)
    assert out[""][0, 0, 1] == pytest.approx(1.0, abs=1e-12)
    assert out["lag_s"][0, 0, 1] == pytest.approx(2 * TR)
    assert out["lag_s"][0, 1, 0] == pytest.approx(-2 * TR)
    assert "needs at least" in Lagged(Lagged.Params(max_lag_s=20)).problem(10, 2.0)


def test_mtd_closed_form():
    t = np.arange(201)
    x = np.sin(2 * np.pi * t / 40)  # x[0] == x[-1]: the derivative has zero mean
    ts = np.stack([x, 3 * x + 5, -x, np.cos(2 * np.pi * t / 40)], axis=1)
    m = Mtd().compute(ts[None], TR)[0]
    assert m[0, 1] == pytest.approx(1.0, abs=1e-12)
    assert m[0, 2] == pytest.approx(-1.0, abs=1e-12)
    assert m[0, 3] == pytest.approx(0.0, abs=1e-12)


def test_constant_roi_gives_nan_not_zero():
    ts = windows(n=1)
    ts[..., 2] = 4.0
    for cls in (Pearson, Spearman, Mtd, Lagged):
        out = cls().compute(ts, TR)
        out = out[""] if isinstance(out, dict) else out
        assert np.isnan(out[0, 2, 0]) and np.isfinite(out[0, 0, 1]), cls.name


# -- properties every registered metric must keep (a conformance suite) -----------------------------

def _instances():
    metrics = []
    for name, cls in sorted(get_registry().metrics().items()):
        metrics.append(cls())
    return metrics


def _run(metric, ts):
    if metric.group_fit:
        metric.fit(list(ts), TR)
    out = metric.compute(ts, TR)
    return out if isinstance(out, dict) else {"": out}


data = hs.tuples(hs.integers(90, 130), hs.integers(3, 5), hs.integers(0, 2**31 - 1))


@settings(max_examples=15, deadline=None)
@given(data)
def test_metric_properties(args):
    T, R, seed = args
    rng = np.random.default_rng(seed)
    ts = rng.standard_normal((2, T, R)) @ (np.eye(R) + 0.4 * rng.standard_normal((R, R)))
    perm = rng.permutation(R)
    scale = rng.uniform(0.5, 3.0, R)
    shift = rng.uniform(-5, 5, R)
    off = ~np.eye(R, dtype=bool)
    for metric in _instances():
        base = _run(metric, ts)
        permuted = _run(metric, ts[..., perm])
        for key, mat in base.items():
            assert mat.shape == (2, R, R)
            if key in metric.antisymmetric_outputs:
                np.testing.assert_allclose(mat[:, off], -np.swapaxes(mat, -1, -2)[:, off], atol=1e-10)
            elif metric.symmetric:
                np.testing.assert_allclose(mat, np.swapaxes(mat, -1, -2), rtol=1e-9, atol=1e-10,
                                           err_msg=f"{metric.name} not symmetric")
            np.testing.assert_allclose(permuted[key], mat[:, perm][:, :, perm], rtol=1e-7, atol=1e-9,
                                       err_msg=f"{metric.name}{key} not equivariant to ROI order")
        if metric.affine_invariant:
            moved = _run(metric, ts * scale + shift)
            for key, mat in base.items():
                np.testing.assert_allclose(moved[key][:, off], mat[:, off], rtol=1e-7, atol=1e-9,
                                           err_msg=f"{metric.name}{key} not scale/offset invariant")


@pytest.mark.parametrize("metric", _instances(), ids=lambda m: m.name)
def test_compute_ranges_equals_compute_per_window(metric):
    run = windows(n=1, T=160, R=4, seed=5)[0]
    starts, stops = np.array([0, 20, 50, 0]), np.array([100, 120, 150, 130])
    if metric.group_fit:
        metric.fit([run[:100], run[60:160]], TR)
    ranged = metric.compute_ranges(run, starts, stops, TR)
    for k, (a, b) in enumerate(zip(starts, stops)):
        single = _run_plain(metric, run[a:b][None])
        for key, mat in single.items():
            np.testing.assert_allclose(ranged[key][k], mat[0], rtol=1e-10, atol=1e-12)


def _run_plain(metric, ts):
    out = metric.compute(ts, TR)
    return out if isinstance(out, dict) else {"": out}


@pytest.mark.parametrize("metric", _instances(), ids=lambda m: m.name)
def test_compute_edges_is_the_triangle_of_compute_per_window(metric):
    """compute_edges, what the stage calls, against compute window by window; overlapping windows
    in and out of start order reach pearson's running-sum kernel."""
    run = windows(n=1, T=160, R=4, seed=7)[0]
    starts = np.array([30, 0, 10, 20, 100, 40, 41])
    stops = starts + 60
    if metric.group_fit:
        metric.fit([run[:100], run[60:160]], TR)
    tri = metric.compute_edges(run, starts, stops, TR)
    iu = np.triu_indices(4, 1)
    for k, (a, b) in enumerate(zip(starts, stops)):
        for key, mat in _run_plain(metric, run[a:b][None]).items():
            np.testing.assert_allclose(tri[key][k], mat[0][iu], rtol=1e-10, atol=1e-12)


def _exact_window_r(ts, starts, stops):
    """Pearson r of each window in extended precision, two-pass (the reference for the kernel)."""
    out = []
    for a, b in zip(starts, stops):
        x = ts[a:b].astype(np.longdouble)
        x = x - x.mean(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = x / np.sqrt((x**2).sum(axis=0))
            r = (x.T @ x).astype(np.float64)
        flat = (ts[a:b] == ts[a]).all(axis=0)
        r[flat] = np.nan
        r[:, flat] = np.nan
        out.append(r[np.triu_indices(ts.shape[1], 1)])
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("length, step", [(60, 1), (72, 12), (30, 7), (20, 25)])
def test_window_correlations_match_corrcoef_and_an_exact_reference(seed, length, step):
    """The running-sum kernel on autocorrelated series, several window lengths and steps (a step
    longer than the window: no overlap, every window afresh) against np.corrcoef per window."""
    from fclab.api import window_correlations

    rng = np.random.default_rng(seed)
    T, R = 700, 12
    ts = signal.lfilter([1.0], [1.0, -0.8], rng.standard_normal((T, R)), axis=0)
    ts = ts @ (np.eye(R) + 0.3 * rng.standard_normal((R, R))) + rng.uniform(-50, 50, R)
    starts = np.arange(0, T - length + 1, step)
    stops = starts + length
    got = window_correlations(ts, starts, stops)
    iu = np.triu_indices(R, 1)
    ref = np.stack([np.corrcoef(ts[a:b].T)[iu] for a, b in zip(starts, stops)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got, _exact_window_r(ts, starts, stops), rtol=0, atol=1e-13)


def test_window_correlations_survive_spikes_steps_and_flat_stretches():
    """Inputs chosen to break running sums: a 1e8 spike entering and leaving the windows, a 1e9
    level shift, a stretch where one signal is flat (its r is NaN there, not ~0), a NaN volume.
    Without the kernel's restart on cancellation the values after the spike are off by ~1e-4."""
    from fclab.api import window_correlations

    rng = np.random.default_rng(3)
    T, R, n = 900, 10, 60
    ts = rng.standard_normal((T, R)) @ (np.eye(R) + 0.3 * rng.standard_normal((R, R)))
    ts[300, 5] = 1e8
    ts[500:640, 7] = 3.3
    ts[700:, 2] += 1e9
    ts[820, 4] = np.nan
    starts = np.arange(T - n + 1)
    stops = starts + n
    got = window_correlations(ts, starts, stops)
    exact = _exact_window_r(ts, starts, stops)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(exact))
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-12)
    flat = np.triu_indices(R, 1)[0] == 7
    assert np.isnan(got[520, flat]).all() and np.isfinite(got[400, flat]).all()
