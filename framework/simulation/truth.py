"""The planted effects of a simulated study on the scale the analysis measures them.

``fclab simulate`` plants effects on latent source correlations. What an analysis measures is
smaller: the analysis ROIs are not the source regions, voxels carry noise, denoising and filtering
remove part of the signal, and windows are finite. The expected measured effect is therefore defined
by a counterfactual: the same study simulated again with the same seed but without the effects. Every
random draw (subject jitter, noise, motion, drift) is shared, so per subject the difference between
the two studies' edge values is the planted effect as this pipeline sees it, with the noise cancelled
except where it interacts with the effect. Its mean over the subjects of a group estimates the
expected measured effect; its standard error across subjects is the Monte Carlo error of that
estimate. The counterfactual goes through the study's own extraction and connectivity settings, so
the measured truth follows the params.

Only the runs that differ are simulated and extracted again (the infusion runs of the groups with an
effect); every other run's time series is the study's own. Connectivity is recomputed for every
subject, and the subjects of groups without an effect must come out identical to the study's edges:
a difference means the study's outputs do not come from its params (stale), and is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from fclab.framework.connectome.engine import connectivity
from fclab.framework.errors import DataError
from fclab.framework.io import remove_stale
from fclab.framework.params import SIM_ROIS, Params

TRUTH_COLUMNS = ["metric", "roi_a", "roi_b", "window", "window_start_s", "window_end_s", "group", "n",
                 "measured_delta", "measured_se", "latent_delta_r", "latent_delta_z"]


def check_simulated_data(params: Params) -> Path:
    """The simulated study's ground_truth.json, checked to come from params.simulate."""
    from fclab.framework.simulation.study import simulation_hash

    path = Path(params.simulate.output_dir) / "ground_truth.json"
    try:
        recorded = json.loads(path.read_text()).get("simulate_params_hash")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the simulated study's ground truth ({exc}); run fclab simulate") from exc
    if recorded != simulation_hash(params.simulate):
        raise DataError(f"{path}: the simulated data were made with other simulate params than params.yaml's; "
                        "run fclab simulate")
    return path


