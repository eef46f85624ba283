"""End to end on the scaled-down simulated study: outputs, science, determinism, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, run_cli_in, small_params, write_params
from fclab.framework.connectome.edgestore import read_edges_long
from fclab.framework.connectome.engine import EDGE_COLUMNS
from fclab.framework.io import read_provenance
from fclab.framework.pluginhost.contracts import TEST_COLUMNS


def test_outputs_have_the_documented_columns(ran_study):
    root, out, _ = ran_study
    assert list(read_edges_long(root / "results/connectivity/edges.parquet").columns) == EDGE_COLUMNS
    tests = pd.read_parquet(root / "results/stats/tests.parquet")
    assert list(tests.columns) == TEST_COLUMNS
    assert set(tests["scale"]) == {"fisher_z"}  # declared by the pearson metric
    for f in ("reports/index.html", "reports/metrics.json", "reports/plots/delta_by_window.csv",
              "reports/plots/sliding_course.csv"):
        assert (root / f).is_file(), f
    assert len(list((root / "reports/figures").glob("delta_*.png"))) == 6  # one per amygdala-mPFC edge
    assert len(list((root / "reports/figures").glob("course_*.png"))) == 10  # one per ROI pair
    assert "report:" in out and "p_adj" in out
    # lmm is among the default tests; the report flags its calibration
    assert "Calibration caveat, lmm:</strong> anti-conservative" in (root / "reports/index.html").read_text()


def test_provenance_in_schema_metadata(ran_study):
    root, _, _ = ran_study
    prov = read_provenance(root / "results/connectivity/edges.parquet")
    assert prov["stage"] == "connectivity"
    assert prov["plugins"] == {"pearson": prov["fclab_version"]}
    assert len(prov["params_hash"]) == 16 and prov["git_commit"]
    assert any(k.endswith("timeseries.parquet") for k in prov["inputs"])
    assert any(k.endswith("_bold.nii.gz") for k in read_provenance(root / "results/extract/run_qc.parquet")["inputs"])


def _primary_findings(root: Path):
    """(planted edges, their peak window, the primary test's group:window rows) of a finished study."""
    truth = json.loads((root / "data/simulated/ground_truth.json").read_text())
    planted = pd.DataFrame(truth["planted"])
    ket = planted[planted["group"] == "ketamine"]
    changed = {(r.roi_a, r.roi_b) for r in ket.itertuples() if abs(r.delta_r) > 1e-3}
    peak = ket[ket["roi_b"] == "vmPFC"].sort_values("delta_r")["window"].iloc[0]
    tests = pd.read_parquet(root / "results/stats/tests.parquet")
    primary = tests[(tests["test"] == "mmrm") & (tests["term"] == "group:window")]
    return changed, peak, primary


@pytest.fixture(scope="module")
def more_seeds(tmp_path_factory):
    """The small study with two more seeds, through the stats stage."""
    roots = []
    for seed in (2, 3):
        root = tmp_path_factory.mktemp(f"seed{seed}")
        params = small_params()
        params["simulate"]["seed"] = seed
        params["connectivity"]["sliding"] = []
        write_params(root, params)
        for stage in ("simulate", "extract", "connectivity", "truth", "stats"):
            code, _, err = run_cli_in(root, stage)
            assert code == 0, err
        roots.append(root)
    return roots


def test_planted_effect_found_over_seeds_and_false_positives_within_tolerance(ran_study, more_seeds):
    """On three seeds the primary test (mmrm, group:window) finds the ketamine drop of amygdala–vmPFC
    at the peak window every time. Unplanted edges: each of the two families (confirmatory,
    exploratory) has FWER ≤ 5 %, so a study shows any unplanted finding with probability ≤ 0.10, and
    two or more of three studies with probability ≤ 0.028; the test allows at most one.

    The confidence intervals of the confirmatory rows (6 edges × 2 windows × 3 seeds) are checked
    against the planted contrast on the measured scale (results/truth): at 95 % nominal coverage,
    6 or more misses of 36 has probability 0.01 for independent intervals; the test allows 5."""
    from fclab.framework.report.summaries import truth_check
    from fclab.framework.report.summaries import truth_contrasts as contrasts

    with_false = misses = 0
    for root in [ran_study[0], *more_seeds]:
        changed, peak, primary = _primary_findings(root)
        assert changed == {("Left_Amygdala", "vmPFC"), ("Right_Amygdala", "vmPFC")}
        for a in ("Left_Amygdala", "Right_Amygdala"):
            row = primary[(primary["roi_a"] == a) & (primary["roi_b"] == "vmPFC") & (primary["window"] == peak)].iloc[0]
            assert row["estimate"] < 0 and row["p_adj"] < 0.05 and row["ci_high"] < 0, (root, row.to_dict())
        null = primary[[(a, b) not in changed for a, b in zip(primary["roi_a"], primary["roi_b"])]]
        with_false += bool((null["p_adj"] < 0.05).any())
        planted = contrasts(pd.read_parquet(root / "results/truth/truth.parquet"), ("midazolam", "ketamine"),
                            ["baseline", "0-10min", "10-20min"], "baseline")
        checked = truth_check(primary[primary["family"] == "confirmatory"], planted)
        assert len(checked) == 12 and checked["covered"].notna().all()
        misses += int((~checked["covered"].astype(bool)).sum())
    assert with_false <= 1
    assert misses <= 5


def test_metrics_json_headline(ran_study):
    root, _, _ = ran_study
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["n_per_group"] == {"ketamine": 8, "midazolam": 8}
    assert metrics["excluded_runs"] == 0
    detail = json.loads((root / "reports/confirmatory.json").read_text())
    assert set(detail["edges"]) == {f"{a}~{b}" for a in ("Left_Amygdala", "Right_Amygdala")
                                    for b in ("vmPFC", "dmPFC", "amPFC")}
    # the slim headline agrees with tests.parquet, counted independently here
    tests = pd.read_parquet(root / "results/stats/tests.parquet")
    conf = tests[(tests["test"] == metrics["test"]) & (tests["metric"] == metrics["metric"])
                 & (tests["term"] == metrics["term"]) & (tests["family"] == "confirmatory")]
    assert metrics["confirmatory"] == {"edge_windows": len(conf), "significant": int((conf["p_adj"] < 0.05).sum())}
    best = conf.sort_values("p_adj").iloc[0]
    assert metrics["top"]["edge"] == f"{best.roi_a}~{best.roi_b}" and metrics["top"]["window"] == best.window
    assert "vmPFC" in metrics["top"]["edge"] and metrics["top"]["window"] == "10-20min"  # the planted peak
    flat = pd.json_normalize(metrics).columns
    assert len(flat) <= 20  # what `dvc exp show` adds as columns


def test_statistics_table_shows_effect_sizes(ran_study):
    """Every row's Hedges' g and its interval reach the report's table, as in tests.parquet."""
    import re

    root, _, _ = ran_study
    html = (root / "reports/index.html").read_text()
    tests = pd.read_parquet(root / "results/stats/tests.parquet")
    welch = tests[(tests["effect_size_kind"] == "hedges_g") & tests["effect_size_ci_low"].notna()]
    assert set(welch["test"]) >= {"change_welch", "permutation"}  # permutation reports Welch's g too
    assert "<th>Effect size</th>" in html
    g = r"(-?\d+\.\d\d)"
    cells = re.findall(rf"<td[^>]*>{g} \[{g}, {g}\] <span class=\"kind\">Hedges&#39; g</span>", html)
    assert len(cells) == len(welch)
    expected = sorted(f"{g:.2f}" for g in welch["effect_size"])
    assert sorted(c[0] for c in cells) == expected


def test_two_runs_give_byte_identical_tables(ran_study):
    root, _, first = ran_study
    code, _, err = run_cli_in(root, "run")
    assert code == 0, err
    for table, data in first.items():
        assert (root / table).read_bytes() == data, table


def test_html_escapes_names(ran_study, tmp_path):
    from fclab.framework.report.page import render_html

    html = render_html({"title": "<script>alert(1)</script>", "headline": "", "summary": [], "n_excluded": 0,
                        "exclusions": [], "primary_test": "lmm", "correction": "holm", "figures": [],
                        "families": [], "alpha": 0.05, "methods": "", "versions": {"fclab": "0"},
                        "commit": "x", "data_version": "y", "caveats": {"<i>t</i>": "<script>x</script>"},
                        "ci_level": "95 %", "primary_term": "<i>term</i>", "star_levels": ["0.05", "0.01", "0.001"]})
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "<script>x</script>" not in html and "<i>" not in html


def _copy_study(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "data", dst / "data")
    write_params(dst, small_params())
    return dst


def test_corrupt_bold_names_file_and_leaves_no_output(small_study, tmp_path, in_dir):
    work = _copy_study(small_study, tmp_path)
    bold = sorted((work / "data/simulated/sub-03/func").glob("*run-2*_bold.nii.gz"))[0]
    raw = bold.read_bytes()
    bold.write_bytes(raw[: len(raw) // 2])  # a truncated .nii.gz
    in_dir(work)
    code, _, err = run_cli("extract")
    assert code == 1
    assert bold.name in err and len(err.strip().splitlines()) == 1
    assert not (work / "results/extract").exists()


def test_missing_input_directory(tmp_path, in_dir):
    params = small_params()
    params["extract"]["data"]["root"] = "no/such/dir"
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, _, err = run_cli("extract")
    assert code == 1 and "no/such/dir" in err
    assert not (tmp_path / "results").exists()


def test_missing_upstream_output(tmp_path, in_dir):
    write_params(tmp_path, small_params())
    in_dir(tmp_path)
    code, _, err = run_cli("stats")
    assert code == 1 and "edges.parquet" in err


def test_extracted_signals_match_nilearn_maskers(ran_study):
    """The extract stage's cleaned ROI signals equal nilearn's maskers with the same settings."""
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.maskers import NiftiLabelsMasker, NiftiSpheresMasker

    from fclab.framework.extraction.anatomy import ANDREWS_HANNA_2010_MPFC, max_probability_labels

    root, _, _ = ran_study
    ts = pd.read_parquet(root / "results/extract/timeseries.parquet")
    bold = next((root / "data/simulated/sub-02/func").glob("*run-1*_bold.nii.gz"))
    confounds, sample_mask = load_confounds_strategy(str(bold), denoise_strategy="simple")
    kw = dict(detrend=True, standardize="zscore_sample", low_pass=0.08, high_pass=0.01, t_r=2.5)
    labels_img, names = max_probability_labels("harvard_oxford", 25)
    amy = [names.index("Left_Amygdala") + 1, names.index("Right_Amygdala") + 1]
    from nilearn.image import math_img

    sub_labels = math_img(f"np.where(img == {amy[0]}, 1, np.where(img == {amy[1]}, 2, 0))", img=labels_img)
    labels = NiftiLabelsMasker(sub_labels, resampling_target="data", **kw).fit_transform(
        str(bold), confounds=confounds)
    # NiftiSpheresMasker averages into an array of the image's dtype, so on int16 BOLD its sphere
    # means are truncated to integers; give it the same data as float64 to compare the method.
    import nibabel as nib

    as_float = nib.load(bold)
    as_float = nib.Nifti1Image(np.asarray(as_float.dataobj, dtype=np.float64), as_float.affine)
    spheres = NiftiSpheresMasker(list(ANDREWS_HANNA_2010_MPFC.values()), radius=8, **kw).fit_transform(
        as_float, confounds=confounds)
    ours = ts[(ts["subject"] == "02") & (ts["run"] == "baseline")]
    np.testing.assert_allclose(ours[["Left_Amygdala", "Right_Amygdala"]].to_numpy(), labels, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours[["vmPFC", "dmPFC", "amPFC"]].to_numpy(), spheres, rtol=1e-6, atol=1e-9)
    assert pq.read_metadata(root / "results/extract/timeseries.parquet").num_rows == len(ts)


@pytest.mark.parametrize("change, message, exit_code", [
    ({"groups": ["midazolam", "placebo"]}, "stats.groups: 'placebo' is not a group of the data (ketamine, midazolam)", 2),
    ({"groups": ["midazolam", "ketamin"]}, "stats.groups: 'ketamin' is not a group of the data (ketamine, midazolam); "
                                          "did you mean 'ketamine'?", 2),
    ({"confirmatory": [["Left_Amygdala", "vmPFc"]]}, "stats.confirmatory[0][1]: 'vmPFc' is not an ROI", 2),
    ({"covariates": ["handedness"]}, "stats.covariates: no column 'handedness' in the participants table", 1),
])
def test_inestimable_design_is_a_one_line_error(ran_study, tmp_path, in_dir, change, message, exit_code):
    directory, _, _ = ran_study
    shutil.copytree(directory / "results", tmp_path / "results")
    params = small_params()
    params["stats"].update(change)
    write_params(tmp_path, params)
    in_dir(tmp_path)
    before = (tmp_path / "results/stats/tests.parquet").read_bytes()
    code, _, err = run_cli("stats")
    assert code == exit_code and message in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "results/stats/tests.parquet").read_bytes() == before  # nothing half-written


def test_covariates_from_participants_and_run_qc(ran_study, tmp_path, in_dir):
    directory, _, _ = ran_study
    shutil.copytree(directory / "results", tmp_path / "results")
    params = small_params()
    params["stats"].update(covariates=["age", "sex", "mean_fd"], tests=["mmrm", "lmm", "ancova"])
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, _, err = run_cli("stats")
    assert code == 0, err
    tests = pd.read_parquet(tmp_path / "results/stats/tests.parquet")
    assert set(tests["test"]) == {"mmrm", "lmm", "ancova"} and tests["p"].notna().all()
    meta = json.loads(pq.read_schema(tmp_path / "results/stats/tests.parquet").metadata[b"fclab"])
    assert "adjusted for age, sex, mean_fd" in meta["methods"]


def test_any_params_change_changes_the_methods_text(ran_study, tmp_path, in_dir):
    directory, _, _ = ran_study
    shutil.copytree(directory / "results", tmp_path / "results")
    in_dir(tmp_path)
    texts = []
    for seed in (1, 2):  # a key no stage after simulate reads
        params = small_params()
        params["simulate"]["seed"] = seed
        write_params(tmp_path, params)
        code, _, err = run_cli("report")
        assert code == 0, err
        html = (tmp_path / "reports" / "index.html").read_text()
        texts.append(html[html.index('<p class="methods">'):html.index("</p>", html.index('<p class="methods">'))])
    assert texts[0] != texts[1] and "params.yaml as a whole" in texts[0]


def test_exclusion_rules_mark_runs_and_their_windows_go_missing(ran_study, small_study, tmp_path, in_dir):
    directory, _, _ = ran_study
    fd = pd.read_parquet(directory / "results/extract/run_qc.parquet")["mean_fd"]
    limit = float(np.quantile(fd, 0.85))  # the highest-motion runs break the rule
    work = _copy_study(small_study, tmp_path)
    params = small_params()
    params["extract"]["exclude"] = {"max_mean_fd": limit}
    write_params(work, params)
    in_dir(work)
    code, _, err = run_cli("run")
    assert code == 0, err
    run_qc = pd.read_parquet(work / "results/extract/run_qc.parquet")
    excl = run_qc[run_qc["excluded"]]
    assert len(excl) == int((fd > limit).sum()) > 0
    assert excl["reason"].str.contains(f"> {limit:g} mm").all()
    edges = read_edges_long(work / "results/connectivity/edges.parquet")
    hit = edges.merge(excl[["subject", "run"]], on="subject")
    assert len(hit) and hit["value"].isna().any()
    gone = edges.set_index(["subject"]).loc[excl["subject"]]
    assert gone["reason"].fillna("").str.startswith("run excluded: mean FD").any()
    meta = json.loads(pq.read_schema(work / "results/stats/tests.parquet").metadata[b"fclab"])
    assert f"{len(excl)} of {len(run_qc)} runs" in meta["methods"]
    assert (f"Runs were excluded for mean framewise displacement above {limit:g} mm or fewer than 10 effective "
            "temporal degrees of freedom left by denoising." in meta["methods"])  # min_dof's default
    html = (work / "reports/index.html").read_text()
    assert f"Excluded runs: {len(excl)}" in html and "mean FD" in html


def test_exclusion_rules_whole_subject_and_censoring():
    from fclab.framework.extraction.runqc import apply_exclusions
    from fclab.framework.params import ExclusionParams

    run_qc = pd.DataFrame({"subject": ["01", "01", "02", "02"], "run": ["a", "b", "a", "b"],
                           "mean_fd": [0.1, 0.6, 0.1, 0.1], "n_volumes": 100, "n_retained": [100, 100, 70, 95]})
    out = apply_exclusions(run_qc, ExclusionParams(max_mean_fd=0.5, max_censored_fraction=0.2, whole_subject=True))
    assert out["excluded"].tolist() == [True, True, True, True]
    assert out.loc[0, "reason"] == "subject excluded (run b: mean FD 0.600 mm > 0.5 mm)"
    assert out.loc[2, "reason"] == "censored fraction 0.30 > 0.2"
    out = apply_exclusions(run_qc, ExclusionParams(min_clean_volumes=80))
    assert out["excluded"].tolist() == [False, False, True, False]


def test_validate_summarises_inputs_and_lists_every_problem(small_study, tmp_path, in_dir):
    work = _copy_study(small_study, tmp_path)
    in_dir(work)
    code, out, err = run_cli("validate")
    assert code == 0, err
    assert "16 subjects (ketamine 8, midazolam 8), 32 runs (baseline 16, infusion 16)" in out
    assert "TR (s): 2.5" in out and "inputs: ok" in out
    func = work / "data/simulated"
    conf = sorted(func.glob("sub-02/func/*run-1*confounds_timeseries.tsv"))[0]
    conf.unlink()  # a missing file
    short = sorted(func.glob("sub-03/func/*run-2*confounds_timeseries.tsv"))[0]
    lines = short.read_text().splitlines()
    short.write_text("\n".join(lines[:-5]) + "\n")  # fewer rows than volumes
    events = sorted(func.glob("sub-04/func/*run-2*events.tsv"))[0]
    events.write_text("onset\tduration\ttrial_type\n0\t1\tsomething_else\n")  # the named event is gone
    code, out, err = run_cli("validate")
    assert code == 1
    assert "3 problems" in err
    assert "sub-02 run 'baseline': no confounds TSV found" in err
    assert f"{short.name}" in err and "rows for" in err
    assert f"{events.name}: no event 'infusion'" in err
    assert not (work / "results").exists()  # nothing computed or written


def test_group_map_include_and_exclude(small_study, tmp_path, in_dir):
    from fclab.framework.extraction.bids import read_participants
    from fclab.framework.params import DataParams

    work = _copy_study(small_study, tmp_path)
    root = str(work / "data/simulated")
    table = read_participants(DataParams(root=root, group_map={"ketamine": "drug", "midazolam": "control"},
                                         exclude=["sub-01"], include=[]))
    assert set(table["group"]) == {"drug", "control"} and "01" not in set(table["subject"])
    table = read_participants(DataParams(root=root, include=["02", "sub-03"]))
    assert table["subject"].tolist() == ["02", "03"]
    from fclab.framework.errors import DataError

    with pytest.raises(DataError, match="group value 'midazolam', which extract.data.group_map does not map"):
        read_participants(DataParams(root=root, group_map={"ketamine": "drug"}))
    with pytest.raises(DataError, match="extract.data.exclude: no subject 99"):
        read_participants(DataParams(root=root, exclude=["99"]))


def test_extract_runs_through_any_executor(small_study):
    """A backend only needs map(fn, items); extract hands it one job per run."""
    from fclab.framework.extraction.engine import extract
    from fclab.framework.params import ExtractParams
    from fclab.framework.stages import roi_builder

    class Recording:
        def __init__(self):
            self.items = 0

        def map(self, fn, items):
            self.items += len(items)
            return (fn(item) for item in items)

    params = small_params()["extract"]
    params["data"].update(root=str(small_study / "data/simulated"), include=["01", "02"])
    rec = Recording()
    p = ExtractParams.model_validate(params)
    out = extract(p, roi_builder(p), executor=rec)
    assert rec.items == 4 and len(out.run_qc) == 4
    assert set(out.timeseries["subject"]) == {"01", "02"}


def test_motion_artefacts_need_more_than_motion_regression(tmp_path, in_dir):
    """No planted effect; ketamine subjects move 4x more during the infusion, and motion also leaves
    a spin-history-like artefact with its own spatial pattern and a grey-matter-wide signal change,
    which regressing the motion parameters cannot remove. The spurious group x window 'effect' (the
    mean estimate over every edge and window: motion inflates connectivity) is large without
    denoising, smaller with `simple`, and smaller still with global signal regression added. These
    per-study bounds held in each of 16 seeds (11-26); that `simple` leaves a bias GSR removes shows
    only on average (16 seeds: 0.261 / 0.058 / -0.000), not in every study of 8 + 8
    (`benchmarks/motion_bias.py`, docs/validation.md)."""
    from fclab.framework.params import load_params
    from fclab.framework.report.assemble import study_qc

    params = small_params()
    params["simulate"].update(effect_delta_r=0.0, extra_motion_group="ketamine", extra_motion_factor=4.0,
                              spin_history=6.0, motion_global=6.0)
    params["stats"]["tests"] = [{"name": "mmrm", "contrasts": ["group:window"]}]
    params["connectivity"]["sliding"] = []
    params["extract"]["exclude"] = {"max_mean_fd": None}  # keep the high-motion runs in
    in_dir(tmp_path)
    bias = {"none": [], "simple": [], "gsr": []}
    for seed in (11, 12):
        params["simulate"]["seed"] = seed
        for name, options in [("none", {"strategy": "none"}), ("simple", {"strategy": "simple"}),
                              ("gsr", {"strategy": "simple", "strategy_options": {"global_signal": "basic"}})]:
            params["extract"]["denoise"].update({"strategy_options": {}, **options})
            write_params(tmp_path, params)
            for stage in (["simulate"] if name == "none" else []) + ["extract", "connectivity", "stats"]:
                code, _, err = run_cli(stage)
                assert code == 0, err
            tests = pd.read_parquet(tmp_path / "results/stats/tests.parquet")
            bias[name].append(float(tests.loc[tests["term"] == "group:window", "estimate"].mean()))
        run_qc = pd.read_parquet(tmp_path / "results/extract/run_qc.parquet")
        fd = run_qc.groupby(["group", "run"])["mean_fd"].mean()
        assert fd["ketamine", "infusion"] > 2.5 * fd["midazolam", "infusion"]
        # The report's motion-by-window QC finds the planted motion in every infusion window and not at baseline.
        edges = read_edges_long(tmp_path / "results/connectivity/edges.parquet")
        windows = [w["name"] for w in params["connectivity"]["windows"]]
        tables = study_qc(load_params(tmp_path / "params.yaml"), run_qc,
                          pd.read_parquet(tmp_path / "results/extract/roi_qc.parquet"),
                          pd.read_parquet(tmp_path / "results/extract/motion.parquet"), edges, windows,
                          pd.read_parquet(tmp_path / "results/extract/events.parquet"))
        t = tables["motion_tests"].set_index(["measure", "window"]).loc["mean_fd"]
        assert (t.loc[windows[1:], "p_holm"] < 0.05).all() and t.loc[windows[0], "p"] > 0.05, t
        assert (t.loc[windows[1:], "difference"] > 0).all()
        motion = pd.read_parquet(tmp_path / "results/extract/motion.parquet")
        assert (motion["dvars_clean"] < motion["dvars_raw"]).mean() > 0.95  # denoising lowers DVARS
    for none, simple, gsr in zip(bias["none"], bias["simple"], bias["gsr"]):
        assert none > 0.05, bias
        assert simple < 0.6 * none, bias
        assert abs(gsr) < 0.5 * none, bias


def test_calibrate_relabels_the_studys_own_values(ran_study, tmp_path, in_dir):
    directory, _, _ = ran_study
    shutil.copytree(directory / "results", tmp_path / "results")
    params = small_params()
    params["stats"]["tests"] = ["mmrm", "change_welch"]
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, out, err = run_cli("calibrate", "--n", "20", "--seed", "3")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "reports/calibration/relabel.csv")
    assert set(table["test"]) == {"mmrm", "change_welch"} and (table["n_sims"] == 20).all()
    assert set(table["outcome"]) == {"single", "confirmatory", "exploratory"}
    assert ((table["ci_low"] <= table["rate"]) & (table["rate"] <= table["ci_high"])).all()
    assert "target band [0.035, 0.065]" in out
    code, _, err = run_cli("calibrate", "--kind", "nope")
    assert code == 2 and "--kind" in err


def test_provenance_commit_is_the_last_commit_of_the_code(tmp_path):
    """Not HEAD: a commit of results or docs leaves it alone, an uncommitted code edit marks it dirty."""
    import subprocess

    from fclab.framework.io import git_commit

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "framework").mkdir()
    (tmp_path / "framework" / "x.py").write_text("a = 1\n")
    git("add", "-A")
    git("commit", "-qm", "code")
    code = git("rev-parse", "HEAD")
    (tmp_path / "dvc.lock").write_text("outs\n")
    git("add", "-A")
    git("commit", "-qm", "results")
    assert git("rev-parse", "HEAD") != code
    assert git_commit(tmp_path) == code
    (tmp_path / "framework" / "x.py").write_text("a = 2\n")
    assert git_commit(tmp_path) == code + "-dirty"
    assert git_commit(tmp_path / "framework" / "nowhere") == "unknown"


