"""Benchmark: sliding-window Pearson, 1,200 volumes x 100 ROIs, 60-volume windows, step 1.

Prints, side by side in one run, the wall time and peak traced memory of
  - fclab's pearson metric on the stacked windows (one batched call),
  - fclab's pearson metric over the window ranges of the run, full matrices (compute_ranges),
  - fclab's pearson metric over the window ranges, upper triangle (compute_edges: what the stage
    calls; running sums in a compiled kernel, its first call's compilation left out),
  - fclab's whole connectivity stage function on the same series (window cutting included),
  - a Python loop of np.corrcoef per window (the reference),
  - nilearn ConnectivityMeasure(kind="correlation") on the stacked windows,
and the largest difference between fclab's correlations and each reference's. Everything runs under
the allocator settings the fclab command runs with (``executor.keep_freed_memory``: freed blocks are
reused instead of being returned to the kernel and faulted in again), for fclab and the references.

    .venv/bin/python benchmarks/sliding_pearson.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from nilearn.connectome import ConnectivityMeasure
from sklearn.covariance import EmpiricalCovariance

from fclab.framework.connectome.engine import connectivity
from fclab.framework.executor import keep_freed_memory
from fclab.framework.params import ConnectivityParams
from fclab.plugins.pearson import Pearson

T, R, WIN, TR = 1200, 100, 60, 1.0


def measure(fn, repeat):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, best, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    repeat = ap.parse_args().repeat
    keep_freed_memory()  # as cli.entry does
    rng = np.random.default_rng(0)
    ts = rng.standard_normal((T, R)) @ (np.eye(R) + 0.1 * rng.standard_normal((R, R)))
    stacked = np.swapaxes(sliding_window_view(ts, WIN, axis=0), -1, -2)  # (T - WIN + 1, WIN, R), a view
    metric = Pearson(Pearson.Params(fisher_z=False))

    frame = pd.DataFrame(ts, columns=[f"roi{i:03d}" for i in range(R)])
    frame.insert(0, "time_s", np.arange(T) * TR)
    frame.insert(0, "volume", np.arange(T))
    frame.insert(0, "run", "rest")
    frame.insert(0, "subject", "01")
    run_qc = pd.DataFrame([{"subject": "01", "group": "g", "run": "rest", "tr_s": TR, "n_volumes": T}])
    events = pd.DataFrame(columns=["subject", "run", "trial_type", "onset_s", "duration_s"])
    params = ConnectivityParams.model_validate({
        "windows": [{"name": "a", "run": "rest", "start_s": 0, "end_s": 600},
                    {"name": "b", "run": "rest", "start_s": 600, "end_s": 1200}],
        "sliding": [{"name": "sl", "run": "rest", "length_s": WIN * TR, "step_s": TR}],
        "metrics": [{"name": "pearson", "fisher_z": False}], "min_volumes": 20,
    })

    rows = []
    ours, t_ours, m_ours = measure(lambda: metric.compute(stacked, TR), repeat)
    rows.append(("fclab pearson, stacked windows", t_ours, m_ours, 0.0))
    starts = np.arange(stacked.shape[0])
    ranged, t_rng, m_rng = measure(lambda: metric.compute_ranges(ts, starts, starts + WIN, TR)[""], repeat)
    rows.append(("fclab pearson, window ranges", t_rng, m_rng, np.abs(ranged - ours).max()))
    iu = np.triu_indices(R, 1)
    metric.compute_edges(ts, starts[:2], starts[:2] + WIN, TR)  # compile (or load the cached kernel)
    tri, t_tri, m_tri = measure(lambda: metric.compute_edges(ts, starts, starts + WIN, TR)[""], repeat)
    rows.append(("fclab pearson, triangle (kernel)", t_tri, m_tri, np.abs(tri - ours[:, iu[0], iu[1]]).max()))
    stage, t_stage, m_stage = measure(
        lambda: connectivity(params, frame, run_qc, events, [metric], ["01"]), max(1, repeat - 2))
    long = stage.long()  # the packed Edges the stage writes, as one row per edge (outside the timing)
    sl = long[long["window"] == "sl"]
    diff = np.nanmax(np.abs(sl["value"].to_numpy() - ours[:, iu[0], iu[1]].ravel()))
    rows.append(("fclab connectivity (packed)", t_stage, m_stage, diff))
    loop, t_loop, m_loop = measure(lambda: np.stack([np.corrcoef(w.T) for w in stacked]), repeat)
    rows.append(("np.corrcoef loop (reference)", t_loop, m_loop, np.abs(loop - ours).max()))
    rows[2] = rows[2][:3] + (np.abs(tri - loop[:, iu[0], iu[1]]).max(),)  # the kernel against the reference
    cm = ConnectivityMeasure(kind="correlation", cov_estimator=EmpiricalCovariance(), standardize=False)
    nl, t_nl, m_nl = measure(lambda: cm.fit_transform(list(stacked)), 1)
    rows.append(("nilearn ConnectivityMeasure", t_nl, m_nl, np.abs(nl - ours).max()))

    print(f"sliding-window Pearson: {T} volumes x {R} ROIs, window {WIN}, step 1 -> {stacked.shape[0]} windows")
    print(f"{'method':<32}{'wall s':>10}{'speed-up':>10}{'peak MB':>10}{'max |dr|':>12}")
    for name, t, mem, d in rows:
        print(f"{name:<32}{t:>10.3f}{t_loop / t:>9.1f}x{mem / 2**20:>10.1f}{d:>12.2e}")


if __name__ == "__main__":
    main()
