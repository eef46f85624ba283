"""Benchmark: what the per-run cache costs when nothing, or one subject, changed.

A study of N subjects x 2 runs is laid out from the default simulated study's files (hard links of
two simulated subjects' runs under new labels, so building it costs no simulation), then `fclab
extract` runs: cold (every run computed, the reference), no-op (nothing changed: a stat per file, and
the outputs kept), cached (results/extract deleted: every run's tables read back from the cache and the
outputs written), after one new subject (two runs computed), and after the data directory moved (the
key follows the contents; the digest memo reads each file once again).

    .venv/bin/python benchmarks/extract_noop.py [--subjects 27 1000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FCLAB = str(Path(sys.executable).with_name("fclab"))


def run(cwd: Path, *args: str) -> float:
    t = time.perf_counter()
    out = subprocess.run([FCLAB, *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"fclab {' '.join(args)} failed:\n{out.stderr}")
    return time.perf_counter() - t


def layout(work: Path, n_subjects: int, source: Path) -> None:
    """N subjects under data/study, each a hard-linked copy of one of the two source subjects."""
    data = work / "data" / "study"
    rows = ["participant_id\tgroup"]
    sources = sorted(p for p in source.glob("sub-*") if p.is_dir())[:2]
    for i in range(n_subjects):
        label = f"{i + 1:04d}"
        src = sources[i % 2]
        for f in src.rglob("*"):
            if f.is_file():
                target = data / f"sub-{label}" / f.relative_to(src).parent / f.name.replace(src.name, f"sub-{label}")
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, target)
        rows.append(f"sub-{label}\t{'ketamine' if i % 2 else 'midazolam'}")
    (data / "participants.tsv").write_text("\n".join(rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, nargs="+", default=[27, 1000])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        sim = dict(params, simulate=dict(params["simulate"], n_ketamine=2, n_midazolam=2, output_dir="sim"))
        (base / "params.yaml").write_text(yaml.safe_dump(sim, sort_keys=False))
        run(base, "simulate")
        print(f"{'runs':>6}  {'cold':>8}  {'no-op':>8}  {'cached':>8}  {'+1 subject':>10}  {'moved':>8}   "
              f"(s, fclab extract -j {args.jobs})")
        for n in args.subjects:
            work = Path(tmp) / f"n{n}"
            layout(work, n, base / "sim")
            p = dict(params)
            p["extract"] = dict(params["extract"], data=dict(params["extract"]["data"], root="data/study"))
            (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
            j = ("-j", str(args.jobs))
            cold = run(work, *j, "extract")
            noop = run(work, *j, "extract")
            shutil.rmtree(work / "results" / "extract")
            cached = run(work, *j, "extract")
            layout(work / "extra", 1, base / "sim")  # one more subject, label sub-0001 under a new one
            new = work / "data" / "study" / f"sub-{n + 1:04d}"
            shutil.move(work / "extra" / "data" / "study" / "sub-0001", new)
            for f in new.rglob("*sub-0001*"):
                f.rename(f.with_name(f.name.replace("sub-0001", f"sub-{n + 1:04d}")))
            with open(work / "data" / "study" / "participants.tsv", "a") as fh:
                fh.write(f"sub-{n + 1:04d}\tketamine\n")
            plus = run(work, *j, "extract")
            shutil.move(work / "data" / "study", work / "data" / "moved")
            p["extract"]["data"]["root"] = "data/moved"
            (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
            moved = run(work, *j, "extract")
            print(f"{2 * n:>6}  {cold:>8.1f}  {noop:>8.1f}  {cached:>8.1f}  {plus:>10.1f}  {moved:>8.1f}")


if __name__ == "__main__":
    main()
