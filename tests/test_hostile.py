"""Hostile inputs: each is one line on stderr naming the file, key or subject, the documented exit code
(2 params/usage, 1 data), nothing written, and `fclab validate` finds the data problems first."""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from fclab.framework.connectome.edgestore import read_edges_long

from conftest import ROOT, run_cli, small_params, write_params

SUB = "02"


def _func(work, run, suffix):
    return sorted((work / "data/simulated" / f"sub-{SUB}" / "func").glob(f"*run-{run}*{suffix}"))[0]


def _edit_tsv(path, fn):
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    fn(table).to_csv(path, sep="\t", index=False)


def _edit_json(path, key, value):
    meta = json.loads(path.read_text())
    meta[key] = value
    path.write_text(json.dumps(meta))


# ---- data: (mutate, message fragment, stage that fails) ----------------------------------------

def empty_participants(work, params):
    (work / "data/simulated/participants.tsv").write_text("")
    return "participants.tsv: empty file", "extract"


def empty_events(work, params):
    _func(work, 2, "_events.tsv").write_text("")
    return "_events.tsv: empty file", "extract"


def tr_nan(work, params):
    path = _func(work, 2, "_bold.json")
    path.write_text(path.read_text().replace('"RepetitionTime": 2.5', '"RepetitionTime": NaN'))
    return "RepetitionTime must be a positive number of seconds, got nan", "extract"


def tr_true(work, params):
    _edit_json(_func(work, 2, "_bold.json"), "RepetitionTime", True)
    return "RepetitionTime must be a positive number of seconds, got True", "extract"


def tr_milliseconds(work, params):
    _edit_json(_func(work, 2, "_bold.json"), "RepetitionTime", 2500)
    return "RepetitionTime 2500 s looks like milliseconds", "extract"


def confound_gap(work, params):
    def gap(t):
        t.loc[40, "trans_x"] = "n/a"
        return t
    _edit_tsv(_func(work, 1, "_timeseries.tsv"), gap)
    return "row 41: column 'trans_x' has no value", "extract"


def fd_missing_for_scrubbing(work, params):
    params["extract"]["denoise"]["strategy"] = "scrubbing"
    _edit_tsv(_func(work, 1, "_timeseries.tsv"), lambda t: t.drop(columns=["framewise_displacement"]))
    return "_timeseries.tsv: cannot build 'scrubbing' confounds: no column 'framewise_displacement'", "extract"


def fd_missing_for_the_fd_rule(work, params):
    _edit_tsv(_func(work, 1, "_timeseries.tsv"), lambda t: t.drop(columns=["framewise_displacement"]))
    return ("sub-02 run 'baseline' (sub-02_task-rest_run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz): its "
            "confounds file has no framewise_displacement column, which extract.exclude.max_mean_fd needs"), "extract"


def events_without_trial_type(work, params):
    _edit_tsv(_func(work, 2, "_events.tsv"), lambda t: t.drop(columns=["trial_type"]))
    return "_events.tsv: no column 'trial_type'", "extract"


def events_na_onset(work, params):
    _edit_tsv(_func(work, 2, "_events.tsv"), lambda t: t.assign(onset="n/a"))
    return "_events.tsv: row 1: onset n/a is not a number ≥ 0", "extract"


def duplicate_subject(work, params):
    _edit_tsv(work / "data/simulated/participants.tsv", lambda t: pd.concat([t, t.iloc[[1]]]))
    return f"participants.tsv: sub-{SUB} is listed more than once", "extract"


def group_with_trailing_space(work, params):
    def pad(t):
        t.loc[t["participant_id"] == f"sub-{SUB}", "group"] += " "
        return t
    _edit_tsv(work / "data/simulated/participants.tsv", pad)
    return f"participants.tsv: sub-{SUB}: group value", "extract"


def two_infusion_events(work, params):
    _edit_tsv(_func(work, 2, "_events.tsv"), lambda t: pd.concat([t, t.assign(onset="300")]))
    return "2 'infusion' events", "connectivity"


def onset_beyond_run(work, params):
    _edit_tsv(_func(work, 2, "_events.tsv"), lambda t: t.assign(onset="5000"))
    return "lies outside", "connectivity"


def low_pass_above_nyquist(work, params):
    params["extract"]["denoise"]["low_pass_hz"] = 0.3
    return "extract.denoise.low_pass_hz 0.3 Hz is not below the Nyquist frequency 0.2 Hz", "extract"


def negative_onset(work, params):
    _edit_tsv(_func(work, 2, "_events.tsv"), lambda t: t.assign(onset="-30"))
    return "row 1: onset -30 is not a number ≥ 0", "extract"  # not np.float64(-30.0)


