"""Crossover designs: every subject is scanned under both conditions, one session each, in one of two
orders (sequences), each session with its own baseline window.

The edge rows of a crossover study carry a ``session`` column beside ``subject``; ``Design.sessions``
maps each (subject, session) to its condition and period (1 or 2), and ``Design.groups`` names the
conditions (reference, target). Everything here works on the change from each session's own
baseline, ``Δ[s, c, w] = value[s, c, w] − value[s, c, baseline]``.

* ``paired_change`` — the within-subject counterpart of Welch's test. With ``adjust_period`` (the
  default) it is the two-period crossover analysis of Hills & Armitage (1979): per subject the period
  difference ``p = Δ(period 1) − Δ(period 2)``, whose mean is ``τ + π`` in the sequence that had the
  target condition first and ``−τ + π`` in the other, so ``τ̂ = (mean₁ − mean₂) / 2`` is free of the
  period effect ``π``; Welch's t between the sequences gives its SE and df. Without it, the paired t
  on ``d = Δ(target) − Δ(reference)`` (df n − 1), which a period effect biases when the sequences are
  unbalanced. The effect size is Cohen's d_z (the effect over the SD of the within-subject
  differences, for the adjusted test pooled within sequence), with the large-sample normal CI.
* ``difference_model`` — the fixed effects of the MMRM on the within-subject differences over the
  windows (the repeated-measures form of Hills & Armitage): the condition difference per window
  (``condition:window``), the period effect coded by sequence, optionally the difference of the two
  sessions' baselines per window, and subject covariates.
* ``crossover_model`` — the fixed effects of the within-subject MMRM over the 2 × (windows − 1)
  slots (condition × window): a mean per window, the condition difference per window
  (``condition:window``), period as a covariate (centred; or one per window), optionally the
  session's baseline per window, and subject covariates.
* ``period_differences`` / ``within_differences`` — the per-subject columns the permutation tests
  resample: sequences relabelled (adjusted) or signs flipped (paired).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from fclab.framework.connectome.edgestore import Edges
from fclab.framework.pluginhost.contracts import Design
from fclab.framework.stats.cubes import edge_cube, long_rows

CONDITION_TERM = "condition:window"
TREND_TERM = "condition:trend"
TERMS = (CONDITION_TERM, TREND_TERM)
SESSION_COLUMNS = ["subject", "session", "condition", "period"]


def check_sessions(sessions: pd.DataFrame, conditions: tuple[str, str], where: str) -> pd.DataFrame:
    """The sessions table (subject, session, condition, period) with one-line errors naming ``where``
    and the subject: each subject has exactly one session per condition, in periods 1 and 2."""
    from fclab.framework.errors import DataError

    missing = [c for c in SESSION_COLUMNS if c not in sessions.columns]
    if missing:
        raise DataError(f"{where}: no column {missing[0]!r} (a crossover sessions table needs "
                        f"{', '.join(SESSION_COLUMNS)})")
    t = sessions[SESSION_COLUMNS].copy()
    for c in ("subject", "session", "condition"):
        if t[c].isna().any():
            sub = t.loc[t[c].isna(), "subject"].iloc[0]
            raise DataError(f"{where}: sub-{sub}: a session without a {c}")
        t[c] = t[c].astype(str)
    period = pd.to_numeric(t["period"], errors="coerce")
    bad = ~period.isin([1, 2])
    if bad.any():
        r = t[bad].iloc[0]
        raise DataError(f"{where}: sub-{r['subject']} ses-{r['session']}: period {r['period']!r} is not 1 or 2")
    t["period"] = period.astype(int)
    unknown = t[~t["condition"].isin(conditions)]
    if len(unknown):
        r = unknown.iloc[0]
        raise DataError(f"{where}: sub-{r['subject']} ses-{r['session']}: condition {r['condition']!r} is not one "
                        f"of stats.groups ({', '.join(conditions)})")
    for sub, g in t.groupby("subject", sort=False):
        if g["session"].duplicated().any():
            raise DataError(f"{where}: sub-{sub}: session {g['session'][g['session'].duplicated()].iloc[0]!r} "
                            "is listed twice")
        if sorted(g["condition"]) != sorted(conditions) or sorted(g["period"]) != [1, 2]:
            have = ", ".join(f"ses-{s}: {c}, period {p}" for s, c, p in zip(g["session"], g["condition"], g["period"]))
            raise DataError(f"{where}: sub-{sub}: a crossover subject needs one session of each condition "
                            f"({', '.join(conditions)}) in periods 1 and 2 (has {have})")
    return t.reset_index(drop=True)


def crossover_cube(edges: pd.DataFrame | Edges, design: Design) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Keys, values (E, subjects, 2 conditions [reference, target], windows) and each condition's
    period per subject (S, 2). Subjects follow ``design.subjects``, windows ``design.windows``."""
    if isinstance(edges, Edges):
        edges = edges.long()
    ses = design.sessions.set_index(["subject", "session"])
    subjects = design.subjects["subject"].astype(str).tolist()
    units = [f"{s}\x1f{c}" for s in subjects for c in design.groups]
    label = ses["condition"].reindex(pd.MultiIndex.from_arrays([edges["subject"].astype(str),
                                                                edges["session"].astype(str)]))
    unit = edges["subject"].astype(str).to_numpy(object) + "\x1f" + label.to_numpy(object).astype(str)
    flat = dataclasses.replace(design, subjects=pd.DataFrame({"subject": units}))
    keys, cube = edge_cube(edges.assign(subject=unit), flat)
    E, W = len(keys), len(design.windows)
    by = design.sessions.set_index(["subject", "condition"])["period"]
    period = np.array([[by.get((s, c), np.nan) for c in design.groups] for s in subjects], float)
    return keys, cube.reshape(E, len(subjects), 2, W), period


