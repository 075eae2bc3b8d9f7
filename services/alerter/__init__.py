"""Alerter: window scores become timed events on audio.events, and notifications."""
