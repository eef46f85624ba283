"""Atomic writes and provenance for everything a stage produces."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fclab.framework import __version__
from fclab.framework.errors import DataError

PROVENANCE_KEY = b"fclab"


FAULT_ENV = "FCLAB_FAULT"
_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """The fault-injection hook of the fault suite (tests/test_faults.py). ``FCLAB_FAULT=kill:<name>:<n>``
    kills this process with SIGKILL at the n-th time it reaches point ``name``;
    ``FCLAB_FAULT=enospc:<name>:<n>`` raises "No space left on device" there. Unset (always, outside
    the suite), it does nothing."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    action, point, nth = (spec.split(":") + ["1"])[:3]
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] != int(nth):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


MARKER = ".fclab"  # in every directory fclab writes whole; only such directories are ever replaced


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # mkstemp creates 0600 files; finished outputs follow the umask
DIR_MODE = 0o777 & ~_umask()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(parent: Path, name: str) -> None:
    """Delete temporary files and directories of ``name`` left in ``parent`` by fclab processes that
    died (killed mid-write): ``.<name>.<pid>.<random>.tmp`` and ``.<name>.<pid>.old`` whose process is
    gone. A live process's temporaries (a concurrent run) are left alone."""
    prefix = f".{name}."
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        rest = entry.name[len(prefix):] if entry.name.startswith(prefix) else ""
        pid, _, tail = rest.partition(".")
        if not (pid.isdigit() and (tail.endswith((".tmp", ".old")) or tail == "old")) or _alive(int(pid)):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _parent(path: Path) -> Path:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise DataError(f"{exc.filename or parent}: exists and is not a directory (fclab writes {path} there)") from exc
    except PermissionError as exc:
        raise DataError(f"{parent}: cannot create the output directory (permission denied)") from exc
    return parent


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    parent = _parent(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; fclab writes a file there")
    remove_stale(parent, path.name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent)
        os.close(fd)
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    try:
        with _write_errors(path):
            yield Path(tmp)
            fault_point("write")
            os.chmod(tmp, FILE_MODE)
            fault_point("replace")
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _write_errors(path: Path):
    """An OSError while writing an output (a full disk, a lost mount) becomes one line naming it."""
    try:
        yield
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def owned(path: Path, expected: Callable[[str], bool] | None = None) -> bool:
    """Whether fclab may replace the directory ``path``: it carries fclab's marker, is empty, holds
    only files ``expected`` accepts (outputs written before markers existed), or is a study written
    by ``fclab simulate``."""
    if (path / MARKER).is_file():
        return True
    names = os.listdir(path)
    if not names or (expected and all(expected(n) and (path / n).is_file() for n in names)):
        return True
    try:
        desc = json.loads((path / "dataset_description.json").read_text())
        return any(g.get("Name") == "fclab simulate" for g in desc.get("GeneratedBy", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return False


@contextlib.contextmanager
def atomic_dir(path: str | Path, expected: Callable[[str], bool] | None = None):
    """Build a directory under a temporary name and swap it in whole when the block succeeds.

    An existing ``path`` is replaced only if fclab wrote it (``owned``); anything else there is an
    error naming it, so a mistyped output path never deletes a user's directory. Temporaries of
    killed runs are removed first.
    """
    path = Path(path)
    fault_point("compute")  # the stage has computed everything and written nothing yet
    parent = _parent(path)
    if path.exists() and path.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise DataError(f"{path}: is the working directory or one of its parents; choose another output path")
    _check_replaceable(path, expected)
    remove_stale(parent, path.name)
    with _write_errors(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent))
    try:
        with _write_errors(path):
            os.chmod(tmp, DIR_MODE)
            (tmp / MARKER).write_text("written by fclab; the whole directory is replaced on the next run\n")
            yield tmp
            _swap(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_lock_depth = [0]  # the lock is the process's: stages called inside `fclab run` take it again freely


@contextlib.contextmanager
def directory_lock(directory: str | Path = ".", shared: bool = False):
    """Hold the working directory's lock for the block: an exclusive one for a stage (it writes
    results/, reports/ or the simulated study), a shared one for a command that only reads tables.
    Another fclab command in the same directory waits (one line says so) rather than interleave its
    writes and reads with this one's, so no report mixes two runs' tables. The lock is flock(2) on the
    directory itself: nothing is created, and the system releases it when the process ends, however
    it ends. Where the file system has no flock, the block runs unlocked."""
    if _lock_depth[0]:
        _lock_depth[0] += 1
        try:
            yield
        finally:
            _lock_depth[0] -= 1
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        fd = None
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"fclab: waiting for another fclab command in {Path(directory).resolve()} to finish "
                      "(one at a time writes results/ and reports/)", file=sys.stderr, flush=True)
                fcntl.flock(fd, mode)
            except OSError:  # no flock here (some network file systems)
                pass
        _lock_depth[0] += 1
        try:
            yield
        finally:
            _lock_depth[0] -= 1
    finally:
        if fd is not None:
            os.close(fd)


def locked(fn=None, *, shared: bool = False):
    """``directory_lock`` around a function (a stage, or a command that reads the stages' tables)."""
    if fn is None:
        return functools.partial(locked, shared=shared)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with directory_lock(shared=shared):
            return fn(*args, **kwargs)

    return wrapper


_LIBC = ctypes.CDLL(None, use_errno=True)
_RENAMEAT2 = getattr(_LIBC, "renameat2", None)  # Linux (glibc 2.28+)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap the directories ``a`` and ``b`` in one step (renameat2 RENAME_EXCHANGE), so that ``b`` is
    never missing; False where the system or file system cannot, or ``b`` does not exist."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOENT, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap(new: Path, path: Path) -> None:
    """Put the directory ``new`` at ``path``, replacing what is there, and delete the old one. Where
    the system can, the two are exchanged in one step, so a concurrent reader of ``path`` (another
    run's next stage) never finds it missing; else the old one is moved aside and the new one moved
    in. A concurrent run doing the same may win the race; then its output is moved aside in turn
    (both runs write the same bytes)."""
    olds = []
    try:
        fault_point("swap")
        if _exchange(new, path):
            olds.append(new)  # now holds the old contents
            return
        for attempt in range(20):
            old = path.parent / f".{path.name}.{os.getpid()}.{attempt}.old"
            try:
                os.replace(path, old)
                olds.append(old)
            except FileNotFoundError:
                pass
            fault_point("swap")
            try:
                os.replace(new, path)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        raise DataError(f"{path}: could not be replaced (another process keeps writing it)")
    finally:
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)


def _check_replaceable(path: Path, expected: Callable[[str], bool] | None) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise DataError(f"{path}: exists and is not a directory fclab wrote; move it away")
    if path.exists() and not owned(path, expected):
        raise DataError(f"{path}: exists and was not written by fclab (no {MARKER} marker); move it away or "
                        "choose another output path")


DIRECTORY = None  # a member of ``staged_members`` that is a directory replaced whole


def _written_by_fclab(path: Path, signature: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return signature in f.read(4096)
    except OSError:
        return False


@contextlib.contextmanager
def staged_members(parent: str | Path, members: dict[str, bytes | None]):
    """Build several outputs of ``parent`` (files, and directories replaced whole) in one staging
    directory, then move them in, in the order given: put the file readers open first (an index
    page) last. Other entries of ``parent`` are left alone, and ``parent`` may be a symlink (the
    outputs are written through it). ``members`` maps each directory's name to ``DIRECTORY`` (an
    existing one is replaced only if it carries fclab's marker or is empty) and each file's name to
    bytes that fclab's file holds in its first 4 kB (an existing file without them is a user's: an
    error, never overwritten)."""
    fault_point("compute")
    parent = _parent(Path(parent) / next(iter(members)))
    for name, signature in members.items():
        if signature is DIRECTORY:
            _check_replaceable(parent / name, None)
        elif (parent / name).is_dir():
            raise DataError(f"{parent / name}: is a directory; fclab writes a file there")
        elif (parent / name).is_symlink() or ((parent / name).exists() and not _written_by_fclab(parent / name,
                                                                                               signature)):
            raise DataError(f"{parent / name}: exists and was not written by fclab; move it away or choose "
                            "another output path")
    for name in ("stage", *members):
        remove_stale(parent, name)
    with _write_errors(parent):
        tmp = Path(tempfile.mkdtemp(prefix=f".stage.{os.getpid()}.", suffix=".tmp", dir=parent))
    try:
        with _write_errors(parent):
            yield tmp
            for name, signature in members.items():
                if not (tmp / name).exists():
                    continue
                fault_point("member")
                if signature is DIRECTORY:
                    os.chmod(tmp / name, DIR_MODE)
                    (tmp / name / MARKER).write_text("written by fclab; the whole directory is replaced on the next "
                                                     "run\n")
                    _swap(tmp / name, parent / name)
                else:
                    os.replace(tmp / name, parent / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


CODE_PATHS = ("framework", "plugins", "cli.py", "api.py", "__init__.py")  # relative to the package root


def git_commit(root: Path | None = None) -> str:
    """The last commit that changed fclab's code (``CODE_PATHS``), with ``-dirty`` when the code differs
    from it; 'unknown' outside a git checkout. Not HEAD: a commit that only records results (dvc.lock)
    or docs must not change the provenance of the results, or a committed dvc.lock could never match a
    fresh clone's run."""
    root = root or Path(__file__).resolve().parents[1]

    def git(*args) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("log", "-1", "--format=%H", "--", *CODE_PATHS)
    if not commit:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    return commit + ("-dirty" if dirty else "")


def file_digest(path: str | Path, data: bytes | None = None) -> str:
    h = hashlib.sha256()
    if data is not None:
        h.update(data)
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def provenance(stage: str, params_hash: str, plugins: dict[str, str], inputs: dict[str, str]) -> dict:
    return {
        "stage": stage,
        "fclab_version": __version__,
        "git_commit": git_commit(),
        "params_hash": params_hash,
        "plugins": dict(sorted(plugins.items())),
        "inputs": dict(sorted(inputs.items())),
    }


def write_parquet(df: pd.DataFrame, path: str | Path, prov: dict) -> None:
    """Write ``df`` atomically, without the index, with ``prov`` in the schema metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    # Categorical columns (built that way for speed) are stored as plain strings, so readers get
    # ordinary columns back; Parquet's own dictionary encoding keeps the file small.
    fields = [pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in table.schema]
    table = table.cast(pa.schema(fields, metadata=table.schema.metadata))
    write_arrow(table, path, prov)


def write_arrow(table: pa.Table, path: str | Path, prov: dict, metadata: dict | None = None,
                dictionary: list[str] | bool = True, row_group_size: int | None = None) -> None:
    """Write an Arrow table atomically (zstd), with ``prov`` and any other ``metadata`` in the schema;
    ``dictionary`` names the columns Parquet dictionary-encodes (True: all)."""
    write_arrow_parts(table.schema, [table], path, prov, metadata, dictionary, row_group_size)


def write_arrow_parts(schema: pa.Schema, parts, path: str | Path, prov: dict, metadata: dict | None = None,
                      dictionary: list[str] | bool = True, row_group_size: int | None = None) -> None:
    """``write_arrow`` for a table given as parts (an iterable of tables with ``schema``), written one
    after another so that only one part need be in memory."""
    meta = {**(schema.metadata or {}), **(metadata or {})}
    meta[PROVENANCE_KEY] = json.dumps(prov, sort_keys=True).encode()
    schema = schema.with_metadata(meta)
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=dictionary) as writer:
            for part in parts:
                writer.write_table(part.replace_schema_metadata(meta), row_group_size=row_group_size)


def read_parquet(path: str | Path, columns=(), filters=None) -> pd.DataFrame:
    """A stage's table; missing, unreadable, or without one of ``columns``: a DataError naming the file.
    ``filters`` (pyarrow's, e.g. ``[("window", "in", names)]``) keeps only the matching rows, read
    without materialising the others."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the stage that writes it first")
    try:
        table = pq.read_table(path, filters=filters).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: unreadable Parquet file ({exc})") from exc
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}; rerun the stage that writes it")
    return table


def read_provenance(path: str | Path) -> dict:
    """The provenance a stage stored in a table's schema metadata; a missing or unreadable file is a
    DataError naming it, as in ``read_parquet``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the stage that writes it first")
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: unreadable Parquet file ({exc})") from exc
    return json.loads(meta.get(PROVENANCE_KEY, b"{}"))


def check_params(path: str | Path, prov: dict, section: str, expected: str, stage: str) -> None:
    """A table computed with other ``section`` params than the ones running now is refused (its
    provenance's params hash against ``expected``): a stage must never present one run's results
    under another params file's settings."""
    found = prov.get("params_hash")
    if found is not None and found != expected:
        raise DataError(f"{path}: computed with other {section} params than these (params hash {found}, now "
                        f"{expected}); rerun `fclab {stage}` with this params file (or dvc repro)")


def check_fresh(path: str | Path) -> dict:
    """The provenance of the stage output ``path``, after checking that every fclab table it was
    computed from (the ``.parquet`` inputs it records) is still the file on disk: a later stage must
    never combine a table with another run's version of its inputs."""
    path = Path(path)
    prov = read_provenance(path)
    for name, digest in prov.get("inputs", {}).items():
        inp = Path(name)
        if inp.suffix == ".parquet" and inp.is_file() and file_digest(inp) != digest:
            raise DataError(f"{path}: computed from another version of {inp}; rerun the stage that writes "
                            f"{path.parent} (or dvc repro)")
    return prov
