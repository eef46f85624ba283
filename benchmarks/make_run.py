"""`make run` of the default study from a fresh clone, stage by stage.

Clones the repository's HEAD into a temporary directory, gives it this checkout's .venv (built, as
after `make run`'s first step), an empty numba cache and no per-run cache, runs the venv step's
`fclab cache --warm` there (numba kernels and simulation anatomy; timed and shown apart, as it is part
of building the venv), and times `dvc repro`:
each stage from DVC's "Running stage" line to the next, which includes DVC's own hashing and
bookkeeping for that stage. Then times the second `dvc repro`, which should do nothing. The working
tree must be clean (the venv imports this checkout's code).

    .venv/bin/python benchmarks/make_run.py [--repeat 2]
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


def timed_repro(clone: Path, env: dict) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    proc = subprocess.Popen([str(ROOT / ".venv/bin/dvc"), "repro"], cwd=clone, env=env, text=True,
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                      capture_output=True, text=True).stdout.strip():
        sys.exit("commit first: the clone runs HEAD, and its stages import this checkout's code")
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="fclab-make-run.") as tmp:
            clone = Path(tmp) / "fclab"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            (clone / ".venv").symlink_to(ROOT / ".venv")
            env = {**os.environ, "DVC_NO_ANALYTICS": "1", "NUMBA_CACHE_DIR": str(Path(tmp) / "numba"),
                   "FCLAB_CACHE": str(Path(tmp) / "fclab-cache")}
            start = time.perf_counter()
            subprocess.run([str(ROOT / ".venv/bin/fclab"), "cache", "--warm"], cwd=clone, env=env, check=True,
                           capture_output=True)
            warm = time.perf_counter() - start
            stages, total = timed_repro(clone, env)
            _, again = timed_repro(clone, env)
            runs.append((stages, total, again, warm))
    names = list(runs[0][0])
    print("| stage | " + " | ".join(f"run {i + 1} (s)" for i in range(len(runs))) + " |")
    print("|---|" + "---|" * len(runs))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r[0].get(name, 0):.1f}" for r in runs) + " |")
    print("| (venv step: `fclab cache --warm`, not in the total) | " + " | ".join(f"{r[3]:.1f}" for r in runs) + " |")
    print("| **total** | " + " | ".join(f"**{r[1]:.1f}**" for r in runs) + " |")
    print("| second `dvc repro` (nothing to do) | " + " | ".join(f"{r[2]:.1f}" for r in runs) + " |")
    print("target: <= 45 s for the total")


if __name__ == "__main__":
    main()
