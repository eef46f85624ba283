"""Arrays computed once per machine and kept on disk beside the per-run extraction cache: the
simulator's anatomy, atlases' maximum-probability labels, the report's template. Everything lives
under ``.fclab-cache/`` of the working directory, or where ``FCLAB_CACHE`` points (``off`` turns it
off)."""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    """Where fclab keeps what it computes once per machine (``FCLAB_CACHE``, else ``.fclab-cache``)."""
    return Path(os.environ.get("FCLAB_CACHE") or ".fclab-cache")


def enabled() -> bool:
    """Whether the on-disk caches are on (``FCLAB_CACHE=off`` turns them off)."""
    return os.environ.get("FCLAB_CACHE", "").lower() not in ("off", "0", "no", "false")


def memo_arrays(kind: str, name: str, key: str, sources, libraries, build) -> dict[str, np.ndarray]:
    """Arrays computed once per machine and kept beside the per-run cache, in ``<kind>/`` (the
    simulator's anatomy, atlases' maximum-probability labels). The entry is keyed by ``key`` (what the
    arrays are computed from), the source files of the code that computes them and the versions of
    ``libraries``. ``build()`` returns the arrays; it runs when the cache is off, or the entry is
    absent or damaged (then stored again, atomically)."""
    import zipfile

    from fclab.framework.errors import DataError
    from fclab.framework.io import atomic_path

    if not enabled():
        return build()
    h = hashlib.sha256(key.encode())
    for source in sources:
        h.update(Path(source).read_bytes())
    for lib in libraries:
        h.update(f"{lib}=={metadata.version(lib)};".encode())
    path = cache_root() / kind / f"{name}-{h.hexdigest()[:32]}.npz"
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # absent or damaged: build it
        pass
    arrays = build()
    try:  # the cache is optional: one that cannot be written (read-only, full, a file) is skipped
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    except (OSError, DataError):
        pass
    return arrays
