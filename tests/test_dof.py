"""The degrees-of-freedom guard: run_qc's temporal degrees of freedom against closed forms and the
Butterworth filter's own frequency response, the share of band-limited variance kept against a
projection by hand, and the exclusion rule on a short run (fires) and a long one (does not)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.signal

from fclab.framework.extraction.denoise import band_variance_kept, clean, temporal_dof
from fclab.framework.params import DenoiseParams, SimulateParams
from tests.conftest import default_params, run_cli_in, write_params


def denoise(**kw) -> DenoiseParams:
    base = {"strategy": "none", "detrend": False, "high_pass_hz": None, "low_pass_hz": None}
    return DenoiseParams(**{**base, **kw})


@pytest.mark.parametrize("T", [40, 192])
def test_closed_forms_without_a_filter(T):
    rng = np.random.default_rng(T)
    k = 7
    conf = pd.DataFrame(rng.standard_normal((T, k)))
    assert temporal_dof(T, None, None, 2.0, denoise()) == pytest.approx((T, T), abs=1e-9)
    # k regressors project out k dimensions; detrending the mean and the linear trend, two more
    assert temporal_dof(T, conf, None, 2.0, denoise())[1] == pytest.approx(T - k, abs=1e-8)
    assert temporal_dof(T, conf, None, 2.0, denoise(detrend=True)) == pytest.approx((T - 2, T - 2 - k), abs=1e-8)
    # censoring m volumes (no filter: they are left out, not interpolated) leaves T - m
    kept = np.setdiff1d(np.arange(T), [3, 10, 11, T - 1])
    assert temporal_dof(T, None, kept, 2.0, denoise())[0] == pytest.approx(T - 4, abs=1e-9)


def butterworth_dof(T: int, tr: float, high: float, low: float) -> float:
    """Worsley & Friston's effective dof of white noise through a forward-backward order-5 Butterworth
    band-pass, from its frequency response on the DFT grid (a circulant filter's eigenvalues are the
    output power |H|^4 at the DFT frequencies): (sum |H|^4)^2 / sum |H|^8."""
    sos = scipy.signal.butter(5, [high, low], btype="band", fs=1 / tr, output="sos")
    freqs = np.fft.fftfreq(T, d=tr)
    _, h = scipy.signal.sosfreqz(sos, worN=np.abs(freqs), fs=1 / tr)
    power = np.abs(h) ** 4
    return power.sum() ** 2 / (power ** 2).sum()


@pytest.mark.parametrize("T,tr", [(1200, 2.0), (2000, 0.8)])
def test_band_pass_against_scipy_and_the_filters_frequency_response(T, tr):
    d = denoise(high_pass_hz=0.01, low_pass_hz=0.08)
    band, left = temporal_dof(T, None, None, tr, d)
    assert band == left
    # the operator built from scipy directly (nilearn filters with sosfiltfilt, odd padding)
    sos = scipy.signal.butter(5, [0.01, 0.08], btype="band", fs=1 / tr, output="sos")
    m = scipy.signal.sosfiltfilt(sos, np.eye(T), axis=0)
    gram = m.T @ m
    assert band == pytest.approx(np.trace(gram) ** 2 / np.sum(gram * gram), rel=1e-9)
    # The circulant model (no edges) gives more: filtfilt's odd padding adds two modes at the run's
    # ends with large variance (eigenvalues ~5 at T=1200, TR 2 s; ~10 at TR 0.8 s, where the
    # high-pass transient spans more volumes). Without them the count is the circulant one.
    circulant = butterworth_dof(T, tr, 0.01, 0.08)
    assert band < circulant < 2 * 0.07 * T * tr  # and below the nominal count
    eig = np.linalg.eigvalsh(gram)
    rest = eig[eig < 1.5]
    assert eig.size - rest.size == 2
    assert rest.sum() ** 2 / (rest ** 2).sum() == pytest.approx(circulant, rel=0.02)


def test_regressors_that_fill_the_band_leave_about_one():
    # the real run: 110 volumes of TR 1.16 s, 0.01-0.08 Hz, 27 regressors
    T, tr = 110, 1.16
    conf = pd.DataFrame(np.cumsum(np.random.default_rng(0).standard_normal((T, 27)), axis=0))
    band, left = temporal_dof(T, conf, None, tr, denoise(detrend=True, high_pass_hz=0.01, low_pass_hz=0.08))
    assert band < 10
    assert left == pytest.approx(1.0, abs=0.2)


def test_band_variance_kept_against_a_projection_by_hand():
    T, tr, k = 300, 2.0, 12
    rng = np.random.default_rng(3)
    d = denoise(detrend=True, high_pass_hz=0.01, low_pass_hz=0.1)
    conf = pd.DataFrame(np.cumsum(rng.standard_normal((T, k)), axis=0))
    voxels = rng.standard_normal((T, 50)) + conf.to_numpy() @ rng.standard_normal((k, 50)) * 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from nilearn import signal
        filt = dict(t_r=tr, detrend=True, low_pass=0.1, high_pass=0.01, standardize=None)
        x = signal.clean(voxels, **filt)
        z = signal.clean(conf.to_numpy(), **filt)
    z = (z - z.mean(0)) / z.std(0)
    resid = x - z @ np.linalg.lstsq(z, x, rcond=None)[0]
    by_hand = np.median((resid ** 2).sum(0) / (x ** 2).sum(0))
    cleaned = clean(voxels, conf, None, tr, d, None)
    assert band_variance_kept(voxels, cleaned, None, tr, d) == pytest.approx(by_hand, rel=1e-6)
    assert band_variance_kept(voxels, clean(voxels, None, None, tr, d, None), None, tr, d) == pytest.approx(1.0)


def test_the_guard_fires_on_a_short_run_and_not_on_a_long_one(tmp_path):
    from fclab.framework.simulation.study import simulate

    p = default_params()
    p["simulate"].update(n_ketamine=2, n_midazolam=2, baseline_duration_s=100, pre_onset_s=30,
                         infusion_duration_s=600, seed=5, output_dir=str(tmp_path / "data" / "simulated"))
    p["extract"]["data"]["root"] = str(tmp_path / "data" / "simulated")
    write_params(tmp_path, p)
    simulate(SimulateParams(**p["simulate"]), n_jobs=2)
    code, out, err = run_cli_in(tmp_path, "extract")
    assert code == 0, err
    q = pd.read_parquet(tmp_path / "results/extract/run_qc.parquet")
    base, inf = q[q["run"] == "baseline"], q[q["run"] == "infusion"]
    assert (base["dof_left"] < 10).all() and base["excluded"].all()
    assert base["reason"].str.contains("temporal degrees of freedom left < min_dof 10").all()
    assert (inf["dof_left"] > 40).all() and not inf["excluded"].any()
    assert (q["n_regressors"] > 0).all() and q["band_variance_kept"].between(0, 1).all()

    import json

    import pyarrow.parquet as pq

    methods = json.loads(pq.read_schema(tmp_path / "results/extract/timeseries.parquet").metadata[b"fclab"])["methods"]
    assert "effective temporal degrees of freedom per run" in methods
    assert f"baseline {base['dof_left'].median():.1f}" in methods

    # off: nothing is excluded for it
    p["extract"]["exclude"]["min_dof"] = None
    write_params(tmp_path, p)
    code, out, err = run_cli_in(tmp_path, "extract")
    assert code == 0, err
    assert not pd.read_parquet(tmp_path / "results/extract/run_qc.parquet")["excluded"].any()


def test_the_methods_name_the_filter_that_ran():
    from fclab.framework.report.methods import filter_text

    assert filter_text(0.01, 0.08) == "band-pass filtered between 0.01 and 0.08 Hz (Butterworth)"
    assert filter_text(0.01, None) == "high-pass filtered above 0.01 Hz (Butterworth; no low-pass)"
    assert filter_text(None, 0.1) == "low-pass filtered below 0.1 Hz (Butterworth; no high-pass)"
    assert filter_text(None, None) == "not temporally filtered"
