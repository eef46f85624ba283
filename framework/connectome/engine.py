"""Stage ``connectivity``: cut each subject's time series into windows and apply every metric.

Windows are index ranges into each run's (T × R) array of clean volumes. Plain windows go to the
metric's ``compute_edges`` run by run (one batched call, or running sums for overlapping sliding
windows); equalised or tapered windows, which are no longer plain ranges, go to ``compute`` stacked
by length. The result is packed (framework/edgestore.py): one row per window × metric output.
"""

from __future__ import annotations

import dataclasses

from collections import defaultdict

import numpy as np
import pandas as pd

from fclab.framework.pluginhost.contracts import TIMESERIES_KEYS, Metric
from fclab.framework.connectome.edgestore import EDGE_COLUMNS, ROW_COLUMNS, Edges, pack
from fclab.framework.errors import DataError, ParamsError
from fclab.framework.params import ConnectivityParams
from fclab.framework.connectome.windows import resolve, subsample, taper

__all__ = ["EDGE_COLUMNS", "Edges", "connectivity", "output_name", "output_scales",
           "scale_descriptions"]


def output_name(metric: Metric, key: str) -> str:
    return f"{metric.name}_{key}" if key else metric.name


def output_scales(metrics: list[Metric]) -> dict[str, str]:
    return {output_name(m, k): scale for m in metrics for k, scale in m.outputs().items()}


def scale_descriptions(metrics: list[Metric]) -> dict[str, dict]:
    """Scale name -> its label, sign and range, for the report (which reads provenance, not plugins)."""
    return {sc.name: dataclasses.asdict(sc) for m in metrics for sc in m.scale_info().values()}


class Reasons:
    """Why values are missing, as integer codes into a list of distinct messages (-1: none)."""

    def __init__(self):
        self.messages: list[str] = []
        self._index: dict[str, int] = {}

    def code(self, message: str) -> int:
        if message not in self._index:
            self._index[message] = len(self.messages)
            self.messages.append(message)
        return self._index[message]