def test_window_axis_label_follows_the_window_definitions():
    from fclab.framework.params import WindowSpec
    from fclab.framework.report.effect_figures import window_axis_label

    def w(name, run, event=None):
        return WindowSpec(name=name, run=run, event=event, start_min=0 if event else None,
                          end_min=10 if event else None)

    after_event = [w("baseline", "rest1"), w("a", "drug", "bolus"), w("b", "drug", "bolus")]
    assert window_axis_label(after_event, ["a", "b"]) == "Window after bolus onset"
    assert window_axis_label([w("a", "drug"), w("b", "drug")], ["a", "b"]) == "Window of the drug run"
    assert window_axis_label([w("a", "drug", "bolus"), w("b", "rest2")], ["a", "b"]) == "Window"


def test_methods_name_group_sizes_regressors_terms_and_the_reference_list(ran_study):
    """The methods paragraph a reviewer needs: subjects per group, the regressors removed, the terms
    reported; and a reference list of what ran (framework steps and every plugin's own)."""
    import html as html_lib
    import re

    root, _, _ = ran_study
    page = (root / "reports/index.html").read_text()
    methods = html_lib.unescape(re.search(r'<p class="methods">(.*?)</p>', page, re.S).group(1))
    assert "of 16 subjects (8 ketamine, 8 midazolam; 2 runs per subject)" in methods
    run_qc = pd.read_parquet(root / "results/extract/run_qc.parquet")
    per_run = [set(c.split(",")) for c in run_qc["confounds"]]
    common = set.intersection(*per_run)
    assert {"trans_x", "rot_z", "csf", "white_matter"} <= common
    from fclab.framework.report.methods import name_ranges

    listed = re.search(r": (\d+) regressors in every run \(([^)]*)\)", methods)
    assert int(listed.group(1)) == len(common)
    assert "trans_x, trans_x_derivative1" in listed.group(2) and "cosine00–cosine" in listed.group(2)
    lo, hi = min(len(r - common) for r in per_run), max(len(r - common) for r in per_run)
    rest = sorted(set.union(*per_run) - common)  # the longer infusion run has more cosine drift terms
    assert f"plus {lo}–{hi} run-specific ones ({name_ranges(rest)}; run_qc.parquet lists each run's)" in methods
    assert name_ranges(["a", "cosine00", "cosine01", "cosine02", "cosine04", "x1", "x2"]) == \
        "a, cosine00–cosine02, cosine04, x1, x2"
    assert "mmrm: group:window (the group difference in the change from baseline, per window)" in methods
    # Degrees of freedom and the adjustment, per test, as they were computed.
    assert "REML, Kenward–Roger standard errors and degrees of freedom" in methods
    assert "Welch's t-test on the change from baseline (Welch–Satterthwaite degrees of freedom)" in methods
    tests = pd.read_parquet(root / "results/stats/tests.parquet")
    assert set(tests.loc[tests["test"] == "permutation", "adj_method"]) == {"maxT"}
    assert ("(adjustment by test: mmrm, lmm and change_welch: Holm's step-down method; permutation: the "
            "single-step max-|t| permutation method (Westfall–Young maxT))") in methods
    refs = [html_lib.unescape(r) for r in re.findall(r"<li>(.*?)</li>", page.split('<ol class="references">')[1])]
    for must in ("Abraham A", "Esteban O", "Andrews-Hanna JR", "Makris N", "Fisher RA", "Mallinckrodt CH",
                 "Satterthwaite FE", "Kenward MG", "Welch BL", "Westfall PH", "Holm S", "Kuprieiev R"):
        assert sum(r.startswith(must) for r in refs) == 1, must
    assert len(refs) == len(set(refs))


