"""Stage ``connectivity``: cut each subject's time series into windows and apply every metric."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from framework.contracts import Metric
from framework.errors import DataError
from framework.extract import TIMESERIES_KEYS
from framework.params import ConnectivityParams, plugin_spec
from framework.registry import get_registry
from framework.windows import resolve, subsample, taper

EDGE_COLUMNS = ["subject", "group", "window", "window_start_s", "window_end_s", "n_volumes", "metric",
                "roi_a", "roi_b", "value", "reason"]


def build_metrics(p: ConnectivityParams) -> list[Metric]:
    registry = get_registry()
    out = []
    for i, spec in enumerate(p.metrics):
        name, opts = plugin_spec(spec, f"connectivity.metrics[{i}]")
        cls = registry.get("metric", name, f"connectivity.metrics[{i}]")
        out.append(cls(cls.Params.model_validate(opts)))
    return out


def output_name(metric: Metric, key: str) -> str:
    return f"{metric.name}_{key}" if key else metric.name


def output_scales(metrics: list[Metric]) -> dict[str, str]:
    return {output_name(m, k): scale for m in metrics for k, scale in m.outputs().items()}


def cut_windows(p: ConnectivityParams, timeseries: pd.DataFrame, cuts: pd.DataFrame, rois: list[str],
                subject_order: list[str]):
    """The (T × R) array of every window and the reason it has no value ("" when it has one)."""
    by_run = {key: g for key, g in timeseries.groupby(["subject", "run"], sort=False)}
    arrays, reasons = [], []
    for c in cuts.itertuples(index=False):
        run_ts = by_run.get((c.subject, c.run))
        if run_ts is None:
            raise DataError(f"sub-{c.subject}: no time series for run {c.run!r}")
        t = run_ts["time_s"].to_numpy()
        sel = (t >= c.window_start_s - 1e-9) & (t < c.window_end_s - 1e-9)
        arrays.append(run_ts.loc[sel, rois].to_numpy(dtype=np.float64))
        n = int(sel.sum())
        reasons.append(f"{n} clean volumes, fewer than min_volumes ({p.min_volumes})" if n < p.min_volumes else "")
    fixed = (cuts["kind"] == "fixed").to_numpy()
    if p.equalize:
        counts = [a.shape[0] for a, ok, f in zip(arrays, reasons, fixed) if f and not ok]
        target = p.equalize_volumes or (min(counts) if counts else 0)
        sub_index = {s: i for i, s in enumerate(subject_order)}
        win_index = {w.name: i for i, w in enumerate(p.windows)}
        for i, c in enumerate(cuts.itertuples(index=False)):
            if not fixed[i] or reasons[i]:
                continue
            n = arrays[i].shape[0]
            if n < target:
                reasons[i] = f"{n} clean volumes, fewer than equalize_volumes ({target})"
            elif n > target:
                # A seed per (study seed, subject, window): stable whatever else is in the study.
                rng = np.random.default_rng([p.seed, sub_index.get(c.subject, 0), win_index[c.window]])
                arrays[i] = arrays[i][subsample(n, target, rng, p.equalize_contiguous)]
    spec = {s.name: s for s in p.sliding}
    for i, c in enumerate(cuts.itertuples(index=False)):
        if c.kind == "sliding" and not reasons[i]:
            w = taper(spec[c.window].taper, arrays[i].shape[0])
            if w is not None:  # Allen et al. (2014): the centred window is multiplied by the taper
                arrays[i] = (arrays[i] - arrays[i].mean(axis=0)) * w[:, None]
    return arrays, reasons


def _apply(metric: Metric, arrays, reasons, trs, cuts: pd.DataFrame):
    """{output name: (n_windows, R, R) values}, and each window's reason for this metric."""
    own = list(reasons)
    for i, arr in enumerate(arrays):
        if not own[i]:
            own[i] = metric.problem(arr.shape[0], trs[i]) or ""
    if metric.group_fit:
        ref = [arrays[i] for i, w in enumerate(cuts["window"]) if w in metric.params.reference_windows and not own[i]]
        if not ref:
            raise DataError(f"{metric.name}: no usable reference window ({', '.join(metric.params.reference_windows)})")
        metric.fit(ref, float(np.median(trs)))
    R = arrays[0].shape[1]
    out = {k: np.full((len(arrays), R, R), np.nan) for k in metric.outputs()}
    groups = defaultdict(list)  # equal length and TR: one batched call each
    for i, arr in enumerate(arrays):
        if not own[i]:
            groups[(arr.shape[0], trs[i])].append(i)
    for (_, tr), idx in groups.items():
        res = metric.compute(np.stack([arrays[i] for i in idx]), tr)
        res = res if isinstance(res, dict) else {"": res}
        for k, v in res.items():
            out[k][idx] = v
    return out, own