class Windows:
    """Every window of every subject: its run, volume range, and any replaced (subsampled/tapered) data."""

    def __init__(self, p: ConnectivityParams, timeseries: pd.DataFrame, run_qc, events, subject_order):
        self.rois = [c for c in timeseries.columns if c not in TIMESERIES_KEYS]
        cuts = resolve(p, run_qc, events)
        names = [w.name for w in p.windows] + [s.name for s in p.sliding]
        sub_index = {s: i for i, s in enumerate(subject_order)}
        # Stable order: subject as in participants.tsv, window as listed, then time.
        cuts["_s"] = cuts["subject"].map(sub_index)
        cuts["_w"] = cuts["window"].map({w: i for i, w in enumerate(names)})
        self.cuts = cuts.sort_values(["_s", "_w", "window_start_s"], kind="stable").reset_index(drop=True)
        self.keys = list(zip(self.cuts["subject"].tolist(), self.cuts["run"].tolist()))  # (subject, run) per window
        self.runs = {}
        self.missing = {}  # (subject, run) -> ROIs with no values in that run (min_coverage)
        for key, g in timeseries.groupby(["subject", "run"], sort=False):
            arr = g[self.rois].to_numpy(dtype=np.float64)
            self.runs[key] = (arr, g["time_s"].to_numpy())
            gone = np.isnan(arr).all(axis=0) if len(arr) else np.zeros(len(self.rois), bool)
            if gone.any():
                self.missing[key] = gone
        n = len(self.cuts)
        self.start = np.zeros(n, dtype=np.int64)
        self.stop = np.zeros(n, dtype=np.int64)
        excluded = {} if "excluded" not in run_qc else {
            (r.subject, r.run): r.reason for r in run_qc[run_qc["excluded"]].itertuples()}
        for i, c in enumerate(self.cuts.itertuples(index=False)):
            if (c.subject, c.run) not in self.runs:
                if (c.subject, c.run) in excluded:  # skipped at extraction: no data, a reason below
                    continue
                raise DataError(f"sub-{c.subject}: no time series for run {c.run!r}")
            t = self.runs[(c.subject, c.run)][1]
            self.start[i] = np.searchsorted(t, c.window_start_s - 1e-9, side="left")
            self.stop[i] = np.searchsorted(t, c.window_end_s - 1e-9, side="left")
        self.replaced: dict[int, np.ndarray] = {}  # window index -> data that is not a plain range
        self.reasons = Reasons()
        self.reason = np.full(n, -1, dtype=np.int32)
        counts = self.stop - self.start
        for i, c in enumerate(self.cuts[["subject", "run"]].itertuples(index=False)):
            if (c.subject, c.run) in excluded:
                self.reason[i] = self.reasons.code(f"run excluded: {excluded[c.subject, c.run]}")
        for i in np.flatnonzero((counts < p.min_volumes) & (self.reason < 0)):
            self.reason[i] = self.reasons.code(f"{counts[i]} clean volumes, fewer than min_volumes ({p.min_volumes})")
        fixed = (self.cuts["kind"] == "fixed").to_numpy()
        if p.equalize:
            self._equalize(p, fixed, sub_index, {w.name: i for i, w in enumerate(p.windows)})
        spec = {s.name: s for s in p.sliding}
        for i in np.flatnonzero(~fixed & (self.reason < 0)):
            w = taper(spec[self.cuts.at[i, "window"]].taper, self.stop[i] - self.start[i])
            if w is not None:  # Allen et al. (2014): the centred window is multiplied by the taper
                arr = self.data(i)
                self.replaced[i] = (arr - arr.mean(axis=0)) * w[:, None]

    def _equalize(self, p, fixed, sub_index, win_index):
        counts = self.stop - self.start
        ok = fixed & (self.reason < 0)
        target = p.equalize_volumes or (int(counts[ok].min()) if ok.any() else 0)
        for i in np.flatnonzero(ok):
            n = counts[i]
            if n < target:
                self.reason[i] = self.reasons.code(f"{n} clean volumes, fewer than equalize_volumes ({target})")
            elif n > target:
                c = self.cuts.iloc[i]
                # A seed per (study seed, subject, window): stable whatever else is in the study.
                rng = np.random.default_rng([p.seed, sub_index.get(c["subject"], 0), win_index[c["window"]]])
                self.replaced[i] = self.data(i)[subsample(n, target, rng, p.equalize_contiguous)]

    def data(self, i: int) -> np.ndarray:
        if i in self.replaced:
            return self.replaced[i]
        return self.runs[self.keys[i]][0][self.start[i]:self.stop[i]]

    def n_volumes(self) -> np.ndarray:
        n = self.stop - self.start
        for i, arr in self.replaced.items():
            n[i] = arr.shape[0]
        return n

    def missing_rois(self) -> np.ndarray:
        """(n_windows, R): ROIs with no values in the window's run."""
        out = np.zeros((len(self.cuts), len(self.rois)), dtype=bool)
        for i, key in enumerate(self.keys):
            if key in self.missing:
                out[i] = self.missing[key]
        return out

    def constant_rois(self) -> np.ndarray:
        """(n_windows, R): ROIs whose signal does not vary within the window."""
        out = np.zeros((len(self.cuts), len(self.rois)), dtype=bool)
        for i, key in enumerate(self.keys):
            if i not in self.replaced and key not in self.runs:
                continue  # a run skipped at extraction
            arr = self.data(i)
            if arr.shape[0]:
                with np.errstate(invalid="ignore"):
                    out[i] = np.ptp(arr, axis=0) == 0
        return out


def _apply(metric: Metric, win: Windows, n_volumes: np.ndarray, out: dict[str, np.ndarray],
           missing: np.ndarray, constant: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fill ``out`` ({output name: (n_windows, E)}, NaN) with the upper triangle of every window;
    return it and each window's reason code for this metric. ``missing`` and ``constant``: (n_windows,
    R), the ROIs with no values in the window's run and those flat in the window."""
    trs = win.cuts["tr_s"].to_numpy()
    reason = win.reason.copy()
    for i in np.flatnonzero(reason < 0):
        problem = metric.problem(int(n_volumes[i]), float(trs[i]))
        if problem:
            reason[i] = win.reasons.code(problem)
    ok = reason < 0
    if metric.group_fit:
        # A group fit (the tangent reference mean) needs every ROI's signal in each window it uses: a
        # window where an ROI is missing (NaN) or flat would make the mean fail or bend it for everyone.
        ref_names = metric.params.reference_windows
        in_ref = ok & win.cuts["window"].isin(ref_names).to_numpy()
        flawed = missing | constant
        whole = np.flatnonzero(in_ref & ~flawed.any(axis=1))
        if not whole.size:
            why = ""
            if in_ref.any():
                rois = np.asarray(win.rois, dtype=object)[flawed[in_ref].any(axis=0)]
                why = f": in every one, {', '.join(rois)} is missing or constant"
            raise DataError(f"{metric.name}: no usable reference window ({', '.join(ref_names)}){why}")
        metric.fit([win.data(i) for i in whole], float(np.median(trs)))
    R = len(win.rois)
    iu = np.triu_indices(R, 1)

    def store(idx, res, triangle=True):
        res = res if isinstance(res, dict) else {"": res}
        for k, v in res.items():
            out[k][idx] = v if triangle else np.asarray(v)[:, iu[0], iu[1]]

    plain = defaultdict(list)  # (subject, run, set) -> windows that are plain ranges of that run
    replaced = defaultdict(list)  # (length, TR) -> windows with replaced data
    sets = np.where(win.cuts["kind"] != "fixed", win.cuts["window"], None).tolist()
    for i in np.flatnonzero(ok):
        if missing[i].any():  # computed on the ROIs present; the missing ones stay NaN
            present = ~missing[i]
            if metric.group_fit or present.sum() < 2:
                reason[i] = win.reasons.code(f"{metric.name} needs every ROI; "
                                             f"{', '.join(np.array(win.rois)[missing[i]])} missing")
                continue
            res = metric.compute(win.data(i)[None][:, :, present], float(trs[i]))
            res = res if isinstance(res, dict) else {"": res}
            keep = present[iu[0]] & present[iu[1]]  # the edges between present ROIs, in triangle order
            for k, v in res.items():
                out[k][i, keep] = v[0][np.triu_indices(int(present.sum()), 1)]
            continue
        if i in win.replaced:
            replaced[(win.replaced[i].shape[0], trs[i])].append(i)
        else:
            # one call per set: the fixed windows, or one sliding spec (whose overlaps a metric may exploit)
            plain[(*win.keys[i], sets[i])].append(i)
    for (subject, run, _), idx in plain.items():
        idx = np.array(idx)
        store(idx, metric.compute_edges(win.runs[(subject, run)][0], win.start[idx], win.stop[idx],
                                        float(trs[idx[0]])))
    for (_, tr), idx in replaced.items():
        store(np.array(idx), metric.compute(np.stack([win.replaced[i] for i in idx]), float(tr)), triangle=False)
    return out, reason


