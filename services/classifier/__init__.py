"""The classifier service: feature windows in, per-label scores out."""
