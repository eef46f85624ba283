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
import queue
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from fclab.framework.errors import DataError

SLAB_BYTES = 4 << 20  # raw bytes per slab: one or two volumes at 2 mm (cache-sized; measured fastest)
BUFFERS = 3  # slab buffers in flight: one being used, one being filled, one ready
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


class Scaling:
    """The header's scaling of raw values, shared by the volume and surface streams."""

    slope, inter = 1.0, 0.0

    def scaled(self, raw: np.ndarray) -> np.ndarray:
        """Raw values -> float64 with the header's slope and intercept."""
        out = raw.astype(np.float64)
        if self.slope != 1.0:
            out *= self.slope
        if self.inter != 0.0:
            out += self.inter
        return out


class VolumeStream(Scaling):
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
        """Decompression in a producer thread filling a few slab buffers in turn (ISA-L releases the
        GIL while it inflates), so the consumer works on one slab while the next is decompressed."""
        from isal import igzip
        from isal.isal_zlib import error as IsalError

        raw = _Hashing(open(self.path, "rb"))
        free, full, stop = queue.Queue(), queue.Queue(), threading.Event()
        size = self.slab * self.volume_bytes
        for _ in range(BUFFERS):
            free.put(bytearray(size))

        def produce():
            try:
                with igzip.IGzipFile(fileobj=raw, mode="rb") as fh:
                    if len(fh.read(self.offset)) != self.offset:
                        raise self._short(0)
                    for t in range(0, self.n_volumes, self.slab):
                        buf = free.get()
                        if stop.is_set():
                            return
                        k = min(self.slab, self.n_volumes - t)
                        view, got = memoryview(buf)[:k * self.volume_bytes], 0
                        while got < len(view):
                            n = fh.readinto(view[got:])
                            if not n:
                                raise self._short(t + got // self.volume_bytes)
                            got += n
                        full.put((t, k, buf))
                    while fh.read(1 << 20):  # the rest of the stream, so its CRC is checked
                        pass
                self.digest = raw.digest()
                full.put(None)
            except BaseException as exc:  # handed to the consumer, which raises it
                full.put(exc)

        worker = threading.Thread(target=produce, name=f"inflate {self.path.name}", daemon=True)
        worker.start()
        try:
            while (item := full.get()) is not None:
                if isinstance(item, DataError):
                    raise item
                if isinstance(item, (OSError, EOFError, ValueError, zlib.error, IsalError)):
                    raise DataError(f"{self.path}: data block unreadable ({type(item).__name__}: {item})") from item
                if isinstance(item, BaseException):
                    raise item
                t, k, buf = item
                yield t, np.frombuffer(buf, self.dtype, k * self.n_voxels).reshape(k, self.n_voxels)
                free.put(buf)  # the consumer is done with this slab
        finally:
            stop.set()
            free.put(bytearray(0))  # wakes a producer waiting for a buffer
            worker.join()
            raw.close()
