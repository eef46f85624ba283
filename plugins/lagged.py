"""Metric plugin ``lagged``: the peak cross-correlation within ±``max_lag_s`` and the lag of the peak.

For lags k = -L..L volumes (L = round(max_lag_s / TR)), r_ab(k) is the Pearson correlation of
a(t) with b(t + k) over the overlapping volumes. The main output is the r of largest magnitude
(signed); ``lagged_lag_s`` is its lag in seconds, positive when roi_b follows roi_a. The peak r is
symmetric in (a, b) and the lag antisymmetric, so edges.parquet (a before b) loses nothing.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from fclab.api import Metric, PluginParams, correlation, hookimpl


class Lagged(Metric):
    name = "lagged"
    scale = "r"
    extra_scales = {"lag_s": "seconds"}
    antisymmetric_outputs = ("lag_s",)
    affine_invariant = True

    class Params(PluginParams):
        max_lag_s: float = Field(6.0, ge=0)

    def _max_lag(self, tr: float) -> int:
        return int(round(self.params.max_lag_s / tr))

    def problem(self, n_volumes: int, tr: float) -> str | None:
        need = self._max_lag(tr) + 3
        return None if n_volumes >= need else f"lagged needs at least {need} volumes for ±{self.params.max_lag_s:g} s"

    def compute(self, ts: np.ndarray, tr: float) -> dict[str, np.ndarray]:
        L, T = self._max_lag(tr), ts.shape[-2]
        lags = np.arange(-L, L + 1)
        stack = []
        for k in lags:
            if k >= 0:
                stack.append(correlation(ts[..., : T - k, :], ts[..., k:, :]))  # [i, j]: a(t) with b(t + k)
            else:
                stack.append(np.swapaxes(correlation(ts[..., : T + k, :], ts[..., -k:, :]), -1, -2))
        r = np.stack(stack, axis=-3)  # (..., lags, R, R)
        best = np.nanargmax(np.where(np.isnan(r), -np.inf, np.abs(r)), axis=-3)
        peak = np.take_along_axis(r, best[..., None, :, :], axis=-3)[..., 0, :, :]
        lag = lags[best] * tr
        lag = np.where(np.isnan(peak), np.nan, lag)
        return {"": peak, "lag_s": lag}

    def describe(self) -> str:
        return f"peak lagged cross-correlation within ±{self.params.max_lag_s:g} s, with its lag"


@hookimpl
def register_metrics(register):
    register(Lagged)
