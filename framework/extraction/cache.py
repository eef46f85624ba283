"""Per-run extraction cache: each run's extract results stored under a content key, outside DVC's outputs.

The key hashes everything a run's results depend on: the digests of its BOLD, mask, confounds and
events files (their contents by role, not their paths: moving the data directory re-extracts
nothing), its subject, group, run name and TR, the denoise settings and ``min_coverage``, the ROI
operator itself (names, weights and support, so any ROI plugin or option that changes the voxels
changes the key, and one that does not leaves it alone), the source of the modules that compute
the run (every module of the extraction package) and the versions of the libraries whose numbers enter it. Adding a
subject, or rerunning after a change that does not touch a run, extracts only the runs whose key is
new, also under ``dvc repro`` (which deletes the stage's outputs before running it): the cache lives
in ``.fclab-cache/`` of the working directory, or where ``FCLAB_CACHE`` points (``off`` turns
it off).

An entry is a directory ``<key[:2]>/<key>/`` written atomically (built aside, then renamed): the
run's tables as Parquet, its QC row, digests and carpet as JSON and PNG. Every extract run lists
the keys it used in ``last_run.json`` and touches their entries, so ``fclab cache --prune-unused``
keeps exactly what the last extraction needed and ``--older-than`` goes by last use.

File digests are memoised in ``digests.sqlite`` by path with the file's size, modification time and
inode, as DVC's own state does: an unchanged file is not read again, so a no-op extract costs a
``stat`` per file. A file rewritten with the same size within the file system's time resolution
would go unseen, the same bargain DVC makes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from fclab.framework.errors import DataError
from fclab.framework.io import file_digest
from fclab.framework.memo import cache_root, enabled  # noqa: F401  (enabled: the stage asks it)

LIBRARIES = ("nilearn", "nibabel", "numpy", "scipy", "pandas", "pyarrow", "isal")
TABLES = ("timeseries", "roi_qc", "motion", "events")


def cache_dir() -> Path:
    """The per-run entries: ``extract/`` of the machine's cache root."""
    return cache_root() / "extract"


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """The source of every module of the extraction package (this one's directory), by name, and the
    versions of the libraries whose numbers enter a run's results."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    for lib in LIBRARIES:
        h.update(f"{lib}=={metadata.version(lib)};".encode())
    return h.hexdigest()


def rois_digest(rois) -> str:
    """Digest of an ROI operator: names, weights and support, exactly."""
    h = hashlib.sha256(json.dumps(list(rois.names)).encode())
    for m in (rois.weights.tocsr(), rois.support.tocsr()):
        m.sort_indices()
        for a in (np.asarray(m.shape, np.int64), m.indptr.astype(np.int64), m.indices.astype(np.int64),
                  m.data.astype(np.float64)):
            h.update(a.tobytes())
    return h.hexdigest()


def digests(files: list[Path]) -> dict[str, str]:
    """``{str(path): file_digest(path)}``, reading only the files whose size, modification time or
    inode differ from the memo's record of them (``digests.sqlite`` in the cache). Without a usable
    memo (a read-only cache, a damaged database) every file is read."""
    stats = {str(f): os.stat(f) for f in files}
    out: dict[str, str] = {}
    try:
        con = sqlite3.connect(cache_dir() / "digests.sqlite", timeout=60) if _memo_dir() else None
    except sqlite3.Error:
        con = None
    try:
        if con is not None:
            con.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER, "
                        "mtime_ns INTEGER, inode INTEGER, digest TEXT)")
            for path, st in stats.items():
                row = con.execute("SELECT size, mtime_ns, inode, digest FROM digests WHERE path = ?",
                                  (str(Path(path).resolve()),)).fetchone()
                if row and tuple(row[:3]) == (st.st_size, st.st_mtime_ns, st.st_ino):
                    out[path] = row[3]
        fresh = {path: file_digest(path) for path in stats if path not in out}
        if con is not None and fresh:
            with con:
                con.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?)",
                                [(str(Path(p).resolve()), stats[p].st_size, stats[p].st_mtime_ns, stats[p].st_ino, d)
                                 for p, d in fresh.items()])
        out.update(fresh)
    except sqlite3.Error:  # the memo is an optimisation: read what it could not say
        out.update({path: file_digest(path) for path in stats if path not in out})
    finally:
        if con is not None:
            con.close()
    return {str(f): out[str(f)] for f in files}


def _memo_dir() -> bool:
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        return True
    except OSError:
        return False


def key_material(run, file_digests: dict, rois_hash: str, denoise, min_coverage) -> dict:
    """What a run's cache key hashes; ``file_digests``: the inputs' digests by role (``{"bold": [...],
    "mask": ..., ...}``), so the key follows the contents wherever the files lie. An entry stores it,
    and a read checks that it hashes to the entry's key."""
    return {
        "code": _code_digest(), "rois": rois_hash, "files": file_digests,
        "subject": run.subject, "group": str(run.group), "run": run.run, "tr": repr(float(run.tr)),
        "denoise": denoise.model_dump(mode="json"), "min_coverage": min_coverage,
    }


