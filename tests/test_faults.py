"""The fault suite: stages killed with SIGKILL at several points, a full disk, unreadable inputs and
concurrent runs. After any fault, the next stage either runs on complete outputs (giving the bytes a
clean run gives) or stops with one line; rerunning the killed stage gives a clean run's bytes and
leaves no temporary file behind.

The faults are injected through ``fclab.framework.io.fault_point`` (``FCLAB_FAULT=kill:<point>:<n>`` or
``enospc:<point>:<n>``). One kill test runs in ``make test``; the rest are marked ``faults``
(``make faults``; figures in docs/validation.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import small_params, write_params

STAGES = ("extract", "connectivity", "truth", "stats", "report")
OUTPUTS = ("results", "reports")


def cli(root: Path, stage: str, fault: str | None = None):
    env = dict(os.environ, FCLAB_LOAD_PLUGINS="")
    env.pop("FCLAB_FAULT", None)
    if fault:
        env["FCLAB_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "fclab.cli", stage], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every output file's bytes (HTML and PNG included), by path."""
    return {str(p.relative_to(root)): p.read_bytes() for d in OUTPUTS for p in sorted((root / d).rglob("*"))
            if p.is_file() and p.name != ".gitignore"}


def leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for d in OUTPUTS for p in (root / d).rglob(".*")
            if p.name.endswith((".tmp", ".old"))]


@pytest.fixture(scope="module")
def clean(small_study, tmp_path_factory):
    """A four-subject (2 + 2) copy of the small study run stage by stage: the reference bytes."""
    root = tmp_path_factory.mktemp("clean")
    shutil.copytree(small_study / "data", root / "data")
    params = small_params()
    table = pd.read_csv(root / "data/simulated/participants.tsv", sep="\t")
    params["extract"]["data"]["include"] = sorted(table.groupby("group")["participant_id"].head(2))
    params["stats"]["tests"] = ["mmrm", "change_welch"]
    write_params(root, params)
    for stage in STAGES:
        out = cli(root, stage)
        assert out.returncode == 0, out.stderr
    return root, snapshot(root)


def _copy(clean, tmp_path) -> Path:
    root, _ = clean
    work = tmp_path / "work"
    work.mkdir()
    for name in ("data", *OUTPUTS):
        shutil.copytree(root / name, work / name, symlinks=True)
    shutil.copy(root / "params.yaml", work / "params.yaml")
    return work


def _kill_and_recover(clean, tmp_path, stage, point):
    reference = clean[1]
    work = _copy(clean, tmp_path)
    killed = cli(work, stage, f"kill:{point}")
    assert killed.returncode == -9, (killed.returncode, killed.stderr)  # the fault point was reached
    later = STAGES[STAGES.index(stage) + 1:]
    for nxt in later:  # the next stages on what the kill left: the clean bytes, or one clear line
        out = cli(work, nxt)
        if out.returncode != 0:
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 1 and len(lines) == 1 and "not found; run the stage" in lines[0], out.stderr
            break
        now = snapshot(work)
        assert all(now[k] == v for k, v in reference.items() if k in now and k.startswith(f"results/{nxt}")), nxt
    for again in (stage, *later):
        out = cli(work, again)
        assert out.returncode == 0, out.stderr
    assert snapshot(work) == reference
    assert leftovers(work) == []


def test_extract_killed_between_its_renames_recovers(clean, tmp_path):
    """In make test: the riskiest point, the old output moved aside and the new one not yet in."""
    _kill_and_recover(clean, tmp_path, "extract", "swap:1")


@pytest.mark.faults
@pytest.mark.parametrize("stage, point", [
    ("extract", "compute:1"), ("stats", "compute:1"), ("report", "compute:1"),
    ("extract", "write:3"), ("extract", "replace:7"),
    ("connectivity", "write:1"), ("connectivity", "swap:1"),
    ("truth", "write:1"), ("truth", "swap:1"),
    ("stats", "replace:1"), ("stats", "swap:1"),
    ("report", "write:4"), ("report", "member:3"), ("report", "swap:1"),
])
def test_a_stage_killed_anywhere_recovers(clean, tmp_path, stage, point):
    _kill_and_recover(clean, tmp_path, stage, point)


@pytest.mark.faults
@pytest.mark.parametrize("stage, point", [("extract", "write:2"), ("stats", "write:1"), ("report", "write:3")])
def test_a_full_disk_is_one_line_and_changes_nothing(clean, tmp_path, stage, point):
    work = _copy(clean, tmp_path)
    out = cli(work, stage, f"enospc:{point}")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "cannot write (No space left on device)" in lines[0], out.stderr
    assert snapshot(work) == clean[1] and leftovers(work) == []


