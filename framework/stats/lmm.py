"""Batched REML fits of the random-intercept linear mixed model, one per edge, all at once.

The model for one edge is ``y = X β + Z b + e`` with a random intercept per subject,
``b ~ N(0, τ²)`` and ``e ~ N(0, σ²)``. With ``γ = τ²/σ²`` the covariance of subject ``s``'s
``n_s`` observations is ``σ² H_s`` with ``H_s = I + γ 11'`` and

    H_s⁻¹ = I − w_s 11',   w_s = γ / (1 + n_s γ),   log|H_s| = log(1 + n_s γ),

so every quantity REML needs reduces to per-subject sums: ``X_s'X_s``, ``X_s'1``, ``X_s'y_s``,
``1'y_s`` and ``y_s'y_s``. With ``M(γ) = Σ_s X_s'H_s⁻¹X_s`` and
``RSS(γ) = Σ_s y_s'H_s⁻¹y_s − b'M⁻¹b`` (``b = Σ_s X_s'H_s⁻¹y_s``), σ² profiles out and

    −2 ℓ_REML(γ) = (N − p) log RSS(γ) + Σ_s log(1 + n_s γ) + log|M(γ)| + const.

Edges are grouped by their pattern of missing observations: within a pattern, X and the subject
sizes are shared, so only the y-sums differ between edges. When every subject of a pattern has the
same number of observations (the usual case), ``M(γ) = A − w S`` for fixed ``A`` and ``S`` and a
generalised eigendecomposition ``S v = λ A v`` turns every evaluation into O(p) work per edge. An
unbalanced pattern uses batched Cholesky factorisations instead.

γ is found per edge by a grid over log γ followed by golden-section refinement, and the boundary
γ = 0 is compared explicitly. Denominator degrees of freedom use Satterthwaite's approximation as
in lmerTest (Kuznetsova et al. 2017): for a contrast ``L``, ``df = 2 (L'CL)² / (g' A g)`` where
``C = σ² M⁻¹``, ``g`` is the gradient of ``L'CL`` in the variance parameters and ``A`` is twice the
inverse Hessian of the REML deviance, both exact (closed forms in the per-subject sums, in the
linear coordinates (σ², τ²), which stay well conditioned as τ² → 0). When τ² = 0 is the estimate,
the subject variance is treated as known to be zero and ``df = N − p``. A df outside
(0, N − p] is never used: the row gets NaN and a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = np.linspace(np.log(1e-6), np.log(1e4), 31)  # log γ
GOLDEN_STEPS = 45  # bracket of two grid steps shrinks to ~1e-10 in log γ
_PHI = (np.sqrt(5) - 1) / 2


@dataclass
class MixedFit:
    """REML estimates for E edges with p fixed effects (NaN where an edge could not be fitted)."""

    beta: np.ndarray  # (E, p)
    cov: np.ndarray  # (E, p, p) covariance of beta
    sigma2: np.ndarray  # (E,)
    tau2: np.ndarray  # (E,)
    n_obs: np.ndarray  # (E,)
    n_subjects: np.ndarray  # (E,)
    reason: np.ndarray  # (E,) object: None, or why the edge has no fit
    _patterns: list  # internals for Satterthwaite df

    def contrast(self, L: np.ndarray, alpha: float = 0.05) -> dict[str, np.ndarray]:
        """Estimate, SE, Satterthwaite df, t and two-sided p for ``L'β`` on every edge."""
        from fclab.framework.stats.design import bounded_df, t_ppf, t_sf

        L = np.asarray(L, float)
        est = self.beta @ L
        var = (self.cov @ L) @ L
        se = np.sqrt(var)
        df = np.full(est.shape, np.nan)
        for pat in self._patterns:
            df[pat.rows] = pat.satterthwaite(L)
        p_max = self.n_obs - self.beta.shape[1]
        fitted = np.array([r is None for r in self.reason])
        df, why = bounded_df(df, p_max, fitted)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = est / se
            p = 2 * t_sf(np.abs(t), df)
            q = t_ppf(1 - alpha / 2, df)
        return {"estimate": est, "se": se, "df": df, "stat": t, "p": p,
                "ci_low": est - q * se, "ci_high": est + q * se,
                "df_reason": why}


