"""Denoising a run: its confound regressors (nilearn's fMRIPrep strategies or named columns), the
band-pass check against the TR, nilearn's signal.clean, and the temporal degrees of freedom it leaves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fclab.framework.errors import DataError
from fclab.framework.extraction.bids import RunInput, read_tsv
from fclab.framework.params import DenoiseParams


def check_filter(tr: float, denoise: DenoiseParams, where, n_volumes: int | None = None) -> None:
    """The band-pass cut-offs must lie below the run's Nyquist frequency (nilearn would drop them with a
    warning, and the methods text would state a filter that was not applied), and the run (of
    ``n_volumes``) must be longer than the filter's padding, which nilearn's Butterworth needs."""
    nyquist = 0.5 / tr
    for key in ("low_pass_hz", "high_pass_hz"):
        f = getattr(denoise, key)
        if f is not None and f >= nyquist:
            raise DataError(f"{where}: extract.denoise.{key} {f:g} Hz is not below the Nyquist frequency "
                            f"{nyquist:g} Hz of TR {tr:g} s")
    if n_volumes is not None and (denoise.low_pass_hz or denoise.high_pass_hz):
        import re

        from nilearn import signal

        try:  # nilearn's own filter on a column of zeros: the same test its cleaning would fail
            signal.butterworth(np.zeros((n_volumes, 1)), sampling_rate=1 / tr, low_pass=denoise.low_pass_hz,
                               high_pass=denoise.high_pass_hz)
        except ValueError as exc:
            pad = re.search(r"padlen, which is (\d+)", str(exc))
            raise DataError(f"{where}: {n_volumes} volumes are too few for the temporal filter"
                            f"{f' (it pads {pad.group(1)} volumes at each end)' if pad else ''}; "
                            "leave the run out or set high_pass_hz and low_pass_hz to null") from exc


def run_confounds(run: RunInput, denoise: DenoiseParams, n_volumes: int):
    """(confounds or None, sample mask or None, framewise displacement) of one run.

    Errors name the confounds file: too few or too many rows, a column the strategy needs, a missing
    value after the first row (only derivatives may start with n/a). Without a framewise_displacement
    column the FD is NaN throughout: the exclusion rule on it (``runqc.apply_exclusions``) and the
    strategies that censor on it then fail with the reason.
    """
    path = run.confounds
    table = read_tsv(path)
    if len(table) != n_volumes:
        raise DataError(f"{path}: {len(table)} rows for {n_volumes} volumes in {run.bold.name}")
    if "framewise_displacement" not in table:  # QC then has no FD; a rule or strategy that needs it says so
        return (*_regressors(run, denoise, n_volumes, table), pd.Series(np.full(n_volumes, np.nan)))
    fd = pd.to_numeric(table["framewise_displacement"], errors="coerce")
    bad_fd = np.flatnonzero(~np.isfinite(fd.to_numpy(float)[1:]))
    if bad_fd.size:
        i = 1 + int(bad_fd[0])
        raise DataError(f"{path}: row {i + 1}: framewise_displacement {table['framewise_displacement'].iloc[i]!r} "
                        "is not a number")
    return (*_regressors(run, denoise, n_volumes, table), fd)


def _regressors(run: RunInput, denoise: DenoiseParams, n_volumes: int, table: pd.DataFrame):
    """(confounds or None, sample mask or None) of ``run_confounds``; ``table``: the confounds file."""
    path = run.confounds
    confounds, sample_mask = None, None
    if denoise.strategy != "none":
        import warnings

        from nilearn.interfaces.fmriprep import load_confounds_strategy

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)  # a strategy option it ignores is an error
                confounds, sample_mask = load_confounds_strategy(
                    run.image, denoise_strategy=denoise.strategy, **denoise.strategy_options)
        except KeyError as exc:  # nilearn indexes a column the file lacks
            raise DataError(f"{path}: cannot build {denoise.strategy!r} confounds: no column {exc.args[0]!r}") from exc
        except (ValueError, FileNotFoundError, TypeError, UserWarning) as exc:
            raise DataError(f"{path}: cannot build {denoise.strategy!r} confounds ({str(exc).splitlines()[0]})") from exc
        if len(confounds) != n_volumes:
            raise DataError(f"{path}: {len(confounds)} rows for {n_volumes} volumes in {run.bold.name}")
        bad = ~np.isfinite(confounds.to_numpy(float))
        if sample_mask is not None:  # censored volumes are left out of the regression
            bad[np.setdiff1d(np.arange(len(bad)), sample_mask)] = False
        if bad.any():
            i, j = (int(x[0]) for x in np.nonzero(bad))
            raise DataError(f"{path}: row {i + 1}: column {confounds.columns[j]!r} has no value (only the first "
                            "row of derivatives may be n/a)")
    if denoise.columns:
        extra = custom_confounds(table, denoise.columns, path)
        confounds = extra if confounds is None else pd.concat([confounds, extra.drop(
            columns=[c for c in extra.columns if c in confounds.columns])], axis=1)
    return confounds, sample_mask


def custom_confounds(table: pd.DataFrame, columns: list[str], path: Path) -> pd.DataFrame:
    """The named columns of a run's confounds table (read from ``path``), leading n/a (derivatives) as 0;
    errors name file and column."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no confound column {missing[0]!r} (extract.denoise.columns)")
    values = table[columns].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(values.iloc[1:].to_numpy(float))
    if bad.any():
        i, j = (int(x[0]) for x in np.nonzero(bad))
        raise DataError(f"{path}: row {i + 2}: column {columns[j]!r} has no numeric value "
                        "(only the first row of derivatives may be n/a)")
    return values.fillna(0.0)