def key_of(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


KEY = re.compile(r"[0-9a-f]{64}")


def _entry(key: str) -> Path:
    return cache_dir() / key[:2] / key


def _discard(path: Path) -> None:
    """Delete an entry fclab wrote (a key-named directory under its prefix), nothing else."""
    if KEY.fullmatch(path.name) and path.parent.name == path.name[:2] and path.parent.parent == cache_dir():
        shutil.rmtree(path, ignore_errors=True)


def load(key: str) -> tuple[tuple | None, str | None]:
    """(the cached result tuple of ``_extract_run``, None), or (None, why the entry was not used)
    after checking it: its key material must hash to ``key`` (an entry copied or written under
    another key is not this run's) and every file must match the digest stored with it (flipped
    bytes, a truncated table, an empty or foreign meta.json). A failed entry is deleted, so the run
    is computed and stored again; an absent one is (None, None)."""
    import io

    path = _entry(key)
    try:
        raw = (path / "meta.json").read_bytes()
    except OSError:
        return None, None
    try:
        meta = json.loads(raw)
        if key_of(meta["key_material"]) != key:
            raise ValueError("its key material is another run's")
        tables = {}
        for t in TABLES:
            want = meta["files"].get(f"{t}.parquet")
            if want is None:
                tables[t] = None
                continue
            data = (path / f"{t}.parquet").read_bytes()
            if hashlib.sha256(data).hexdigest() != want:
                raise ValueError(f"{t}.parquet does not match its digest")
            tables[t] = pd.read_parquet(io.BytesIO(data))
        carpet = dict(meta["carpet"], png=base64.b64decode(meta["carpet"]["png"]))
        result = (tables["timeseries"], tables["roi_qc"], dict(meta["run_qc"]), tables["events"],
                  dict(meta["digests"]), tables["motion"], carpet)
        if result[0] is None or result[1] is None or result[5] is None:
            raise ValueError("a table is missing")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        _discard(path)
        return None, f"{path}: {exc if isinstance(exc, ValueError) else type(exc).__name__ + ' ' + str(exc)}"
    _touch(path / "meta.json")
    return result, None


def store(key: str, result, material: dict) -> str | None:
    """Write the entry atomically, with its key material and each file's digest; None, or why it
    could not be written (a full or read-only cache: extraction goes on without it)."""
    ts, roi_qc, run_qc, events, digests, motion, carpet = result
    final = _entry(key)
    tmp = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=final.parent))
        files = {}
        for name, table in zip(TABLES, (ts, roi_qc, motion, events)):
            if table is not None:
                table.to_parquet(tmp / f"{name}.parquet", index=False)
                files[f"{name}.parquet"] = hashlib.sha256((tmp / f"{name}.parquet").read_bytes()).hexdigest()
        meta = {"key_material": material, "files": files, "run_qc": run_qc, "digests": digests,
                "carpet": dict(carpet, png=base64.b64encode(carpet["png"]).decode())}
        (tmp / "meta.json").write_text(json.dumps(meta, default=lambda o: o.item()))
        _touch(tmp / "meta.json")
        try:
            os.replace(tmp, final)
        except OSError:  # another worker stored the same run first
            pass
    except OSError as exc:
        return f"{final.parent}: {exc.strerror or exc}"
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return None


def _touch(meta: Path) -> None:
    """Mark an entry used now (explicit times: file systems stamp with a coarser clock)."""
    now = time.time()
    os.utime(meta, (now, now))