def crossover_change(edges, design: Design) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Keys, the change from each session's baseline (E, S, 2, windows − 1), the baseline values
    (E, S, 2) and the periods (S, 2)."""
    keys, cube, period = crossover_cube(edges, design)
    k = design.windows.index(design.baseline_window)
    others = [i for i in range(len(design.windows)) if i != k]
    base = cube[..., k]
    return keys, cube[..., others] - base[..., None], base, period


def target_first(period: np.ndarray) -> np.ndarray:
    """Subjects whose target-condition session came first (the sequence), from ``crossover_cube``'s periods."""
    return period[:, 1] == 1


def within_differences(delta: np.ndarray) -> np.ndarray:
    """d = Δ(target) − Δ(reference): (E, S, windows − 1)."""
    return delta[:, :, 1] - delta[:, :, 0]


def period_differences(delta: np.ndarray, period: np.ndarray) -> np.ndarray:
    """p = Δ(period 1) − Δ(period 2): (E, S, windows − 1); ± d by sequence."""
    sign = np.where(target_first(period), 1.0, -1.0)
    return within_differences(delta) * sign[None, :, None]


def _dz(est, sd, n, alpha):
    from fclab.framework.stats.design import norm_ppf

    with np.errstate(invalid="ignore", divide="ignore"):
        dz = est / sd
        se = np.sqrt(1 / n + dz**2 / (2 * n))
    z = norm_ppf(1 - alpha / 2)
    return dz, dz - z * se, dz + z * se


