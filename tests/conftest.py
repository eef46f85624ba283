"""Shared fixtures: a scaled-down simulated study with a strong effect, run once per session."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from fclab.framework.pluginhost.registry import reset_registry

ROOT = Path(__file__).resolve().parents[1]

# Two 10-minute infusion windows instead of four, 8 + 8 subjects, a stronger drop peaking at 15 min.
SMALL_STUDY = {
    "simulate": {"n_ketamine": 8, "n_midazolam": 8, "baseline_duration_s": 600, "pre_onset_s": 30,
                 "infusion_duration_s": 1200, "effect_delta_r": 0.6, "effect_peak_min": 15,
                 "effect_width_min": 3.0, "seed": 1},
    "windows": [{"name": "baseline", "run": "baseline"}] + [
        {"name": f"{lo}-{lo + 10}min", "run": "infusion", "event": "infusion", "start_min": lo, "end_min": lo + 10}
        for lo in (0, 10)
    ],
}


def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def small_params(subject_pages: bool = False) -> dict:
    """The small test study's params. Per-subject QC pages (about 5 s of every report) are off unless
    asked for: the shared ``ran_study`` and the tests of those pages turn them on."""
    p = default_params()
    p["simulate"].update(SMALL_STUDY["simulate"])
    p["connectivity"]["windows"] = copy.deepcopy(SMALL_STUDY["windows"])  # callers may mutate it
    p["connectivity"]["sliding"][0].update(end_min=20)
    p["report"]["subject_pages"] = subject_pages
    return p


def write_params(directory: Path, params: dict) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _no_installed_plugins(monkeypatch):
    """fclab's own tests see only the built-in plugins unless a test asks for more."""
    monkeypatch.setenv("FCLAB_LOAD_PLUGINS", "")
    reset_registry()
    yield
    reset_registry()


@pytest.fixture(scope="session")
def small_study(tmp_path_factory) -> Path:
    """A directory holding params.yaml and the simulated small study under data/simulated."""
    from fclab.framework.params import SimulateParams
    from fclab.framework.simulation.study import simulate

    directory = tmp_path_factory.mktemp("study")
    params = small_params(subject_pages=True)
    write_params(directory, params)
    sim = dict(params["simulate"], output_dir=str(directory / "data" / "simulated"))
    simulate(SimulateParams(**sim), n_jobs=2)
    return directory


TABLES = ["results/extract/timeseries.parquet", "results/extract/roi_qc.parquet",
          "results/extract/run_qc.parquet", "results/connectivity/edges.parquet", "results/stats/tests.parquet"]


@pytest.fixture(scope="session")
def ran_study(small_study):
    """The small study after `fclab run`, plus the bytes of its tables from that first run."""
    code, out, err = run_cli_in(small_study, "run")
    assert code == 0, err
    return small_study, out, {t: (small_study / t).read_bytes() for t in TABLES}



@pytest.fixture
def in_dir(monkeypatch):
    def enter(directory: Path):
        monkeypatch.chdir(directory)
        return directory

    return enter


def run_cli(*args, env=None):
    """Run the CLI in-process; return (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from fclab import cli

    runner = CliRunner()
    result = runner.invoke(cli.app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def run_cli_in(directory: Path, *args):
    """run_cli with ``directory`` as the working directory, restored afterwards."""
    old = os.getcwd()
    os.chdir(directory)
    try:
        return run_cli(*args)
    finally:
        os.chdir(old)


os.environ.setdefault("DVC_NO_ANALYTICS", "1")


# Interpreter exit after the suite. CPython joins every non-daemon thread, every live worker of a
# process or thread pool and every non-daemon multiprocessing child before it exits, so one left
# behind by a test would hold `make test` open after pytest's summary until CI kills it, with
# nothing in the log to say what. At the end of the session the suite names what is still running
# (threads, child processes) and, if the process has not exited EXIT_GRACE_S seconds later, prints
# every thread's stack and exits with pytest's status: the suite's verdict stands, and the log says
# what held it up (docs/validation.md, "Test-suite exit").
EXIT_GRACE_S = float(os.environ.get("FCLAB_TEST_EXIT_GRACE_S", "120"))


def _child_processes() -> list[str]:
    """This process's live children as "pid command line" (Linux /proc; elsewhere, none)."""
    me, found = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2:].split()
        if rest[1] == me and rest[0] != "Z":
            found.append(f"{stat.parent.name} {command[:160]}")
    return found


def _exit_watchdog(status: int) -> None:
    import faulthandler
    import sys
    import time

    time.sleep(EXIT_GRACE_S)
    print(f"tests: the interpreter has not exited {EXIT_GRACE_S} s after the session ended; its threads "
          f"(child processes {_child_processes()}):", file=sys.__stderr__, flush=True)
    faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
    os._exit(status)


def pytest_sessionfinish(session, exitstatus):
    """Started before the session's fixtures are torn down, so a teardown that hangs is caught too."""
    import threading

    threading.Thread(target=_exit_watchdog, args=(int(exitstatus),), name="tests-exit-watchdog", daemon=True).start()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    import sys
    import threading
    import time

    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    children = _child_processes()
    print(f"tests: session ended {time.strftime('%H:%M:%S', time.gmtime())}", file=sys.__stderr__, flush=True)
    if threads or children:
        print(f"tests: still running at the end of the session: threads {threads}, child processes {children}",
              file=sys.__stderr__, flush=True)


EXAMPLES = ROOT / "examples"


def install_example(tmp_path: Path, names=("fclab-example",), editable: bool = False) -> tuple[dict, dict]:
    """Install example plugin distributions (examples/<name>) with pip, outside the project's
    environment: wheels into a target directory, or editable installs into a prefix (their .pth
    processed by a sitecustomize). Returns the environment additions that make them visible to a
    subprocess, and per name the directory of the code it runs (installed files or editable source)."""
    import shutil
    import subprocess
    import sys

    sources = {}
    for name in names:  # copies: building writes build/ and egg-info beside the source
        sources[name] = tmp_path / name
        shutil.copytree(EXAMPLES / name, sources[name], ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                                         "__pycache__"))
    package = {name: name.replace("-", "_") for name in names}
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check"]
    if editable:
        prefix = tmp_path / "prefix"
        editables = [arg for src in sources.values() for arg in ("-e", str(src))]
        out = subprocess.run([*pip, "--prefix", str(prefix), *editables], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        site_dir, = prefix.glob("lib/python*/site-packages")
        boot = tmp_path / "boot"
        boot.mkdir()
        (boot / "sitecustomize.py").write_text(f"import site\nsite.addsitedir({str(site_dir)!r})\n")
        return {"PYTHONPATH": str(boot)}, {n: sources[n] / package[n] for n in names}
    target = tmp_path / "site"
    out = subprocess.run([*pip, "--target", str(target), *map(str, sources.values())], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return {"PYTHONPATH": str(target)}, {n: target / package[n] for n in names}
