"""Compiled kernels (numba) for the few loops numpy cannot batch: running sums over sliding windows.

``window_correlations`` gives Pearson r for many windows of one run, upper triangle only, in
O(R²) per window step instead of the O(n R²) of a fresh product per window. The windows are taken in
chunks of ``CHUNK`` consecutive windows; each chunk starts from sums computed afresh over its first
window, shifted by that window's mean (so the sums stay near the centred values), and then moves
window to window by adding the rows that enter and subtracting the rows that leave. Rounding in such
updates grows with the magnitude that has passed through the sums, not with the window's own spread:
a window whose variance is small next to that magnitude (a spike that has just left, a signal that
has gone flat) is recomputed afresh, so every value stays within ~1e-13 of a two-pass computation.
Chunks do not depend on the number of threads, so results are the same on every machine.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

CHUNK = 128  # windows per chunk: each chunk is one task (on a thread) and starts from fresh sums
TOL = 1e-14  # recompute a window when eps * (magnitude passed through) / (its own sum of squares) exceeds this
_EPS = np.finfo(np.float64).eps


@numba.njit(cache=True, nogil=True)
def _fresh(ts, a, b, shift, s, q, mag, const):
    """Sums over rows a..b-1 of ts - shift, with shift the mean of those rows."""
    T, R = ts.shape
    n = b - a
    for i in range(R):
        acc = 0.0
        first = ts[a, i]
        same = True
        for t in range(a, b):
            acc += ts[t, i]
            same = same and ts[t, i] == first
        shift[i] = acc / n
        const[i] = same
    for i in range(R):
        s[i] = 0.0
        for j in range(i, R):
            q[i, j] = 0.0
    for t in range(a, b):
        for i in range(R):
            xi = ts[t, i] - shift[i]
            s[i] += xi
            for j in range(i, R):
                q[i, j] += xi * (ts[t, j] - shift[j])
    for i in range(R):
        mag[i] = q[i, i]


@numba.njit(cache=True, nogil=True)
def _move(ts, add, sub, shift, s, q, mag):
    """Add rows ``add`` and subtract rows ``sub`` of ts - shift, a pair at a time (one pass over q)."""
    R = ts.shape[1]
    x = np.empty(R)
    y = np.empty(R)
    n_add, n_sub = add.shape[0], sub.shape[0]
    for p in range(max(n_add, n_sub)):
        for i in range(R):
            x[i] = ts[add[p], i] - shift[i] if p < n_add else 0.0
            y[i] = ts[sub[p], i] - shift[i] if p < n_sub else 0.0
        for i in range(R):
            xi, yi = x[i], y[i]
            s[i] += xi - yi
            mag[i] += xi * xi + yi * yi
            for j in range(i, R):
                q[i, j] += xi * x[j] - yi * y[j]


@numba.njit(cache=True, nogil=True)
def _chunk(ts, starts, stops, lo, hi, out):
    R = ts.shape[1]
    shift = np.empty(R)
    s = np.empty(R)
    q = np.empty((R, R))
    mag = np.empty(R)
    const = np.zeros(R, dtype=np.bool_)
    inv = np.empty(R)
    mean = np.empty(R)
    prev_a, prev_b = -1, -1
    for k in range(lo, hi):
        a, b = starts[k], stops[k]
        n = b - a
        fresh = prev_a < 0 or a < prev_a or b < prev_b or a >= prev_b
        if not fresh:
            _move(ts, np.arange(prev_b, b), np.arange(prev_a, a), shift, s, q, mag)
            for i in range(R):
                c = q[i, i] - s[i] * s[i] / n
                if not c > _EPS * mag[i] / TOL:  # too much cancellation (or a flat signal): start afresh
                    fresh = True
                    break
        if fresh:
            _fresh(ts, a, b, shift, s, q, mag, const)
        else:
            for i in range(R):
                const[i] = False
        for i in range(R):
            c = q[i, i] - s[i] * s[i] / n
            inv[i] = 1.0 / np.sqrt(c) if c > 0 and not const[i] else np.nan
            mean[i] = s[i] / n
        for i in range(R):
            si, vi = s[i], inv[i]
            base = i * (2 * R - i - 1) // 2 - i - 1  # out[k, base + j] is edge (i, j)
            for j in range(i + 1, R):
                r = (q[i, j] - si * mean[j]) * (vi * inv[j])
                if r > 1.0:
                    r = 1.0
                elif r < -1.0:
                    r = -1.0
                out[k, base + j] = r  # NaN (a flat signal) passes both tests unchanged
        prev_a, prev_b = a, b


def window_correlations(ts: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Pearson r of the windows ``ts[starts[k]:stops[k]]`` of a (T × R) series: (K, R(R-1)/2), the
    upper triangle in ``np.triu_indices(R, 1)`` order. A constant signal gives NaN. Windows that
    overlap the one before (starts and stops both increasing) reuse its sums."""
    ts = np.ascontiguousarray(ts, dtype=np.float64)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    stops = np.ascontiguousarray(stops, dtype=np.int64)
    if ts.ndim != 2 or starts.shape != stops.shape or (stops - starts < 2).any():
        raise ValueError("window_correlations: a (T, R) series and windows of at least 2 rows")
    if len(starts) and (starts.min() < 0 or stops.max() > ts.shape[0]):
        raise ValueError("window_correlations: a window outside the series")
    R = ts.shape[1]
    out = np.empty((len(starts), R * (R - 1) // 2))
    K = len(starts)
    bounds = [(lo, min(K, lo + CHUNK)) for lo in range(0, K, CHUNK)]
    threads = min(len(bounds), len(os.sched_getaffinity(0)))
    if threads <= 1:
        for lo, hi in bounds:
            _chunk(ts, starts, stops, lo, hi, out)
    else:  # the kernel releases the GIL; plain threads, so no numba threading layer (fork-safe)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda b: _chunk(ts, starts, stops, b[0], b[1], out), bounds))
    return out