def confound_column_twice(work, params):
    path = _func(work, 1, "_desc-confounds_timeseries.tsv")
    lines = path.read_text().splitlines()
    head = lines[0].split("\t")
    head[head.index("rot_z")] = "trans_x"  # a second trans_x: pandas would read it as trans_x.1
    path.write_text("\n".join(["\t".join(head), *lines[1:]]) + "\n")
    return "_desc-confounds_timeseries.tsv: column 'trans_x' given twice in the header", "extract"


def participants_is_a_directory(work, params):
    path = work / "data/simulated/participants.tsv"
    path.unlink()
    path.mkdir()
    return "participants.tsv: cannot be read", "extract"


def five_volume_run(work, params):
    import nibabel as nib

    bold = _func(work, 1, "_bold.nii.gz")
    img = nib.load(bold)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :5], img.affine, img.header), bold)
    _edit_tsv(_func(work, 1, "_desc-confounds_timeseries.tsv"), lambda t: t.iloc[:5])
    return "5 volumes are too few for the temporal filter (it pads 33 volumes at each end)", "extract"


DATA_CASES = [empty_participants, empty_events, tr_nan, tr_true, tr_milliseconds, confound_gap,
              fd_missing_for_the_fd_rule, fd_missing_for_scrubbing, events_without_trial_type, events_na_onset, duplicate_subject,
              group_with_trailing_space, two_infusion_events, onset_beyond_run, low_pass_above_nyquist,
              negative_onset, confound_column_twice, participants_is_a_directory, five_volume_run]


@pytest.fixture
def study_copy(small_study, tmp_path, in_dir):
    shutil.copytree(small_study / "data", tmp_path / "data")
    params = small_params()
    params["extract"]["data"]["include"] = ["01", SUB, "03"]  # three subjects keep this fast
    in_dir(tmp_path)
    return tmp_path, params


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fclab: error: "), err
    return lines[0]


@pytest.mark.parametrize("case", DATA_CASES, ids=[c.__name__ for c in DATA_CASES])
def test_bad_data_is_found_by_validate_and_by_its_stage(case, study_copy):
    work, params = study_copy
    message, stage = case(work, params)
    write_params(work, params)
    code, _, err = run_cli("validate")
    assert code == 1 and message in err, err
    if stage == "connectivity":
        code, _, err = run_cli("extract")
        assert code == 0, err
    code, _, err = run_cli(stage)
    line = _one_line(err)
    # A window that does not fit its run is a params error (exit 2) even when the onset moved it there.
    assert code == (2 if case is onset_beyond_run else 1) and (message in line or stage == "connectivity"), err
    if case is onset_beyond_run:
        assert "the 'infusion' onset in events.tsv" in line
    assert not (work / "results" / stage).exists()


def test_event_problems_name_events_tsv_in_the_stage_too(study_copy):
    work, params = study_copy
    two_infusion_events(work, params)
    write_params(work, params)
    assert run_cli("extract")[0] == 0
    code, _, err = run_cli("connectivity")
    assert code == 1 and "2 'infusion' events (onsets 30, 300 s in events.tsv)" in _one_line(err)


# ---- params: exit 2 from `validate --params-only` --------------------------------------------

def _set(params, path, value):
    *head, last = path
    node = params
    for k in head:
        node = node[k]
    node[last] = value


@pytest.mark.parametrize("path, value, message", [
    (("extract", "denoise", "high_pass_hz"), 0.1, "extract.denoise: high_pass_hz (0.1) must be below low_pass_hz (0.08)"),
    (("stats", "tests", 3, "n_perm"), True, "stats.tests[3].n_perm: true is a YAML boolean"),
    (("extract", "denoise", "strategy_options"), {"fd_threshold": 0.2},
     "strategy_options: 'fd_threshold' is not an option of strategy 'simple' (accepted: motion, wm_csf, "
     "global_signal, demean)"),
    (("report", "primary_term"), "group:windwo", "report.primary_term: 'group:windwo' is not a term of mmrm "
     "(group:window, group, group:trend); did you mean 'group:window'?"),
    (("simulate", "effect_delta_r"), False, "simulate.effect_delta_r: false is a YAML boolean"),
])
def test_bad_params_are_found_before_any_work(tmp_path, in_dir, path, value, message):
    params = small_params()
    _set(params, path, value)
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, _, err = run_cli("validate", "--params-only")
    assert code == 2 and message in _one_line(err), err


def test_a_key_given_twice_is_an_error(tmp_path, in_dir):
    text = (ROOT / "params.yaml").read_text().replace("  seed: 20261126\n", "  seed: 20261126\n  seed: 7\n")
    (tmp_path / "params.yaml").write_text(text)
    in_dir(tmp_path)
    code, _, err = run_cli("validate", "--params-only")
    assert code == 2 and "key 'seed' given twice in one mapping" in _one_line(err), err


