"""Batched linear algebra on stacks of windows: covariance estimators and SPD matrix functions.

Everything here works on arrays with any number of leading batch axes, (..., T, R) for time series
and (..., R, R) for matrices, so metrics run once over all windows instead of once per window.
"""

from __future__ import annotations

import numpy as np


def centre(ts: np.ndarray) -> np.ndarray:
    return ts - ts.mean(axis=-2, keepdims=True)


def empirical_covariance(ts: np.ndarray) -> np.ndarray:
    """Maximum-likelihood covariance (divides by T), as sklearn's EmpiricalCovariance."""
    x = centre(ts)
    return np.swapaxes(x, -1, -2) @ x / ts.shape[-2]


def ledoit_wolf(ts: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrunk covariance, batched; the same estimate as sklearn.covariance.LedoitWolf."""
    x = centre(ts)
    n, p = x.shape[-2], x.shape[-1]
    emp = np.swapaxes(x, -1, -2) @ x / n
    trace = np.einsum("...ii->...", emp)
    mu = trace / p
    x2 = x**2
    beta_ = (np.swapaxes(x2, -1, -2) @ x2).sum(axis=(-1, -2))
    delta_ = (emp**2).sum(axis=(-1, -2))  # = sum((X'X)^2) / n^2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2 * mu * trace + p * mu**2) / p
    beta = np.minimum(beta, delta)
    with np.errstate(invalid="ignore", divide="ignore"):
        shrinkage = np.where(beta == 0, 0.0, beta / delta)
    eye = np.eye(p)
    s = shrinkage[..., None, None]
    return (1 - s) * emp + s * mu[..., None, None] * eye


COVARIANCE_ESTIMATORS = {"ledoit_wolf": ledoit_wolf, "empirical": empirical_covariance}


def spd_function(c: np.ndarray, fn) -> np.ndarray:
    """fn applied to the eigenvalues of symmetric matrices: V fn(L) V'."""
    vals, vecs = np.linalg.eigh(c)
    return (vecs * fn(vals)[..., None, :]) @ np.swapaxes(vecs, -1, -2)


def inverse_spd(c: np.ndarray, rcond: float = 1e-10) -> np.ndarray:
    """Inverse of symmetric positive-definite matrices; NaN where a matrix is singular."""
    vals, vecs = np.linalg.eigh(c)
    singular = vals.min(axis=-1) <= rcond * np.abs(vals).max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = (vecs / vals[..., None, :]) @ np.swapaxes(vecs, -1, -2)
    inv[singular] = np.nan
    return inv


def cov_to_corr(c: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.einsum("...ii->...i", c))
    with np.errstate(divide="ignore", invalid="ignore"):
        return c / (d[..., :, None] * d[..., None, :])


def precision_to_partial(prec: np.ndarray) -> np.ndarray:
    """Partial correlations: -P_ij / sqrt(P_ii P_jj), with 1 on the diagonal."""
    partial = -cov_to_corr(prec)
    idx = np.arange(prec.shape[-1])
    partial[..., idx, idx] = 1.0
    return partial


def geometric_mean(covs: np.ndarray, max_iter: int = 100, tol: float = 1e-9) -> np.ndarray:
    """Riemannian (affine-invariant) geometric mean of SPD matrices (n, R, R).

    The gradient fixed point of Fletcher & Joshi (2007), started at the arithmetic mean, with the
    step halved whenever the gradient norm grows, as nilearn's tangent-space connectivity does.
    """
    gmean = covs.mean(axis=0)
    norm_old, step = np.inf, 1.0
    for _ in range(max_iter):
        inv_sqrt = spd_function(gmean, lambda v: 1.0 / np.sqrt(v))
        logs = spd_function(inv_sqrt @ covs @ inv_sqrt, np.log)
        logs_mean = logs.mean(axis=0)
        sqrt = spd_function(gmean, np.sqrt)
        gmean = sqrt @ spd_function(logs_mean, lambda v: np.exp(step * v)) @ sqrt
        norm = np.linalg.norm(logs_mean)
        if norm < norm_old:
            norm_old = norm
        elif norm > norm_old:
            step /= 2.0
        if norm / gmean.size < tol:
            break
    return gmean


def _flat_as_nan(ts: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The centred series ``x`` with NaN in columns that are constant in ``ts``: their mean is not
    always exact in floating point (3.3 repeated), so centring leaves ~1e-16, not 0."""
    flat = (ts == ts[..., :1, :]).all(axis=-2, keepdims=True)
    return np.where(flat, np.nan, x) if flat.any() else x


def correlation(ts: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation between the columns of ``ts`` (and of ``other``, if given): (..., R, R).

    A constant column gives NaN, never 0.
    """
    x = _flat_as_nan(ts, centre(ts))
    y = x if other is None else _flat_as_nan(other, centre(other))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = x / np.linalg.norm(x, axis=-2, keepdims=True)
        y = x if other is None else y / np.linalg.norm(y, axis=-2, keepdims=True)
        r = np.clip(np.swapaxes(x, -1, -2) @ y, -1.0, 1.0)
    if other is None:  # exactly 1 on the diagonal, not 1 - eps (NaN stays NaN)
        idx = np.arange(r.shape[-1])
        diag = r[..., idx, idx]
        r[..., idx, idx] = np.where(np.isnan(diag), np.nan, 1.0)
    return r
