"""The per-run extraction cache (framework/extraction/cache.py): what is reused, what is not, and `fclab cache`."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli, small_params, write_params

NEW = "27"


def _add_subject(root, source="02"):
    """A new participant whose files are copies of another's, under its own label."""
    data = root / "data/simulated"
    for f in (data / f"sub-{source}").rglob("*"):
        if f.is_file():
            target = data / f"sub-{NEW}" / f.relative_to(data / f"sub-{source}")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target.with_name(f.name.replace(f"sub-{source}", f"sub-{NEW}")))
    table = pd.read_csv(data / "participants.tsv", sep="\t", dtype=str)
    row = table[table["participant_id"] == f"sub-{source}"].assign(participant_id=f"sub-{NEW}")
    pd.concat([table, row]).to_csv(data / "participants.tsv", sep="\t", index=False)


def _tables(root):
    return {f.name: f.read_bytes() for f in sorted((root / "results/extract").iterdir())}


@pytest.fixture
def study(small_study, tmp_path, in_dir):
    shutil.copytree(small_study / "data", tmp_path / "data")
    write_params(tmp_path, small_params())
    in_dir(tmp_path)
    return tmp_path


def test_adding_a_subject_extracts_only_its_runs(study):
    code, _, err = run_cli("extract")
    assert code == 0, err
    n_runs = len(pd.read_parquet(study / "results/extract/run_qc.parquet"))
    assert "from the per-run cache" not in err  # nothing cached yet
    _add_subject(study)
    code, _, err = run_cli("extract")
    assert code == 0, err
    assert f"extract: 2 runs extracted, {n_runs} from the per-run cache" in err
    warm = _tables(study)
    run_qc = pd.read_parquet(study / "results/extract/run_qc.parquet")
    assert len(run_qc) == n_runs + 2 and (run_qc["subject"] == NEW).sum() == 2
    code, _, err = run_cli("extract", env={"FCLAB_CACHE": "off"})  # the same study computed afresh
    assert code == 0 and "per-run cache" not in err
    assert _tables(study) == warm  # byte for byte


def test_what_enters_the_key(study):
    params = small_params()
    assert run_cli("extract")[0] == 0
    params["stats"]["alpha"] = 0.01  # another stage's setting: the outputs stand as they are
    write_params(study, params)
    code, _, err = run_cli("extract")
    assert code == 0 and "extract: nothing changed since results/extract was written" in err, err
    params["extract"]["denoise"]["high_pass_hz"] = 0.02  # the cleaning changes: every run again
    write_params(study, params)
    code, _, err = run_cli("extract")
    assert code == 0 and "per-run cache" not in err
    sidecar = sorted((study / "data/simulated/sub-03/func").glob("*run-2*_timeseries.json"))[0]
    sidecar.write_text(sidecar.read_text() + "\n")  # the confounds' sidecar (CompCor) enters the key
    code, _, err = run_cli("extract")
    assert code == 0 and "extract: 1 run extracted" in err, err
    bold = sorted((study / "data/simulated/sub-03/func").glob("*run-2*_bold.nii.gz"))[0]
    raw = bytearray(bold.read_bytes())
    bold.write_bytes(bytes(raw[:-8]) + bytes(8))  # one file changes: its run again (and fails: CRC)
    code, _, err = run_cli("extract")
    assert code == 1 and f"{bold.name}: data block unreadable" in err


def test_a_damaged_entry_is_computed_again(study):
    assert run_cli("extract")[0] == 0
    first = _tables(study)
    for meta in list((study / ".fclab-cache/extract").glob("??/*/meta.json"))[:3]:
        meta.write_text("{not json")
    for table in list((study / ".fclab-cache/extract").glob("??/*/timeseries.parquet"))[3:5]:
        table.write_bytes(b"PAR1")
    shutil.rmtree(study / "results/extract")  # else the outputs stand: nothing changed
    code, _, err = run_cli("extract")
    assert code == 0 and "extract: 5 runs extracted" in err, err
    assert "extract: warning: 5 cache entries failed verification and were computed again" in err, err
    assert _tables(study) == first


def test_cache_command_shows_and_prunes(study):
    params = small_params()
    params["extract"]["data"]["include"] = ["01", "02"]
    write_params(study, params)
    assert run_cli("extract")[0] == 0
    code, out, _ = run_cli("cache")
    assert code == 0 and ".fclab-cache/extract: 4 cached runs" in out
    params["extract"]["data"]["include"] = ["02", "03"]
    write_params(study, params)
    assert run_cli("extract")[0] == 0
    code, out, _ = run_cli("cache", "--prune-unused")
    assert code == 0 and "deleted 2 cached runs" in out and "4 cached runs" in out.splitlines()[1]
    params["extract"]["data"]["include"] = ["02"]
    write_params(study, params)
    code, _, err = run_cli("extract")
    assert code == 0 and "extract: 0 runs extracted, 2 from the per-run cache" in err
    anatomy = study / f".fclab-cache/simulate/anatomy-{'0' * 32}.npz"  # the simulator's, beside the runs
    anatomy.parent.mkdir(parents=True)
    anatomy.write_bytes(b"x")
    code, out, _ = run_cli("cache", "--clear")
    assert code == 0 and out.splitlines()[1].endswith(": empty") and not anatomy.parent.exists()


