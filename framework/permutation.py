"""Subject-level permutations of group labels, and a Welch t statistic batched over them.

A relabeling moves a subject's whole set of windows together (subjects are the exchangeable
units). When the number of distinct relabelings, C(n, n_target), is at most ``n_perm`` they are
enumerated exactly (the observed labelling among them) and p = count / C; otherwise ``n_perm``
random relabelings are drawn and p = (1 + count) / (1 + n_perm).
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
    in the target-group sums s₁ = G x and q₁ = G x², with per-column constants: one matrix product
    (G @ [x | x²]) and a few fused element-wise operations per labelling block.
    """

    def __init__(self, data: np.ndarray):
        self.mask = np.isfinite(data)
        self.complete = bool(self.mask.all())
        self.x = np.where(self.mask, data, 0.0)
        self.x2 = self.x**2
        self.m = self.mask.astype(float)
        self.n, self.s, self.q = self.m.sum(0), self.x.sum(0), self.x2.sum(0)
        self.xx = np.concatenate([self.x, self.x2], axis=1)

    def t(self, labels: np.ndarray) -> np.ndarray:
        """(P, F) statistics for (P, S) boolean labellings."""
        G = labels.astype(float)
        if self.complete and np.ptp(G.sum(1)) == 0:
            return self._t_complete(G)
        n1 = G @ self.m
        s1, q1 = G @ self.x, G @ self.x2
        n2, s2, q2 = self.n - n1, self.s - s1, self.q - q1
        with np.errstate(invalid="ignore", divide="ignore"):
            m1, m2 = s1 / n1, s2 / n2
            v1 = (q1 - s1 * m1) / (n1 - 1) / n1
            v2 = (q2 - s2 * m2) / (n2 - 1) / n2
            return (m1 - m2) / np.sqrt(np.maximum(v1, 0) + np.maximum(v2, 0))

    def _t_complete(self, G: np.ndarray) -> np.ndarray:
        F = self.x.shape[1]
        n1 = float(G[0].sum())
        n2 = float(self.x.shape[0]) - n1
        sq = G @ self.xx
        s1, q1 = sq[:, :F], sq[:, F:]
        s, q = self.s, self.q
        # Var terms: v1/n1 = (q1 − s1²/n1)/((n1−1) n1), v2/n2 = ((q − q1) − (s − s1)²/n2)/((n2−1) n2).
        a1, a2 = 1 / ((n1 - 1) * n1), 1 / ((n2 - 1) * n2)
        b1, b2 = a1 / n1, a2 / n2
        den = q1 * (a1 - a2)
        den -= s1 * (s1 * (b1 + b2) - 2 * b2 * s)
        den += a2 * q - b2 * s**2
        np.maximum(den, 0, out=den)
        num = s1 * (1 / n1 + 1 / n2)
        num -= s / n2
        with np.errstate(invalid="ignore", divide="ignore"):
            num /= np.sqrt(den, out=den)
        return num


def block_size(n_columns: int, budget_bytes: float = 5e7) -> int:
    """How many labellings to process at once so that a (block, F) array stays within budget."""
    return int(max(1, min(1000, budget_bytes // (8 * max(n_columns, 1)))))


def max_t_pvalues(data: np.ndarray, is_target: np.ndarray, family: np.ndarray, n_perm: int, seed: int):
    """Two-sided permutation p-values per column and max-|t| FWER-adjusted ones within each family.

    ``family`` gives each column an integer family; the maximum is taken within a family.
    Returns (t, p, p_fwer, n_relabelings, exact).
    """
    batch = WelchBatch(data)
    t_obs = batch.t(is_target[None])[0]
    bad = ~np.isfinite(t_obs)
    obs = np.where(bad, np.inf, np.abs(t_obs))
    labels, exact = relabelings(is_target, n_perm, seed)
    fams = np.unique(family)
    count = np.zeros(obs.shape)
    count_max = np.zeros(obs.shape)
    thresh = obs * (1 - _TIE)
    step = block_size(len(obs))
    for start in range(0, len(labels), step):
        t = np.abs(batch.t(labels[start : start + step]))
        t = np.where(np.isfinite(t), t, 0.0)
        count += (t >= thresh).sum(0)
        for f in fams:
            cols = family == f
            mx = t[:, cols].max(axis=1)
            count_max[cols] += (mx[:, None] >= thresh[cols][None]).sum(0)
    P = len(labels)
    if exact:
        p, p_fwer = count / P, count_max / P
    else:
        p, p_fwer = (1 + count) / (1 + P), (1 + count_max) / (1 + P)
    p[bad] = p_fwer[bad] = np.nan
    return t_obs, p, p_fwer, P, exact
