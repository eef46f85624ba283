"""Signal building blocks both simulators share: band-limited Gaussian noise and the nearest
positive-definite correlation matrix."""

from __future__ import annotations

import numpy as np


def bandlimited(rng, n, T, tr, low=0.01, high=0.08):
    """``n`` unit-variance series of length ``T`` with power only in [low, high] Hz."""
    spec = np.fft.rfft(rng.standard_normal((n, T)), axis=1)
    f = np.fft.rfftfreq(T, tr)
    spec[:, (f < low) | (f > high)] = 0
    x = np.fft.irfft(spec, n=T, axis=1)
    return x / x.std(axis=1, keepdims=True)


def nearest_pd(c, floor=1e-3):
    w, v = np.linalg.eigh(c)
    c = (v * np.maximum(w, floor)) @ v.T
    d = np.sqrt(np.diag(c))
    return c / np.outer(d, d)
