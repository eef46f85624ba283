"""`make run` of the default study from a fresh clone, stage by stage.

Clones the repository's HEAD into a temporary directory, gives it this checkout's .venv (built, as
after `make run`'s first step), an empty numba cache and no per-run cache, runs the venv step's
`fclab cache --warm` there (numba kernels and simulation anatomy; timed and shown apart, as it is part
of building the venv), and times `dvc repro`:
each stage from DVC's "Running stage" line to the next, which includes DVC's own hashing and
bookkeeping for that stage. Then times the second `dvc repro`, which should do nothing. The working
tree must be clean (the venv imports this checkout's code).

With ``--against REV``, REV is checked out in a directory of its own with its own venv (built by its
Makefile, a few minutes), and each repeat times REV and then HEAD, one after the other: on a machine
whose speed drifts (this VM's by up to 40 % within an hour), the interleaved pair is the comparison
that counts.

    .venv/bin/python benchmarks/make_run.py [--repeat 2] [--against 0b6fb12]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_repro(clone: Path, env: dict, venv: Path) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    proc = subprocess.Popen([str(venv / "bin/dvc"), "repro"], cwd=clone, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stages, current, since = {}, None, start
    for line in proc.stdout:
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            now = time.perf_counter()
            if current:
                stages[current] = now - since
            current, since = m.group(1), now
    if proc.wait():
        sys.exit(f"dvc repro failed in {clone}")
    end = time.perf_counter()
    if current:
        stages[current] = end - since
    stages["(dvc start-up)"] = end - start - sum(stages.values())
    return stages, end - start


def fresh_run(source: Path, venv: Path) -> tuple[dict[str, float], float, float, float | None]:
    """Clone ``source`` (whose venv is ``venv``), then its venv step's warm-up if it has one, then two
    timed `dvc repro`: (stages, total, second repro, warm-up or None)."""
    with tempfile.TemporaryDirectory(prefix="fclab-make-run.") as tmp:
        clone = Path(tmp) / "fclab"
        subprocess.run(["git", "clone", "-q", str(source), str(clone)], check=True)
        (clone / ".venv").symlink_to(venv)
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "NUMBA_CACHE_DIR": str(Path(tmp) / "numba"),
               "FCLAB_CACHE": str(Path(tmp) / "fclab-cache")}
        warm = None
        if "cache --warm" in (clone / "Makefile").read_text():  # as the venv step does
            start = time.perf_counter()
            subprocess.run([str(venv / "bin/fclab"), "cache", "--warm"], cwd=clone, env=env, check=True,
                           capture_output=True)
            warm = time.perf_counter() - start
        stages, total = timed_repro(clone, env, venv)
        _, again = timed_repro(clone, env, venv)
        return stages, total, again, warm


def reference(rev: str, where: Path) -> Path:
    """A checkout of ``rev`` with its own venv (its Makefile's venv rule); returns its directory."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], check=True)
    subprocess.run(["git", "checkout", "-q", rev], cwd=where, check=True)
    subprocess.run(["git", "checkout", "-q", "-B", "bench"], cwd=where, check=True)  # cloned by fresh_run
    subprocess.run(["make", ".venv/.fclab-installed"], cwd=where, check=True, capture_output=True)
    return where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--against", metavar="REV", help="also time REV (its own checkout and venv), interleaved")
    args = ap.parse_args()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                      capture_output=True, text=True).stdout.strip():
        sys.exit("commit first: the clone runs HEAD, and its stages import this checkout's code")
    with tempfile.TemporaryDirectory(prefix="fclab-make-run-ref.") as ref_tmp:
        subjects = [("HEAD", ROOT, ROOT / ".venv")]
        if args.against:
            ref = reference(args.against, Path(ref_tmp) / "fclab")
            subjects.insert(0, (args.against, ref, ref / ".venv"))
        runs = []
        for i in range(args.repeat):
            for name, source, venv in subjects:
                runs.append((f"{name}, run {i + 1}", *fresh_run(source, venv)))
    names = list(dict.fromkeys(k for r in runs for k in r[1]))
    print("| stage | " + " | ".join(f"{r[0]} (s)" for r in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r[1].get(name, 0):.1f}" for r in runs) + " |")
    print("| (venv step: `fclab cache --warm`, not in the total) | "
          + " | ".join("" if r[4] is None else f"{r[4]:.1f}" for r in runs) + " |")
    print("| **total** | " + " | ".join(f"**{r[2]:.1f}**" for r in runs) + " |")
    print("| second `dvc repro` (nothing to do) | " + " | ".join(f"{r[3]:.1f}" for r in runs) + " |")
    print("target: <= 45 s for the total")


if __name__ == "__main__":
    main()