def clean(x: np.ndarray, confounds, sample_mask, tr: float, denoise: DenoiseParams, standardize) -> np.ndarray:
    """nilearn's ``signal.clean`` of (T, n) signals with the run's confounds and the denoise settings.

    ``butterworth__copy=True`` makes nilearn filter all columns in one ``sosfiltfilt`` call instead
    of a Python loop over columns: the same numbers (checked bit for bit), ~10x faster at 400 columns.
    """
    from nilearn import signal

    return signal.clean(x, confounds=None if confounds is None else confounds.to_numpy(), sample_mask=sample_mask,
                        t_r=tr, detrend=denoise.detrend, standardize=standardize, low_pass=denoise.low_pass_hz,
                        high_pass=denoise.high_pass_hz, butterworth__copy=True)


def temporal_dof(n_volumes: int, confounds, sample_mask, tr: float, denoise: DenoiseParams) -> tuple[float, float]:
    """(degrees of freedom the filter and censoring leave, those the confound regression then leaves)
    of one run's denoising, each the effective degrees of freedom of Worsley & Friston (1995,
    NeuroImage 2:173): ``tr(C)^2 / tr(C^2)`` for ``C = M M'``, the covariance of white noise after
    the linear cleaning operator ``M`` (kept volumes x volumes).

    ``M`` is ``clean`` itself applied to the identity (no standardisation: it is the only non-linear
    step, a scaling), so the count is exactly what nilearn's detrending, censoring interpolation,
    Butterworth filter and confound projection do: T for none of them, T - k for k regressors and no
    filter, and close to 1 when the regressors fill the band. A Butterworth band-pass leaves fewer than
    the nominal 2 x bandwidth x duration (its transition bands pass part of a frequency's variance, and
    the effective count weights frequencies by it): 53 of 67 at 192 volumes of TR 2.5 s and 0.01-0.08 Hz.
    filtfilt's odd padding adds two modes of large variance at the run's ends (eigenvalues ~5 at TR
    2 s, ~10 at TR 0.8 s), which lower the count of a short-TR run (126 of 223 without them at 2,000
    volumes of TR 0.8 s); regressors that take them out can then leave more than the filter alone.
    """
    identity = np.eye(n_volumes)

    def effective(m: np.ndarray) -> float:
        if not m.size:
            return 0.0
        gram = m @ m.T if m.shape[0] < m.shape[1] else m.T @ m  # M M' and M'M: the same non-zero spectrum
        total = float(np.trace(gram))
        return total * total / float(np.sum(gram * gram)) if total > 0 else 0.0

    filtered = clean(identity, None, sample_mask, tr, denoise, None)
    regressed = filtered if confounds is None else clean(identity, confounds, sample_mask, tr, denoise, None)
    return effective(filtered), effective(regressed)


def band_variance_kept(raw: np.ndarray, cleaned: np.ndarray, sample_mask, tr: float, denoise: DenoiseParams) -> float:
    """The median over voxels of the share of each voxel's band-limited variance the confound
    regression keeps: ``cleaned`` (kept volumes x voxels, the full cleaning without standardisation)
    against ``raw`` (volumes x voxels) detrended, censored and filtered only. NaN with no voxel
    that has band-limited variance."""
    filtered = clean(raw, None, sample_mask, tr, denoise, None)
    before, after = np.sum(filtered ** 2, axis=0), np.sum(cleaned ** 2, axis=0)
    ok = before > 0
    return float(np.median(after[ok] / before[ok])) if ok.any() else float("nan")
