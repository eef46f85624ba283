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

EDGE_COLUMNS = ["subject", "group", "window", "window_start_s", "window_end_s", "n_volumes", "metric",
                "roi_a", "roi_b", "value"]


def build_metrics(p: ConnectivityParams) -> list[Metric]:
    registry = get_registry()
    out = []
    for i, spec in enumerate(p.metrics):
        name, opts = plugin_spec(spec, f"connectivity.metrics[{i}]")
        cls = registry.get("metric", name, f"connectivity.metrics[{i}]")
        out.append(cls(cls.Params.model_validate(opts)))
    return out


def window_bounds(p: ConnectivityParams, run_qc: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Start and end (seconds from the run start) of every window for every subject."""
    onsets = {(r.subject, r.run, r.trial_type): r.onset_s for r in events.itertuples()}
    rows = []
    for run in run_qc.itertuples():
        duration = run.n_volumes * run.tr_s
        for w in p.windows:
            if w.run != run.run:
                continue
            zero = 0.0
            if w.event is not None:
                key = (run.subject, run.run, w.event)
                if key not in onsets:
                    raise DataError(f"sub-{run.subject} run {run.run!r}: no {w.event!r} event for window {w.name!r}")
                zero = onsets[key]
            if w.start_min is None:
                start, end = zero, duration
            else:
                start, end = zero + 60.0 * w.start_min, zero + 60.0 * w.end_min
            if start < 0 or end > duration + 1e-6:
                raise DataError(
                    f"sub-{run.subject} run {run.run!r}: window {w.name!r} ({start:g}-{end:g} s) lies outside "
                    f"the run (0-{duration:g} s)"
                )
            rows.append({"subject": run.subject, "group": run.group, "run": run.run, "window": w.name,
                         "window_start_s": start, "window_end_s": end})
    return pd.DataFrame(rows)


def connectivity(p: ConnectivityParams, timeseries: pd.DataFrame, run_qc: pd.DataFrame,
                 events: pd.DataFrame, metrics: list[Metric], subject_order: list[str]) -> pd.DataFrame:
    rois = [c for c in timeseries.columns if c not in TIMESERIES_KEYS]
    bounds = window_bounds(p, run_qc, events)
    by_run = {key: g for key, g in timeseries.groupby(["subject", "run"], sort=False)}
    cuts, arrays = [], []
    for b in bounds.itertuples(index=False):
        run_ts = by_run.get((b.subject, b.run))
        if run_ts is None:
            raise DataError(f"sub-{b.subject}: no time series for run {b.run!r}")
        t = run_ts["time_s"].to_numpy()
        sel = (t >= b.window_start_s - 1e-9) & (t < b.window_end_s - 1e-9)
        cuts.append(b)
        arrays.append(run_ts.loc[sel, rois].to_numpy(dtype=np.float64))
    # Windows of equal length are stacked so each metric runs once per length, not once per window.
    by_length = defaultdict(list)
    for i, arr in enumerate(arrays):
        by_length[arr.shape[0]].append(i)
    iu = np.triu_indices(len(rois), 1)
    frames = []
    for metric in metrics:
        values = np.empty((len(arrays), iu[0].size))
        for length, idx in by_length.items():
            mats = metric.compute(np.stack([arrays[i] for i in idx]))
            values[idx] = mats[:, iu[0], iu[1]]
        meta = pd.DataFrame(cuts)
        meta["n_volumes"] = [a.shape[0] for a in arrays]
        frame = meta.loc[meta.index.repeat(iu[0].size)].reset_index(drop=True)
        frame["metric"] = metric.name
        frame["roi_a"] = np.tile(np.array(rois)[iu[0]], len(arrays))
        frame["roi_b"] = np.tile(np.array(rois)[iu[1]], len(arrays))
        frame["value"] = values.ravel()
        frames.append(frame)
    edges = pd.concat(frames, ignore_index=True)
    # Stable order: metric as listed, subject as in participants.tsv, window as listed, edge in ROI order.
    edges["_m"] = edges["metric"].map({m.name: i for i, m in enumerate(metrics)})
    edges["_s"] = edges["subject"].map({s: i for i, s in enumerate(subject_order)})
    edges["_w"] = edges["window"].map({w.name: i for i, w in enumerate(p.windows)})
    edges = edges.sort_values(["_m", "_s", "_w"], kind="stable")
    edges["n_volumes"] = edges["n_volumes"].astype(np.int32)
    return edges[EDGE_COLUMNS].reset_index(drop=True)
