"""Measuring detections: DCASE event- and segment-based metrics, and operating points."""