@pytest.mark.parametrize("centres, message", [
    ({"": [0, 26, -18]}, "extract.rois: ROI name '' is empty"),
    ({"subject": [0, 26, -18]}, "extract.rois: ROI name 'subject' is reserved"),
    ({" vmPFC": [0, 26, -18]}, "has leading or trailing whitespace"),
])
def test_bad_roi_names(study_copy, centres, message):
    work, params = study_copy
    params["extract"]["rois"][1]["centres"] = centres
    write_params(work, params)
    code, _, err = run_cli("extract")
    assert code == 2 and message in _one_line(err), err
    assert not (work / "results").exists()


def test_min_volumes_above_every_window(ran_study, tmp_path, in_dir):
    shutil.copytree(ran_study[0] / "results", tmp_path / "results")
    params = small_params()
    params["connectivity"]["min_volumes"] = 5000
    write_params(tmp_path, params)
    in_dir(tmp_path)
    before = (tmp_path / "results/connectivity/edges.parquet").read_bytes()
    code, _, err = run_cli("connectivity")
    assert code == 2 and "connectivity: window 'baseline' has no value for any subject" in _one_line(err), err
    assert "fewer than min_volumes (5000)" in err
    assert (tmp_path / "results/connectivity/edges.parquet").read_bytes() == before


@pytest.mark.parametrize("damage, message", [
    ("drop values", "no column 'values'"),
    ("drop layout", "not fclab's packed edge table"),
    ("drop window", "no column 'window'"),
    ("short lists", "not a list of 10 values for 5 ROIs"),
    ("long table", "not fclab's packed edge table"),
])
def test_edges_damaged_or_in_another_layout(ran_study, tmp_path, in_dir, damage, message):
    """edges.parquet without a column, its layout record, with value lists of the wrong size, or in
    the long layout (one row per edge): one line naming the file."""
    import pyarrow as pa

    from fclab.framework.connectome.edgestore import LAYOUT_KEY
    from fclab.framework.io import read_provenance, write_arrow, write_parquet

    shutil.copytree(ran_study[0] / "results", tmp_path / "results")
    path = tmp_path / "results/connectivity/edges.parquet"
    prov = read_provenance(path)
    table = pq.read_table(path)
    layout = {LAYOUT_KEY: table.schema.metadata[LAYOUT_KEY]}
    if damage == "long table":
        write_parquet(read_edges_long(path), path, prov)
    elif damage == "short lists":
        short = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(len(table) * 9)), 9)
        write_arrow(table.set_column(table.schema.get_field_index("values"), "values", short), path, prov, layout)
    else:
        col = damage.split()[1]
        write_arrow(table.drop_columns([col]) if col != "layout" else table, path, prov,
                    {} if col == "layout" else layout)
        if col == "layout":  # write_arrow keeps the table's own metadata: drop the key from it
            t = pq.read_table(path)
            meta = {k: v for k, v in t.schema.metadata.items() if k != LAYOUT_KEY}
            pq.write_table(t.replace_schema_metadata(meta), path)
    write_params(tmp_path, small_params())
    in_dir(tmp_path)
    code, _, err = run_cli("stats")
    assert code == 1 and "results/connectivity/edges.parquet" in _one_line(err) and message in err, err


def test_a_stage_never_reads_a_mix_of_runs(ran_study, tmp_path, in_dir):
    """A table whose recorded inputs are not the files on disk (a stage rerun by hand upstream) stops
    the next stage instead of being combined with them."""
    from fclab.framework.io import read_provenance, write_parquet

    shutil.copytree(ran_study[0] / "results", tmp_path / "results")
    path = tmp_path / "results/extract/run_qc.parquet"
    write_parquet(pd.read_parquet(path).assign(mean_fd=0.0), path, read_provenance(path))
    write_params(tmp_path, small_params())
    in_dir(tmp_path)
    before = (tmp_path / "results/stats/tests.parquet").read_bytes()
    code, _, err = run_cli("stats")
    assert code == 1 and "computed from another version of results/extract/run_qc.parquet" in _one_line(err)
    assert (tmp_path / "results/stats/tests.parquet").read_bytes() == before


# ---- output paths ----------------------------------------------------------------------------

