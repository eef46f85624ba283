"""Simulated studies: the embedded voxel-level study, the fast ROI-level simulator, the planted
effects on the measured scale (truth) and simulation-based power and calibration."""