def record_run(keys: list[str]) -> None:
    """Remember which entries the last extract run used (``prune(unused=True)`` keeps just those);
    skipped when the cache cannot be written."""
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".last_run.{os.getpid()}"
        tmp.write_text(json.dumps({"finished": time.time(), "keys": sorted(keys)}))
        os.replace(tmp, root / "last_run.json")
    except OSError:
        pass


def usable() -> str | None:
    """None when the per-run cache can be written, else why not (one line)."""
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkstemp(prefix=".probe-", dir=root)[1])
        probe.unlink()
    except OSError as exc:
        return f"{root}: {exc.strerror or exc}"
    return None


def _listing(out_dir: Path) -> dict[str, list[int]]:
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(out_dir.iterdir()) if f.is_file()}


def record_outputs(out_dir: Path, state: str | None) -> None:
    """Remember that ``out_dir``'s files (by name, size and mtime) were written from ``state``
    (``engine.extract_state``), in the cache's ``outputs.json``, so an unchanged rerun can keep them.
    The cache is optional: a record that cannot be written is skipped."""
    if state is None or not _memo_dir():
        return
    path = cache_dir() / "outputs.json"
    try:
        try:
            records = json.loads(path.read_text())
        except (OSError, ValueError):
            records = {}
        records[str(out_dir.resolve())] = {"state": state, "files": _listing(out_dir)}
        tmp = path.with_name(f".outputs.{os.getpid()}")
        tmp.write_text(json.dumps(records))
        os.replace(tmp, path)
    except (OSError, TypeError):
        pass


def recorded_state(out_dir: Path) -> str | None:
    """The state ``out_dir`` was written from, if its files are exactly those recorded then."""
    try:
        record = json.loads((cache_dir() / "outputs.json").read_text())[str(out_dir.resolve())]
        return record["state"] if record["files"] == _listing(out_dir) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def entries() -> list[tuple[Path, float, int]]:
    """(entry directory, last used (epoch s), size in bytes) of every cached run fclab wrote: a
    key-named directory under its two-character prefix, holding a meta.json."""
    root = cache_dir()
    out = []
    for meta in root.glob("??/*/meta.json"):
        d = meta.parent
        if KEY.fullmatch(d.name) and d.parent.name == d.name[:2]:
            out.append((d, meta.stat().st_mtime, sum(f.stat().st_size for f in d.iterdir())))
    return out


MEMO_NAME = re.compile(r"[A-Za-z0-9_.]+-[0-9a-f]{32}\.npz")


def prune(unused: bool = False, older_than_days: float | None = None, everything: bool = False) -> list[Path]:
    """Delete entries; return them. ``unused``: not used by the last extract run. ``everything`` also
    deletes the simulator's cached anatomy and the atlases' maximum-probability labels (``simulate/``
    and ``atlas/`` beside the runs) and the cache's own records. Only files fclab names are deleted:
    a cache directory shared with other files keeps them."""
    keep = None
    if unused:
        try:
            keep = set(json.loads((cache_dir() / "last_run.json").read_text())["keys"])
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{cache_dir() / 'last_run.json'}: no record of an extract run to keep") from exc
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    gone = []
    if everything:
        for other in ("simulate", "atlas"):
            folder = cache_dir().parent / other
            for f in folder.glob("*.npz") if folder.is_dir() else ():
                if MEMO_NAME.fullmatch(f.name):
                    f.unlink(missing_ok=True)
            _rmdir(folder)
        for own in ("digests.sqlite", "last_run.json", "outputs.json"):
            (cache_dir() / own).unlink(missing_ok=True)
    for d, used, _ in entries():
        if everything or (keep is not None and d.name not in keep) or (cutoff is not None and used < cutoff):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
            _rmdir(d.parent)  # the key's prefix directory, once empty
    if everything:
        _rmdir(cache_dir())
    return gone


def _rmdir(folder: Path) -> None:
    try:
        folder.rmdir()  # only when empty
    except OSError:
        pass


def summary() -> str:
    """One line: where the cache is, how many runs, how large, and when they were last used."""
    found = entries()
    if not found:
        return f"{cache_dir()}: empty"
    size = sum(e[2] for e in found) / 2**20
    days = [(time.time() - e[1]) / 86400 for e in found]
    return (f"{cache_dir()}: {len(found)} cached run{'' if len(found) == 1 else 's'}, {size:.1f} MB, "
            f"last used {min(days):.1f} to {max(days):.1f} days ago")