@pytest.mark.parametrize("blocker", ["results", "results/extract", "reports"])
def test_an_output_path_that_is_a_file(ran_study, tmp_path, in_dir, blocker):
    shutil.copytree(ran_study[0] / "results", tmp_path / "results")
    shutil.copytree(ran_study[0] / "data", tmp_path / "data", symlinks=True)
    target = tmp_path / blocker
    if target.is_dir():
        shutil.rmtree(target)
    target.write_text("not fclab's")
    write_params(tmp_path, small_params())
    in_dir(tmp_path)
    stage = "report" if blocker == "reports" else "extract"
    code, _, err = run_cli(stage)
    assert code == 1 and f"{blocker}: " in _one_line(err) and "not a directory" in err, err
    assert target.read_text() == "not fclab's"


@pytest.mark.parametrize("output_dir", [".", "docs", ".."])
def test_simulate_never_replaces_a_directory_it_did_not_write(tmp_path, in_dir, output_dir):
    work = tmp_path / "project"
    (work / "docs").mkdir(parents=True)
    (work / "docs" / "notes.md").write_text("mine")
    params = small_params()
    params["simulate"]["output_dir"] = output_dir
    write_params(work, params)
    in_dir(work)
    code, _, err = run_cli("simulate")
    if output_dir == "docs":  # a directory fclab did not write
        assert code == 1 and "choose another output path" in _one_line(err), err
    else:  # the working directory, or one holding it: refused with the params, before any work
        assert code == 2 and "simulate.output_dir" in _one_line(err) and "is the working directory" in err, err
    assert (work / "docs" / "notes.md").read_text() == "mine" and (work / "params.yaml").exists()
    assert sorted(p.name for p in work.iterdir()) == ["docs", "params.yaml"]


def test_stale_temporaries_of_a_killed_run_are_removed(ran_study, tmp_path, in_dir):
    shutil.copytree(ran_study[0] / "results", tmp_path / "results")
    dead = 2**22 + 12345  # above the default pid_max: no such process
    left = [tmp_path / f"results/.stats.{dead}.abc.tmp", tmp_path / f"results/stats/.tests.parquet.{dead}.x.tmp"]
    left[0].mkdir()
    left[1].write_text("partial")
    alive = tmp_path / f"results/.stats.{os.getpid()}.def.tmp"  # a live process's (a concurrent run)
    alive.mkdir()
    write_params(tmp_path, small_params())
    in_dir(tmp_path)
    code, _, err = run_cli("stats")
    assert code == 0, err
    assert not any(p.exists() for p in left) and alive.exists()


# ---- the command line ------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["extract", "--bogus"], "No such option: --bogus"),
    (["bogus"], "No such command 'bogus'"),
    (["power", "--n-sims", "1"], "Invalid value for '--n-sims'"),
])
def test_usage_errors_are_one_line(tmp_path, args, message):
    out = subprocess.run([sys.executable, "-m", "fclab.cli", *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, FCLAB_LOAD_PLUGINS=""))
    assert out.returncode == 2 and message in _one_line(out.stderr), out.stderr


# ---- names and files the report writes -------------------------------------------------------