class _Pattern:
    """Edges that share one pattern of present observations, and so one design."""

    def __init__(self, rows, keep, X, y):
        self.rows = rows  # indices into the edge axis
        sub = keep.any(axis=1)
        keep, X = keep[sub], X[sub]
        E, S, K, p = len(rows), *keep.shape, X.shape[-1]
        Xd = (X * keep[..., None]).reshape(S * K, p)
        y0 = (y if sub.all() else y[:, sub]).reshape(E, S * K)
        if not keep.all():
            y0 = np.where(keep.reshape(1, S * K), y0, 0.0)
        self.n = keep.sum(axis=1).astype(float)  # (S,)
        self.n_values, self.n_counts = np.unique(self.n, return_counts=True)
        self.N = self.n.sum()
        self.p = p
        self.A = Xd.T @ Xd
        self.s = Xd.reshape(S, K, p).sum(axis=1)  # (S, p): X_s'1
        self.xy = y0 @ Xd  # (E, p)
        self.ty = y0.reshape(E, S, K).sum(axis=2)  # (E, S)
        self.yy = np.einsum("ek,ek->e", y0, y0)
        self.balanced = len(self.n_values) == 1
        if self.balanced:
            from scipy.linalg import eigh

            lam, V = eigh(self.s.T @ self.s, self.A)  # V' A V = I, V' S V = diag(lam)
            # Only directions with λ > 0 depend on γ (V_k's_s = 0 for all s when λ_k = 0), so
            # an evaluation costs O(rank of the between-subject part) per edge.
            nz = lam > 1e-10 * max(lam.max(), 1e-300)
            self.lam, self.V, self.nz = lam, V, nz
            self.logdetA = np.linalg.slogdet(self.A)[1]
            self.u = self.xy @ V  # (E, p)
            self.v = (self.ty @ self.s) @ V
            self.tt = np.einsum("es,es->e", self.ty, self.ty)
            self.yy_within = self.yy - (self.u[:, ~nz] ** 2).sum(axis=1)
            self.u_nz, self.v_nz, self.lam_nz = self.u[:, nz], self.v[:, nz], lam[nz]
        else:
            self.ss = np.einsum("sp,sq->spq", self.s, self.s).reshape(S, -1)

    # -- the profiled REML criterion -----------------------------------------------------------
    def _logdet_h(self, gamma):
        """Σ_s log(1 + n_s γ), summed over the distinct subject sizes."""
        return np.log1p(gamma[:, None] * self.n_values[None]) @ self.n_counts

    def terms(self, gamma, idx=slice(None), solve=True):
        """log|M|, RSS and, with ``solve``, M⁻¹ and β at γ (one per edge in ``idx``)."""
        if self.balanced:
            w0 = gamma / (1 + self.n_values[0] * gamma)
            d = 1 - w0[:, None] * self.lam_nz[None]  # (E, k), > 0
            r = self.u_nz[idx] - w0[:, None] * self.v_nz[idx]
            rss = self.yy_within[idx] - w0 * self.tt[idx] - (r**2 / d).sum(axis=1)
            logdet = self.logdetA + np.log(d).sum(axis=1)
            if not solve:
                return logdet, rss, None, None
            d = 1 - w0[:, None] * self.lam[None]
            r = self.u[idx] - w0[:, None] * self.v[idx]
            Minv = (self.V[None] / d[:, None, :]) @ self.V.T
            beta = (r / d) @ self.V.T
            return logdet, rss, Minv, beta
        w = gamma[:, None] / (1 + self.n[None] * gamma[:, None])  # (E, S)
        M = self.A[None] - (w @ self.ss).reshape(-1, self.p, self.p)
        b = self.xy[idx] - (w * self.ty[idx]) @ self.s
        c = self.yy[idx] - (w * self.ty[idx] ** 2).sum(axis=1)
        chol = np.linalg.cholesky(M)
        logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        if not solve:
            Lb = np.linalg.solve(chol, b[..., None])[..., 0]
            return logdet, c - (Lb**2).sum(axis=1), None, None
        Minv = np.linalg.inv(M)
        beta = np.einsum("epq,eq->ep", Minv, b)
        return logdet, c - (b * beta).sum(axis=1), Minv, beta

    def criterion(self, gamma, idx=slice(None)):
        logdet, rss, _, _ = self.terms(gamma, idx, solve=False)
        return ((self.N - self.p) * np.log(np.maximum(rss, 1e-300))
                + self._logdet_h(gamma) + logdet)

    def fit(self):
        E = len(self.rows)
        # Coarse grid, then golden section between the best grid point's neighbours.
        crit = np.stack([self.criterion(np.full(E, np.exp(g))) for g in GRID], axis=1)
        best = np.argmin(crit, axis=1)
        lo, hi = GRID[np.maximum(best - 1, 0)], GRID[np.minimum(best + 1, len(GRID) - 1)]
        a, b = lo.copy(), hi.copy()
        c, d = b - _PHI * (b - a), a + _PHI * (b - a)
        fc, fd = self.criterion(np.exp(c)), self.criterion(np.exp(d))
        for _ in range(GOLDEN_STEPS):
            left = fc < fd
            b = np.where(left, d, b)
            a = np.where(left, a, c)
            d_new = np.where(left, c, a + _PHI * (b - a))
            c_new = np.where(left, b - _PHI * (b - a), d)
            f_new = self.criterion(np.exp(np.where(left, c_new, d_new)))
            fc, fd = np.where(left, f_new, fd), np.where(left, fc, f_new)
            c, d = c_new, d_new
        gamma = np.exp((a + b) / 2)
        f_best = self.criterion(gamma)
        zero = self.criterion(np.zeros(E)) <= f_best  # the boundary wins
        gamma = np.where(zero, 0.0, gamma)
        self.gamma = gamma
        logdet, rss, Minv, beta = self.terms(gamma)
        self.sigma2 = rss / (self.N - self.p)
        self.beta, self.Minv = beta, Minv
        return beta, self.sigma2[:, None, None] * Minv, self.sigma2, gamma * self.sigma2

    # -- Satterthwaite degrees of freedom ------------------------------------------------------
    def _exact(self):
        """Exact Hessian of the REML deviance in (σ², τ²) and X'V⁻¹V_iV⁻¹X, once per fit.

        With V_1 = ∂V/∂σ² = I, V_2 = ∂V/∂τ² = blockdiag(11'), and per subject
        V_s⁻¹ = (I − w_s 11')/σ², V_s⁻¹1 = a_s 1 (a_s = 1/(σ²(1 + n_s γ))), the Hessian
        −tr(P V_i P V_j) + 2 y'P V_i P V_j P y reduces to per-subject sums (see fclab.framework.stats.mmrm for
        the general formula). Linear coordinates keep it well conditioned as τ² → 0, where the
        log-variance parameterisation (and finite differences in it) break down.
        """
        if getattr(self, "_ex", None) is not None:
            return self._ex
        if self.balanced:
            self._ex = self._exact_balanced()
            return self._ex
        E, p = len(self.rows), self.p
        mw_inv = self.sigma2[:, None, None] * self.Minv  # (X'V⁻¹X)⁻¹
        hess, bt = np.empty((E, 2, 2)), np.empty((E, 2, p, p))
        for lo in range(0, E, 16384):  # bounded temporaries
            sl = slice(lo, min(lo + 16384, E))
            hess[sl], bt[sl] = self._exact_block(sl, mw_inv[sl])
        self._ex = (mw_inv, hess, bt)
        return self._ex

    def _exact_balanced(self):
        """The same Hessian when every subject has n observations: in the basis V (V'AV = I,
        V'SV = diag(λ), S = Σ_s s_s s_s') every p × p matrix of the formulas is diagonal, so each
        edge costs O(p)."""
        s2, g, lam, V = self.sigma2, self.gamma, self.lam, self.V
        n0, n_sub = self.n_values[0], float(self.n_counts[0])
        w = g / (1 + n0 * g)
        a = 1 / (s2 * (1 + n0 * g))
        d = 1 - w[:, None] * lam[None]  # V'MV
        c3 = 3 * w - 3 * w**2 * n0 + w**3 * n0**2
        d2 = 2 * w - w**2 * n0
        f1 = (1 - d2[:, None] * lam[None]) / (s2[:, None] * d)  # eigenvalues of (X'V⁻¹X)⁻¹ X'V⁻¹V_1V⁻¹X
        f2 = (s2 * a**2)[:, None] * lam[None] / d  # ... and of V_2
        tr_s = s2 * (lam[None] / d).sum(1)  # Σ_s s_s'(X'V⁻¹X)⁻¹s_s
        ex = np.empty((len(s2), 2, 2))
        ex[:, 0, 0] = (n_sub * (n0 - 2 * w * n0 + w**2 * n0**2) / s2**2
                       - 2 * ((1 - c3[:, None] * lam[None]) / d).sum(1) / s2**2 + (f1**2).sum(1))
        ex[:, 0, 1] = n_sub * n0 * a**2 - 2 * a**3 * tr_s + (f1 * f2).sum(1)
        ex[:, 1, 1] = n_sub * (n0 * a) ** 2 - 2 * n0 * a**3 * tr_s + (f2**2).sum(1)
        ex[:, 1, 0] = ex[:, 0, 1]
        beta, sv = self.beta, self.s
        t = self.ty - beta @ sv.T
        rr = self.yy - 2 * (beta * self.xy).sum(1) + ((beta @ self.A) * beta).sum(1)
        xr = self.xy - beta @ self.A
        xwq = np.stack([(xr - d2[:, None] * (t @ sv)) / s2[:, None] ** 2, (a**2)[:, None] * (t @ sv)], axis=1)
        xv = xwq @ V  # in the basis V: (X'V⁻¹X)⁻¹ = σ² V diag(1/d) V'
        qwq = np.empty_like(ex)
        t2 = (t**2).sum(1)
        qwq[:, 0, 0] = (rr - c3 * t2) / s2**3
        qwq[:, 0, 1] = qwq[:, 1, 0] = a**3 * t2
        qwq[:, 1, 1] = n0 * a**3 * t2
        ai = qwq - s2[:, None, None] * ((xv[:, :, None, :] * xv[:, None, :, :]) / d[:, None, None, :]).sum(-1)
        return ("balanced", -ex + 2 * ai, d, d2, a)

    def _exact_block(self, sl, mw_inv):
        E, p = len(mw_inv), self.p
        s2, g, n, sv = self.sigma2[sl], self.gamma[sl], self.n[None], self.s
        w = g[:, None] / (1 + n * g[:, None])
        a = 1 / (s2[:, None] * (1 + n * g[:, None]))
        ss = (sv[:, :, None] * sv[:, None, :]).reshape(len(sv), -1)

        def wsum(c):
            return (c @ ss).reshape(E, p, p)

        def trace(x, y):  # tr(x y) per edge
            return (x * y.transpose(0, 2, 1)).sum(axis=(1, 2))

        c3 = 3 * w - 3 * w**2 * n + w**3 * n**2  # (I − wJ)³ = I − c3 J
        d2 = 2 * w - w**2 * n  # (I − wJ)² = I − d2 J
        bt1 = (self.A[None] - wsum(d2)) / s2[:, None, None] ** 2  # X'V⁻¹ V_1 V⁻¹X
        bt2 = wsum(a**2)  # X'V⁻¹ V_2 V⁻¹X
        xw3x = (self.A[None] - wsum(c3)) / s2[:, None, None] ** 3
        sms = (ss @ mw_inv.reshape(E, p * p).T).T  # s_s' (X'V⁻¹X)⁻¹ s_s
        n1 = mw_inv @ bt1
        n2 = mw_inv @ bt2
        ex = np.empty((E, 2, 2))
        ex[:, 0, 0] = ((n - 2 * w * n + w**2 * n**2).sum(1) / s2**2 - 2 * trace(mw_inv, xw3x) + trace(n1, n1))
        ex[:, 0, 1] = ((n * a**2).sum(1) - 2 * (a**3 * sms).sum(1) + trace(n1, n2))
        ex[:, 1, 1] = (((n * a) ** 2).sum(1) - 2 * (n * a**3 * sms).sum(1) + trace(n2, n2))
        ex[:, 1, 0] = ex[:, 0, 1]
        # y'P V_i P V_j P y = q_i'P q_j with q_i = V_i P y; r = y − Xβ, t_s = 1'r_s.
        beta, xy = self.beta[sl], self.xy[sl]
        t = self.ty[sl] - beta @ sv.T
        rr = self.yy[sl] - 2 * (beta * xy).sum(1) + ((beta @ self.A) * beta).sum(1)
        xr = xy - beta @ self.A
        xwq = np.stack([(xr - (d2 * t) @ sv) / s2[:, None] ** 2, (a**2 * t) @ sv], axis=1)  # (E, 2, p)
        qwq = np.empty((E, 2, 2))
        qwq[:, 0, 0] = (rr - (c3 * t**2).sum(1)) / s2**3
        qwq[:, 0, 1] = qwq[:, 1, 0] = (a**3 * t**2).sum(1)
        qwq[:, 1, 1] = (n * a**3 * t**2).sum(1)
        ai = qwq - xwq @ mw_inv @ xwq.transpose(0, 2, 1)
        return -ex + 2 * ai, np.stack([bt1, bt2], axis=1)

    def satterthwaite(self, L):
        E = len(self.rows)
        df = np.full(E, self.N - self.p)  # τ² = 0: the OLS residual df, as lmerTest gives there
        inner = self.gamma > 0
        if not inner.any():
            return df
        ex = self._exact()
        if isinstance(ex[0], str):  # ("balanced", ...)
            _, hess, d, d2, a = ex
            lt = (self.V.T @ L)[None] / d  # V'L / d
            lcl = self.sigma2 * (lt * (self.V.T @ L)[None]).sum(1)
            grad = np.stack([(lt**2 * (1 - d2[:, None] * self.lam[None])).sum(1),
                             self.sigma2**2 * a**2 * (lt**2 * self.lam[None]).sum(1)], axis=1)
        else:
            mw_inv, hess, bt = ex
            m = mw_inv @ L
            lcl = m @ L
            grad = ((bt @ m[:, None, :, None])[..., 0] * m[:, None, :]).sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            quad = ((np.linalg.inv(hess) @ grad[..., None])[..., 0] * grad).sum(axis=1)
            out = lcl**2 / quad
        return np.where(inner, out, df)