def connectivity(p: ConnectivityParams, timeseries: pd.DataFrame, run_qc: pd.DataFrame,
                 events: pd.DataFrame, metrics: list[Metric], subject_order: list[str]) -> pd.DataFrame:
    rois = [c for c in timeseries.columns if c not in TIMESERIES_KEYS]
    cuts = resolve(p, run_qc, events)
    arrays, reasons = cut_windows(p, timeseries, cuts, rois, subject_order)
    trs = cuts["tr_s"].to_numpy()
    iu = np.triu_indices(len(rois), 1)
    roi_a, roi_b = np.array(rois)[iu[0]], np.array(rois)[iu[1]]
    # Edges touching an ROI that is constant in a window have no value, whatever the metric.
    constant = np.array([np.ptp(a, axis=0) == 0 if a.shape[0] else np.zeros(len(rois), bool) for a in arrays])
    meta = cuts.loc[cuts.index.repeat(iu[0].size)].reset_index(drop=True)
    meta["n_volumes"] = np.repeat([a.shape[0] for a in arrays], iu[0].size)
    frames = []
    for metric in metrics:
        values, own = _apply(metric, arrays, reasons, trs, cuts)
        why = np.repeat(np.array(own, dtype=object), iu[0].size).reshape(len(arrays), -1)
        flat_const = constant[:, iu[0]] | constant[:, iu[1]]
        for w, e in zip(*np.nonzero(flat_const & (why == ""))):
            bad = [r for r, c in zip((roi_a[e], roi_b[e]), constant[w, [iu[0][e], iu[1][e]]]) if c]
            why[w, e] = f"constant signal in {', '.join(bad)}"
        for key, mats in values.items():
            frame = meta.copy()
            frame["metric"] = output_name(metric, key)
            frame["roi_a"] = np.tile(roi_a, len(arrays))
            frame["roi_b"] = np.tile(roi_b, len(arrays))
            vals = mats[:, iu[0], iu[1]]
            reason = why.copy()
            reason[(reason == "") & ~np.isfinite(vals)] = f"{metric.name} is not defined for this window"
            vals[reason != ""] = np.nan
            frame["value"] = vals.ravel()
            frame["reason"] = [r or None for r in reason.ravel()]
            frames.append(frame)
    edges = pd.concat(frames, ignore_index=True)
    order = [output_name(m, k) for m in metrics for k in m.outputs()]
    names = [w.name for w in p.windows] + [s.name for s in p.sliding]
    # Stable order: metric as listed, subject as in participants.tsv, window as listed, then time, edge.
    edges["_m"] = edges["metric"].map({m: i for i, m in enumerate(order)})
    edges["_s"] = edges["subject"].map({s: i for i, s in enumerate(subject_order)})
    edges["_w"] = edges["window"].map({w: i for i, w in enumerate(names)})
    edges = edges.sort_values(["_m", "_s", "_w", "window_start_s"], kind="stable")
    edges["n_volumes"] = edges["n_volumes"].astype(np.int32)
    return edges[EDGE_COLUMNS].reset_index(drop=True)