def test_names_are_safe_in_file_names_and_csv_cells(ran_study, tmp_path, in_dir):
    """A 300-character ROI name and two names that differ only in non-ASCII characters get distinct,
    short figure files; a group name a spreadsheet would run as a formula is neutralised in the
    plot CSVs; report files follow the umask."""
    from fclab.framework.connectome.edgestore import read_edges, write_edges
    from fclab.framework.io import file_digest, read_provenance, write_parquet

    long, twin_a, twin_b, formula = "R" * 300, "Amygdala_ä", "Amygdala_ö", "=HYPERLINK(\"x\")"
    renames = {"vmPFC": long, "dmPFC": twin_a, "amPFC": twin_b}
    from fclab.framework.params import StatsParams, section_hash

    params = small_params()
    params["stats"]["groups"] = ["midazolam", formula]
    params["stats"]["confirmatory"] = [["Left_Amygdala", long], ["Left_Amygdala", twin_a], ["Left_Amygdala", twin_b]]
    shutil.copytree(ran_study[0] / "results", tmp_path / "results")
    order = ("extract", "connectivity", "truth", "stats")
    for path in sorted((tmp_path / "results").rglob("*.parquet"), key=lambda p: order.index(p.parent.name)):
        prov = read_provenance(path)
        prov["inputs"] = {k: file_digest(tmp_path / k) if (tmp_path / k).is_file() else v
                          for k, v in prov.get("inputs", {}).items()}
        if path.name == "tests.parquet":  # as if computed with these stats params
            prov["params_hash"] = section_hash(StatsParams(**params["stats"]))
        if path.name == "edges.parquet":  # packed: ROI names in the layout record, groups in the rows
            edges = read_edges(path)
            edges.rois = [renames.get(r, r) for r in edges.rois]
            edges.rows["group"] = edges.rows["group"].replace("ketamine", formula)
            write_edges(edges, path, prov)
            continue
        table = pd.read_parquet(path)
        for col in ("roi_a", "roi_b", "roi"):
            if col in table:
                table[col] = table[col].replace(renames)
        if "group" in table:
            table["group"] = table["group"].replace("ketamine", formula)
        write_parquet(table.rename(columns=renames), path, prov)
    write_params(tmp_path, params)
    in_dir(tmp_path)
    old = os.umask(0o022)
    try:
        code, _, err = run_cli("report")
    finally:
        os.umask(old)
    assert code == 0, err
    figures = sorted(p.name for p in (tmp_path / "reports/figures").glob("delta_*.png"))
    assert len(figures) == 3 and max(len(f) for f in figures) < 160, figures
    for csv in (tmp_path / "reports/plots").glob("*.csv"):
        text = csv.read_text()
        assert "\n=" not in text and ",=" not in text and "'=HYPERLINK" in text, csv
    for f in ("index.html", "metrics.json", "plots/delta_by_window.csv", "figures/rois.png"):
        assert stat.S_IMODE((tmp_path / "reports" / f).stat().st_mode) == 0o644, f
    for out in ("long.csv", "long.tsv"):  # the long edge table quotes such cells too
        code, _, err = run_cli("edges", "--long", out)
        assert code == 0, err
        text = (tmp_path / out).read_text()
        assert "'=HYPERLINK" in text and not any(c.startswith("=") for line in text.splitlines()
                                                  for c in line.split("," if out.endswith("csv") else "\t"))
    edges = tmp_path / "results/connectivity/edges.parquet"
    before = edges.read_bytes()
    code, _, err = run_cli("edges", "--long", "results/connectivity/edges.parquet")
    assert code != 0 and "that is the table it reads" in err and edges.read_bytes() == before


def test_a_study_written_into_the_stages_outputs_is_refused(tmp_path, in_dir):
    in_dir(tmp_path)
    for where in ("results/extract", "reports", "."):
        params = small_params()
        params["simulate"]["output_dir"] = where
        write_params(tmp_path, params)
        code, _, err = run_cli("simulate")
        assert code != 0 and "simulate.output_dir" in err and "Traceback" not in err, err
    from fclab.framework.params import SimulateParams

    assert SimulateParams(output_dir="~/fclab-study").output_dir == os.path.expanduser("~/fclab-study")


def test_a_run_censored_to_nothing_is_excluded_with_its_reason(study_copy):
    """Scrubbing that leaves fewer than 3 volumes of a run excludes that run (its windows missing, the
    reason in run QC and edges) instead of stopping extraction, with on_error: fail."""
    work, params = study_copy
    params["extract"]["denoise"]["strategy"] = "scrubbing"

    def moving(t):
        t.loc[1:, "framewise_displacement"] = "2.0"  # every volume moves 2 mm
        return t
    _edit_tsv(_func(work, 2, "_timeseries.tsv"), moving)
    write_params(work, params)
    code, out, err = run_cli("validate")
    assert code == 0, err
    for stage in ("extract", "connectivity"):
        code, _, err = run_cli(stage)
        assert code == 0, err
    run_qc = pd.read_parquet(work / "results/extract/run_qc.parquet").set_index(["subject", "run"])
    row = run_qc.loc[(SUB, "infusion")]
    assert row["excluded"] and row["n_retained"] == 0
    assert row["reason"].startswith("censored by the 'scrubbing' strategy:") and "fewer than 3 left" in row["reason"]
    assert not run_qc.drop(index=(SUB, "infusion"))["excluded"].any()
    edges = read_edges_long(work / "results/connectivity/edges.parquet")
    mine = edges[(edges["subject"] == SUB) & (edges["window"] != "baseline") & (edges["window"] != "sliding")]
    assert len(mine) and mine["value"].isna().all()
    assert mine["reason"].astype(str).str.startswith("run excluded: censored by the 'scrubbing' strategy").all()


def test_a_study_without_framewise_displacement_runs_when_nothing_needs_it(study_copy):
    """Confounds without a framewise_displacement column, strategy none and no FD rule: extraction runs,
    and run QC and motion.parquet carry FD as missing rather than refusing the study."""
    import pandas as pd

    work, params = study_copy
    for f in sorted((work / "data/simulated").glob("sub-*/func/*_desc-confounds_timeseries.tsv")):
        _edit_tsv(f, lambda t: t.drop(columns=["framewise_displacement"]))
    params["extract"]["denoise"]["strategy"] = "none"
    params["extract"]["exclude"]["max_mean_fd"] = None
    write_params(work, params)
    code, out, err = run_cli("validate")
    assert code == 0, err
    code, _, err = run_cli("extract")
    assert code == 0, err
    run_qc = pd.read_parquet(work / "results/extract/run_qc.parquet")
    motion = pd.read_parquet(work / "results/extract/motion.parquet")
    assert run_qc["mean_fd"].isna().all() and not run_qc["excluded"].any()
    assert motion["framewise_displacement"].isna().all() and motion["dvars_raw"].notna().any()