def paired_change(edges, design: Design, adjust_period: bool = True) -> pd.DataFrame:
    """Rows of term ``condition:window``: the within-subject condition difference (target − reference)
    in the change from each session's baseline, per edge and non-baseline window (module docstring)."""
    from fclab.framework.stats.design import group_moments, t_ppf, t_sf

    keys, delta, _, period = crossover_change(edges, design)
    if adjust_period:
        pdiff = period_differences(delta, period)
        (n1, m1, v1), (n2, m2, v2) = group_moments(pdiff, target_first(period))
        with np.errstate(invalid="ignore", divide="ignore"):
            a, b = v1 / n1, v2 / n2
            est, se = (m1 - m2) / 2, np.sqrt(a + b) / 2
            df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))
            sd = np.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))  # SD of d within sequence
        n = n1 + n2
        ok = (n1 >= 2) & (n2 >= 2)
        why = "fewer than 2 subjects with both sessions' data in a sequence"
    else:
        d = within_differences(delta)
        n = np.isfinite(d).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            est = np.nansum(d, axis=1) / n
            sd = np.sqrt(np.nansum((d - est[:, None]) ** 2, axis=1) / (n - 1))
            se, df = sd / np.sqrt(n), (n - 1).astype(float)
        ok = n >= 2
        why = "fewer than 2 subjects with both sessions' data"
    with np.errstate(invalid="ignore", divide="ignore"):
        t = est / se
        q = t_ppf(1 - design.alpha / 2, df)
    dz, dz_lo, dz_hi = _dz(est, sd, n, design.alpha)
    cols = {"estimate": est, "se": se, "stat": t, "df": df, "p": 2 * t_sf(np.abs(t), df),
            "ci_low": est - q * se, "ci_high": est + q * se, "effect_size": dz,
            "effect_size_ci_low": dz_lo, "effect_size_ci_high": dz_hi}
    cols = {k: np.where(ok, v, np.nan) for k, v in cols.items()}
    out = long_rows(keys, design.effect_windows, CONDITION_TERM, cols, n=n)
    out["effect_size_kind"] = "cohen_dz"
    out["reason"] = np.where(ok.T.ravel(), None, why)
    return out


def crossover_model(design: Design, period: np.ndarray, base: np.ndarray | None, test: str,
                    period_term: str = "covariate") -> tuple[np.ndarray, list[str]]:
    """Fixed effects over the slots (condition × non-baseline window, the reference condition's
    windows first): (S, K, p), or (E, S, K, p) with ``base`` (E, S, 2), the sessions' baseline values,
    which enter centred per window (``baseline:window``). ``period_term``: ``covariate`` (one
    period effect, period 2 − period 1, centred) or ``window`` (one per window)."""
    eff = design.effect_windows
    W = len(eff)
    S = len(design.subjects)
    eye = np.eye(W)
    cond = np.repeat([0.0, 1.0], W)  # per slot
    win = np.tile(eye, (2, 1))  # (K, W)
    p2 = (period == 2).astype(float)  # (S, 2)
    p2 = np.repeat(p2, W, axis=1) - 0.5  # (S, K), centred: each subject has one period-2 session
    cov, cov_names = design.covariate_matrix(test)
    parts = [np.broadcast_to(win[None], (S, 2 * W, W)), np.broadcast_to((cond[:, None] * win)[None], (S, 2 * W, W))]
    names = [*[f"window[{w}]" for w in eff], *[f"{CONDITION_TERM}[{w}]" for w in eff]]
    if period_term == "window":
        parts.append(p2[:, :, None] * win[None])
        names += [f"period:window[{w}]" for w in eff]
    else:
        parts.append(p2[:, :, None])
        names.append("period")
    parts.append(np.broadcast_to(cov[:, None, :], (S, 2 * W, cov.shape[1])))
    names += cov_names
    X = np.concatenate(parts, axis=2)
    if base is None:
        return X, names
    E = base.shape[0]
    ok = np.isfinite(base)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, base, 0.0).sum(axis=(1, 2), keepdims=True) / ok.sum(axis=(1, 2), keepdims=True)
    centred = np.repeat(base - mean, W, axis=2)  # (E, S, K)
    bcols = centred[..., None] * win[None, None]  # (E, S, K, W)
    Xe = np.concatenate([np.broadcast_to(X[None], (E,) + X.shape), bcols], axis=3)
    return Xe, names + [f"baseline:window[{w}]" for w in eff]


