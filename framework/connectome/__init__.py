"""From ROI time series to connectivity values: windows, metric application, the packed edge store,
SPD matrix maths and the compiled sliding-window kernels."""
