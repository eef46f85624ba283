"""From fMRIPrep derivatives to denoised ROI time series: BIDS discovery and tables, confounds and
denoising, volume and surface streams, shipped anatomy, run QC, the per-run cache and the engine."""