@pytest.mark.faults
def test_unreadable_inputs_are_one_line(clean, tmp_path):
    work = _copy(clean, tmp_path)
    bold = sorted((work / "data/simulated/sub-02/func").glob("*run-1*_bold.nii.gz"))[0]
    bold.unlink()
    bold.symlink_to(work / "nowhere.nii.gz")  # a dangling link (file permissions do not bind root)
    out = cli(work, "extract")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and bold.name in lines[0], out.stderr
    assert snapshot(work) == clean[1]


@pytest.mark.faults
def test_two_concurrent_runs_give_the_clean_bytes(clean, tmp_path):
    work = _copy(clean, tmp_path)
    for d in OUTPUTS:
        shutil.rmtree(work / d)
    env = dict(os.environ, FCLAB_LOAD_PLUGINS="")
    env.pop("FCLAB_FAULT", None)
    runs = [subprocess.Popen([sys.executable, "-m", "fclab.cli", "run"], cwd=work, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in runs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
    assert snapshot(work) == clean[1] and leftovers(work) == []


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.faults
def test_sigterm_ends_a_stage_and_its_workers_at_once(small_study, tmp_path):
    """SIGTERM to the extract stage's main process only (its workers busy extracting the small
    study's 32 runs): it exits within seconds with 143 and one line, its worker processes are gone,
    and it leaves no temporaries."""
    import signal
    import time

    work = tmp_path / "study"
    shutil.copytree(small_study / "data", work / "data")
    write_params(work, small_params())
    env = dict(os.environ, FCLAB_LOAD_PLUGINS="", FCLAB_CACHE="off")
    proc = subprocess.Popen([sys.executable, "-m", "fclab.cli", "-j", "2", "extract"], cwd=work, env=env,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(_children(proc.pid)) < 2 and time.time() < deadline:
        time.sleep(0.1)
    workers = _children(proc.pid)
    assert len(workers) >= 2, "the workers never started"
    time.sleep(1.0)  # inside their first runs
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=30)[1]
    took = time.time() - sent
    assert proc.returncode == 143 and took < 5, (proc.returncode, took, err)
    assert err.strip().splitlines() == ["fclab: terminated (SIGTERM); nothing half-written was kept"], err
    time.sleep(0.5)
    assert not [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in
                Path(f"/proc/{w}/stat").read_text().split()[2]], "workers left running"
    left = [p for p in work.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".stage.")]
    assert not left and not (work / "results" / "extract").exists(), left


@pytest.mark.faults
def test_concurrent_stats_and_report_with_other_params_never_mix(clean, tmp_path):
    """`fclab -p b.yaml stats` (Bonferroni) and `fclab report` (params.yaml: Holm) started together,
    three times: the report either ran first, on the Holm table (Holm in tests.csv), or ran second and
    refused the Bonferroni table in one line. It never presents one's results under the other's name."""
    import yaml

    work = _copy(clean, tmp_path)
    b = yaml.safe_load((work / "params.yaml").read_text())
    b["stats"]["correction"] = "bonferroni"
    (work / "b.yaml").write_text(yaml.safe_dump(b, sort_keys=False))
    env = dict(os.environ, FCLAB_LOAD_PLUGINS="")
    env.pop("FCLAB_FAULT", None)
    seen = set()
    for _ in range(3):
        assert cli(work, "stats").returncode == 0  # the Holm table again
        procs = [subprocess.Popen([sys.executable, "-m", "fclab.cli", *args], cwd=work, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for args in (["-p", "b.yaml", "stats"], ["report"])]
        (_, stats_err), (_, report_err) = (p.communicate(timeout=600) for p in procs)
        assert procs[0].returncode == 0, stats_err
        if procs[1].returncode == 0:
            seen.add("report first")
            assert set(pd.read_csv(work / "reports/tests.csv")["adj_method"].dropna()) == {"holm"}
        else:
            seen.add("report refused")
            lines = [x for x in report_err.strip().splitlines() if not x.startswith("fclab: waiting")]
            assert procs[1].returncode == 1 and len(lines) == 1, report_err
            assert "computed with other stats params than these" in lines[0], report_err
    assert leftovers(work) == []


@pytest.mark.faults
def test_sigterm_while_waiting_for_the_lock_exits_at_once(clean, tmp_path):
    """A stage waiting for another command's lock still ends on SIGTERM: 143, one line, nothing written."""
    import fcntl
    import signal
    import time

    work = _copy(clean, tmp_path)
    shutil.rmtree(work / "reports")
    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        env = dict(os.environ, FCLAB_LOAD_PLUGINS="")
        env.pop("FCLAB_FAULT", None)
        proc = subprocess.Popen([sys.executable, "-m", "fclab.cli", "report"], cwd=work, env=env, text=True,
                                stderr=subprocess.PIPE)
        time.sleep(8)  # loaded, and waiting
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1]
    finally:
        os.close(fd)
    assert proc.returncode == 143 and time.time() - sent < 5, err
    assert err.strip().splitlines()[-1] == "fclab: terminated (SIGTERM); nothing half-written was kept", err
    assert not (work / "reports").exists()