def test_cache_warm_compiles_the_kernels_and_builds_the_anatomy(tmp_path):
    """`fclab cache --warm` (make's venv step) leaves what the first run would build: numba's compiled
    kernels and the simulation anatomy, which the simulator then reads instead of building."""
    import subprocess
    import sys

    from fclab.framework.simulation.study import Anatomy

    write_params(tmp_path, small_params())
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "FCLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "fclab.cli", "cache", "--warm"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "compiled the sliding-window kernels" in proc.stdout
    assert {p.name.split("-")[0] for p in (tmp_path / "numba").rglob("*.nbi")} == {
        "kernels._fresh", "kernels._move", "kernels._chunk"}
    (built,) = (tmp_path / "cache" / "simulate").glob("anatomy-*.npz")
    with np.load(built) as z:
        fresh = Anatomy(small_params()["simulate"]["voxel_size_mm"])
        assert all(np.array_equal(z[k], getattr(fresh, k)) for k in Anatomy.ARRAYS)


def test_cached_atlas_labels_are_the_computed_ones(tmp_path, monkeypatch):
    """The maximum-probability labels kept in .fclab-cache/atlas/ are the streamed computation's, read
    back; a damaged entry is computed again, another threshold is another entry, and --clear deletes them."""
    from fclab.framework.extraction.anatomy import cached_max_probability_labels, max_probability_labels

    monkeypatch.setenv("FCLAB_CACHE", str(tmp_path / "cache"))
    fresh, names = max_probability_labels("harvard_oxford", 25.0)
    for attempt in ("computed", "read back", "damaged"):
        img, got = cached_max_probability_labels("harvard_oxford", 25.0)
        assert got == names and np.array_equal(img.affine, fresh.affine)
        assert np.asarray(img.dataobj).dtype == np.asarray(fresh.dataobj).dtype
        assert np.array_equal(np.asarray(img.dataobj), np.asarray(fresh.dataobj)), attempt
        (entry,) = (tmp_path / "cache" / "atlas").glob("harvard_oxford-*.npz")
        if attempt == "read back":
            entry.write_bytes(entry.read_bytes()[:100])
    cached_max_probability_labels("harvard_oxford", 50.0)
    assert len(list((tmp_path / "cache" / "atlas").glob("*.npz"))) == 2
    code, out, _ = run_cli("cache", "--clear")
    assert code == 0 and not (tmp_path / "cache" / "atlas").exists()


def test_moving_the_data_extracts_nothing_and_a_noop_reads_no_input(study):
    """The key follows the files' contents, not their paths: after the data directory moves, every run
    comes from the cache (the provenance names the new paths); and a no-op extract opens no BOLD,
    confounds or events file (the digest memo answers from size, mtime and inode), checked with the file-open
    audit of the conformance kit."""
    import json

    import pyarrow.parquet as pq

    from fclab.framework.conformance.kit import files_read

    assert run_cli("extract")[0] == 0
    before = pd.read_parquet(study / "results/extract/timeseries.parquet")
    shutil.move(study / "data/simulated", study / "data/moved")
    params = small_params()
    params["extract"]["data"]["root"] = "data/moved"
    write_params(study, params)
    code, _, err = run_cli("extract")
    assert code == 0 and "extract: 0 runs extracted" in err, err
    pd.testing.assert_frame_equal(pd.read_parquet(study / "results/extract/timeseries.parquet"), before)
    inputs = json.loads(pq.read_schema(study / "results/extract/timeseries.parquet").metadata[b"fclab"])["inputs"]
    assert inputs and all(k.startswith("data/moved/") for k in inputs), inputs

    with files_read() as opened:
        code, _, err = run_cli("-j", "1", "extract")
    assert code == 0 and "extract: nothing changed" in err, err
    read = {os.fsdecode(p) for p in opened}
    assert any(p.endswith("participants.tsv") for p in read)  # the audit sees what the stage opens
    # masks' headers are read to place the ROIs once per grid; no BOLD or confounds file is opened
    assert not [p for p in read if p.endswith(("_bold.nii.gz", "_timeseries.tsv", "_events.tsv"))], sorted(read)