def connectivity(p: ConnectivityParams, timeseries: pd.DataFrame, run_qc: pd.DataFrame,
                 events: pd.DataFrame, metrics: list[Metric], subject_order: list[str],
                 roi_reasons: dict | None = None) -> Edges:
    """Every window of every subject through every metric, packed (framework/edgestore.py): one row
    per metric output × window, metric by metric, windows in ``Windows`` order."""
    win = Windows(p, timeseries, run_qc, events, subject_order)
    del timeseries  # Windows holds each run's array; a caller that kept no reference frees the table
    iu = np.triu_indices(len(win.rois), 1)
    n_volumes = win.n_volumes()
    constant = win.constant_rois()
    missing = win.missing_rois()
    roi_reasons = roi_reasons or {}
    rois = np.asarray(win.rois, dtype=object)
    const_names = [list(rois[c]) for c in constant]
    missing_names = [list(rois[m]) for m in missing]
    missing_why = [[roi_reasons.get((s_, r_, x), "no values") for x in names]
                   for names, s_, r_ in zip(missing_names, win.cuts["subject"], win.cuts["run"])]
    bad_roi = constant | missing  # their edges are missing, with the ROI's reason (it wins over the window's)
    bad_edge = bad_roi[:, iu[0]] | bad_roi[:, iu[1]]  # (W, E)

    # every output's values in one array, filled in place (a connectome's values are gigabytes)
    values = np.full((sum(len(m.outputs()) for m in metrics), len(win.cuts), iu[0].size), np.nan)
    frames, undefined, at = [], {}, 0
    for metric in metrics:
        views = {k: values[at + j] for j, k in enumerate(metric.outputs())}
        at += len(views)
        out, reason = _apply(metric, win, n_volumes, views, missing, constant)
        for key, vals in out.items():
            name = output_name(metric, key)
            vals[bad_edge | (reason >= 0)[:, None] | ~np.isfinite(vals)] = np.nan
            undefined[name] = f"{metric.name} is not defined for this window"
            frames.append(pd.DataFrame({
                "subject": win.cuts["subject"].to_numpy(), "group": win.cuts["group"].to_numpy(),
                "window": win.cuts["window"].to_numpy(),
                "window_start_s": win.cuts["window_start_s"].to_numpy(float),
                "window_end_s": win.cuts["window_end_s"].to_numpy(float),
                "n_volumes": n_volumes.astype(np.int32), "metric": name,
                "reason": [win.reasons.messages[c] if c >= 0 else None for c in reason],
                "constant_rois": const_names, "missing_rois": missing_names, "missing_why": missing_why}))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ROW_COLUMNS)
    return pack(rows, values.reshape(-1, iu[0].size), list(win.rois), undefined)


def check_windows_have_values(edges: Edges, windows: list[str]) -> None:
    """A fixed window without a single value leaves nothing to test: an error with the commonest reason."""
    for w in windows:
        sel = edges.where(windows=[w])
        if len(sel) and not np.isfinite(sel.values).any():
            reason = str(sel.long()["reason"].astype(str).value_counts().index[0])
            error = ParamsError if "min_volumes" in reason or "equalize" in reason else DataError
            raise error(f"connectivity: window {w!r} has no value for any subject (e.g. {reason})")