def test_stages_refuse_tables_computed_with_other_params(ran_study, tmp_path, in_dir):
    """A table records the params it was computed with, and the next stage refuses another's: a report
    after editing params.yaml without rerunning stats; two stats runs with different params files,
    then a report with the first (it would present the second's Bonferroni results as Holm); a
    connectivity after the extraction settings changed. One line each, exit 1."""
    directory, _, _ = ran_study
    for part in ("results", "data"):
        shutil.copytree(directory / part, tmp_path / part)
    in_dir(tmp_path)
    a = small_params(subject_pages=True)
    write_params(tmp_path, a)
    edited = copy.deepcopy(a)
    edited["stats"]["alpha"] = 0.01
    write_params(tmp_path, edited)
    code, _, err = run_cli("report")
    assert code == 1 and "results/stats/tests.parquet: computed with other stats params than these" in _one_line(err)
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(a, sort_keys=False))
    b = copy.deepcopy(a)
    b["stats"]["correction"] = "bonferroni"
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(b, sort_keys=False))
    for name in ("a.yaml", "b.yaml"):
        code, _, err = run_cli("-p", name, "stats")
        assert code == 0, err
    code, _, err = run_cli("-p", "a.yaml", "report")
    assert code == 1 and "computed with other stats params" in _one_line(err)
    code, _, err = run_cli("-p", "b.yaml", "report")
    assert code == 0, err
    c = copy.deepcopy(a)
    c["extract"]["denoise"]["high_pass_hz"] = 0.02
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(c, sort_keys=False))
    code, _, err = run_cli("-p", "c.yaml", "connectivity")
    assert code == 1 and "results/extract/run_qc.parquet: computed with other extract params" in _one_line(err)


def test_params_that_would_hang_or_are_not_files_are_one_line(tmp_path, in_dir):
    """A YAML alias bomb (nine levels of nine aliases: 9^9 values once expanded), a params file of
    several megabytes, and a FIFO: one line each, at once."""
    in_dir(tmp_path)
    bomb = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(bomb) + "\nsimulate: {seed: *a9}\n")
    code, _, err = run_cli("-p", "bomb.yaml", "validate")
    assert code != 0 and "YAML aliases expand it to more than 100,000 values" in _one_line(err)
    (tmp_path / "loop.yaml").write_text("simulate: &s {seed: 1, again: *s}\n")
    code, _, err = run_cli("-p", "loop.yaml", "validate")
    assert code != 0 and "a YAML alias refers to the value that holds it" in _one_line(err)
    (tmp_path / "big.yaml").write_text("# padding\n" * 400_000)
    code, _, err = run_cli("-p", "big.yaml", "validate")
    assert code != 0 and "a params file is at most 1,000,000" in _one_line(err)
    os.mkfifo(tmp_path / "fifo.yaml")
    code, _, err = run_cli("-p", "fifo.yaml", "validate")
    assert code != 0 and "fifo.yaml: not a regular file" in _one_line(err)