def difference_model(design: Design, period: np.ndarray, base: np.ndarray | None, test: str,
                     period_term: str = "covariate") -> tuple[np.ndarray, list[str]]:
    """Fixed effects of the MMRM on the within-subject differences d = Δ(target) − Δ(reference) over
    the non-baseline windows: (S, W, p), or (E, S, W, p) with ``base`` (E, S, 2). E[d_w] = τ_w + π c:
    ``condition:window[w]`` is τ_w, and c = +1 for the sequence with the reference first, −1 for the
    other, uncentred, so that τ_w weighs the two sequences equally, as the Hills–Armitage estimate does
    (with complete data, ``period_term="window"`` and no further covariates they coincide: every
    window then has the same regressors, so GLS is OLS per window). ``period_term``: one period effect
    (``covariate``) or one per window. ``base``: the difference of the sessions' baselines
    (target − reference) per window (``baseline:window``), not centred: τ_w is the intercept, and
    centring at the sample mean would make it the expected difference at that (random) baseline
    difference, whose spread the model's SE leaves out (on null studies the p-values rejected 4× too
    often); uncentred, it is the difference at equal baselines, which randomisation makes the
    expected one (a period effect on the baselines goes into the sequence term; Kenward & Roger
    2010, Biostatistics 11:1)."""
    eff = design.effect_windows
    W, S = len(eff), len(design.subjects)
    eye = np.eye(W)
    c = np.where(target_first(period), -1.0, 1.0)
    cov, cov_names = design.covariate_matrix(test)
    parts = [np.broadcast_to(eye[None], (S, W, W))]
    names = [f"{CONDITION_TERM}[{w}]" for w in eff]
    if period_term == "window":
        parts.append(c[:, None, None] * eye[None])
        names += [f"period:window[{w}]" for w in eff]
    else:
        parts.append(np.broadcast_to(c[:, None, None], (S, W, 1)))
        names.append("period")
    parts.append(np.broadcast_to(cov[:, None, :], (S, W, cov.shape[1])))
    names += cov_names
    X = np.concatenate(parts, axis=2)
    if base is None:
        return X, names
    diff = base[:, :, 1] - base[:, :, 0]  # (E, S), not centred: see the docstring
    E = base.shape[0]
    Xe = np.concatenate([np.broadcast_to(X[None], (E,) + X.shape), diff[:, :, None, None] * eye[None, None]], axis=3)
    return Xe, names + [f"baseline:window[{w}]" for w in eff]


def crossover_contrasts(design: Design, names: list[str], which) -> list[tuple[str, str, np.ndarray]]:
    """(term, window, L): ``condition:window`` per non-baseline window; ``condition:trend``, the
    condition difference in the least-squares slope across those windows, per window step."""
    col = {n: i for i, n in enumerate(names)}
    eff = design.effect_windows
    out = []

    def unit(w):
        L = np.zeros(len(names))
        L[col[f"{CONDITION_TERM}[{w}]"]] = 1.0
        return L

    if CONDITION_TERM in which:
        out += [(CONDITION_TERM, w, unit(w)) for w in eff]
    if TREND_TERM in which and len(eff) >= 2:
        c = np.arange(len(eff), dtype=float)
        c -= c.mean()
        out.append((TREND_TERM, "trend", sum(ck * unit(w) for ck, w in zip(c, eff)) / (c**2).sum()))
    return out


def crossover_n(delta: np.ndarray, design: Design, term: str, window: str) -> np.ndarray:
    """Per edge, the subjects with both sessions' change in the compared window (any window for the
    trend), as ``paired_change`` counts them."""
    both = np.isfinite(delta).all(axis=2)  # (E, S, W)
    if term == TREND_TERM:
        return both.any(axis=2).sum(axis=1)
    return both[:, :, design.effect_windows.index(window)].sum(axis=1)