def test_an_unchanged_rerun_keeps_the_outputs_and_any_change_defeats_it(study):
    """A rerun with nothing changed writes nothing (the outputs' bytes and mtimes stay); a changed
    output file, a changed participants.tsv or a changed input file each make it extract again
    (from the per-run cache where the runs are unchanged)."""
    assert run_cli("extract")[0] == 0
    out = study / "results/extract"
    stamps = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    code, _, err = run_cli("extract")
    assert code == 0 and "nothing changed" in err and {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == stamps
    events = out / "events.parquet"
    events.write_bytes(events.read_bytes())  # rewritten (same bytes, new mtime): no longer the recorded file
    code, _, err = run_cli("extract")
    assert code == 0 and "extract: 0 runs extracted" in err, err
    assert "nothing changed" in run_cli("extract")[2]
    participants = study / "data/simulated/participants.tsv"
    table = pd.read_csv(participants, sep="\t")
    table["age"] = 30
    table.to_csv(participants, sep="\t", index=False)
    code, _, err = run_cli("extract")
    assert code == 0 and "extract: 0 runs extracted" in err, err
    assert "age" in pd.read_parquet(out / "participants.parquet")
    confounds = sorted((study / "data/simulated/sub-02/func").glob("*run-1*_timeseries.tsv"))[0]
    os.utime(confounds, ns=(confounds.stat().st_atime_ns, confounds.stat().st_mtime_ns + 10**9))
    code, _, err = run_cli("extract")
    assert code == 0 and "nothing changed" in err, err  # touched, same content: the state matches
    table = pd.read_csv(confounds, sep="\t")
    table.loc[5, "global_signal"] += 1.0
    table.to_csv(confounds, sep="\t", index=False, na_rep="n/a")
    code, _, err = run_cli("extract")
    assert code == 0 and "extract: 1 run extracted" in err, err


def _entry_files(study, name):
    return sorted((study / ".fclab-cache/extract").glob(f"??/*/{name}"))


def test_an_entry_that_lies_is_never_used(study):
    """Flipped bytes inside a cached table (a valid Parquet file still), an entry copied under another
    run's key, and a meta.json that is an empty object: each is caught on read (one warning line),
    discarded and computed again, and the outputs equal an extraction without the cache."""
    assert run_cli("extract")[0] == 0
    code, _, err = run_cli("extract", env={"FCLAB_CACHE": "off"})
    assert code == 0
    fresh = _tables(study)
    tables = _entry_files(study, "timeseries.parquet")
    raw = bytearray(tables[0].read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 4] = bytes(b ^ 0xFF for b in raw[middle:middle + 4])
    tables[0].write_bytes(bytes(raw))
    entries = sorted(t.parent for t in tables)
    shutil.rmtree(entries[1])
    shutil.copytree(entries[2], entries[1])  # run 2's entry under run 1's key
    (entries[3] / "meta.json").write_text("{}")
    shutil.rmtree(study / "results/extract")
    code, _, err = run_cli("extract")
    assert code == 0 and "Traceback" not in err, err
    assert "extract: 3 runs extracted" in err, err
    warning = [line for line in err.splitlines() if "failed verification" in line]
    assert len(warning) == 1 and "3 cache entries failed verification" in warning[0], err
    assert _tables(study) == fresh
    shutil.rmtree(study / "results/extract")  # the recomputed entries were stored again, and hold
    code, _, err = run_cli("extract")
    assert code == 0 and "extract: 0 runs extracted" in err and "warning" not in err, err


def test_the_cache_is_optional_when_it_is_a_file_or_full(study, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file")
    code, _, err = run_cli("extract", env={"FCLAB_CACHE": str(blocker)})
    assert code == 0 and "Traceback" not in err, err
    assert f"extract: warning: the per-run cache is unusable ({blocker}/extract: " in err, err
    shutil.rmtree(study / "results/extract")
    real = pd.DataFrame.to_parquet

    def full(self, path, *args, **kwargs):
        if ".fclab-cache" in str(path):
            raise OSError(28, "No space left on device")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    code, _, err = run_cli("-j", "1", "extract")
    assert code == 0 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "could not store" in line]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "extraction went on without it" in lines[0]
    assert (study / "results/extract/timeseries.parquet").is_file()


def test_clear_deletes_only_what_fclab_wrote(study, tmp_path):
    shared = tmp_path / "shared"
    (shared / "extract" / "ab").mkdir(parents=True)
    (shared / "atlas").mkdir()
    (shared / "simulate").mkdir()
    keep = [shared / "notes.txt", shared / "extract" / "mine.txt", shared / "extract" / "ab" / "meta.json",
            shared / "atlas" / "my_atlas.npz", shared / "simulate" / "anatomy-draft.npz"]
    for f in keep:
        f.write_text("the user's")
    env = {"FCLAB_CACHE": str(shared)}
    assert run_cli("extract", env=env)[0] == 0
    assert _entry_files(study, "meta.json") == [] and list((shared / "extract").glob("??/*/meta.json"))
    (shared / "simulate" / f"anatomy-{'0' * 32}.npz").write_bytes(b"fclab's")
    code, out, _ = run_cli("cache", "--clear", env=env)
    assert code == 0, out
    assert all(f.read_text() == "the user's" for f in keep)
    assert not list((shared / "extract").glob("??/*/meta.json"))
    assert not (shared / "simulate" / f"anatomy-{'0' * 32}.npz").exists()
    assert not (shared / "extract" / "digests.sqlite").exists()