def test_the_committed_report_plots_never_block_the_report(ran_study, tmp_path, in_dir):
    """A fresh clone holds reports/plots as committed (tracked for `dvc plots`); `fclab report` must
    replace it, not stop at "exists and was not written by fclab"."""
    listed = subprocess.run(["git", "ls-files", "reports/plots"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode or not listed.stdout.strip():
        pytest.skip("not a git checkout")
    for name in listed.stdout.split():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ran_study[0] / "results", tmp_path / "results")
    write_params(tmp_path, small_params())
    in_dir(tmp_path)
    code, _, err = run_cli("report")
    assert code == 0, err


def test_counts_that_would_run_for_days_are_capped(tmp_path, in_dir):
    """n_perm 10⁹ (in params, as the permutation and NBS tests take it, and so in `fclab power`),
    `power --n-sims` and `calibrate --n` above their caps: one line naming the cap and how to lift it;
    FCLAB_UNCAPPED=1 lets the params through."""
    in_dir(tmp_path)
    params = small_params()
    params["stats"]["tests"] = ["change_welch", {"name": "permutation", "n_perm": 10**9}]
    write_params(tmp_path, params)
    for command in (["validate"], ["power", "--n-sims", "10"]):
        code, _, err = run_cli(*command)
        assert code == 2 and "n_perm 1,000,000,000 is above the cap of 100,000; set FCLAB_UNCAPPED=1" in err, err
    code, _, err = run_cli("validate", env={"FCLAB_UNCAPPED": "1"})
    assert "above the cap" not in err
    write_params(tmp_path, small_params())
    code, _, err = run_cli("power", "--n-sims", "20000")
    assert code == 2 and "power --n-sims 20,000 is above the cap of 10,000" in _one_line(err)
    code, _, err = run_cli("calibrate", "--n", "1000000")
    assert code == 2 and "calibrate --n 1,000,000 is above the cap of 100,000" in _one_line(err)


def test_yaml_booleans_inside_lists_and_keys_get_the_hint(tmp_path, in_dir):
    in_dir(tmp_path)
    write_params(tmp_path, small_params())
    text = (tmp_path / "params.yaml").read_text()
    (tmp_path / "groups.yaml").write_text(text.replace("  - midazolam\n  - ketamine\n", "  - no\n  - yes\n", 1))
    (tmp_path / "map.yaml").write_text(text.replace("    group_column: group\n",
                                                    "    group_column: group\n    group_map: {yes: ketamine}\n", 1))
    for name, where in (("groups.yaml", "stats.groups[0]: false"), ("map.yaml", "extract.data.group_map: key true")):
        code, _, err = run_cli("-p", name, "validate")
        assert code == 2 and where in err and "is a YAML boolean (so are yes/no/on/off)" in err, err


def test_a_sliding_window_longer_than_its_run_is_one_line(study_copy):
    work, params = study_copy
    params["connectivity"]["sliding"] = [{"name": "long", "run": "baseline", "length_s": 10_000, "step_s": 30}]
    write_params(work, params)
    assert run_cli("extract")[0] == 0
    code, _, err = run_cli("connectivity")
    assert code == 2 and "connectivity.sliding 'long': length_s 10000 s is longer than its span" in _one_line(err)


def test_a_single_roi_is_one_line_before_any_work(study_copy):
    work, params = study_copy
    params["extract"]["rois"] = [{"name": "atlas", "atlas": "harvard_oxford", "labels": ["Left_Amygdala"]}]
    params["stats"]["confirmatory"] = []
    write_params(work, params)
    for command in ("validate", "extract"):
        code, _, err = run_cli(command)
        assert code != 0 and "extract.rois: 1 ROI (Left_Amygdala); ROI-to-ROI connectivity needs at least two" in err
        assert "Traceback" not in err
    assert not (work / "results").exists()


def test_a_participant_id_that_is_not_a_bids_label_is_named(study_copy):
    """"sub-02_a" cannot name BIDS files (nilearn then reports a confounds file it "could not find",
    for a file that exists): one line naming the row."""
    work, params = study_copy
    _edit_tsv(work / "data/simulated/participants.tsv",
              lambda t: t.assign(participant_id=t["participant_id"].replace(f"sub-{SUB}", f"sub-{SUB}_a")))
    write_params(work, params)
    code, _, err = run_cli("extract")
    assert code == 1 and f"participant_id 'sub-{SUB}_a' is not a BIDS label" in _one_line(err)


def test_a_run_without_signal_is_named_not_nan(study_copy):
    """An all-zero BOLD image: one line naming the file (nilearn's raw RuntimeWarning and a run of NaN
    edges before), or, under on_error: skip, a run recorded as skipped with that reason. One ROI with
    no signal in a run (zeroed voxels): an error naming it, or missing with the reason when
    min_coverage allows missing ROIs."""
    import nibabel as nib

    work, params = study_copy
    bold = _func(work, 1, "_bold.nii.gz")
    img = nib.load(bold)
    data = np.asarray(img.dataobj)
    write_params(work, params)
    assert run_cli("extract")[0] == 0
    labels = np.asarray(nib.load(work / "results/extract/rois.nii.gz").dataobj)
    shutil.rmtree(work / "results")
    nib.save(nib.Nifti1Image(np.zeros_like(data), img.affine, img.header), bold)
    code, _, err = run_cli("extract")
    assert code == 1 and f"{bold.name}: no signal: every ROI's signal is constant over the run" in _one_line(err)
    params["extract"]["on_error"] = "skip"
    write_params(work, params)
    done = subprocess.run([sys.executable, "-m", "fclab.cli", "extract"], capture_output=True, text=True)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
    run_qc = pd.read_parquet(work / "results/extract/run_qc.parquet").set_index(["subject", "run"])
    assert run_qc.loc[(SUB, "baseline"), "excluded"] and "no signal" in run_qc.loc[(SUB, "baseline"), "reason"]
    shutil.rmtree(work / "results")
    vmpfc = 3  # the label of the third ROI
    one = data.copy()
    one[labels == vmpfc] = 0
    nib.save(nib.Nifti1Image(one, img.affine, img.header), bold)
    params["extract"]["on_error"] = "fail"
    write_params(work, params)
    code, _, err = run_cli("extract")
    assert code == 1 and "ROI 'vmPFC' has no signal (constant over the run); set extract.min_coverage" in _one_line(err)
    params["extract"]["min_coverage"] = 0.5
    write_params(work, params)
    assert run_cli("extract")[0] == 0
    roi_qc = pd.read_parquet(work / "results/extract/roi_qc.parquet").set_index(["subject", "run", "roi"])
    assert roi_qc.loc[(SUB, "baseline", "vmPFC"), "missing"]
    assert roi_qc.loc[(SUB, "baseline", "vmPFC"), "reason"] == "no signal (constant over the run)"
    assert not roi_qc.drop((SUB, "baseline", "vmPFC"))["missing"].any()


def test_long_names_leave_the_figures_quiet(study_copy):
    """3,000-character group names: the report's figures cut them (matplotlib printed 20 "Tight layout
    not applied" warnings before); the page and tests.csv keep them whole."""
    work, params = study_copy
    params["extract"]["data"]["include"] = ["01", "02", "03", "04"]
    long = "k" * 3000
    _edit_tsv(work / "data/simulated/participants.tsv", lambda t: t.assign(group=t["group"].replace("ketamine", long)))
    params["stats"].update(groups=["midazolam", long], confirmatory=[], tests=["change_welch"])
    params["report"]["primary_test"] = "change_welch"
    write_params(work, params)
    for stage in ("extract", "connectivity", "stats", "report"):
        done = subprocess.run([sys.executable, "-m", "fclab.cli", stage], capture_output=True, text=True)
        assert done.returncode == 0 and "Warning" not in done.stderr, (stage, done.stderr[:2000])
    assert long in (work / "reports/index.html").read_text()
    assert long in (work / "reports/tests.csv").read_text()


def test_a_symlinked_reports_directory_is_written_through_and_keeps_the_users_files(ran_study, tmp_path, in_dir):
    """reports/ a symlink to a user's directory: fclab writes its members through the link and leaves
    every other entry; a user's own figures/ (PNG files, no marker) or index.html there is an error
    naming it, never replaced (a figures/ of PNGs was taken for an old fclab output and deleted)."""
    shutil.copytree(ran_study[0] / "results", tmp_path / "results")
    write_params(tmp_path, small_params())
    in_dir(tmp_path)
    user = tmp_path / "elsewhere"
    (user / "figures").mkdir(parents=True)
    (user / "figures/my_plot.png").write_bytes(b"\x89PNG mine")
    (user / "notes.txt").write_text("mine")
    (tmp_path / "reports").symlink_to(user)
    code, _, err = run_cli("report")
    assert code == 1 and "reports/figures: exists and was not written by fclab" in _one_line(err)
    shutil.rmtree(user / "figures")
    (user / "index.html").write_text("<html>my page</html>")
    code, _, err = run_cli("report")
    assert code == 1 and "reports/index.html: exists and was not written by fclab" in _one_line(err)
    assert (user / "index.html").read_text() == "<html>my page</html>"
    (user / "index.html").unlink()
    for _ in range(2):  # the second run replaces what the first wrote
        code, _, err = run_cli("report")
        assert code == 0, err
    assert (tmp_path / "reports").is_symlink() and (user / "notes.txt").read_text() == "mine"
    assert (user / "index.html").is_file() and (user / "figures" / ".fclab").is_file()


def test_a_stage_waits_for_another_command_in_its_directory(ran_study, tmp_path, in_dir):
    """Two fclab commands in one directory take turns (a lock on the directory): a report started
    while another command holds the lock says it waits, writes nothing, and runs when the lock is
    released; it then reads one run's tables, never a mix of two."""
    import fcntl
    import time

    shutil.copytree(ran_study[0] / "results", tmp_path / "results")
    write_params(tmp_path, small_params())
    in_dir(tmp_path)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running stage holds it
    try:
        report = subprocess.Popen([sys.executable, "-m", "fclab.cli", "report"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(8)  # time to load, read params and reach the lock (a report alone takes ~10 s here)
        assert report.poll() is None and not (tmp_path / "reports").exists()
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    out, err = report.communicate(timeout=300)
    assert report.returncode == 0, err
    assert err.strip().splitlines()[0].startswith(f"fclab: waiting for another fclab command in {tmp_path}")
    assert (tmp_path / "reports/index.html").is_file()
