"""ROI plugin ``cifti_structures``: CIFTI brain structures by name, e.g. the amygdala from the
volume part of fMRIPrep's fsLR 91k grayordinates.

``structures`` are CIFTI structure names without the ``CIFTI_STRUCTURE_`` prefix (AMYGDALA_LEFT,
HIPPOCAMPUS_RIGHT, THALAMUS_LEFT, ACCUMBENS_LEFT, CORTEX_LEFT, ...), case-insensitive; each is one
ROI named as written. ``merge`` pools several into one ROI (e.g. ``{Amygdala: [AMYGDALA_LEFT,
AMYGDALA_RIGHT]}``). An ROI's signal is the mean over the structure's grayordinates.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator

from fclab.api import DataError, PluginParams, RoiSet, RoiWeights, did_you_mean, hookimpl


class CiftiStructures(RoiSet):
    name = "cifti_structures"
    data = ("surface",)

    class Params(PluginParams):
        structures: list[str] = Field(default_factory=lambda: ["AMYGDALA_LEFT", "AMYGDALA_RIGHT"])
        merge: dict[str, list[str]] = Field(default_factory=dict)

        @model_validator(mode="after")
        def _some(self):
            if not self.structures and not self.merge:
                raise ValueError("give structures, merge, or both")
            return self

    def build(self, reference) -> RoiWeights:
        have = reference.structures()
        rois = [(s, [s]) for s in self.params.structures] + list(self.params.merge.items())
        rows = []
        for name, parts in rois:
            pos = []
            for part in parts:
                found = reference.positions(part.upper())
                if not found.size:
                    raise DataError(f"extract.rois.cifti_structures: the data ({reference.describe()}) have no "
                                    f"structure {part!r}{did_you_mean(part.upper(), have)}; they have "
                                    f"{', '.join(have)}")
                pos.append(found)
            pos = np.unique(np.concatenate(pos))
            rows.append(sp.csr_matrix((np.full(pos.size, 1.0 / pos.size), (np.zeros(pos.size, int), pos)),
                                      shape=(1, reference.n)))
        return RoiWeights([n for n, _ in rois], sp.vstack(rows).tocsr())

    def describe(self) -> str:
        merged = "".join(f"; {k} = {' + '.join(v)}" for k, v in self.params.merge.items())
        return f"the CIFTI structures {', '.join(self.params.structures)}{merged} (mean over grayordinates)"


@hookimpl
def register_rois(register):
    register(CiftiStructures)
