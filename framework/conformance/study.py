"""A small fake study for the kit: Gaussian window signals, an edge table computed with any metric
(``fake_edges``) and the ``Design`` a test receives for it (``fake_design``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fclab.framework.pluginhost.contracts import Design, Metric


FAKE_ROIS = ("A", "B", "C", "D", "E")


FAKE_WINDOWS = ("baseline", "w1", "w2")


def window_series(rng, n: int, T: int, R: int, corr: np.ndarray) -> np.ndarray:
    """``n`` windows of (T, R) Gaussian signals with correlation ``corr`` and some autocorrelation."""
    z = rng.standard_normal((n, T + 2, R))
    z = (z[:, 2:] + 0.6 * z[:, 1:-1] + 0.3 * z[:, :-2]) / np.sqrt(1 + 0.36 + 0.09)
    return z @ np.linalg.cholesky(corr).T


def as_outputs(res) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in res.items()} if isinstance(res, dict) else {"": np.asarray(res)}


def fake_edges(metric: Metric | None = None, n_per_group: tuple[int, int] = (8, 8),
               groups: tuple[str, str] = ("control", "drug"), rois=FAKE_ROIS, windows=FAKE_WINDOWS,
               n_volumes: int = 80, tr: float = 2.0, effect_r: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """A small study as an edge table: ``n_per_group`` subjects (reference, target), each with
    ``windows`` of ``n_volumes`` volumes of ROI signals correlated 0.3 pairwise; in the target group the
    correlation of the first two ROIs is raised by ``effect_r`` in every window after the first.
    Edge values are ``metric``'s main output (the Fisher z of Pearson's r when None); windows are
    lengthened to the shortest length the metric accepts when ``n_volumes`` is too short for it."""
    rng = np.random.default_rng(seed)
    if metric is not None:  # long enough for the metric (e.g. coherence's Welch segments)
        n_volumes = next(n for n in range(n_volumes, n_volumes + 4096) if metric.problem(n, tr) is None)
    R = len(rois)
    base = np.full((R, R), 0.3) + 0.7 * np.eye(R)
    subjects = [f"s{i:02d}" for i in range(sum(n_per_group))]
    group_of = [groups[0]] * n_per_group[0] + [groups[1]] * n_per_group[1]
    series = np.empty((len(subjects), len(windows), n_volumes, R))
    for s, g in enumerate(group_of):
        for k in range(len(windows)):
            corr = base.copy()
            if g == groups[1] and k > 0:
                corr[0, 1] = corr[1, 0] = 0.3 + effect_r
            series[s, k] = window_series(rng, 1, n_volumes, R, corr)[0]
    if metric is None:
        z = series - series.mean(axis=2, keepdims=True)
        z /= np.sqrt((z**2).sum(axis=2, keepdims=True))
        values = np.arctanh(np.clip(np.einsum("swti,swtj->swij", z, z), -0.999999, 0.999999))
        name = "pearson"
    else:
        if metric.group_fit:
            metric.fit([series[s, 0] for s in range(len(subjects))], tr)
        values = as_outputs(metric.compute(series, tr))[""]
        name = metric.name
    iu = np.triu_indices(R, 1)
    rows = []
    for s, subject in enumerate(subjects):
        for k, w in enumerate(windows):
            for i, j in zip(*iu):
                v = float(values[s, k, i, j])
                rows.append((subject, group_of[s], w, k * n_volumes * tr, (k + 1) * n_volumes * tr, n_volumes,
                             name, rois[i], rois[j], v, None if np.isfinite(v) else "not computable"))
    return pd.DataFrame(rows, columns=["subject", "group", "window", "window_start_s", "window_end_s",
                                       "n_volumes", "metric", "roi_a", "roi_b", "value", "reason"])


def fake_design(edges: pd.DataFrame, groups: tuple[str, str] = ("control", "drug"), baseline: str | None = None,
                alpha: float = 0.05, covariates: tuple[str, ...] = (), seed: int = 0) -> Design:
    """The ``Design`` a test receives for ``fake_edges``' study: subjects with their group, a numeric
    ``age``, a categorical ``sex`` and ``mean_fd`` (any of which can be a covariate), the first window
    as baseline unless ``baseline`` is given, the first edge confirmatory."""
    rng = np.random.default_rng(seed)
    subjects = edges[["subject", "group"]].drop_duplicates().reset_index(drop=True)
    subjects["age"] = rng.uniform(20, 60, len(subjects)).round(1)
    subjects["sex"] = np.where(np.arange(len(subjects)) % 2 == 0, "F", "M")
    subjects["mean_fd"] = rng.uniform(0.05, 0.3, len(subjects))
    windows = tuple(dict.fromkeys(edges["window"]))
    first = edges[["roi_a", "roi_b"]].iloc[0]
    return Design(groups=tuple(groups), baseline_window=baseline or windows[0], windows=windows,
                  subjects=subjects, alpha=alpha, covariates=tuple(covariates),
                  confirmatory=frozenset({frozenset((first["roi_a"], first["roi_b"]))}))
