"""Windows: fixed and sliding bounds, clean-volume accounting, equalisation and missing-value reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import default_params, run_cli, write_params
from fclab.framework.connectome.engine import connectivity
from fclab.framework.pluginhost.builder import build_all
from fclab.framework.errors import ParamsError
from fclab.framework.params import ConnectivityParams
from fclab.framework.connectome.windows import subsample

TR = 2.0
ROIS = ["A", "B", "C"]


def study(censor: dict | None = None, constant: tuple | None = None):
    """Two subjects, a 100-volume baseline run and a 300-volume infusion run (onset at 20 s)."""
    rng = np.random.default_rng(0)
    ts, qc, ev = [], [], []
    for sub, group in (("01", "ket"), ("02", "mid")):
        for run, n in (("baseline", 100), ("infusion", 300)):
            keep = np.setdiff1d(np.arange(n), (censor or {}).get((sub, run), []))
            frame = pd.DataFrame(rng.standard_normal((keep.size, 3)), columns=ROIS)
            if constant and constant[:2] == (sub, run):
                frame[constant[2]] = 1.0
            frame.insert(0, "time_s", keep * TR)
            frame.insert(0, "volume", keep)
            frame.insert(0, "run", run)
            frame.insert(0, "subject", sub)
            ts.append(frame)
            qc.append({"subject": sub, "group": group, "run": run, "tr_s": TR, "n_volumes": n})
        ev.append({"subject": sub, "run": "infusion", "trial_type": "infusion", "onset_s": 20.0, "duration_s": 560.0})
    return pd.concat(ts, ignore_index=True), pd.DataFrame(qc), pd.DataFrame(ev)


def params(**kw):
    base = {
        "windows": [{"name": "baseline", "run": "baseline"},
                    {"name": "early", "run": "infusion", "event": "infusion", "start_min": 0, "end_min": 2},
                    {"name": "late", "run": "infusion", "event": "infusion", "start_s": 300, "end_s": 500}],
        "metrics": ["pearson"], "min_volumes": 20,
    }
    base.update(kw)
    return ConnectivityParams.model_validate(base)


def run(p, data):
    ts, qc, ev = data
    return connectivity(p, ts, qc, ev, build_all("metric", p.metrics), ["01", "02"]).long()


def test_fixed_windows_in_minutes_or_seconds_relative_to_event():
    edges = run(params(), study())
    early = edges[edges["window"] == "early"].iloc[0]
    late = edges[edges["window"] == "late"].iloc[0]
    assert (early["window_start_s"], early["window_end_s"], early["n_volumes"]) == (20.0, 140.0, 60)
    assert (late["window_start_s"], late["window_end_s"], late["n_volumes"]) == (320.0, 520.0, 100)
    base = edges[edges["window"] == "baseline"].iloc[0]
    assert (base["window_end_s"], base["n_volumes"]) == (200.0, 100)


def test_n_volumes_counts_clean_volumes_only():
    edges = run(params(), study(censor={("01", "infusion"): np.arange(15, 25)}))
    early = edges[(edges["window"] == "early") & (edges["subject"] == "01")]
    assert (early["n_volumes"] == 50).all()  # volumes 10..69 minus the ten censored


def test_sliding_windows_bounds_and_taper():
    p = params(sliding=[{"name": "sl", "run": "infusion", "event": "infusion", "start_s": 0, "end_s": 300,
                         "length_s": 60, "step_s": 30, "taper": "hann"}])
    edges = run(p, study())
    sl = edges[(edges["window"] == "sl") & (edges["subject"] == "01") & (edges["roi_a"] == "A") & (edges["roi_b"] == "B")]
    assert list(sl["window_start_s"]) == [20.0 + 30 * k for k in range(9)]
    assert (sl["window_end_s"] - sl["window_start_s"] == 60).all() and (sl["n_volumes"] == 30).all()
    assert sl["value"].notna().all()


def test_min_volumes_gives_missing_value_with_reason():
    edges = run(params(min_volumes=80), study())
    early = edges[edges["window"] == "early"]
    assert early["value"].isna().all()
    assert early["reason"].str.contains("60 clean volumes, fewer than min_volumes").all()
    assert edges[edges["window"] == "late"]["value"].notna().all()


def test_equalize_gives_every_fixed_window_the_same_count():
    p = params(equalize=True, seed=3)
    edges = run(p, study(censor={("02", "baseline"): np.arange(0, 45)}))
    assert set(edges["n_volumes"]) == {55}  # the smallest window: sub-02's censored baseline
    again = run(p, study(censor={("02", "baseline"): np.arange(0, 45)}))
    pd.testing.assert_frame_equal(edges, again)  # the subsample is seeded


def test_subsample_contiguous_and_scattered():
    rng = np.random.default_rng(0)
    block = subsample(100, 30, rng, contiguous=True)
    assert block.size == 30 and np.all(np.diff(block) == 1)
    spread = subsample(100, 30, rng, contiguous=False)
    assert spread.size == 30 and np.all(np.diff(spread) > 0) and np.any(np.diff(spread) > 1)


def test_constant_roi_is_missing_with_reason_not_zero():
    edges = run(params(), study(constant=("01", "baseline", "B")))
    rows = edges[(edges["subject"] == "01") & (edges["window"] == "baseline")]
    touched = rows[(rows["roi_a"] == "B") | (rows["roi_b"] == "B")]
    assert touched["value"].isna().all() and (touched["reason"] == "constant signal in B").all()
    assert rows[(rows["roi_a"] == "A") & (rows["roi_b"] == "C")]["value"].notna().all()


def test_metric_that_cannot_run_is_missing_with_reason():
    p = params(metrics=[{"name": "coherence", "segment_s": 100}])
    edges = run(p, study())
    early = edges[edges["window"] == "early"]  # 60 volumes < 75 needed for two 100 s segments
    assert early["value"].isna().all() and early["reason"].str.contains("coherence needs 75 volumes").all()
    assert edges[edges["window"] == "late"]["value"].notna().all()


def test_window_outside_run_is_a_params_error():
    p = params(windows=[{"name": "baseline", "run": "baseline"},
                        {"name": "too_late", "run": "infusion", "event": "infusion", "start_min": 8, "end_min": 12}])
    with pytest.raises(ParamsError, match="window 'too_late'.*outside run 'infusion' of sub-01"):
        run(p, study())


def test_overlap_across_references_is_a_params_error():
    p = params(windows=[{"name": "baseline", "run": "baseline"},
                        {"name": "a", "run": "infusion", "start_s": 0, "end_s": 100},
                        {"name": "b", "run": "infusion", "event": "infusion", "start_s": 0, "end_s": 100}])
    with pytest.raises(ParamsError, match="'a' and 'b' overlap in sub-01"):
        run(p, study())


def test_overlapping_windows_rejected_by_validation(tmp_path, in_dir):
    raw = default_params()
    raw["connectivity"]["windows"][2]["start_min"] = 5  # 10-20 min now starts inside 0-10 min
    write_params(tmp_path, raw)
    in_dir(tmp_path)
    code, _, err = run_cli("validate", "--params-only")
    assert code == 2 and "'0-10min' and '10-20min' overlap" in err


def test_window_outside_run_exits_2(small_study, tmp_path, in_dir):
    from conftest import small_params

    raw = small_params()
    raw["extract"]["data"]["root"] = str(small_study / "data/simulated")
    raw["connectivity"]["windows"][-1].update(start_min=15, end_min=25)
    write_params(tmp_path, raw)
    in_dir(tmp_path)
    assert run_cli("extract")[0] == 0
    code, _, err = run_cli("connectivity")
    assert code == 2 and "window '10-20min'" in err and "outside run" in err
    assert not (tmp_path / "results/connectivity").exists()


def test_missing_events_are_one_line_listing_every_subject():
    """Twelve subjects without the infusion event: one error naming the run, the event, the count, the
    first ten subjects and the window, with the likely cause; not one error per window or subject."""
    from fclab.framework.errors import DataError
    from fclab.framework.connectome.windows import resolve

    qc = pd.DataFrame([{"subject": f"{i:02d}", "group": "g", "run": r, "tr_s": TR, "n_volumes": 300}
                       for i in range(13) for r in ("baseline", "infusion")])
    ev = pd.DataFrame([{"subject": "00", "run": "infusion", "trial_type": "infusion", "onset_s": 20.0,
                        "duration_s": 500.0}])
    with pytest.raises(DataError) as info:
        resolve(params(), qc, ev)
    msg = str(info.value)
    assert msg.startswith("run 'infusion': no 'infusion' event for 12 subjects (sub-01, sub-02,")
    assert "sub-10 and 2 more), needed by window" in msg and "events_root" in msg and "\n" not in msg


def test_group_fit_reference_leaves_out_windows_with_a_missing_or_flat_roi():
    """tangent's reference mean uses only the reference windows where every ROI has a signal: with
    B flat in sub-01's baseline, the mean is over sub-02's baseline and both late windows, and the
    values equal nilearn's tangent fitted on those three (a flat or missing ROI had bent the mean
    for everyone, or made it fail with a LinAlgError traceback). With B missing in every reference
    window, a one-line DataError."""
    from nilearn.connectome import ConnectivityMeasure

    from fclab.framework.errors import DataError

    ts, qc, ev = study(constant=("01", "baseline", "B"))
    tangent = {"name": "tangent", "reference_windows": ["baseline", "late"]}
    edges = run(params(metrics=[tangent]), (ts, qc, ev))

    def window(sub, run_, lo, hi):
        rows = ts[(ts["subject"] == sub) & (ts["run"] == run_) & (ts["time_s"] >= lo) & (ts["time_s"] < hi)]
        return rows[ROIS].to_numpy(float)

    reference = [window("02", "baseline", 0, 200), window("01", "infusion", 320, 520), window("02", "infusion", 320, 520)]
    measure = ConnectivityMeasure(kind="tangent", standardize=False).fit(reference)
    iu = np.triu_indices(len(ROIS), 1)
    early = measure.transform([window(sub, "infusion", 20, 140) for sub in ("01", "02")])
    for sub, ref in zip(("01", "02"), early):
        got = edges[(edges["subject"] == sub) & (edges["window"] == "early")].set_index(["roi_a", "roi_b"])["value"]
        np.testing.assert_allclose([got[(ROIS[i], ROIS[j])] for i, j in zip(*iu)], ref[iu], rtol=1e-5, atol=1e-7)

    ts.loc[ts["run"] == "baseline", "B"] = np.nan  # B has no values in any baseline run
    with pytest.raises(DataError, match=r"^tangent: no usable reference window \(baseline\): in every one, B is "
                                        r"missing or constant$"):
        run(params(metrics=["tangent"]), (ts, qc, ev))
