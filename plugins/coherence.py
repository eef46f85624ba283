"""Metric plugin ``coherence``: magnitude-squared coherence averaged over a frequency band.

Cross-spectra are Welch estimates (Hann window, 50 % overlapping segments of ``segment_s`` seconds,
constant detrending per segment), exactly as scipy.signal.coherence computes them; the coherence
|S_xy|^2 / (S_xx S_yy) is averaged over the Welch frequencies inside ``band_hz``. A window needs at
least two segments (with one, coherence is identically 1) and the band must contain a Welch
frequency; otherwise the value is missing with the reason.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field, model_validator

from fclab.api import Metric, PluginParams, hookimpl, refs


class Coherence(Metric):
    name = "coherence"
    scale = "coherence"
    references = (refs.COHERENCE,)
    affine_invariant = True

    class Params(PluginParams):
        band_hz: tuple[float, float] = (0.01, 0.08)
        segment_s: float = Field(120.0, gt=0)

        @model_validator(mode="after")
        def _band(self):
            if not 0 <= self.band_hz[0] < self.band_hz[1]:
                raise ValueError("band_hz must be [low, high] with 0 <= low < high")
            return self

    def _segment(self, tr: float) -> tuple[int, int, np.ndarray]:
        nperseg = max(2, int(round(self.params.segment_s / tr)))
        freqs = np.fft.rfftfreq(nperseg, tr)
        lo, hi = self.params.band_hz
        return nperseg, nperseg // 2, np.flatnonzero((freqs >= lo) & (freqs <= hi))

    def problem(self, n_volumes: int, tr: float) -> str | None:
        nperseg, noverlap, bins = self._segment(tr)
        if bins.size == 0:
            return f"coherence: no Welch frequency in {self.params.band_hz} Hz with {self.params.segment_s:g} s segments"
        if n_volumes < nperseg + (nperseg - noverlap):
            return f"coherence needs {nperseg + nperseg - noverlap} volumes for two {self.params.segment_s:g} s segments"
        return None

    def compute(self, ts: np.ndarray, tr: float) -> np.ndarray:
        nperseg, noverlap, bins = self._segment(tr)
        segs = sliding_window_view(ts, nperseg, axis=-2)[..., :: nperseg - noverlap, :, :]  # (..., S, R, n)
        segs = segs - segs.mean(axis=-1, keepdims=True)
        from scipy.signal import get_window  # here: scipy.signal takes ~0.8 s to import

        spec = np.fft.rfft(segs * get_window("hann", nperseg), axis=-1)  # (..., S, R, F)
        total = np.zeros(ts.shape[:-2] + (ts.shape[-1],) * 2)
        for f in bins:  # one frequency at a time keeps memory at (..., R, R)
            x = spec[..., f]
            cross = np.einsum("...si,...sj->...ij", x.conj(), x) / x.shape[-2]
            power = np.real(np.einsum("...ii->...i", cross))
            with np.errstate(invalid="ignore", divide="ignore"):
                total += np.abs(cross) ** 2 / (power[..., :, None] * power[..., None, :])
        return total / bins.size

    def describe(self) -> str:
        lo, hi = self.params.band_hz
        return f"magnitude-squared coherence averaged over {lo:g}-{hi:g} Hz (Welch, {self.params.segment_s:g} s segments)"


@hookimpl
def register_metrics(register):
    register(Coherence)
