"""Streaming reads of 4D NIfTI images: slabs of volumes straight from the file, never the whole array.

A gzipped image is decompressed with ISA-L (the ``isal`` package, about 2.5x zlib's speed on this
machine; docs/validation.md, "Streaming extraction") in a background thread, so decompression
overlaps the caller's work on the previous slab; the file's SHA-256 is taken from the same bytes,
so the file is read once. An uncompressed image is memory-mapped. Slabs come in the file's own
dtype, one row per volume, voxels in the file's (Fortran) order: ``flat_index`` converts the
C-order voxel indices the rest of fclab uses. ``scaled`` applies the header's scaling in float64.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from fclab.framework.errors import DataError

SLAB_BYTES = 32 << 20  # raw bytes per slab: a few volumes at 2 mm, bounded memory at any run length
GZIP_MAGIC = b"\x1f\x8b"


class _Hashing:
    """A binary file whose bytes, as they are read, feed a SHA-256."""

    def __init__(self, fh):
        self.fh, self.sha = fh, hashlib.sha256()

    def read(self, n=-1):
        b = self.fh.read(n)
        self.sha.update(b)
        return b

    def readinto(self, buf):
        n = self.fh.readinto(buf)
        self.sha.update(memoryview(buf)[:n])
        return n

    def digest(self) -> str:
        for chunk in iter(lambda: self.fh.read(1 << 20), b""):  # whatever follows the gzip stream
            self.sha.update(chunk)
        return self.sha.hexdigest()[:16]  # as io.file_digest

    def close(self):
        self.fh.close()


def flat_index(c_index: np.ndarray, shape) -> np.ndarray:
    """Voxel indices in C order (fclab's) -> their positions in a NIfTI volume (Fortran order)."""
    return np.ravel_multi_index(np.unravel_index(c_index, shape), shape, order="F")


class VolumeStream:
    """The volumes of one 4D NIfTI file, read once, front to back, in slabs.

    ``img`` is the header-only image nibabel loaded from ``path``. Iterating yields
    ``(first_volume, slab)`` with ``slab`` a (k, n_voxels) array of raw values; ``digest`` (after the
    last slab) is the file's digest. Errors name the file.
    """

    def __init__(self, path: Path, img: nib.Nifti1Image, slab_bytes: int | None = None):
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise DataError(f"{path}: not a NIfTI image ({type(img).__name__})")
        proxy = img.dataobj  # nibabel's reading of the header: offset, dtype, scaling, order
        if getattr(proxy, "order", None) != "F" or len(proxy.shape) != 4:
            raise DataError(f"{path}: expected a 4D NIfTI image, got shape {img.shape}")
        self.path = Path(path)
        self.shape = tuple(int(n) for n in proxy.shape[:3])
        self.n_volumes = int(proxy.shape[3])
        self.dtype = np.dtype(proxy.dtype)
        self.offset = int(proxy.offset)
        self.slope, self.inter = float(proxy.slope), float(proxy.inter)
        self.n_voxels = int(np.prod(self.shape))
        self.volume_bytes = self.n_voxels * self.dtype.itemsize
        self.slab = max(1, min(self.n_volumes, (slab_bytes or SLAB_BYTES) // max(self.volume_bytes, 1)))
        self.digest: str | None = None
        with open(self.path, "rb") as fh:
            self.gzipped = fh.read(2) == GZIP_MAGIC

    def scaled(self, raw: np.ndarray) -> np.ndarray:
        """Raw values -> float64 with the header's slope and intercept."""
        out = raw.astype(np.float64)
        if self.slope != 1.0:
            out *= self.slope
        if self.inter != 0.0:
            out += self.inter
        return out

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.gzipped:
            yield from self._gzipped()
        else:
            yield from self._mapped()

    def _short(self, t: int) -> DataError:
        return DataError(f"{self.path}: data block unreadable (the file ends within volume {t + 1} of "
                         f"{self.n_volumes})")

    def _mapped(self):
        size = self.path.stat().st_size
        need = self.offset + self.n_volumes * self.volume_bytes
        if size < need:
            raise self._short((size - self.offset) // self.volume_bytes)
        data = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=(self.n_volumes, self.n_voxels))
        for t in range(0, self.n_volumes, self.slab):
            yield t, data[t:t + self.slab]
        del data
        from fclab.framework.io import file_digest

        self.digest = file_digest(self.path)

    def _gzipped(self):
        from isal import igzip_threaded
        from isal.isal_zlib import error as IsalError

        raw = _Hashing(open(self.path, "rb"))
        try:
            fh = igzip_threaded.open(raw, "rb", threads=1)
            try:
                if len(fh.read(self.offset)) != self.offset:
                    raise self._short(0)
                buf = bytearray(self.slab * self.volume_bytes)
                for t in range(0, self.n_volumes, self.slab):
                    k = min(self.slab, self.n_volumes - t)
                    view = memoryview(buf)[:k * self.volume_bytes]
                    got = 0
                    while got < len(view):
                        n = fh.readinto(view[got:])
                        if not n:
                            raise self._short(t + got // self.volume_bytes)
                        got += n
                    yield t, np.frombuffer(buf, self.dtype, k * self.n_voxels).reshape(k, self.n_voxels)
                while fh.read(1 << 20):  # the rest of the stream, so its CRC is checked
                    pass
                self.digest = raw.digest()
            finally:
                fh.close()
        except (OSError, EOFError, ValueError, zlib.error, IsalError) as exc:
            raise DataError(f"{self.path}: data block unreadable ({type(exc).__name__}: {exc})") from exc
        finally:
            raw.close()