def test_statistics_csv_has_every_row_and_the_subjects_per_group(ran_study):
    """reports/tests.csv is tests.parquet plus n per group: for the change from baseline, the subjects
    with a value in the window and in the baseline, counted here from edges.parquet."""
    root, _, _ = ran_study
    table = pd.read_csv(root / "reports/tests.csv")
    tests = pd.read_parquet(root / "results/stats/tests.parquet")
    assert len(table) == len(tests) and {"n_midazolam", "n_ketamine"} <= set(table.columns)
    edges = read_edges_long(root / "results/connectivity/edges.parquet")
    wide = edges.pivot_table(index=["metric", "roi_a", "roi_b", "subject", "group"], columns="window",
                             values="value", observed=True, dropna=False)
    change = table[table["term"] == "group:window"].head(12)
    for r in change.itertuples():
        both = wide.loc[(r.metric, r.roi_a, r.roi_b)][[r.window, "baseline"]].notna().all(axis=1)
        per = both.groupby(level="group").sum()
        assert (r.n_midazolam, r.n_ketamine) == (per["midazolam"], per["ketamine"])
    html = (root / "reports/index.html").read_text()
    assert "<th>n (midazolam / ketamine)</th>" in html and 'href="tests.csv"' in html


def test_roisim_spread_benchmark_runs_on_a_studys_outputs(ran_study, capsys):
    """benchmarks/roisim_spread.py, cited in docs/validation.md, reads a study's edges.parquet (it
    stopped running, unnoticed, when edges were packed): it runs on the small study and prints a
    finite, positive between-subject SD for every window and change."""
    import importlib.util

    study = ran_study[0]
    spec = importlib.util.spec_from_file_location("roisim_spread", Path(__file__).parents[1] / "benchmarks/roisim_spread.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main([str(study), "--n", "1", "--params", str(study / "params.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0] if not ln.startswith("Δ") else " ".join(ln.split()[:2]): ln.split() for ln in lines[1:-1]}
    windows = [w["name"] for w in small_params()["connectivity"]["windows"]]
    assert set(windows) <= set(rows) and all(f"Δ {w}" in rows for w in windows[1:])
    for cells in rows.values():
        voxel = float(cells[-4])  # the study's own column (then voxel mean, roisim, ratio)
        assert np.isfinite(voxel) and voxel > 0
