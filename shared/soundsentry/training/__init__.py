"""Offline machine learning: data sets, training, calibration, int8 and composite models."""
