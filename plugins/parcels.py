"""ROI plugin ``parcels``: parcels of XCP-D's parcellated time series (``extract.data.format: xcpd``).

``names`` picks parcels by their column names in XCP-D's ``*_stat-mean_timeseries.tsv`` (with
``regex``: every full match of each pattern), in the order given; empty: every parcel. ``merge`` pools
parcels into one ROI as the mean of their time series (not the mean over their voxels: XCP-D wrote
no voxel counts into the series).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from fclab.api import PluginParams, RoiSet, RoiWeights, hookimpl, match_labels


class ParcelsSet(RoiSet):
    name = "parcels"
    data = ("parcellated",)
    space = "run"  # the parcels are wherever XCP-D put them

    class Params(PluginParams):
        names: list[str] = Field(default_factory=list)
        regex: bool = False
        merge: dict[str, list[str]] = Field(default_factory=dict)

    def build(self, reference) -> RoiWeights:
        key = "extract.rois.parcels"
        what = f"parcel of XCP-D's atlas-{reference.atlas} time series"
        rows, names = [], []
        if self.params.names or not self.params.merge:
            picked = match_labels(self.params.names, reference.names, self.params.regex, f"{key}.names", what) \
                if self.params.names else range(reference.n)
            rows += [[i] for i in picked]
            names += [reference.names[i] for i in picked]
        for new, parts in self.params.merge.items():
            rows.append(match_labels(parts, reference.names, self.params.regex, f"{key}.merge.{new}", what))
            names.append(new)
        data = np.concatenate([np.full(len(r), 1.0 / len(r)) for r in rows])
        indptr = np.cumsum([0] + [len(r) for r in rows])
        weights = sp.csr_matrix((data, np.concatenate(rows), indptr), shape=(len(rows), reference.n))
        return RoiWeights(names, weights)

    def describe(self) -> str:
        picked = ", ".join(self.params.names) if self.params.names else ("every parcel" if not self.params.merge else "")
        merged = "; ".join(f"{k} (mean of {', '.join(v)})" for k, v in self.params.merge.items())
        return "XCP-D parcels " + "; ".join(x for x in (picked, merged) if x)


@hookimpl
def register_rois(register):
    register(ParcelsSet)
