"""Subject-level permutations of group labels, and a Welch t statistic batched over them; sign flips
of within-subject differences, and a one-sample t batched over them.

A relabeling moves a subject's whole set of windows together (subjects are the exchangeable
units). When the number of distinct relabelings, C(n, n_target), is at most ``n_perm`` they are
enumerated exactly (the observed labelling among them) and p = count / C; otherwise ``n_perm``
random relabelings are drawn and p = (1 + count) / (1 + n_perm). Sign flips (a crossover's paired
differences, symmetric about 0 under the null) work the same way, with 2ⁿ in place of C(n, n_target).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

# |t*| >= |t| up to rounding: the observed labelling must count itself when enumerated.
_TIE = 1e-10


def relabelings(is_target: np.ndarray, n_perm: int, seed: int) -> tuple[np.ndarray, bool]:
    """(P, S) target-group masks, and whether they are the exact, complete set."""
    S, k = len(is_target), int(is_target.sum())
    if math.comb(S, k) <= n_perm:
        out = np.zeros((math.comb(S, k), S), bool)
        for i, idx in enumerate(itertools.combinations(range(S), k)):
            out[i, list(idx)] = True
        return out, True
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(is_target) for _ in range(n_perm)]), False


class WelchBatch:
    """Welch t of target − reference for every column of ``data`` (S, F; NaN = missing) under many labellings.

    With complete data every labelling has the same group sizes, so t² is a ratio of two quadratics
    in the target-group sums s₁ = G x and q₁ = G x², with per-column constants: two matrix products
    and a few fused element-wise operations per block of labellings and columns.
    """

    def __init__(self, data: np.ndarray):
        self.mask = np.isfinite(data)
        self.complete = bool(self.mask.all())
        self.x = np.where(self.mask, data, 0.0)
        self.x2 = self.x**2
        self.m = self.mask.astype(float)
        self.n, self.s, self.q = self.m.sum(0), self.x.sum(0), self.x2.sum(0)
        self._const = {}

    def t(self, labels: np.ndarray, cols=slice(None)) -> np.ndarray:
        """(P, F) statistics for (P, S) boolean labellings (NaN where undefined)."""
        G = labels.astype(float)
        if self.complete and np.ptp(G.sum(1)) == 0:
            num, den = self._num_den(G, cols)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(den > 0, num / np.sqrt(den), np.nan)
        n1 = G @ self.m[:, cols]
        s1, q1 = G @ self.x[:, cols], G @ self.x2[:, cols]
        n2, s2, q2 = self.n[cols] - n1, self.s[cols] - s1, self.q[cols] - q1
        with np.errstate(invalid="ignore", divide="ignore"):
            m1, m2 = s1 / n1, s2 / n2
            v1 = (q1 - s1 * m1) / (n1 - 1) / n1
            v2 = (q2 - s2 * m2) / (n2 - 1) / n2
            return (m1 - m2) / np.sqrt(np.maximum(v1, 0) + np.maximum(v2, 0))

    def t2(self, labels: np.ndarray, cols=slice(None)) -> np.ndarray:
        """t² with 0 where t is undefined: the quantity the max-statistic counts compare."""
        G = labels.astype(float)
        if self.complete and np.ptp(G.sum(1)) == 0:
            num, den = self._num_den(G, cols)
            num *= num
            with np.errstate(invalid="ignore", divide="ignore"):
                num /= den
        else:
            num = self.t(labels, cols)
            num *= num
        num[~np.isfinite(num)] = 0.0
        return num

    def _num_den(self, G: np.ndarray, cols):
        n1 = float(G[0].sum())
        n2 = float(self.x.shape[0]) - n1
        key = (n1, cols.start, cols.stop) if isinstance(cols, slice) else None
        c = self._const.get(key)
        if c is None:
            s, q = self.s[cols], self.q[cols]
            # v1/n1 = (q1 − s1²/n1)/((n1−1) n1), v2/n2 = ((q − q1) − (s − s1)²/n2)/((n2−1) n2).
            a1, a2 = 1 / ((n1 - 1) * n1), 1 / ((n2 - 1) * n2)
            b1, b2 = a1 / n1, a2 / n2
            c = (1 / n1 + 1 / n2, s / n2, a1 - a2, b1 + b2, 2 * b2 * s, a2 * q - b2 * s**2)
            if key is not None:
                self._const[key] = c
        k_num, s_n2, k_q, k_s, k_ss, k_0 = c
        s1, den = G @ self.x[:, cols], G @ self.x2[:, cols]
        den *= k_q
        tmp = s1 * k_s
        tmp -= k_ss
        tmp *= s1
        den -= tmp
        den += k_0
        np.maximum(den, 0, out=den)
        s1 *= k_num
        s1 -= s_n2
        return s1, den


def block_size(n_columns: int, budget_bytes: float = 5e7) -> int:
    """How many labellings to process at once so that a (block, F) array stays within budget."""
    return int(max(1, min(1000, budget_bytes // (8 * max(n_columns, 1)))))


def signflips(n: int, n_perm: int, seed: int) -> tuple[np.ndarray, bool]:
    """(P, n) signs ±1 per subject, and whether they are all 2ⁿ (the identity among them)."""
    if n < 63 and 2**n <= n_perm:
        codes = np.arange(2**n)[:, None] >> np.arange(n)[None]
        return np.where(codes & 1, -1.0, 1.0), True
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n_perm, n)) < 0.5, -1.0, 1.0), False


class SignFlipBatch:
    """One-sample t of every column of ``data`` (S, F; NaN = missing) under many sign flips: the
    count and the sum of squares do not change with the signs, so t² = s²(n − 1) / (n q − s²) with
    s = G x, one matrix product per block."""

    def __init__(self, data: np.ndarray):
        mask = np.isfinite(data)
        self.x = np.where(mask, data, 0.0)
        self.n = mask.sum(0).astype(float)
        self.q = (self.x**2).sum(0)

    def t(self, signs: np.ndarray, cols=slice(None)) -> np.ndarray:
        s = signs @ self.x[:, cols]
        n, q = self.n[cols], self.q[cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (q - s * s / n) / (n - 1)
            return np.where((n >= 2) & (var > 0), (s / n) / np.sqrt(var / n), np.nan)

    def t2(self, signs: np.ndarray, cols=slice(None)) -> np.ndarray:
        t = self.t(signs, cols)
        t *= t
        t[~np.isfinite(t)] = 0.0
        return t


def max_t_pvalues(data: np.ndarray, is_target: np.ndarray, family: np.ndarray, n_perm: int, seed: int,
                  threads: int = 2, block: tuple[int, int] = (128, 2048)):
    """Two-sided permutation p-values per column and max-|t| FWER-adjusted ones within each family.

    ``family`` gives each column an integer family; the maximum is taken within a family. Columns
    are processed in cache-sized chunks, in ``threads`` threads (numpy releases the GIL).
    Returns (t, p, p_fwer, n_relabelings, exact).
    """
    order = np.argsort(family, kind="stable")
    batch = WelchBatch(data[:, order])
    labels, exact = relabelings(is_target, n_perm, seed)
    return _max_t(batch, batch.t(is_target[None])[0], labels, exact, family, order, threads, block)


def max_t_signflip(data: np.ndarray, family: np.ndarray, n_perm: int, seed: int, threads: int = 2,
                   block: tuple[int, int] = (128, 2048)):
    """``max_t_pvalues`` for the one-sample t of ``data``'s columns (S, F) under sign flips of its
    subjects (rows), every column of a subject flipped together."""
    order = np.argsort(family, kind="stable")
    batch = SignFlipBatch(data[:, order])
    signs, exact = signflips(data.shape[0], n_perm, seed)
    return _max_t(batch, batch.t(np.ones((1, data.shape[0])))[0], signs, exact, family, order, threads, block)


def _max_t(batch, t_obs, labels, exact, family, order, threads, block):
    from concurrent.futures import ThreadPoolExecutor

    fam_codes, fam = np.unique(family[order], return_inverse=True)
    bad = ~np.isfinite(t_obs)
    thresh = np.where(bad, np.inf, t_obs**2) * (1 - 2 * _TIE)
    P, F, nf = len(labels), len(t_obs), len(fam_codes)
    rows, width = block

    def work(start):
        cols = slice(start, min(start + width, F))
        segs = [(f, np.flatnonzero(fam[cols] == f)) for f in np.unique(fam[cols])]
        count = np.zeros(cols.stop - cols.start)
        fmax = np.zeros((P, nf))
        for r in range(0, P, rows):
            t2 = batch.t2(labels[r:r + rows], cols)
            count += (t2 >= thresh[cols]).sum(0)
            for f, idx in segs:
                fmax[r:r + rows, f] = t2[:, idx[0]:idx[-1] + 1].max(axis=1)
        return count, fmax

    with ThreadPoolExecutor(max(1, threads)) as pool:
        parts = list(pool.map(work, range(0, F, width)))
    count = np.concatenate([c for c, _ in parts])
    fmax = np.maximum.reduce([m for _, m in parts])
    count_max = np.empty(F)
    for f in range(nf):
        cols = fam == f
        maxima = np.sort(fmax[:, f])
        count_max[cols] = P - np.searchsorted(maxima, thresh[cols], side="left")
    if exact:
        p, p_fwer = count / P, count_max / P
    else:
        p, p_fwer = (1 + count) / (1 + P), (1 + count_max) / (1 + P)
    p[bad] = p_fwer[bad] = np.nan
    back = np.empty(F, int)
    back[order] = np.arange(F)
    return t_obs[back], p[back], p_fwer[back], P, exact