def fit_reml(y: np.ndarray, X: np.ndarray, min_subjects: int = 2) -> MixedFit:
    """Fit every edge of ``y`` (E, S, K; NaN = missing) with subject designs ``X`` (S, K, p).

    An edge gets NaN estimates and a ``reason`` when it has fewer than ``min_subjects`` subjects,
    no residual degrees of freedom, or a fixed-effects design of less than full rank.
    """
    E, S, K = y.shape
    p = X.shape[-1]
    keep = np.isfinite(y)
    beta = cov = None
    sigma2, tau2 = np.full(E, np.nan), np.full(E, np.nan)
    n_obs = keep.sum(axis=(1, 2))
    n_sub = keep.any(axis=2).sum(axis=1)
    reason = np.full(E, None, dtype=object)
    patterns = []
    complete = keep.all(axis=(1, 2))
    groups = [np.flatnonzero(complete)] if complete.any() else []
    rest = np.flatnonzero(~complete)
    if len(rest):  # group the other edges by their pattern of present observations
        flat = np.packbits(keep[rest].reshape(len(rest), -1), axis=1)
        _, inverse = np.unique(flat, axis=0, return_inverse=True)
        groups += [rest[inverse.ravel() == k] for k in range(inverse.max() + 1)]
    for rows in groups:
        kp = keep[rows[0]]
        rank = np.linalg.matrix_rank(X[kp]) if kp.any() else 0
        why = None
        if n_sub[rows[0]] < min_subjects:
            why = f"fewer than {min_subjects} subjects with data"
        elif rank < p:
            why = "fixed effects not estimable from the observations present"
        elif n_obs[rows[0]] <= p:
            why = "no residual degrees of freedom"
        if why:
            reason[rows] = why
            continue
        pat = _Pattern(rows, kp, X, y if len(rows) == E else y[rows])
        b, c, s2, t2 = pat.fit()
        if len(rows) == E:  # one pattern for every edge: no copies
            beta, cov = b, c
        else:
            if beta is None:
                beta, cov = np.full((E, p), np.nan), np.full((E, p, p), np.nan)
            beta[rows], cov[rows] = b, c
        sigma2[rows], tau2[rows] = s2, t2
        patterns.append(pat)
    if beta is None:
        beta, cov = np.full((E, p), np.nan), np.full((E, p, p), np.nan)
    return MixedFit(beta, cov, sigma2, tau2, n_obs, n_sub, reason, patterns)