def _latent(params: Params, cuts: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """Planted change of the latent correlation, averaged over each window's volumes, per group."""
    from fclab.framework.simulation.study import BASE_CORR, correlation_course

    sim = params.simulate
    infusion_runs = {k for k, sel in params.extract.data.runs.items() if sel.task == "rest" and sel.run == "2"}
    rows = []
    for c in cuts.itertuples(index=False):
        t_s = np.arange(int(round(c.window_start_s / sim.tr_s)), int(round(c.window_end_s / sim.tr_s))) * sim.tr_s
        t_min = (t_s - sim.pre_onset_s) / 60.0 if c.run in infusion_runs else np.full(t_s.size, -np.inf)
        for group in groups:
            course = correlation_course(BASE_CORR, t_min, group, sim).mean(axis=0) if t_s.size else BASE_CORR
            for i in range(len(SIM_ROIS)):
                for j in range(i + 1, len(SIM_ROIS)):
                    dr = course[i, j] - BASE_CORR[i, j]
                    dz = np.arctanh(course[i, j]) - np.arctanh(BASE_CORR[i, j])
                    for a, b in ((SIM_ROIS[i], SIM_ROIS[j]), (SIM_ROIS[j], SIM_ROIS[i])):
                        rows.append((c.window, c.window_start_s, c.window_end_s, group, a, b, dr, dz))
    return pd.DataFrame(rows, columns=["window", "window_start_s", "window_end_s", "group", "roi_a", "roi_b",
                                       "latent_delta_r", "latent_delta_z"]).drop_duplicates(
        ["window", "window_start_s", "window_end_s", "group", "roi_a", "roi_b"])


def measured_truth(params: Params, timeseries: pd.DataFrame, run_qc: pd.DataFrame, events: pd.DataFrame,
                   participants: pd.DataFrame, roi_reasons: dict, edges: pd.DataFrame, metrics: list,
                   rois, workdir: Path, jobs=2) -> pd.DataFrame:
    """One row per metric, edge, window (fixed and sliding, by start) and group: the planted effect on
    the measured scale (mean paired difference from the counterfactual study, with its standard error)
    and on the latent scale. ``metrics`` and ``rois`` (an ``extraction.engine.RoiBuilder``) are the
    study's plugins, as its connectivity and extract stages built them."""
    from fclab.framework.extraction.engine import extract
    from fclab.framework.simulation.study import affected_groups, simulate_counterfactual

    check_simulated_data(params)
    sim = params.simulate
    affected = affected_groups(sim)
    twin_ts = timeseries
    if affected:
        remove_stale(workdir, "counterfactual")  # left by a killed run
        tmp = Path(tempfile.mkdtemp(prefix=f".counterfactual.{os.getpid()}.", suffix=".tmp", dir=workdir))
        try:
            written = simulate_counterfactual(sim, Path(sim.output_dir), tmp, n_jobs=jobs,
                                              only=participants["subject"].tolist())
            redone = None
            if not written.empty:  # else no analysed subject is in a group with an effect
                data = params.extract.data.model_copy(update={"root": str(tmp), "include": [], "exclude": []})
                # not through the per-run cache: these files are deleted below, and the record of what
                # the last extraction used must stay the study's own
                redone = extract(params.extract.model_copy(update={"data": data}), rois, n_jobs=jobs,
                                 cache=False).timeseries
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if redone is not None:
            keys = pd.MultiIndex.from_frame(redone[["subject", "run"]].drop_duplicates())
            own = pd.MultiIndex.from_frame(timeseries[["subject", "run"]])
            twin_ts = pd.concat([timeseries[~own.isin(keys)], redone], ignore_index=True)
    twin = connectivity(params.connectivity, twin_ts, run_qc, events, metrics, participants["subject"].tolist(),
                        roi_reasons).long()
    key = ["subject", "window", "window_start_s", "metric", "roi_a", "roi_b"]
    if len(twin) != len(edges) or not all(np.array_equal(twin[k].to_numpy(object), edges[k].to_numpy(object))
                                          for k in key):
        raise DataError("results/connectivity/edges.parquet: its rows do not match the study's time series "
                        "and connectivity params (stale outputs); rerun extract and connectivity")
    diff = edges["value"].to_numpy(float) - twin["value"].to_numpy(float)
    if not any(m.group_fit for m in metrics):
        same = ~edges["group"].isin(affected).to_numpy()
        unequal = same & ~((diff == 0) | (np.isnan(edges["value"]) & np.isnan(twin["value"])).to_numpy())
        if unequal.any():
            raise DataError("results/connectivity/edges.parquet: values differ from a recomputation for subjects "
                            f"without a planted effect (e.g. sub-{edges['subject'][unequal].iloc[0]}); the outputs "
                            "are stale, rerun extract and connectivity")
    frame = edges[key[1:] + ["group", "window_end_s"]].assign(diff=diff)
    by = ["metric", "roi_a", "roi_b", "window", "window_start_s", "window_end_s", "group"]
    out = frame.groupby(by, sort=False, dropna=False)["diff"].agg(["count", "mean", "std"]).reset_index()
    out = out.rename(columns={"count": "n", "mean": "measured_delta"})
    out["measured_se"] = out.pop("std") / np.sqrt(out["n"])
    runs = {w.name: w.run for w in params.connectivity.windows} | {s.name: s.run for s in params.connectivity.sliding}
    cuts = edges.drop_duplicates(["window", "window_start_s"])[["window", "window_start_s", "window_end_s"]]
    latent = _latent(params, cuts.assign(run=cuts["window"].map(runs)), sorted(set(edges["group"])))
    out = out.merge(latent, how="left", on=["window", "window_start_s", "window_end_s", "group", "roi_a", "roi_b"])
    return out[TRUTH_COLUMNS]


