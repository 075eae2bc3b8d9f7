"""Timed sound events from window scores: rules, and the tracker that applies them."""
