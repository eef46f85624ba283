"""edges.parquet, packed: values against an independent per-window computation, the long view's
per-edge reasons, the stats cube against the long-table path, and the file round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fclab.framework.connectome.engine import connectivity
from fclab.framework.pluginhost.builder import build_all
from fclab.framework.pluginhost.contracts import Design
from fclab.framework.connectome.edgestore import EDGE_COLUMNS, Edges, read_edges, read_edges_long, write_edges
from fclab.framework.params import ConnectivityParams
from fclab.framework.stats.cubes import edge_cube

TR = 2.0
ROIS = ["A", "B", "C", "D"]


def study(seed=0):
    """Three subjects; sub-02's ROI C is flat in the infusion run, sub-03's ROI D has no values there."""
    rng = np.random.default_rng(seed)
    ts, qc = [], []
    for sub, group in (("01", "ket"), ("02", "mid"), ("03", "mid")):
        for run, n in (("baseline", 100), ("infusion", 300)):
            x = rng.standard_normal((n, len(ROIS))) @ (np.eye(len(ROIS)) + 0.4 * rng.standard_normal((4, 4)))
            frame = pd.DataFrame(x, columns=ROIS)
            if (sub, run) == ("02", "infusion"):
                frame["C"] = 2.5
            if (sub, run) == ("03", "infusion"):
                frame["D"] = np.nan
            frame.insert(0, "time_s", np.arange(n) * TR)
            frame.insert(0, "volume", np.arange(n))
            frame.insert(0, "run", run)
            frame.insert(0, "subject", sub)
            ts.append(frame)
            qc.append({"subject": sub, "group": group, "run": run, "tr_s": TR, "n_volumes": n})
    ev = pd.DataFrame(columns=["subject", "run", "trial_type", "onset_s", "duration_s"])
    return pd.concat(ts, ignore_index=True), pd.DataFrame(qc), ev


def params():
    return ConnectivityParams.model_validate({
        "windows": [{"name": "baseline", "run": "baseline"},
                    {"name": "early", "run": "infusion", "start_s": 0, "end_s": 300},
                    {"name": "late", "run": "infusion", "start_s": 300, "end_s": 600}],
        "sliding": [{"name": "sl", "run": "infusion", "length_s": 120, "step_s": 20}],
        "metrics": ["pearson", "covariance"],
        "min_volumes": 20,
    })


@pytest.fixture(scope="module")
def computed():
    ts, qc, ev = study()
    p = params()
    return ts, connectivity(p, ts, qc, ev, build_all("metric", p.metrics), ["01", "02", "03"],
                            {("03", "infusion", "D"): "coverage 0.10 < min_coverage 0.5"})


def test_values_and_reasons_against_a_window_by_window_computation(computed):
    """Every long row against np.corrcoef of that subject's rows in [start, end), and every reason
    against what the window and its ROIs say."""
    ts, edges = computed
    long = edges.long()
    assert list(long.columns) == EDGE_COLUMNS
    pear = long[long["metric"] == "pearson"]
    for (sub, start, end), rows in pear.groupby(["subject", "window_start_s", "window_end_s"], observed=True):
        run = "baseline" if rows["window"].iloc[0] == "baseline" else "infusion"
        x = ts[(ts["subject"] == sub) & (ts["run"] == run)]
        x = x[(x["time_s"] >= start - 1e-9) & (x["time_s"] < end - 1e-9)][ROIS].to_numpy()
        with np.errstate(all="ignore"):
            ref = np.arctanh(np.corrcoef(x.T))
        for r in rows.itertuples():
            a, b = ROIS.index(r.roi_a), ROIS.index(r.roi_b)
            flat = {k for k in ROIS if np.ptp(x[:, ROIS.index(k)]) == 0}
            gone = {k for k in ROIS if np.isnan(x[:, ROIS.index(k)]).all()}
            if {r.roi_a, r.roi_b} & gone:
                assert np.isnan(r.value)
                assert r.reason == "ROI missing: D (coverage 0.10 < min_coverage 0.5)"
            elif {r.roi_a, r.roi_b} & flat:
                assert np.isnan(r.value) and r.reason == "constant signal in C"
            else:
                assert pd.isna(r.reason)
                assert r.value == pytest.approx(ref[a, b], abs=1e-12)
    assert len(long) == len(edges.rows) * 6


@pytest.mark.parametrize("group_bytes", [1, 16 * 2**20], ids=["64-row groups", "one group"])
def test_file_round_trip_and_row_filters(computed, tmp_path, monkeypatch, group_bytes):
    """Written window by window in row groups, read back in the original row order, whole or filtered."""
    import pyarrow.parquet as pq

    from fclab.framework.connectome import edgestore

    monkeypatch.setattr(edgestore, "ROW_GROUP_BYTES", group_bytes)
    _, edges = computed
    path = tmp_path / "edges.parquet"
    write_edges(edges, path, {"stage": "connectivity"})
    assert (pq.ParquetFile(path).num_row_groups > 1) == (group_bytes == 1)
    back = read_edges(path)
    pd.testing.assert_frame_equal(back.rows, edges.rows, check_dtype=False)
    assert back.rois == ROIS and np.array_equal(back.values, edges.values, equal_nan=True)
    pd.testing.assert_frame_equal(back.long(), edges.long())
    only = read_edges(path, windows=["late", "sl"], metrics=["covariance"])
    keep = (edges.rows["window"].isin(["late", "sl"]) & (edges.rows["metric"] == "covariance")).to_numpy()
    pd.testing.assert_frame_equal(only.rows, edges.rows[keep].reset_index(drop=True), check_dtype=False)
    assert np.array_equal(only.values, edges.values[keep], equal_nan=True)
    pairs = read_edges_long(path, windows=["sl"], pairs=[("A", "D"), ("B", "C")])
    assert set(zip(pairs["roi_a"], pairs["roi_b"])) == {("A", "D"), ("B", "C")}


def test_cube_equals_the_long_table_path(computed):
    """The stats array read from the packed rows against edge_cube of the long table (its own code
    path), with subjects in another order, one absent from the data and a window absent too."""
    _, edges = computed
    fixed = edges.where(windows=["baseline", "early", "late"])
    subjects = pd.DataFrame({"subject": ["03", "01", "02", "09"], "group": ["mid", "ket", "mid", "ket"]})
    design = Design(groups=("mid", "ket"), baseline_window="baseline", windows=("baseline", "late", "early", "x"),
                    subjects=subjects)
    keys_p, cube_p = edge_cube(fixed, design)
    keys_l, cube_l = edge_cube(fixed.long(), design)
    pd.testing.assert_frame_equal(keys_p, keys_l)
    assert np.array_equal(cube_p, cube_l, equal_nan=True)
    assert np.isnan(cube_p[:, 3]).all() and np.isnan(cube_p[:, :, 3]).all()


def test_from_long_packs_what_long_unpacks(computed):
    _, edges = computed
    long = edges.long()
    again = Edges.from_long(long)
    assert again.rois == ROIS
    back = again.long()
    assert np.array_equal(back["value"].to_numpy(), long["value"].to_numpy(), equal_nan=True)
    for c in ("subject", "window", "metric", "roi_a", "roi_b"):
        assert (back[c].astype(str).to_numpy() == long[c].astype(str).to_numpy()).all()


def test_edges_command_describes_and_writes_the_long_view(ran_study, tmp_path, in_dir):
    """`fclab edges` summarises the packed file; `--long FILE` writes one row per edge (CSV or Parquet,
    filtered by window); another file type is a one-line usage error that writes nothing."""
    import shutil

    from conftest import run_cli

    shutil.copytree(ran_study[0] / "results", tmp_path / "results")
    in_dir(tmp_path)
    code, out, err = run_cli("edges")
    assert code == 0 and "10 edges over 5 ROIs" in out and "26" not in out.split("ROIs")[0], (out, err)
    long = read_edges_long("results/connectivity/edges.parquet", windows=["baseline"])
    code, out, err = run_cli("edges", "--long", "b.csv", "--window", "baseline")
    assert code == 0, err
    csv = pd.read_csv(tmp_path / "b.csv", dtype={"subject": str})
    assert len(csv) == len(long) and np.allclose(csv["value"], long["value"], equal_nan=True)
    assert (csv["subject"].to_numpy() == long["subject"].to_numpy()).all()
    code, _, err = run_cli("edges", "--long", "all.parquet")
    assert code == 0 and len(pd.read_parquet(tmp_path / "all.parquet")) == len(
        read_edges_long("results/connectivity/edges.parquet"))
    code, _, err = run_cli("edges", "--long", "x.txt")
    assert code == 2 and "--long x.txt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.txt").exists()
